//! The [`Collection`] port, outside or inside a transaction.

use std::sync::Arc;

use async_trait::async_trait;
use opstore_domain::{
    Agg, Collection, Filter, Page, Query, Result, Schema, StoreError, Timestamp, Update,
    UpdateCount, Upserted, Value,
};

use crate::error::poisoned;
use crate::state::{Change, CollState};
use crate::store::Shared;
use crate::tx::TxInner;

pub(crate) struct MemCollection {
    shared: Arc<Shared>,
    schema: &'static Schema,
    tx: Option<Arc<TxInner>>,
}

fn unwrap_docs(docs: Vec<Arc<Value>>) -> Vec<Value> {
    docs.into_iter().map(Arc::unwrap_or_clone).collect()
}

fn finished() -> StoreError {
    StoreError::Validation(
        "the transaction has already finished; use the collection of a live transaction".into(),
    )
}

impl MemCollection {
    pub fn new(shared: Arc<Shared>, schema: &'static Schema, tx: Option<Arc<TxInner>>) -> Self {
        MemCollection { shared, schema, tx }
    }

    fn now(&self) -> Timestamp {
        self.shared.clock.now()
    }

    /// Runs a read against the transaction's copy if it has one, else committed data.
    fn read<R>(&self, f: impl FnOnce(&CollState) -> R) -> Result<R> {
        self.shared.check_open()?;
        if let Some(tx) = &self.tx {
            let state = tx.state.lock().map_err(|_| poisoned())?;
            if !state.open {
                return Err(finished());
            }
            if let Some(coll) = state.colls.get(self.schema.name()) {
                return Ok(f(coll));
            }
        }
        let data = self.shared.data.read().map_err(|_| poisoned())?;
        match data.get(self.schema.name()) {
            Some(coll) => Ok(f(coll)),
            None => Ok(f(&CollState::new(self.schema))),
        }
    }

    /// Runs a write: on the transaction's private copy, or on committed data
    /// under the write gate, publishing its changes.
    async fn write<R>(
        &self,
        f: impl FnOnce(&mut CollState) -> Result<(R, Vec<Change>)>,
    ) -> Result<R> {
        self.shared.check_open()?;
        let name = self.schema.name();
        if let Some(tx) = &self.tx {
            let mut state = tx.state.lock().map_err(|_| poisoned())?;
            if !state.open {
                return Err(finished());
            }
            if !state.colls.contains_key(name) {
                let data = self.shared.data.read().map_err(|_| poisoned())?;
                let copy = data
                    .get(name)
                    .cloned()
                    .unwrap_or_else(|| CollState::new(self.schema));
                drop(data);
                state.colls.insert(name.to_owned(), copy);
            }
            let coll = state.colls.get_mut(name).ok_or_else(poisoned)?;
            let collection = Arc::clone(&coll.name);
            let (out, changes) = f(coll)?;
            if !changes.is_empty() && self.schema.has_change_feed() {
                state.changes.push((collection, changes));
            }
            return Ok(out);
        }
        let _gate = self.shared.gate.lock().await;
        let mut data = self.shared.data.write().map_err(|_| poisoned())?;
        if !data.contains_key(name) {
            data.insert(name.to_owned(), CollState::new(self.schema));
        }
        let coll = data.get_mut(name).ok_or_else(poisoned)?;
        let collection = Arc::clone(&coll.name);
        let (out, changes) = f(coll)?;
        drop(data);
        // A collection kept out of the feed must not take retained history
        // from the collections that are watched.
        if self.schema.has_change_feed() {
            self.shared.feed.publish(&collection, changes);
        }
        Ok(out)
    }
}

