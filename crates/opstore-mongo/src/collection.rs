//! The [`Collection`] port over a MongoDB collection.
//!
//! Storage layout: one collection per entity; `_id` is the entity key and the
//! key field is kept under its own name too, so stored documents read like the
//! entity and round-trip unchanged; filters and sorts on the key use `_id`.
//! A schema with a TTL gets a hidden BSON date (`_opstore_ttl`) for the TTL index,
//! and reads hide documents whose TTL passed before the TTL monitor deletes them.

use std::sync::Arc;

use async_trait::async_trait;
use futures::TryStreamExt;
use mongodb::bson::{Bson, Document, doc};
use mongodb::options::{
    AggregateOptions, CountOptions, FindOneAndUpdateOptions, FindOptions, ReturnDocument,
};
use opstore_domain::schema::{FieldType, check_key};
use opstore_domain::{
    Agg, Collection, Filter, Page, Query, Result, Schema, StoreError, UpdateCount, Upserted, Value,
    eval,
};
use opstore_domain::{Checked, Update, UpdateOp};

use crate::ctx::Ctx;
use crate::ctx::TxState;
use crate::error::{self, DUPLICATE_KEY};
use crate::translate::{self, and, from_stored, to_stored};

/// Runs a driver action inside the bound transaction when there is one.
macro_rules! exec {
    ($self:expr, $action:expr) => {
        match &$self.tx {
            Some(tx) => {
                let mut session = tx.session.lock().await;
                let r = $action.session(&mut *session).await;
                tx.note(&r);
                r
            }
            None => $action.await,
        }
    };
}

mod in_process;
mod insert_many;

/// One entity collection, optionally bound to a transaction.
pub(crate) struct MongoCollection {
    ctx: Arc<Ctx>,
    schema: &'static Schema,
    coll: mongodb::Collection<Document>,
    tx: Option<Arc<TxState>>,
}

impl MongoCollection {
    pub(crate) fn new(ctx: Arc<Ctx>, schema: &'static Schema, tx: Option<Arc<TxState>>) -> Self {
        let coll = ctx.db.collection::<Document>(schema.name());
        MongoCollection {
            ctx,
            schema,
            coll,
            tx,
        }
    }

    fn name(&self) -> &str {
        self.schema.name()
    }

    fn what(&self, op: &str, key: &str) -> String {
        format!("{op} `{key}` in `{}`", self.name())
    }

    fn what_all(&self, op: &str) -> String {
        format!("{op} in `{}`", self.name())
    }

    /// A filter restricted to documents whose TTL has not passed.
    fn live(&self, filter: Document) -> Document {
        and(filter, translate::visible(self.schema, self.ctx.now()))
    }

    fn by_key(&self, key: &str) -> Document {
        self.live(doc! { "_id": key })
    }

    fn checked_filter(&self, filter: &Filter) -> Result<Document> {
        let checked = self.schema.check_filter(filter)?;
        Ok(self.live(translate::filter(self.schema, &checked, "")))
    }

    fn checked_update(&self, update: &Update) -> Result<(Checked<Update>, Document)> {
        let checked = self.schema.check_update(update)?;
        let native = translate::update(self.schema, &checked)?;
        Ok((checked, native))
    }

