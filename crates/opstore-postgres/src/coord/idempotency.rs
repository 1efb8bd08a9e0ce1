//! Idempotency keys and processor checkpoints.

use std::time::Duration;

use async_trait::async_trait;
use opstore_domain::{
    Begin, CheckpointStore, IdempotencyStore, Result, ResumeToken, StoreError, Value,
};
use sqlx::Row;

use crate::error::Ctx;
use crate::exec::Exec;
use crate::translate::{Bind, Sql};

const KEYS: &str = "opstore_idempotency";
const CHECKPOINTS: &str = "opstore_checkpoints";

/// Longest idempotency key or processor name accepted, in bytes.
const MAX_KEY: usize = 512;

fn check(kind: &str, key: &str) -> Result<()> {
    if key.is_empty() || key.len() > MAX_KEY || key.chars().any(char::is_control) {
        return Err(StoreError::Validation(format!(
            "{kind} must be 1-{MAX_KEY} bytes without control characters"
        )));
    }
    Ok(())
}

/// The `IdempotencyStore` port.
pub(crate) struct PgIdempotency {
    pub exec: Exec,
}

fn decode_err(e: sqlx::Error) -> StoreError {
    StoreError::backend("decoding an idempotency record", e)
}

#[async_trait]
impl IdempotencyStore for PgIdempotency {
    async fn begin(&self, key: &str, fingerprint: &str, ttl: Duration) -> Result<Begin> {
        check("idempotency key", key)?;
        // One statement claims a free or expired key; when it is taken, the
        // existing record decides. A concurrent first claim may be invisible to
        // that statement's snapshot, so the record is read again once.
        for _ in 0..2 {
            let mut sql = Sql::new();
            let k = sql.bind(Bind::Text(key.into()));
            let f = sql.bind(Bind::Text(fingerprint.into()));
            let t = sql.bind(Bind::Int(
                i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX),
            ));
            sql.push(&format!(
                "WITH ins AS (INSERT INTO {KEYS} AS i (key, fingerprint, completed, response, expires_at) \
                     VALUES ({k}, {f}, false, NULL, clock_timestamp() + {t} * interval '1 microsecond') \
                     ON CONFLICT (key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, completed = false, \
                         response = NULL, expires_at = EXCLUDED.expires_at \
                     WHERE i.expires_at <= clock_timestamp() RETURNING 1) \
                 SELECT EXISTS (SELECT 1 FROM ins), r.fingerprint, r.completed, r.response \
                 FROM (SELECT 1) AS one LEFT JOIN {KEYS} r ON r.key = {k} AND r.expires_at > clock_timestamp()"
            ));
            let row = self
                .exec
                .fetch_one(Ctx::new("begin", KEYS).key(key), sql)
                .await?;
            if row.try_get::<bool, _>(0).map_err(decode_err)? {
                return Ok(Begin::Started);
            }
            let Some(stored) = row.try_get::<Option<String>, _>(1).map_err(decode_err)? else {
                continue;
            };
            if stored != fingerprint {
                return Ok(Begin::Mismatch);
            }
            if row.try_get::<bool, _>(2).map_err(decode_err)? {
                let response: Option<Value> = row.try_get(3).map_err(decode_err)?;
                return Ok(Begin::Completed(response.unwrap_or(Value::Null)));
            }
            return Ok(Begin::InProgress);
        }
        Ok(Begin::InProgress)
    }

    async fn complete(&self, key: &str, response: Value) -> Result<()> {
        check("idempotency key", key)?;
        let mut sql = Sql::new();
        let r = sql.bind(Bind::Json(response));
        let k = sql.bind(Bind::Text(key.into()));
        sql.push(&format!(
            "UPDATE {KEYS} SET completed = true, response = {r} WHERE key = {k} AND expires_at > clock_timestamp()"
        ));
        match self
            .exec
            .execute(Ctx::new("complete", KEYS).key(key), sql)
            .await?
        {
            0 => Err(StoreError::NotFound(format!(
                "complete idempotency key `{key}`: unknown or expired"
            ))),
            _ => Ok(()),
        }
    }

    async fn abandon(&self, key: &str) -> Result<bool> {
        check("idempotency key", key)?;
        let mut sql = Sql::new();
        let k = sql.bind(Bind::Text(key.into()));
        sql.push(&format!(
            "DELETE FROM {KEYS} WHERE key = {k} RETURNING expires_at > clock_timestamp()"
        ));
        let row = self
            .exec
            .fetch_optional(Ctx::new("abandon", KEYS).key(key), sql)
            .await?;
        match row {
            Some(r) => r.try_get::<bool, _>(0).map_err(decode_err),
            None => Ok(false),
        }
    }

    async fn purge_expired(&self) -> Result<u64> {
        let mut sql = Sql::new();
        sql.push(&format!(
            "DELETE FROM {KEYS} WHERE expires_at <= clock_timestamp()"
        ));
        self.exec
            .execute(Ctx::new("purge_expired", KEYS), sql)
            .await
    }
}

/// The `CheckpointStore` port.
pub(crate) struct PgCheckpoints {
    pub exec: Exec,
}

#[async_trait]
impl CheckpointStore for PgCheckpoints {
    async fn save(&self, processor: &str, token: &ResumeToken) -> Result<()> {
        check("processor name", processor)?;
        let mut sql = Sql::new();
        let p = sql.bind(Bind::Text(processor.into()));
        let t = sql.bind(Bind::Bytes(token.as_bytes().to_vec()));
        sql.push(&format!(
            "INSERT INTO {CHECKPOINTS} (processor, token, updated_at) VALUES ({p}, {t}, clock_timestamp()) \
             ON CONFLICT (processor) DO UPDATE SET token = EXCLUDED.token, updated_at = EXCLUDED.updated_at"
        ));
        self.exec
            .execute(Ctx::new("save", CHECKPOINTS).key(processor), sql)
            .await?;
        Ok(())
    }

    async fn load(&self, processor: &str) -> Result<Option<ResumeToken>> {
        check("processor name", processor)?;
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
            r.try_get::<Vec<u8>, _>(0)
                .map(ResumeToken::from_bytes)
                .map_err(decode_err)
        })
        .transpose()
    }

    async fn delete(&self, processor: &str) -> Result<bool> {
        check("processor name", processor)?;
        let mut sql = Sql::new();
        let p = sql.bind(Bind::Text(processor.into()));
        sql.push(&format!("DELETE FROM {CHECKPOINTS} WHERE processor = {p}"));
        Ok(self
            .exec
            .execute(Ctx::new("delete", CHECKPOINTS).key(processor), sql)
            .await?
            > 0)
    }
}
