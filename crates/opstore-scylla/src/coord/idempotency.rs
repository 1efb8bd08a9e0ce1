//! Idempotency keys.

// The parent's imports and helpers.
use super::*;

/// How long the server keeps an idempotency record past its expiry. Reads treat
/// it as gone at once; the grace lets `purge_expired` find, delete and count it,
/// while the server still drops records nobody purges.
const PURGE_GRACE: Duration = Duration::from_secs(3600);
const PURGE_GRACE_SECS: i32 = 3600;

/// Idempotency keys on `opstore_idempotency`, rows written `USING TTL` (their
/// expiry plus [`PURGE_GRACE`]).
#[derive(Debug, Clone)]
pub struct ScyllaIdempotency {
    exec: Exec,
}

impl ScyllaIdempotency {
    /// Idempotency keys in the configured keyspace.
    pub fn new(exec: Exec) -> Self {
        ScyllaIdempotency { exec }
    }

    fn table(&self) -> String {
        format!("{}.{IDEMPOTENCY}", self.exec.config.keyspace)
    }

    async fn read(&self, key: &str) -> Result<Option<Row>> {
        let stmt = self.exec.serial_read(format!(
            "SELECT \"key\", fingerprint, response, expires_at FROM {} WHERE \"key\" = ?",
            self.table()
        ));
        let rows = self
            .exec
            .run(
                Op::new("read idempotency key", IDEMPOTENCY).key(key),
                &stmt,
                &[text(key)],
            )
            .await?;
        Ok(rows.into_iter().next())
    }
}

fn expires_ms(row: &Row) -> Option<i64> {
    match row.get("expires_at") {
        Some(CqlValue::Timestamp(ms)) => Some(*ms),
        _ => None,
    }
}

/// The outcome of `begin` for an existing live record.
pub(crate) fn begin_outcome(row: &Row, fingerprint: &str) -> Result<Begin> {
    if row.text("fingerprint") != Some(fingerprint) {
        return Ok(Begin::Mismatch);
    }
    match row.text("response") {
        None => Ok(Begin::InProgress),
        Some(text) => serde_json::from_str(text)
            .map(Begin::Completed)
            .map_err(|e| StoreError::Backend {
                message: format!("stored idempotent response is not JSON: {e}"),
                source: None,
            }),
    }
}

#[async_trait]
impl IdempotencyStore for ScyllaIdempotency {
    async fn begin(&self, key: &str, fingerprint: &str, ttl: Duration) -> Result<Begin> {
        check_key("idempotency keys", key)?;
        ttl_secs("idempotency begin", ttl)?;
        let secs = ttl_secs("idempotency begin", ttl.saturating_add(PURGE_GRACE))?;
        let op = Op::new("begin", IDEMPOTENCY).key(key);
        for _ in 0..ATTEMPTS {
            let now = Timestamp::now();
            let expires = CqlValue::Timestamp(now.add(ttl).as_millis());
            let insert = self.exec.lwt(format!(
                "INSERT INTO {} (\"key\", fingerprint, expires_at) VALUES (?, ?, ?) IF NOT EXISTS USING TTL ?",
                self.table()
            ));
            let values = [
                text(key),
                text(fingerprint),
                expires.clone(),
                CqlValue::Int(secs),
            ];
            let (ok, row) = self.exec.cas(op, &insert, &values).await?;
            if ok {
                return Ok(Begin::Started);
            }
            let Some(row) = row else { continue };
            let old = expires_ms(&row);
            if old.is_some_and(|ms| ms > now.as_millis()) {
                return begin_outcome(&row, fingerprint);
            }
            // Expired but still kept for the purge grace: take it over.
            let take = self.exec.lwt(format!(
                "UPDATE {} USING TTL ? SET fingerprint = ?, response = null, expires_at = ? WHERE \"key\" = ? IF expires_at = ?",
                self.table()
            ));
            let values = [
                CqlValue::Int(secs),
                text(fingerprint),
                expires,
                text(key),
                old.map_or(CqlValue::Null, CqlValue::Timestamp),
            ];
            if self.exec.cas(op, &take, &values).await?.0 {
                return Ok(Begin::Started);
            }
        }
        Err(lwt_conflict(op, "idempotency key contended"))
    }

    async fn complete(&self, key: &str, response: Value) -> Result<()> {
        check_key("idempotency keys", key)?;
        let op = Op::new("complete", IDEMPOTENCY).key(key);
        let missing = || {
            StoreError::NotFound(format!(
                "idempotency key `{key}` was never begun or has expired"
            ))
        };
        let now = Timestamp::now();
        let row = self.read(key).await?.ok_or_else(missing)?;
        let Some(exp) = expires_ms(&row).filter(|ms| *ms > now.as_millis()) else {
            return Err(missing());
        };
        let remaining = i32::try_from((exp - now.as_millis() + 999) / 1000)
            .unwrap_or(i32::MAX)
            .max(1)
            .saturating_add(PURGE_GRACE_SECS);
        let stmt = self.exec.lwt(format!(
            "UPDATE {} USING TTL ? SET response = ?, fingerprint = ?, expires_at = ? WHERE \"key\" = ? IF expires_at = ?",
            self.table()
        ));
        let values = [
            CqlValue::Int(remaining),
            CqlValue::Text(response.to_string()),
            text(row.text("fingerprint").unwrap_or_default()),
            CqlValue::Timestamp(exp),
            text(key),
            CqlValue::Timestamp(exp),
        ];
        if self.exec.cas(op, &stmt, &values).await?.0 {
            Ok(())
        } else {
            Err(missing())
        }
    }

    async fn abandon(&self, key: &str) -> Result<bool> {
        check_key("idempotency keys", key)?;
        let Some(row) = self.read(key).await? else {
            return Ok(false);
        };
        let live = expires_ms(&row).is_some_and(|ms| ms > Timestamp::now().as_millis());
        let stmt = self.exec.lwt(format!(
            "DELETE FROM {} WHERE \"key\" = ? IF EXISTS",
            self.table()
        ));
        let (ok, _) = self
            .exec
            .cas(
                Op::new("abandon", IDEMPOTENCY).key(key),
                &stmt,
                &[text(key)],
            )
            .await?;
        Ok(ok && live)
    }

    async fn purge_expired(&self) -> Result<u64> {
        let stmt = self
            .exec
            .stmt(format!("SELECT \"key\", expires_at FROM {}", self.table()));
        let now = Timestamp::now().as_millis();
        let mut dead = Vec::new();
        let mut state = None;
        loop {
            let page = self
                .exec
                .page(Op::new("purge_expired", IDEMPOTENCY), &stmt, &[], state)
                .await?;
            for row in &page.rows {
                if expires_ms(row).is_some_and(|ms| ms <= now) {
                    dead.push((
                        row.text("key").unwrap_or_default().to_owned(),
                        expires_ms(row),
                    ));
                }
            }
            state = page.paging_state;
            if state.is_none() {
                break;
            }
        }
        let mut purged = 0;
        for (key, exp) in dead {
            let stmt = self.exec.lwt(format!(
                "DELETE FROM {} WHERE \"key\" = ? IF expires_at = ?",
                self.table()
            ));
            let values = [text(&key), exp.map_or(CqlValue::Null, CqlValue::Timestamp)];
            if self
                .exec
                .cas(
                    Op::new("purge_expired", IDEMPOTENCY).key(&key),
                    &stmt,
                    &values,
                )
                .await?
                .0
            {
                purged += 1;
            }
        }
        Ok(purged)
    }
}