    fn key_of<'a>(&self, doc: &'a Value) -> Result<&'a str> {
        self.schema.check_document(doc)?;
        doc.get(self.schema.key())
            .and_then(Value::as_str)
            .ok_or_else(|| {
                StoreError::Validation(format!("document for `{}` has no key", self.name()))
            })
    }

    async fn find_docs(
        &self,
        filter: Document,
        options: FindOptions,
    ) -> mongodb::error::Result<Vec<Document>> {
        match &self.tx {
            Some(tx) => {
                let mut session = tx.session.lock().await;
                let r = async {
                    let mut cursor = self
                        .coll
                        .find(filter)
                        .with_options(options)
                        .session(&mut *session)
                        .await?;
                    let mut out = Vec::new();
                    while let Some(d) = cursor.next(&mut session).await {
                        out.push(d?);
                    }
                    Ok(out)
                }
                .await;
                tx.note(&r);
                r
            }
            None => {
                self.coll
                    .find(filter)
                    .with_options(options)
                    .await?
                    .try_collect()
                    .await
            }
        }
    }

    async fn aggregate_docs(
        &self,
        pipeline: Vec<Document>,
    ) -> mongodb::error::Result<Vec<Document>> {
        let mut options = AggregateOptions::default();
        options.max_time = Some(self.ctx.config.operation_timeout);
        match &self.tx {
            Some(tx) => {
                let mut session = tx.session.lock().await;
                let r = async {
                    let mut cursor = self
                        .coll
                        .aggregate(pipeline)
                        .with_options(options)
                        .session(&mut *session)
                        .await?;
                    let mut out = Vec::new();
                    while let Some(d) = cursor.next(&mut session).await {
                        out.push(d?);
                    }
                    Ok(out)
                }
                .await;
                tx.note(&r);
                r
            }
            None => {
                self.coll
                    .aggregate(pipeline)
                    .with_options(options)
                    .await?
                    .try_collect()
                    .await
            }
        }
    }

    fn find_options(&self, query: &Query) -> FindOptions {
        let mut options = FindOptions::default();
        options.sort = Some(translate::sort(self.schema, &query.sort));
        options.skip = (query.skip > 0).then_some(query.skip);
        options.limit = (query.limit > 0).then(|| i64::try_from(query.limit).unwrap_or(i64::MAX));
        options.max_time = Some(self.ctx.config.operation_timeout);
        options
    }

    async fn count_native(&self, filter: Document) -> Result<u64> {
        let mut options = CountOptions::default();
        options.max_time = Some(self.ctx.config.operation_timeout);
        exec!(
            self,
            self.coll
                .count_documents(filter.clone())
                .with_options(options.clone())
        )
        .map_err(|e| error::map(&self.what_all("count"), e))
    }

    async fn find_one_and_update(
        &self,
        filter: Document,
        update: Document,
        sort: Option<Document>,
    ) -> mongodb::error::Result<Option<Document>> {
        let mut options = FindOneAndUpdateOptions::default();
        options.return_document = Some(ReturnDocument::After);
        options.sort = sort;
        exec!(
            self,
            self.coll
                .find_one_and_update(filter.clone(), update.clone())
                .with_options(options.clone())
        )
    }

    async fn update_many_native(&self, filter: Document, native: Document) -> Result<UpdateCount> {
        let r = exec!(self, self.coll.update_many(filter.clone(), native.clone()))
            .map_err(|e| error::map_update(&self.what_all("update_many"), e))?;
        Ok(UpdateCount {
            matched: r.matched_count,
            modified: r.modified_count,
        })
    }

    /// Removes documents whose TTL passed but that the TTL monitor has not
    /// deleted yet, so their keys and unique values can be reused. Returns
    /// whether any was removed.
    async fn purge_expired_docs(&self) -> Result<bool> {
        let Some(expired) = translate::expired(self.schema, self.ctx.now()) else {
            return Ok(false);
        };
        let r = exec!(self, self.coll.delete_many(expired.clone()))
            .map_err(|e| error::map(&self.what_all("purge expired"), e))?;
        Ok(r.deleted_count > 0)
    }

    async fn insert_stored(&self, key: &str, stored: Document) -> Result<()> {
        for attempt in 0..2 {
            match exec!(self, self.coll.insert_one(stored.clone())) {
                Ok(_) => return Ok(()),
                Err(e) if error::code(&e) == Some(DUPLICATE_KEY) && attempt == 0 => {
                    if !self.purge_expired_docs().await? {
                        return Err(error::map(&self.what("insert", key), e));
                    }
                }
                Err(e) => return Err(error::map(&self.what("insert", key), e)),
            }
        }
        Err(StoreError::Conflict(format!(
            "{}: duplicate key",
            self.what("insert", key)
        )))
    }
}

