//! Writes: each reads what it changes, computes the new documents with the
//! reference semantics (`Schema::updated`), and writes them and their
//! changelog rows inside one write transaction. SQLite runs in process, so the
//! extra statements cost microseconds, and no SQL rendering of the update
//! operators can drift from the reference.

use opstore_domain::check::Checked;
use opstore_domain::{
    ChangeOp, FieldType, Filter, Query, Result, StoreError, Update, UpdateCount, UpdateOp,
    Upserted, Value,
};
use sqlx::Row;

use super::{On, SqliteCollection};
use crate::error::decode;
use crate::exec::Writer;
use crate::schema::EXPIRES;
use crate::translate::{Bind, Sql, Translator, json_path};

/// Rows per multi-row statement (three or four parameters each, far below
/// SQLite's parameter limit).
const CHUNK: usize = 400;

fn op_name(op: ChangeOp) -> &'static str {
    match op {
        ChangeOp::Insert => "insert",
        ChangeOp::Update => "update",
        ChangeOp::Replace => "replace",
        ChangeOp::Delete => "delete",
    }
}

impl SqliteCollection {
    /// Deletes documents whose TTL ran out, so they free their keys and
    /// unique values before this write.
    async fn purge_in(&self, w: &mut Writer) -> Result<()> {
        if self.schema.ttl().is_none() {
            return Ok(());
        }
        let mut sql = Sql::new();
        let now = sql.now(self.exec.clock());
        sql.push(&format!(
            "DELETE FROM {} WHERE {EXPIRES} <= {now}",
            self.table
        ));
        w.execute(self.ctx("purge expired"), sql).await?;
        Ok(())
    }

    /// Appends changes to the changelog, in the same transaction as the data.
    async fn log(&self, w: &mut Writer, changes: &[(ChangeOp, &str, Option<&str>)]) -> Result<()> {
        if !self.schema.has_change_feed() {
            return Ok(());
        }
        for chunk in changes.chunks(CHUNK) {
            let mut sql = Sql::new();
            let c = sql.bind(Bind::Text(self.schema.name().to_owned()));
            let now = sql.now(self.exec.clock());
            let mut rows = Vec::with_capacity(chunk.len());
            for (op, key, doc) in chunk {
                let o = sql.bind(Bind::Text(op_name(*op).to_owned()));
                let k = sql.bind(Bind::Text((*key).to_owned()));
                let d = sql.bind(doc.map_or(Bind::Null, |d| Bind::Text(d.to_owned())));
                rows.push(format!("({c}, {o}, {k}, {d}, {now})"));
            }
            sql.text = format!(
                "INSERT INTO opstore_changelog (collection, op, key, doc, at) VALUES {}",
                rows.join(", ")
            );
            w.execute(self.ctx("log change"), sql).await?;
        }
        Ok(())
    }

    pub(super) async fn insert_in(&self, w: &mut Writer, doc: &Value, text: String) -> Result<()> {
        self.purge_in(w).await?;
        let key = self.key_of(doc);
        let mut sql = Sql::new();
        let k = sql.bind(Bind::Text(key.to_owned()));
        let d = sql.bind(Bind::Text(text.clone()));
        let e = sql.bind(self.expires_of(doc));
        sql.push(&format!(
            "INSERT INTO {} ({}, doc, {EXPIRES}) VALUES ({k}, {d}, {e})",
            self.table, self.key_col
        ));
        w.execute(self.ctx("insert").key(key), sql).await?;
        self.log(w, &[(ChangeOp::Insert, key, Some(&text))]).await
    }

    pub(super) async fn insert_many_in(
        &self,
        w: &mut Writer,
        docs: &[Value],
        texts: Vec<String>,
    ) -> Result<u64> {
        let mut seen = std::collections::HashSet::with_capacity(docs.len());
        for doc in docs {
            let key = self.key_of(doc);
            if !seen.insert(key) {
                return Err(StoreError::Conflict(format!(
                    "insert_many `{key}` in `{}`: duplicate key within the batch of {} (nothing inserted)",
                    self.schema.name(),
                    docs.len()
                )));
            }
        }
        self.purge_in(w).await?;
        let pairs: Vec<(&Value, String)> = docs.iter().zip(texts).collect();
        for chunk in pairs.chunks(CHUNK) {
            let mut sql = Sql::new();
            let mut rows = Vec::with_capacity(chunk.len());
            for (doc, text) in chunk {
                let k = sql.bind(Bind::Text(self.key_of(doc).to_owned()));
                let d = sql.bind(Bind::Text(text.clone()));
                let e = sql.bind(self.expires_of(doc));
                rows.push(format!("({k}, {d}, {e})"));
            }
            sql.text = format!(
                "INSERT INTO {} ({}, doc, {EXPIRES}) VALUES {}",
                self.table,
                self.key_col,
                rows.join(", ")
            );
            w.execute(self.ctx("insert_many"), sql).await?;
        }
        let changes: Vec<(ChangeOp, &str, Option<&str>)> = pairs
            .iter()
            .map(|(doc, text)| (ChangeOp::Insert, self.key_of(doc), Some(text.as_str())))
            .collect();
        self.log(w, &changes).await?;
        Ok(docs.len() as u64)
    }

