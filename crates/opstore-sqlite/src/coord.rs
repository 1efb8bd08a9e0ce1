//! Leases with fencing tokens, idempotency keys and processor checkpoints.
//!
//! Expiry is judged in SQL by the store's clock (the database's own, or a
//! manual clock bound into the statement). Every write runs on the store's
//! writer connection, so it queues there instead of contending for SQLite's lock.

use std::time::Duration;

use async_trait::async_trait;
use opstore_domain::schema::check_name;
use opstore_domain::{
    Begin, CheckpointStore, IdempotencyStore, Lease, LockManager, Result, ResumeToken, StoreError,
    Timestamp, Value,
};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use crate::error::{Ctx, decode};
use crate::exec::Exec;
use crate::translate::{Bind, Sql};

const LEASES: &str = "opstore_leases";
const KEYS: &str = "opstore_idempotency";
const CHECKPOINTS: &str = "opstore_checkpoints";

/// Longest idempotency key or processor name, in bytes.
const MAX_KEY: usize = 512;

fn micros(d: Duration) -> Bind {
    Bind::Int(i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

fn token(lease: &Lease) -> Bind {
    Bind::Int(i64::try_from(lease.token()).unwrap_or(i64::MAX))
}

/// Runs one statement as a write of its own and returns its rows.
async fn write_rows(exec: &Exec, ctx: Ctx<'_>, sql: Sql) -> Result<Vec<SqliteRow>> {
    exec.write_rows(ctx, sql).await
}

/// Runs one statement as a write of its own and returns the rows it changed.
async fn write_count(exec: &Exec, ctx: Ctx<'_>, sql: Sql) -> Result<u64> {
    exec.write_count(ctx, sql).await
}

/// The `LockManager` port.
pub(crate) struct SqliteLocks {
    pub exec: Exec,
}

fn decode_lease(row: &SqliteRow) -> Result<Lease> {
    let get = |e: sqlx::Error| decode("a lease", e);
    let name: String = row.try_get("name").map_err(get)?;
    let owner: String = row.try_get("owner").map_err(get)?;
    let token: i64 = row.try_get("token").map_err(get)?;
    let expires: i64 = row.try_get("expires_at").map_err(get)?;
    Ok(Lease::granted(
        name,
        owner,
        u64::try_from(token).unwrap_or(0),
        Timestamp::from_micros(expires),
    ))
}

fn lost(lease: &Lease, op: &str) -> StoreError {
    StoreError::LockLost(format!(
        "{op} lease `{}`: no longer held by `{}` with token {}",
        lease.name(),
        lease.owner(),
        lease.token()
    ))
}

impl SqliteLocks {
    /// The condition that `lease` is the live holder.
    fn held(&self, sql: &mut Sql, lease: &Lease) -> String {
        let n = sql.bind(Bind::Text(lease.name().to_owned()));
        let o = sql.bind(Bind::Text(lease.owner().to_owned()));
        let t = sql.bind(token(lease));
        let now = sql.now(self.exec.clock());
        format!("name = {n} AND owner = {o} AND token = {t} AND expires_at > {now}")
    }
}

/// The condition, for [`Transaction::check_fence`](opstore_domain::Transaction::check_fence),
/// that `lease` is the live holder.
pub(crate) fn fence_sql(exec: &Exec, lease: &Lease) -> Sql {
    let mut sql = Sql::new();
    let w = SqliteLocks { exec: exec.clone() }.held(&mut sql, lease);
    sql.push(&format!("SELECT 1 FROM {LEASES} WHERE {w}"));
    sql
}

#[async_trait]
impl LockManager for SqliteLocks {
    async fn try_acquire(&self, name: &str, owner: &str, ttl: Duration) -> Result<Option<Lease>> {
        check_name("lock", name)?;
        check_name("lock owner", owner)?;
        let mut sql = Sql::new();
        let n = sql.bind(Bind::Text(name.into()));
        let o = sql.bind(Bind::Text(owner.into()));
        let t = sql.bind(micros(ttl));
        let now = sql.now(self.exec.clock());
        // A released or expired lease keeps its row, so the next token is
        // always one more than the last one handed out for this name.
        sql.push(&format!(
            "INSERT INTO {LEASES} (name, owner, token, expires_at) VALUES ({n}, {o}, 1, {now} + {t}) \
             ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, token = {LEASES}.token + 1, \
                 expires_at = excluded.expires_at \
             WHERE {LEASES}.expires_at <= {now} \
             RETURNING name, owner, token, expires_at"
        ));
        let rows = write_rows(&self.exec, Ctx::new("try_acquire", LEASES).key(name), sql).await?;
        rows.first().map(decode_lease).transpose()
    }

    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Lease> {
        let mut sql = Sql::new();
        let t = sql.bind(micros(ttl));
        let now = sql.now(self.exec.clock());
        let w = self.held(&mut sql, lease);
        sql.push(&format!(
            "UPDATE {LEASES} SET expires_at = {now} + {t} WHERE {w} \
             RETURNING name, owner, token, expires_at"
        ));
        let rows = write_rows(&self.exec, Ctx::new("renew", LEASES).key(lease.name()), sql).await?;
        rows.first()
            .map(decode_lease)
            .transpose()?
            .ok_or_else(|| lost(lease, "renew"))
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        let mut sql = Sql::new();
        let w = self.held(&mut sql, lease);
        sql.push(&format!(
            "UPDATE {LEASES} SET expires_at = -9223372036854775807 WHERE {w}"
        ));
        match write_count(
            &self.exec,
            Ctx::new("release", LEASES).key(lease.name()),
            sql,
        )
        .await?
        {
            0 => Err(lost(lease, "release")),
            _ => Ok(()),
        }
    }

    async fn check(&self, lease: &Lease) -> Result<()> {
        let sql = fence_sql(&self.exec, lease);
        match self
            .exec
            .fetch_optional(Ctx::new("check", LEASES).key(lease.name()), sql)
            .await?
        {
            Some(_) => Ok(()),
            None => Err(lost(lease, "check")),
        }
    }

    async fn current(&self, name: &str) -> Result<Option<Lease>> {
        check_name("lock", name)?;
        let mut sql = Sql::new();
        let n = sql.bind(Bind::Text(name.into()));
        let now = sql.now(self.exec.clock());
        sql.push(&format!(
            "SELECT name, owner, token, expires_at FROM {LEASES} WHERE name = {n} AND expires_at > {now}"
        ));
        let row = self
            .exec
            .fetch_optional(Ctx::new("current", LEASES).key(name), sql)
            .await?;
        row.as_ref().map(decode_lease).transpose()
    }

    async fn list(&self) -> Result<Vec<Lease>> {
        let mut sql = Sql::new();
        let now = sql.now(self.exec.clock());
        sql.push(&format!(
            "SELECT name, owner, token, expires_at FROM {LEASES} WHERE expires_at > {now} ORDER BY name"
        ));
        let rows = self.exec.fetch_all(Ctx::new("list", LEASES), sql).await?;
        rows.iter().map(decode_lease).collect()
    }

    async fn force_release(&self, name: &str) -> Result<bool> {
        check_name("lock", name)?;
        let mut sql = Sql::new();
        let n = sql.bind(Bind::Text(name.into()));
        let now = sql.now(self.exec.clock());
        sql.push(&format!(
            "UPDATE {LEASES} SET expires_at = -9223372036854775807 WHERE name = {n} AND expires_at > {now}"
        ));
        Ok(write_count(&self.exec, Ctx::new("force_release", LEASES).key(name), sql).await? > 0)
    }
}

fn check_key(kind: &str, key: &str) -> Result<()> {
    if key.is_empty() || key.len() > MAX_KEY || key.chars().any(char::is_control) {
        return Err(StoreError::Validation(format!(
            "{kind} must be 1-{MAX_KEY} bytes without control characters"
        )));
    }
    Ok(())
}

/// The `IdempotencyStore` port.
pub(crate) struct SqliteIdempotency {
    pub exec: Exec,
}

#[async_trait]
impl IdempotencyStore for SqliteIdempotency {
    async fn begin(&self, key: &str, fingerprint: &str, ttl: Duration) -> Result<Begin> {
        check_key("idempotency key", key)?;
        let ctx = Ctx::new("begin", KEYS).key(key);
        let mut w = self.exec.writer(ctx).await?;
        let r = async {
            let mut sql = Sql::new();
            let k = sql.bind(Bind::Text(key.into()));
            let now = sql.now(self.exec.clock());
            sql.push(&format!(
                "SELECT fingerprint, completed, response FROM {KEYS} WHERE key = {k} AND expires_at > {now}"
            ));
            if let Some(row) = w.fetch_optional(ctx, sql).await? {
                let get = |e: sqlx::Error| decode("an idempotency record", e);
                let stored: String = row.try_get(0).map_err(get)?;
                if stored != fingerprint {
                    return Ok(Begin::Mismatch);
                }
                if !row.try_get::<bool, _>(1).map_err(get)? {
                    return Ok(Begin::InProgress);
                }
                let response: Option<String> = row.try_get(2).map_err(get)?;
                let response = match response {
                    Some(text) => serde_json::from_str(&text).map_err(|e| {
                        StoreError::backend(format!("stored response of `{key}` is not JSON"), e)
                    })?,
                    None => Value::Null,
                };
                return Ok(Begin::Completed(response));
            }
            let mut sql = Sql::new();
            let k = sql.bind(Bind::Text(key.into()));
            let f = sql.bind(Bind::Text(fingerprint.into()));
            let t = sql.bind(micros(ttl));
            let now = sql.now(self.exec.clock());
            sql.push(&format!(
                "INSERT OR REPLACE INTO {KEYS} (key, fingerprint, completed, response, expires_at) \
                 VALUES ({k}, {f}, 0, NULL, {now} + {t})"
            ));
            w.execute(ctx, sql).await?;
            Ok(Begin::Started)
        }
        .await;
        w.finish(ctx, r).await
    }

    async fn complete(&self, key: &str, response: Value) -> Result<()> {
        check_key("idempotency key", key)?;
        let mut sql = Sql::new();
        let r = sql.bind(Bind::Text(response.to_string()));
        let k = sql.bind(Bind::Text(key.into()));
        let now = sql.now(self.exec.clock());
        sql.push(&format!(
            "UPDATE {KEYS} SET completed = 1, response = {r} WHERE key = {k} AND expires_at > {now}"
        ));
        match write_count(&self.exec, Ctx::new("complete", KEYS).key(key), sql).await? {
            0 => Err(StoreError::NotFound(format!(
                "complete idempotency key `{key}`: unknown or expired"
            ))),
            _ => Ok(()),
        }
    }

    async fn abandon(&self, key: &str) -> Result<bool> {
        check_key("idempotency key", key)?;
        let mut sql = Sql::new();
        let k = sql.bind(Bind::Text(key.into()));
        let now = sql.now(self.exec.clock());
        sql.push(&format!(
            "DELETE FROM {KEYS} WHERE key = {k} RETURNING expires_at > {now}"
        ));
        let rows = write_rows(&self.exec, Ctx::new("abandon", KEYS).key(key), sql).await?;
        match rows.first() {
            Some(r) => r
                .try_get::<bool, _>(0)
                .map_err(|e| decode("an idempotency record", e)),
            None => Ok(false),
        }
    }

    async fn purge_expired(&self) -> Result<u64> {
        let mut sql = Sql::new();
        let now = sql.now(self.exec.clock());
        sql.push(&format!("DELETE FROM {KEYS} WHERE expires_at <= {now}"));
        write_count(&self.exec, Ctx::new("purge_expired", KEYS), sql).await
    }
}

/// The `CheckpointStore` port. Tokens are stored in their hex text form.
pub(crate) struct SqliteCheckpoints {
    pub exec: Exec,
}

#[async_trait]
impl CheckpointStore for SqliteCheckpoints {
    async fn save(&self, processor: &str, token: &ResumeToken) -> Result<()> {
        check_key("processor name", processor)?;
        let mut sql = Sql::new();
        let p = sql.bind(Bind::Text(processor.into()));
        let t = sql.bind(Bind::Text(token.to_string()));
        sql.push(&format!(
            "INSERT INTO {CHECKPOINTS} (processor, token) VALUES ({p}, {t}) \
             ON CONFLICT (processor) DO UPDATE SET token = excluded.token"
        ));
        write_count(
            &self.exec,
            Ctx::new("save", CHECKPOINTS).key(processor),
            sql,
        )
        .await?;
        Ok(())
    }

    async fn load(&self, processor: &str) -> Result<Option<ResumeToken>> {
        check_key("processor name", processor)?;
        let mut sql = Sql::new();
        let p = sql.bind(Bind::Text(processor.into()));
        sql.push(&format!(
            "SELECT token FROM {CHECKPOINTS} WHERE processor = {p}"
        ));
        let row = self
            .exec
            .fetch_optional(Ctx::new("load", CHECKPOINTS).key(processor), sql)
            .await?;
        row.map(|r| {
            r.try_get::<String, _>(0)
                .map_err(|e| decode("a checkpoint", e))
                .and_then(|t| t.parse())
        })
        .transpose()
    }

    async fn delete(&self, processor: &str) -> Result<bool> {
        check_key("processor name", processor)?;
        let mut sql = Sql::new();
        let p = sql.bind(Bind::Text(processor.into()));
        sql.push(&format!("DELETE FROM {CHECKPOINTS} WHERE processor = {p}"));
        Ok(write_count(
            &self.exec,
            Ctx::new("delete", CHECKPOINTS).key(processor),
            sql,
        )
        .await?
            > 0)
    }
}