#[async_trait]
impl Collection for MemCollection {
    fn schema(&self) -> &'static Schema {
        self.schema
    }

    async fn insert(&self, doc: Value) -> Result<()> {
        let now = self.now();
        self.write(|c| c.insert(doc, now).map(|ch| ((), vec![ch])))
            .await
    }

    async fn insert_many(&self, docs: Vec<Value>) -> Result<u64> {
        if docs.is_empty() {
            return Ok(0);
        }
        let now = self.now();
        self.write(|c| c.insert_many(docs, now).map(|chs| (chs.len() as u64, chs)))
            .await
    }

    async fn get(&self, key: &str) -> Result<Option<Value>> {
        let now = self.now();
        Ok(self.read(|c| c.get(key, now))?.map(Arc::unwrap_or_clone))
    }

    async fn get_shared(&self, key: &str) -> Result<Option<Arc<Value>>> {
        let now = self.now();
        self.read(|c| c.get(key, now))
    }

    async fn get_for_update(&self, key: &str) -> Result<Option<Value>> {
        // Inside a transaction nothing else writes until it ends, so a plain read
        // already holds the row.
        self.get(key).await
    }

    async fn find(&self, query: &Query) -> Result<Vec<Value>> {
        let query = self.schema.check_query(query)?;
        let now = self.now();
        Ok(unwrap_docs(self.read(|c| c.find(&query, now))?))
    }

    async fn find_page(&self, query: &Query) -> Result<Page<Value>> {
        let query = self.schema.check_query(query)?;
        let now = self.now();
        let page = self.read(|c| c.find_page(&query, now))?;
        Ok(Page {
            items: unwrap_docs(page.items),
            total: page.total,
        })
    }

    async fn count(&self, filter: &Filter) -> Result<u64> {
        let filter = self.schema.check_filter(filter)?;
        let now = self.now();
        self.read(|c| c.count(&filter, now))
    }

    async fn update_one(&self, key: &str, update: &Update) -> Result<Value> {
        let update = self.schema.check_update(update)?;
        let now = self.now();
        self.write(|c| {
            c.update_one(key, &update, now)
                .map(|(doc, ch)| (doc, ch.into_iter().collect()))
        })
        .await
    }

    async fn update_many(&self, filter: &Filter, update: &Update) -> Result<UpdateCount> {
        let filter = self.schema.check_filter(filter)?;
        let update = self.schema.check_update(update)?;
        let now = self.now();
        self.write(|c| c.update_many(&filter, &update, now)).await
    }

    async fn upsert(&self, key: &str, update: &Update) -> Result<Upserted<Value>> {
        let update = self.schema.check_update(update)?;
        let now = self.now();
        self.write(|c| {
            c.upsert(key, &update, now)
                .map(|(up, ch)| (up, ch.into_iter().collect()))
        })
        .await
    }

    async fn replace(&self, doc: Value) -> Result<()> {
        let now = self.now();
        self.write(|c| c.replace(doc, now).map(|ch| ((), vec![ch])))
            .await
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        let now = self.now();
        self.write(|c| {
            let ch = c.delete(key, now);
            Ok((ch.is_some(), ch.into_iter().collect()))
        })
        .await
    }

    async fn delete_many(&self, filter: &Filter) -> Result<u64> {
        let filter = self.schema.check_filter(filter)?;
        let now = self.now();
        self.write(|c| {
            let chs = c.delete_many(&filter, now);
            Ok((chs.len() as u64, chs))
        })
        .await
    }

    async fn count_by(&self, filter: &Filter, path: &str) -> Result<Vec<(Value, u64)>> {
        let filter = self.schema.check_filter(filter)?;
        let field = self.schema.check_agg_field(path, None)?;
        let now = self.now();
        self.read(|c| c.count_by(&filter, &field, now))
    }

    async fn aggregate(&self, filter: &Filter, path: &str, agg: Agg) -> Result<Value> {
        let filter = self.schema.check_filter(filter)?;
        let field = self.schema.check_agg_field(path, Some(agg))?;
        let now = self.now();
        self.read(|c| c.aggregate(&filter, &field, agg, now))
    }

    async fn claim(&self, query: &Query, update: &Update) -> Result<Vec<Value>> {
        let query = self.schema.check_query(query)?;
        let update = self.schema.check_update(update)?;
        let now = self.now();
        self.write(|c| c.claim(&query, &update, now)).await
    }
}