#[async_trait]
impl Collection for MongoCollection {
    fn schema(&self) -> &'static Schema {
        self.schema
    }

    async fn insert(&self, doc: Value) -> Result<()> {
        let key = self.key_of(&doc)?;
        let stored = to_stored(self.schema, key, &doc, "insert")?;
        self.insert_stored(key, stored).await
    }

    /// All or nothing: inside a transaction when the server has them (a replica
    /// set), otherwise an ordered insert whose inserted prefix is deleted again
    /// when a later document fails.
    async fn insert_many(&self, docs: Vec<Value>) -> Result<u64> {
        self.insert_many_docs(docs).await
    }

    async fn get(&self, key: &str) -> Result<Option<Value>> {
        check_key(self.name(), key)?;
        let d = exec!(self, self.coll.find_one(self.by_key(key)))
            .map_err(|e| error::map(&self.what("get", key), e))?;
        Ok(d.map(from_stored))
    }

    /// MongoDB has no row locks: inside a transaction the document is locked by
    /// writing a hidden field (`_opstore_lock`), so a concurrent transaction
    /// that writes it conflicts and is retried by its runner. Outside a
    /// transaction this is `get`. The change feed ignores these writes.
    async fn get_for_update(&self, key: &str) -> Result<Option<Value>> {
        if self.tx.is_none() {
            return self.get(key).await;
        }
        check_key(self.name(), key)?;
        let lock = doc! { "$inc": { translate::LOCK_FIELD: 1_i64 } };
        let d = self
            .find_one_and_update(self.by_key(key), lock, None)
            .await
            .map_err(|e| error::map(&self.what("get_for_update", key), e))?;
        Ok(d.map(from_stored))
    }

    async fn find(&self, query: &Query) -> Result<Vec<Value>> {
        self.schema.check_query(query)?;
        let filter = self.checked_filter(&query.filter)?;
        let docs = self
            .find_docs(filter, self.find_options(query))
            .await
            .map_err(|e| error::map(&self.what_all("find"), e))?;
        Ok(docs.into_iter().map(from_stored).collect())
    }

    async fn find_page(&self, query: &Query) -> Result<Page<Value>> {
        let items = self.find(query).await?;
        let total = self.count(&query.filter).await?;
        Ok(Page { items, total })
    }

    async fn count(&self, filter: &Filter) -> Result<u64> {
        let filter = self.checked_filter(filter)?;
        self.count_native(filter).await
    }

    /// Native `findOneAndUpdate`, unless the update is one a native update may
    /// apply unlike the reference; then it is applied in process.
    async fn update_one(&self, key: &str, update: &Update) -> Result<Value> {
        check_key(self.name(), key)?;
        let (checked, native) = self.checked_update(update)?;
        if checked.needs_document_check(self.schema) {
            let applied = self
                .update_in_process(self.by_key(key), &checked, "update_one")
                .await?;
            return applied
                .docs
                .into_iter()
                .next()
                .ok_or_else(|| StoreError::NotFound(self.what("update_one", key)));
        }
        let d = self
            .find_one_and_update(self.by_key(key), native, None)
            .await
            .map_err(|e| error::map_update(&self.what("update_one", key), e))?;
        d.map(from_stored)
            .ok_or_else(|| StoreError::NotFound(self.what("update_one", key)))
    }

    /// All or nothing, like the reference: an update applied in process writes
    /// only after every document passed the schema, and a native `updateMany`
    /// that may fail part way (a unique field, an `$inc` that may overflow) runs
    /// in a transaction of its own when the server has them.
    async fn update_many(&self, filter: &Filter, update: &Update) -> Result<UpdateCount> {
        let filter = self.checked_filter(filter)?;
        let (checked, native) = self.checked_update(update)?;
        if checked.needs_document_check(self.schema) {
            let applied = self
                .update_in_process(filter, &checked, "update_many")
                .await?;
            return Ok(UpdateCount {
                matched: applied.matched,
                modified: applied.modified,
            });
        }
        let may_fail_part_way = checked.ops.iter().any(|op| {
            let path = op.path();
            matches!(op, UpdateOp::Inc(..))
                || self.schema.fields().iter().any(|f| {
                    f.is_unique()
                        && (f.path() == path
                            || f.path().starts_with(path)
                                && f.path().as_bytes().get(path.len()) == Some(&b'.'))
                })
        });
        if may_fail_part_way && self.tx.is_none() && self.ctx.replica_set {
            let what = self.what_all("update_many");
            return crate::tx::atomically(&self.ctx, self.schema, &what, |c| {
                let (filter, native) = (filter.clone(), native.clone());
                async move { c.update_many_native(filter, native).await }
            })
            .await;
        }
        self.update_many_native(filter, native).await
    }

    /// Updates in place when the document exists; otherwise builds the new
    /// document from the key, `set` and `set_on_insert` values, checks it
    /// against the schema and inserts it (a concurrent insert of the same key
    /// makes the loop update instead).
    async fn upsert(&self, key: &str, update: &Update) -> Result<Upserted<Value>> {
        check_key(self.name(), key)?;
        let (checked, native) = self.checked_update(update)?;
        let in_process = checked.needs_document_check(self.schema);
        for _ in 0..3 {
            let updated = if in_process {
                self.update_in_process(self.by_key(key), &checked, "upsert")
                    .await?
                    .docs
                    .into_iter()
                    .next()
            } else {
                self.find_one_and_update(self.by_key(key), native.clone(), None)
                    .await
                    .map_err(|e| error::map_update(&self.what("upsert", key), e))?
                    .map(from_stored)
            };
            if let Some(document) = updated {
                return Ok(Upserted {
                    inserted: false,
                    document,
                });
            }
            let mut doc = Value::Object(Default::default());
            eval::set_path(&mut doc, self.schema.key(), Value::String(key.to_owned()));
            eval::apply_update(&mut doc, &checked, true);
            self.schema.check_document(&doc).map_err(|e| {
                StoreError::Validation(format!(
                    "upsert `{key}` in `{}` would create an invalid document: {e}",
                    self.name()
                ))
            })?;
            let stored = to_stored(self.schema, key, &doc, "upsert")?;
            match exec!(self, self.coll.insert_one(stored.clone())) {
                Ok(_) => {
                    return Ok(Upserted {
                        inserted: true,
                        document: doc,
                    });
                }
                Err(e) if error::code(&e) == Some(DUPLICATE_KEY) => {
                    // Either a concurrent upsert won (update it next round), an
                    // expired document holds the key, or a unique field clashes.
                    if self.purge_expired_docs().await? {
                        continue;
                    }
                    let exists = exec!(self, self.coll.find_one(doc! { "_id": key }))
                        .map_err(|e| error::map(&self.what("upsert", key), e))?
                        .is_some();
                    if !exists {
                        return Err(error::map(&self.what("upsert", key), e));
                    }
                }
                Err(e) => return Err(error::map(&self.what("upsert", key), e)),
            }
        }
        Err(StoreError::Conflict(format!(
            "{}: concurrent writers kept racing",
            self.what("upsert", key)
        )))
    }

    async fn replace(&self, doc: Value) -> Result<()> {
        let key = self.key_of(&doc)?;
        let stored = to_stored(self.schema, key, &doc, "replace")?;
        let r = exec!(
            self,
            self.coll.replace_one(self.by_key(key), stored.clone())
        )
        .map_err(|e| error::map(&self.what("replace", key), e))?;
        if r.matched_count == 0 {
            return Err(StoreError::NotFound(self.what("replace", key)));
        }
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        check_key(self.name(), key)?;
        let r = exec!(self, self.coll.delete_one(self.by_key(key)))
            .map_err(|e| error::map(&self.what("delete", key), e))?;
        Ok(r.deleted_count > 0)
    }

    async fn delete_many(&self, filter: &Filter) -> Result<u64> {
        let filter = self.checked_filter(filter)?;
        let r = exec!(self, self.coll.delete_many(filter.clone()))
            .map_err(|e| error::map(&self.what_all("delete_many"), e))?;
        Ok(r.deleted_count)
    }

    async fn count_by(&self, filter: &Filter, path: &str) -> Result<Vec<(Value, u64)>> {
        let checked = self.schema.check_agg_field(path, None)?;
        let filter = self.checked_filter(filter)?;
        let field = translate::field_ref(self.schema, &checked);
        let pipeline = vec![
            doc! { "$match": filter },
            doc! { "$group": { "_id": field, "n": { "$sum": 1 } } },
            doc! { "$sort": { "_id": 1 } },
        ];
        let docs = self
            .aggregate_docs(pipeline)
            .await
            .map_err(|e| error::map(&self.what_all("count_by"), e))?;
        Ok(docs
            .into_iter()
            .map(|mut d| {
                let n = match d.get("n") {
                    Some(Bson::Int32(n)) => u64::try_from(*n).unwrap_or(0),
                    Some(Bson::Int64(n)) => u64::try_from(*n).unwrap_or(0),
                    Some(Bson::Double(n)) => *n as u64,
                    _ => 0,
                };
                (translate::to_json(d.remove("_id").unwrap_or(Bson::Null)), n)
            })
            .collect())
    }

    /// The sum of an `Int` field is computed in decimal and converted back, so
    /// a sum past the 64-bit range is a float as in the reference (MongoDB-wire
    /// servers differ there: MongoDB answers a double, some fail the `$sum`).
    async fn aggregate(&self, filter: &Filter, path: &str, agg: Agg) -> Result<Value> {
        let checked = self.schema.check_agg_field(path, Some(agg))?;
        let ty = checked.field_type();
        let filter = self.checked_filter(filter)?;
        let field = translate::field_ref(self.schema, &checked);
        let op = match agg {
            Agg::Sum => "$sum",
            Agg::Min => "$min",
            Agg::Max => "$max",
        };
        let operand = if agg == Agg::Sum && ty == FieldType::Int {
            Bson::Document(doc! { "$toDecimal": field })
        } else {
            Bson::String(field)
        };
        let pipeline = vec![
            doc! { "$match": filter },
            doc! { "$group": { "_id": Bson::Null, "v": { op: operand } } },
        ];
        let docs = self
            .aggregate_docs(pipeline)
            .await
            .map_err(|e| error::map(&self.what_all("aggregate"), e))?;
        let value = docs
            .into_iter()
            .next()
            .and_then(|mut d| d.remove("v"))
            .map(|v| match v {
                Bson::Decimal128(d) => translate::decimal_to_json(&d),
                other => translate::to_json(other),
            });
        Ok(value.unwrap_or_else(|| eval::aggregate_start(agg)))
    }

    /// One `findOneAndUpdate` per document, in query order: each is atomic, so
    /// a document is handed to one claimer only (the update should make it stop
    /// matching, as a work queue's state change does). `skip` is not used.
    async fn claim(&self, query: &Query, update: &Update) -> Result<Vec<Value>> {
        self.schema.check_query(query)?;
        let filter = self.checked_filter(&query.filter)?;
        let (checked, native) = self.checked_update(update)?;
        let sort = translate::sort(self.schema, &query.sort);
        let in_process = checked.needs_document_check(self.schema);
        let mut taken: Vec<Bson> = Vec::new();
        let mut out = Vec::new();
        while query.limit == 0 || (out.len() as u64) < query.limit {
            let f = and(filter.clone(), doc! { "_id": { "$nin": taken.clone() } });
            if in_process {
                // The next candidate, then the update applied to it only if it
                // still matches (a concurrent claimer may have taken it).
                let mut options = FindOptions::default();
                options.sort = Some(sort.clone());
                options.limit = Some(1);
                options.max_time = Some(self.ctx.config.operation_timeout);
                let next = self
                    .find_docs(f.clone(), options)
                    .await
                    .map_err(|e| error::map(&self.what_all("claim"), e))?;
                let Some(id) = next.into_iter().next().and_then(|mut d| d.remove("_id")) else {
                    break;
                };
                taken.push(id.clone());
                let applied = self
                    .update_in_process(and(f, doc! { "_id": id }), &checked, "claim")
                    .await?;
                out.extend(applied.docs);
                continue;
            }
            let d = self
                .find_one_and_update(f, native.clone(), Some(sort.clone()))
                .await
                .map_err(|e| error::map_update(&self.what_all("claim"), e))?;
            let Some(mut d) = d else { break };
            taken.push(d.remove("_id").unwrap_or(Bson::Null));
            out.push(from_stored(d));
        }
        Ok(out)
    }
}
