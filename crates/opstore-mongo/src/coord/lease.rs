//! Leases: one document per name, changed only by single-document atomic
//! find-and-modify with expiry judged by the server's clock (`$$NOW`).
//!
//! Document: `{_id: name, owner, token, expires_at: Date, fences}`. `token` is
//! the fencing counter: every acquisition adds one and release keeps it, so it
//! strictly increases per name for the life of the collection.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::TryStreamExt;
use mongodb::bson::{Bson, DateTime, Document, doc};
use mongodb::options::{FindOneAndUpdateOptions, ReturnDocument};
use opstore_domain::schema::check_name;
use opstore_domain::{Lease, LockManager, Result, StoreError, Timestamp};

use crate::ctx::Ctx;
use crate::ctx::TxState;
use crate::error::{self, DUPLICATE_KEY};

/// Collection of leases.
pub(crate) const LEASES: &str = "_opstore_leases";

/// Leases in MongoDB.
pub(crate) struct MongoLocks {
    ctx: Arc<Ctx>,
    coll: mongodb::Collection<Document>,
}

pub(crate) fn check_ttl(what: &str, ttl: Duration) -> Result<i64> {
    let ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    if ms <= 0 {
        return Err(StoreError::Validation(format!(
            "{what}: ttl must be at least one millisecond"
        )));
    }
    Ok(ms)
}

fn lost(lease: &Lease) -> StoreError {
    StoreError::LockLost(format!(
        "lease `{}` (token {}) of `{}` expired or was taken over",
        lease.name(),
        lease.token(),
        lease.owner()
    ))
}

fn live(now: &Bson) -> Document {
    doc! { "$expr": { "$gt": ["$expires_at", now.clone()] } }
}

fn held(lease: &Lease, now: &Bson) -> Document {
    let token = i64::try_from(lease.token()).unwrap_or(i64::MAX);
    doc! { "_id": lease.name(), "owner": lease.owner(), "token": token, "$expr": { "$gt": ["$expires_at", now.clone()] } }
}

fn to_lease(d: &Document) -> Option<Lease> {
    let name = d.get_str("_id").ok()?.to_owned();
    let owner = d.get_str("owner").ok()?.to_owned();
    let token = match d.get("token")? {
        Bson::Int64(t) => u64::try_from(*t).ok()?,
        Bson::Int32(t) => u64::try_from(*t).ok()?,
        Bson::Double(t) => *t as u64,
        _ => return None,
    };
    let expires = d.get_datetime("expires_at").ok()?;
    Some(Lease::granted(
        name,
        owner,
        token,
        Timestamp::from_millis(expires.timestamp_millis()),
    ))
}

fn released() -> Document {
    doc! { "$set": { "owner": Bson::Null, "expires_at": DateTime::from_millis(0) } }
}

impl MongoLocks {
    pub(crate) fn new(ctx: Arc<Ctx>) -> Self {
        let coll = ctx.db.collection::<Document>(LEASES);
        MongoLocks { ctx, coll }
    }

    async fn modify(
        &self,
        what: &str,
        filter: Document,
        update: impl Into<mongodb::options::UpdateModifications>,
        upsert: bool,
    ) -> Result<Option<Document>> {
        let mut options = FindOneAndUpdateOptions::default();
        options.return_document = Some(ReturnDocument::After);
        options.upsert = Some(upsert);
        self.coll
            .find_one_and_update(filter, update)
            .with_options(options)
            .await
            .map_err(|e| error::map(what, e))
    }
}

