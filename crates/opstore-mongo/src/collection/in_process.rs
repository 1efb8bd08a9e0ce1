//! Updates a native MongoDB update may not apply as the reference does, run in
//! process: read, apply the reference rules, check, and write back guarded on
//! the document read.

// The parent's imports, its `exec!` and its `MongoCollection`, whose methods this
// file adds.
use super::*;

/// What an update applied in process matched, changed and left.
pub(super) struct Applied {
    pub(super) matched: u64,
    pub(super) modified: u64,
    /// The documents after the update (changed or not), in key order.
    pub(super) docs: Vec<Value>,
}

/// One document's update, computed and checked, before it is written.
struct Planned {
    key: String,
    /// The stored document the update was computed from.
    old: Document,
    /// The document to store, or `None` when the update changes nothing.
    new: Option<Document>,
    /// The updated document as the entity's JSON.
    doc: Value,
}

impl MongoCollection {
    /// Applies `update` to the documents `filter` matches the way the reference
    /// does ([`Schema::apply_update_to`]): inside the bound transaction, or one
    /// of its own when the server has transactions, so the documents read are
    /// the ones written. Every new document is computed and checked before the
    /// first write, so a refused update writes nothing.
    pub(super) async fn update_in_process(
        &self,
        filter: Document,
        update: &Checked<Update>,
        op: &str,
    ) -> Result<Applied> {
        if self.tx.is_some() || !self.ctx.replica_set {
            return self.apply_in_process(filter, update, op).await;
        }
        let what = self.what_all(op);
        crate::tx::atomically(&self.ctx, self.schema, &what, |c| {
            let filter = filter.clone();
            async move { c.apply_in_process(filter, update, op).await }
        })
        .await
    }

    async fn apply_in_process(
        &self,
        filter: Document,
        update: &Checked<Update>,
        op: &str,
    ) -> Result<Applied> {
        let mut options = FindOptions::default();
        options.sort = Some(doc! { "_id": 1 });
        options.max_time = Some(self.ctx.config.operation_timeout);
        let found = self
            .find_docs(filter.clone(), options)
            .await
            .map_err(|e| error::map(&self.what_all(op), e))?;
        let mut planned = Vec::with_capacity(found.len());
        for old in found {
            planned.push(self.plan_write(old, update, op)?);
        }
        let mut applied = Applied {
            matched: planned.len() as u64,
            modified: 0,
            docs: Vec::with_capacity(planned.len()),
        };
        for plan in planned {
            match self.write_planned(&filter, plan, update, op).await? {
                Some((doc, changed)) => {
                    applied.modified += u64::from(changed);
                    applied.docs.push(doc);
                }
                None => applied.matched -= 1,
            }
        }
        Ok(applied)
    }

    /// The reference update of one stored document, checked against the schema
    /// and encoded for storage, but not written.
    fn plan_write(&self, old: Document, update: &Checked<Update>, op: &str) -> Result<Planned> {
        let key = old.get_str("_id").unwrap_or_default().to_owned();
        let mut doc = from_stored(old.clone());
        let changed = self.schema.apply_update_to(&mut doc, update, false)?;
        let new = if changed {
            Some(to_stored(self.schema, &key, &doc, op)?)
        } else {
            None
        };
        Ok(Planned { key, old, new, doc })
    }

    /// Writes a planned document, guarded on the stored document it was computed
    /// from. When that changed meanwhile (possible only without a transaction),
    /// the update is applied again to what is stored, if it still matches.
    /// Returns the document and whether it changed, or `None` when it no longer
    /// matches.
    async fn write_planned(
        &self,
        filter: &Document,
        mut plan: Planned,
        update: &Checked<Update>,
        op: &str,
    ) -> Result<Option<(Value, bool)>> {
        for _ in 0..5 {
            let Some(new) = &plan.new else {
                return Ok(Some((plan.doc, false)));
            };
            let Some(write) = translate::write_back(&plan.old, new) else {
                return Ok(Some((plan.doc, false)));
            };
            let guard = doc! {
                "_id": &plan.key,
                "$expr": { "$eq": ["$$ROOT", { "$literal": plan.old.clone() }] },
            };
            let r = exec!(self, self.coll.update_one(guard.clone(), write.clone()))
                .map_err(|e| error::map_update(&self.what(op, &plan.key), e))?;
            if r.matched_count > 0 {
                return Ok(Some((from_stored(new.clone()), true)));
            }
            let current = and(filter.clone(), doc! { "_id": &plan.key });
            let again = exec!(self, self.coll.find_one(current.clone()))
                .map_err(|e| error::map(&self.what(op, &plan.key), e))?;
            let Some(again) = again else { return Ok(None) };
            plan = self.plan_write(again, update, op)?;
        }
        Err(StoreError::Conflict(format!(
            "{}: the document kept changing under the update",
            self.what(op, "")
        )))
    }
}