    /// Stores new documents under existing keys and logs them as `op`. With
    /// unique fields and several documents, the rows are first emptied, so a
    /// value moving from one document to another in the same write does not
    /// collide with its old holder: only the state after the write counts.
    async fn write_all(&self, w: &mut Writer, writes: &[Value], op: ChangeOp) -> Result<()> {
        let unique = self
            .schema
            .fields()
            .iter()
            .any(|f| f.is_unique() && f.path() != self.schema.key());
        if unique && writes.len() > 1 {
            for chunk in writes.chunks(CHUNK) {
                let mut sql = Sql::new();
                let keys: Vec<String> = chunk
                    .iter()
                    .map(|d| sql.bind(Bind::Text(self.key_of(d).to_owned())))
                    .collect();
                sql.text = format!(
                    "UPDATE {} SET doc = '{{}}' WHERE {} IN ({})",
                    self.table,
                    self.key_col,
                    keys.join(", ")
                );
                w.execute(self.ctx("update"), sql).await?;
            }
        }
        let mut texts = Vec::with_capacity(writes.len());
        for doc in writes {
            texts.push(self.encode(doc)?);
        }
        for (docs, chunk) in writes.chunks(CHUNK).zip(texts.chunks(CHUNK)) {
            let mut sql = Sql::new();
            let mut rows = Vec::with_capacity(docs.len());
            for (doc, text) in docs.iter().zip(chunk) {
                let k = sql.bind(Bind::Text(self.key_of(doc).to_owned()));
                let d = sql.bind(Bind::Text(text.clone()));
                let e = sql.bind(self.expires_of(doc));
                rows.push(format!("({k}, {d}, {e})"));
            }
            sql.text = format!(
                "UPDATE {t} SET doc = v.column2, {EXPIRES} = v.column3 \
                 FROM (VALUES {}) AS v WHERE {t}.{} = v.column1",
                rows.join(", "),
                self.key_col,
                t = self.table,
            );
            w.execute(self.ctx("update"), sql).await?;
        }
        let changes: Vec<(ChangeOp, &str, Option<&str>)> = writes
            .iter()
            .zip(&texts)
            .map(|(doc, text)| (op, self.key_of(doc), Some(text.as_str())))
            .collect();
        self.log(w, &changes).await
    }

    pub(super) async fn update_one_in(
        &self,
        w: &mut Writer,
        key: &str,
        update: &Checked<Update>,
    ) -> Result<Value> {
        self.purge_in(w).await?;
        let Some(old) = self.by_key(&mut On::Write(w), "update_one", key).await? else {
            return Err(StoreError::NotFound(format!(
                "update of `{key}` in `{}`: no such document",
                self.schema.name()
            )));
        };
        let (doc, changed) = self.schema.updated(&old, update, false)?;
        if changed {
            self.write_all(w, std::slice::from_ref(&doc), ChangeOp::Update)
                .await?;
        }
        Ok(doc)
    }

    pub(super) async fn update_many_in(
        &self,
        w: &mut Writer,
        filter: &Filter,
        update: &Checked<Update>,
    ) -> Result<UpdateCount> {
        self.purge_in(w).await?;
        if let Some(counts) = self.update_many_in_sql(w, filter, update).await? {
            return Ok(counts);
        }
        let targets = self
            .matching(&mut On::Write(w), "update_many", filter)
            .await?;
        let mut writes = Vec::new();
        for old in &targets {
            let (doc, changed) = self.schema.updated(old, update, false)?;
            if changed {
                writes.push(doc);
            }
        }
        self.write_all(w, &writes, ChangeOp::Update).await?;
        Ok(UpdateCount {
            matched: targets.len() as u64,
            modified: writes.len() as u64,
        })
    }