#[async_trait]
impl LockManager for MongoLocks {
    async fn try_acquire(&self, name: &str, owner: &str, ttl: Duration) -> Result<Option<Lease>> {
        check_name("lease", name)?;
        check_name("lease owner", owner)?;
        let ms = check_ttl("try_acquire", ttl)?;
        let now = self.ctx.now_expr();
        // Free, expired, released, or already ours: take it. The upsert creates
        // the document on first use; when a live lease of another owner exists
        // the filter misses, the upsert collides on `_id`, and that means "held".
        let filter = doc! {
            "_id": name,
            "$or": [ { "$expr": { "$lte": ["$expires_at", now.clone()] } }, { "owner": owner } ],
        };
        let update = vec![doc! { "$set": {
            "owner": owner,
            "token": { "$add": [ { "$ifNull": ["$token", 0_i64] }, 1_i64 ] },
            "expires_at": { "$add": [now, ms] },
        } }];
        let mut options = FindOneAndUpdateOptions::default();
        options.return_document = Some(ReturnDocument::After);
        options.upsert = Some(true);
        match self
            .coll
            .find_one_and_update(filter, update)
            .with_options(options)
            .await
        {
            Ok(d) => Ok(d.as_ref().and_then(to_lease)),
            Err(e) if error::code(&e) == Some(DUPLICATE_KEY) => Ok(None),
            Err(e) => Err(error::map(&format!("try_acquire lease `{name}`"), e)),
        }
    }

    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Lease> {
        let ms = check_ttl("renew", ttl)?;
        let now = self.ctx.now_expr();
        let update = vec![doc! { "$set": { "expires_at": { "$add": [now.clone(), ms] } } }];
        let d = self
            .modify(
                &format!("renew lease `{}`", lease.name()),
                held(lease, &now),
                update,
                false,
            )
            .await?;
        d.as_ref().and_then(to_lease).ok_or_else(|| lost(lease))
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        let now = self.ctx.now_expr();
        let d = self
            .modify(
                &format!("release lease `{}`", lease.name()),
                held(lease, &now),
                released(),
                false,
            )
            .await?;
        d.map(drop).ok_or_else(|| lost(lease))
    }

    async fn check(&self, lease: &Lease) -> Result<()> {
        let now = self.ctx.now_expr();
        let d = self
            .coll
            .find_one(held(lease, &now))
            .await
            .map_err(|e| error::map(&format!("check lease `{}`", lease.name()), e))?;
        d.map(drop).ok_or_else(|| lost(lease))
    }

    async fn current(&self, name: &str) -> Result<Option<Lease>> {
        check_name("lease", name)?;
        let now = self.ctx.now_expr();
        let mut filter = live(&now);
        filter.insert("_id", name);
        let d = self
            .coll
            .find_one(filter)
            .await
            .map_err(|e| error::map(&format!("current lease `{name}`"), e))?;
        Ok(d.as_ref().and_then(to_lease))
    }

    async fn list(&self) -> Result<Vec<Lease>> {
        let now = self.ctx.now_expr();
        let docs: Vec<Document> = self
            .coll
            .find(live(&now))
            .sort(doc! { "_id": 1 })
            .await
            .map_err(|e| error::map("list leases", e))?
            .try_collect()
            .await
            .map_err(|e| error::map("list leases", e))?;
        Ok(docs.iter().filter_map(to_lease).collect())
    }

    async fn force_release(&self, name: &str) -> Result<bool> {
        check_name("lease", name)?;
        let now = self.ctx.now_expr();
        let mut filter = live(&now);
        filter.insert("_id", name);
        let d = self
            .modify(
                &format!("force_release lease `{name}`"),
                filter,
                released(),
                false,
            )
            .await?;
        Ok(d.is_some())
    }
}

/// Inside a transaction: fails with `LockLost` unless `lease` is live, and
/// writes the lease document so a concurrent takeover conflicts with the
/// transaction until it commits.
pub(crate) async fn fence_in(ctx: &Ctx, state: &TxState, lease: &Lease) -> Result<()> {
    let coll = ctx.db.collection::<Document>(LEASES);
    let now = ctx.now_expr();
    let mut session = state.session.lock().await;
    let r = coll
        .update_one(held(lease, &now), doc! { "$inc": { "fences": 1_i64 } })
        .session(&mut *session)
        .await;
    state.note(&r);
    let r = r.map_err(|e| error::map(&format!("check_fence lease `{}`", lease.name()), e))?;
    if r.matched_count == 0 {
        return Err(lost(lease));
    }
    Ok(())
}
