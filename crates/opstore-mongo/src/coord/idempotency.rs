//! Idempotency keys and processor checkpoints as collections.
//!
//! Idempotency record: `{_id: key, fingerprint, state, response, expires_at: Date}`
//! with a TTL index on `expires_at`; expiry is also judged on every call, so a
//! record counts as absent from the instant it expires. The response is kept as
//! JSON text so any value (keys starting with `$` included) round-trips exactly.
//! Checkpoint: `{_id: processor, token: Binary, saved_at: Date}`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use mongodb::bson::spec::BinarySubtype;
use mongodb::bson::{Binary, Bson, DateTime, Document, doc};
use mongodb::options::{FindOneAndUpdateOptions, ReturnDocument};
use opstore_domain::schema::{check_key, check_name};
use opstore_domain::{
    Begin, CheckpointStore, IdempotencyStore, Result, ResumeToken, StoreError, Value,
};

use super::lease::check_ttl;
use crate::ctx::Ctx;
use crate::error::{self, DUPLICATE_KEY};

/// Collection of idempotency records.
pub(crate) const IDEMPOTENCY: &str = "_opstore_idempotency";
/// Collection of checkpoints.
pub(crate) const CHECKPOINTS: &str = "_opstore_checkpoints";

/// Idempotency keys in MongoDB.
pub(crate) struct MongoIdempotency {
    ctx: Arc<Ctx>,
    coll: mongodb::Collection<Document>,
}

impl MongoIdempotency {
    pub(crate) fn new(ctx: Arc<Ctx>) -> Self {
        let coll = ctx.db.collection::<Document>(IDEMPOTENCY);
        MongoIdempotency { ctx, coll }
    }

    fn live(&self, key: &str) -> Document {
        doc! { "_id": key, "$expr": { "$gt": ["$expires_at", self.ctx.now_expr()] } }
    }
}

fn check_idem_key(key: &str) -> Result<()> {
    check_key("idempotency keys", key)
}

#[async_trait]
impl IdempotencyStore for MongoIdempotency {
    async fn begin(&self, key: &str, fingerprint: &str, ttl: Duration) -> Result<Begin> {
        check_idem_key(key)?;
        let ms = check_ttl("idempotency begin", ttl)?;
        let what = format!("idempotency begin `{key}`");
        for _ in 0..3 {
            let now = self.ctx.now_expr();
            // Absent or expired: (re)start it atomically. A live record makes the
            // upsert collide on `_id`.
            let filter = doc! { "_id": key, "$expr": { "$lte": ["$expires_at", now.clone()] } };
            // A pipeline update reads `$`-strings as expressions: caller text goes in `$literal`.
            let update = vec![
                doc! { "$set": { "fingerprint": { "$literal": fingerprint }, "state": "started", "expires_at": { "$add": [now, ms] } } },
                doc! { "$unset": ["response"] },
            ];
            let mut options = FindOneAndUpdateOptions::default();
            options.return_document = Some(ReturnDocument::After);
            options.upsert = Some(true);
            match self
                .coll
                .find_one_and_update(filter, update)
                .with_options(options)
                .await
            {
                Ok(_) => return Ok(Begin::Started),
                Err(e) if error::code(&e) == Some(DUPLICATE_KEY) => {}
                Err(e) => return Err(error::map(&what, e)),
            }
            let Some(row) = self
                .coll
                .find_one(self.live(key))
                .await
                .map_err(|e| error::map(&what, e))?
            else {
                // It expired between the two calls: start over.
                continue;
            };
            if row.get_str("fingerprint").ok() != Some(fingerprint) {
                return Ok(Begin::Mismatch);
            }
            return Ok(match row.get_str("response") {
                Ok(text) => Begin::Completed(serde_json::from_str(text).map_err(|e| {
                    StoreError::Backend {
                        message: format!("{what}: stored response is not JSON: {e}"),
                        source: None,
                    }
                })?),
                Err(_) => Begin::InProgress,
            });
        }
        Err(StoreError::Conflict(format!(
            "{what}: concurrent callers kept racing"
        )))
    }

    async fn complete(&self, key: &str, response: Value) -> Result<()> {
        check_idem_key(key)?;
        let what = format!("idempotency complete `{key}`");
        let text = serde_json::to_string(&response).map_err(|e| {
            StoreError::Validation(format!("{what}: response is not serializable: {e}"))
        })?;
        let r = self
            .coll
            .update_one(
                self.live(key),
                doc! { "$set": { "state": "completed", "response": text } },
            )
            .await
            .map_err(|e| error::map(&what, e))?;
        if r.matched_count == 0 {
            return Err(StoreError::NotFound(format!(
                "idempotency key `{key}` was never begun or has expired"
            )));
        }
        Ok(())
    }

    async fn abandon(&self, key: &str) -> Result<bool> {
        check_idem_key(key)?;
        let live = self
            .coll
            .delete_one(self.live(key))
            .await
            .map_err(|e| error::map(&format!("idempotency abandon `{key}`"), e))?;
        // An expired record is gone too, but it did not count as existing.
        if live.deleted_count == 0 {
            let _ = self.coll.delete_one(doc! { "_id": key }).await;
        }
        Ok(live.deleted_count > 0)
    }

    async fn purge_expired(&self) -> Result<u64> {
        let filter = doc! { "$expr": { "$lte": ["$expires_at", self.ctx.now_expr()] } };
        let r = self
            .coll
            .delete_many(filter)
            .await
            .map_err(|e| error::map("idempotency purge_expired", e))?;
        Ok(r.deleted_count)
    }
}

/// Processor checkpoints in MongoDB.
pub(crate) struct MongoCheckpoints {
    coll: mongodb::Collection<Document>,
}

impl MongoCheckpoints {
    pub(crate) fn new(ctx: &Ctx) -> Self {
        MongoCheckpoints {
            coll: ctx.db.collection::<Document>(CHECKPOINTS),
        }
    }
}

#[async_trait]
impl CheckpointStore for MongoCheckpoints {
    async fn save(&self, processor: &str, token: &ResumeToken) -> Result<()> {
        check_name("processor", processor)?;
        let bytes = Binary {
            subtype: BinarySubtype::Generic,
            bytes: token.as_bytes().to_vec(),
        };
        let row = doc! { "_id": processor, "token": bytes, "saved_at": DateTime::now() };
        self.coll
            .replace_one(doc! { "_id": processor }, row)
            .upsert(true)
            .await
            .map_err(|e| error::map(&format!("save checkpoint `{processor}`"), e))?;
        Ok(())
    }

    async fn load(&self, processor: &str) -> Result<Option<ResumeToken>> {
        check_name("processor", processor)?;
        let row = self
            .coll
            .find_one(doc! { "_id": processor })
            .await
            .map_err(|e| error::map(&format!("load checkpoint `{processor}`"), e))?;
        Ok(row.and_then(|r| match r.get("token") {
            Some(Bson::Binary(b)) => Some(ResumeToken::from_bytes(b.bytes.clone())),
            _ => None,
        }))
    }

    async fn delete(&self, processor: &str) -> Result<bool> {
        check_name("processor", processor)?;
        let r = self
            .coll
            .delete_one(doc! { "_id": processor })
            .await
            .map_err(|e| error::map(&format!("delete checkpoint `{processor}`"), e))?;
        Ok(r.deleted_count > 0)
    }
}