    /// `update_many` as one statement, when SQL decides the whole filter and
    /// every operator sets a top-level string, timestamp, integer or boolean
    /// field to a value of its kind: then `json_set` writes exactly what the
    /// reference would, and a row whose values are already equal is matched
    /// but not modified. `None` when the update does not qualify.
    async fn update_many_in_sql(
        &self,
        w: &mut Writer,
        filter: &Filter,
        update: &Checked<Update>,
    ) -> Result<Option<UpdateCount>> {
        let ttl_field = self.schema.ttl().map(|t| t.field.as_str());
        let mut sets = Vec::new();
        for op in &update.ops {
            let UpdateOp::Set(path, v) = op else {
                return Ok(None);
            };
            let Some(field) = self.schema.field(path) else {
                return Ok(None);
            };
            if path.contains('.') || Some(path.as_str()) == ttl_field {
                return Ok(None);
            }
            let (value, compare) = match (field.ty(), v) {
                (FieldType::String | FieldType::Timestamp, Value::String(s)) => {
                    (Bind::Text(s.clone()), None)
                }
                (FieldType::Int, Value::Number(n)) => match n.as_i64() {
                    Some(i) => (Bind::Int(i), None),
                    None => return Ok(None),
                },
                (FieldType::Bool, Value::Bool(b)) => {
                    (Bind::Text(b.to_string()), Some(Bind::Int(i64::from(*b))))
                }
                _ => return Ok(None),
            };
            sets.push((path.as_str(), value, compare));
        }
        let checked = self.schema.check_filter(filter)?;
        let mut sql = Sql::new();
        let vis = self.visible(&mut sql);
        let plan = Translator {
            schema: self.schema,
            sql: &mut sql,
        }
        .plan(&checked);
        if plan.residual.is_some() {
            return Ok(None);
        }
        let matched = self.count_in(&mut On::Write(w), filter).await?;
        let mut assign = Vec::new();
        let mut same = Vec::new();
        for (path, value, compare) in sets {
            let p = sql.bind(Bind::Text(json_path(path)));
            let is_bool = compare.is_some();
            let v = sql.bind(value);
            let c = match compare {
                Some(c) => sql.bind(c),
                None => v.clone(),
            };
            assign.push(if is_bool {
                format!("{p}, json({v})")
            } else {
                format!("{p}, {v}")
            });
            same.push(format!("json_extract(doc, {p}) IS {c}"));
        }
        sql.text = format!(
            "UPDATE {} SET doc = json_set(doc, {}) WHERE {vis} AND {} AND NOT ({}) RETURNING {}",
            self.table,
            assign.join(", "),
            plan.sql_where,
            same.join(" AND "),
            self.key_col
        );
        let rows = w.fetch_all(self.ctx("update_many"), sql).await?;
        let keys = rows
            .iter()
            .map(|r| r.try_get::<String, _>(0))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| decode("a key", e))?;
        if !keys.is_empty() && self.schema.has_change_feed() {
            // The changelog rows are copied from the table in SQL, in key order,
            // rather than sent back from here.
            let mut sql = Sql::new();
            let c = sql.bind(Bind::Text(self.schema.name().to_owned()));
            let now = sql.now(self.exec.clock());
            let k = sql.bind(Bind::Text(Value::from(keys.clone()).to_string()));
            sql.text = format!(
                "INSERT INTO opstore_changelog (collection, op, key, doc, at) \
                 SELECT {c}, 'update', {key}, doc, {now} FROM {t} \
                 WHERE {key} IN (SELECT value FROM json_each({k})) ORDER BY {key}",
                key = self.key_col,
                t = self.table,
            );
            w.execute(self.ctx("log change"), sql).await?;
        }
        Ok(Some(UpdateCount {
            matched,
            modified: keys.len() as u64,
        }))
    }
    pub(super) async fn upsert_in(
        &self,
        w: &mut Writer,
        key: &str,
        update: &Checked<Update>,
    ) -> Result<Upserted<Value>> {
        self.purge_in(w).await?;
        if let Some(old) = self.by_key(&mut On::Write(w), "upsert", key).await? {
            let (document, changed) = self.schema.updated(&old, update, false)?;
            if changed {
                self.write_all(w, std::slice::from_ref(&document), ChangeOp::Update)
                    .await?;
            }
            return Ok(Upserted {
                inserted: false,
                document,
            });
        }
        let mut seed = serde_json::Map::new();
        seed.insert(self.schema.key().to_owned(), Value::String(key.to_owned()));
        let (document, _) = self
            .schema
            .updated(&Value::Object(seed), update, true)
            .map_err(|e| match e {
                StoreError::Validation(m) => {
                    StoreError::Validation(format!("upsert would insert an invalid document: {m}"))
                }
                other => other,
            })?;
        let text = self.encode(&document)?;
        self.insert_in(w, &document, text).await?;
        Ok(Upserted {
            inserted: true,
            document,
        })
    }

    pub(super) async fn replace_in(&self, w: &mut Writer, doc: &Value, text: String) -> Result<()> {
        self.purge_in(w).await?;
        let key = self.key_of(doc);
        let mut sql = Sql::new();
        let d = sql.bind(Bind::Text(text.clone()));
        let e = sql.bind(self.expires_of(doc));
        let k = sql.bind(Bind::Text(key.to_owned()));
        sql.push(&format!(
            "UPDATE {} SET doc = {d}, {EXPIRES} = {e} WHERE {} = {k}",
            self.table, self.key_col
        ));
        if w.execute(self.ctx("replace").key(key), sql).await? == 0 {
            return Err(StoreError::NotFound(format!(
                "replace of `{key}` in `{}`: no such document",
                self.schema.name()
            )));
        }
        self.log(w, &[(ChangeOp::Replace, key, Some(&text))]).await
    }

    pub(super) async fn delete_in(&self, w: &mut Writer, key: &str) -> Result<bool> {
        self.purge_in(w).await?;
        let mut sql = Sql::new();
        let k = sql.bind(Bind::Text(key.to_owned()));
        sql.push(&format!(
            "DELETE FROM {} WHERE {} = {k}",
            self.table, self.key_col
        ));
        if w.execute(self.ctx("delete").key(key), sql).await? == 0 {
            return Ok(false);
        }
        self.log(w, &[(ChangeOp::Delete, key, None)]).await?;
        Ok(true)
    }

    pub(super) async fn delete_many_in(&self, w: &mut Writer, filter: &Filter) -> Result<u64> {
        self.purge_in(w).await?;
        let targets = self
            .matching(&mut On::Write(w), "delete_many", filter)
            .await?;
        let keys: Vec<&str> = targets.iter().map(|d| self.key_of(d)).collect();
        for chunk in keys.chunks(CHUNK) {
            let mut sql = Sql::new();
            let ps: Vec<String> = chunk
                .iter()
                .map(|k| sql.bind(Bind::Text((*k).to_owned())))
                .collect();
            sql.text = format!(
                "DELETE FROM {} WHERE {} IN ({})",
                self.table,
                self.key_col,
                ps.join(", ")
            );
            w.execute(self.ctx("delete_many"), sql).await?;
        }
        let changes: Vec<(ChangeOp, &str, Option<&str>)> =
            keys.iter().map(|k| (ChangeOp::Delete, *k, None)).collect();
        self.log(w, &changes).await?;
        Ok(keys.len() as u64)
    }

    pub(super) async fn claim_in(
        &self,
        w: &mut Writer,
        query: &Query,
        update: &Checked<Update>,
    ) -> Result<Vec<Value>> {
        self.purge_in(w).await?;
        let (targets, _) = self
            .find_docs(&mut On::Write(w), "claim", query, false)
            .await?;
        let mut out = Vec::with_capacity(targets.len());
        let mut writes = Vec::new();
        for old in &targets {
            let (doc, changed) = self.schema.updated(old, update, false)?;
            if changed {
                writes.push(doc.clone());
            }
            out.push(doc);
        }
        self.write_all(w, &writes, ChangeOp::Update).await?;
        Ok(out)
    }

    /// Deletes documents whose TTL ran out; returns how many.
    pub(crate) async fn delete_expired(&self) -> Result<u64> {
        if self.schema.ttl().is_none() {
            return Ok(0);
        }
        let mut w = self.start_write("purge_expired").await?;
        let mut sql = Sql::new();
        let now = sql.now(self.exec.clock());
        sql.push(&format!(
            "DELETE FROM {} WHERE {EXPIRES} <= {now}",
            self.table
        ));
        let r = w.execute(self.ctx("purge_expired"), sql).await;
        w.finish(self.ctx("purge_expired"), r).await
    }
}
