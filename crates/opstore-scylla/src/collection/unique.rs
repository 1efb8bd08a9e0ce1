//! Unique fields other than the key: one claim row per value in the field's
//! claim table, taken with `INSERT ... IF NOT EXISTS` before the document is
//! written and released after it no longer holds the value.

// The parent's imports and its `ScyllaCollection`, whose methods this file adds.
use super::*;

impl ScyllaCollection {
    pub(super) fn unique_fields(&self) -> impl Iterator<Item = &str> {
        let key = self.layout.schema.key();
        self.layout
            .schema
            .fields()
            .iter()
            .filter(move |f| f.is_unique() && f.path() != key)
            .map(|f| f.path())
    }

    /// `Conflict` when two of `docs` hold one unique value: those writes could
    /// never all succeed, so none is made.
    pub(super) fn check_unique_among(&self, docs: &[Value]) -> Result<()> {
        for path in self.unique_fields() {
            let mut holders: std::collections::HashMap<String, &str> =
                std::collections::HashMap::new();
            for doc in docs {
                let Some(v) = get_path(doc, path).filter(|v| !v.is_null()) else {
                    continue;
                };
                let key = self.key_of(doc);
                if let Some(first) = holders.insert(index_key(v), key) {
                    return Err(StoreError::Conflict(format!(
                        "{}: `{first}` and `{key}` would both hold unique `{path}` = {v}",
                        self.op("update_many").describe()
                    )));
                }
            }
        }
        Ok(())
    }

    /// Claims the unique values of `new` that `old` did not hold. On a conflict,
    /// claims made so far are released.
    pub(super) async fn claim_unique(
        &self,
        key: &str,
        old: Option<&Value>,
        new: &Value,
    ) -> Result<()> {
        let mut claimed: Vec<(String, String)> = Vec::new();
        for path in self.unique_fields() {
            let Some(v) = get_path(new, path) else {
                continue;
            };
            let value = index_key(v);
            if old
                .and_then(|o| get_path(o, path))
                .map(index_key)
                .as_deref()
                == Some(&value)
            {
                continue;
            }
            if let Err(e) = self.claim_one(path, &value, key).await {
                for (p, v) in &claimed {
                    let _ = self.release_one(p, v, key).await;
                }
                return Err(e);
            }
            claimed.push((path.to_owned(), value));
        }
        Ok(())
    }

    pub(super) async fn claim_one(&self, path: &str, value: &str, key: &str) -> Result<()> {
        let table = format!(
            "{}.{}",
            self.exec.config.keyspace,
            unique_table(self.layout.schema, path)
        );
        let op = self.op("claim unique value").key(key);
        for _ in 0..CAS_ATTEMPTS {
            let insert = self.exec.lwt(format!(
                "INSERT INTO {table} (\"value\", \"key\") VALUES (?, ?) IF NOT EXISTS"
            ));
            let vals = [
                CqlValue::Text(value.to_owned()),
                CqlValue::Text(key.to_owned()),
            ];
            let (ok, row) = self.exec.cas(op, &insert, &vals).await?;
            if ok {
                return Ok(());
            }
            let holder = row
                .as_ref()
                .and_then(|r| r.text("key"))
                .unwrap_or_default()
                .to_owned();
            if holder == key {
                return Ok(());
            }
            // A claim whose holder no longer has the value is stale (a failed write
            // or an expired document): take it over.
            let live = self.load(&holder).await?;
            if live.is_some_and(|s| get_path(&s.doc, path).map(index_key).as_deref() == Some(value))
            {
                return Err(StoreError::Conflict(format!(
                    "`{}` already has a document with {path} = {value} (writing `{key}`)",
                    self.name()
                )));
            }
            let steal = self.exec.lwt(format!(
                "UPDATE {table} SET \"key\" = ? WHERE \"value\" = ? IF \"key\" = ?"
            ));
            let vals = [
                CqlValue::Text(key.to_owned()),
                CqlValue::Text(value.to_owned()),
                CqlValue::Text(holder),
            ];
            if self.exec.cas(op, &steal, &vals).await?.0 {
                return Ok(());
            }
        }
        Err(lwt_conflict(op, "unique value contended"))
    }

    pub(super) async fn release_one(&self, path: &str, value: &str, key: &str) -> Result<()> {
        let table = format!(
            "{}.{}",
            self.exec.config.keyspace,
            unique_table(self.layout.schema, path)
        );
        let stmt = self.exec.lwt(format!(
            "DELETE FROM {table} WHERE \"value\" = ? IF \"key\" = ?"
        ));
        let vals = [
            CqlValue::Text(value.to_owned()),
            CqlValue::Text(key.to_owned()),
        ];
        self.exec
            .cas(self.op("release unique value").key(key), &stmt, &vals)
            .await
            .map(drop)
    }

    /// Releases unique values `old` held and `new` (if any) does not.
    pub(super) async fn release_unique(
        &self,
        key: &str,
        old: &Value,
        new: Option<&Value>,
    ) -> Result<()> {
        for path in self.unique_fields() {
            let Some(v) = get_path(old, path) else {
                continue;
            };
            let value = index_key(v);
            if new
                .and_then(|n| get_path(n, path))
                .map(index_key)
                .as_deref()
                == Some(&value)
            {
                continue;
            }
            self.release_one(path, &value, key).await?;
        }
        Ok(())
    }
}
