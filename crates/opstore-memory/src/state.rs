//! One collection's committed or transaction-local state, and every operation on
//! it. Pure in-memory code: callers hold the locks.

mod index;

use std::sync::Arc;

use opstore_domain::check::{AggField, Checked};
use opstore_domain::eval::{self, get_path, index_key};
use opstore_domain::schema::check_key;
use opstore_domain::{
    Agg, ChangeOp, FieldType, Filter, Page, Query, Result, Schema, StoreError, Timestamp, Update,
    UpdateCount, Upserted, Value,
};

use index::{HashMap, HashSet, Index, same_index_value};

/// A change to publish on the feed once its write is committed.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    pub op: ChangeOp,
    pub key: Arc<str>,
    pub doc: Option<Arc<Value>>,
}

/// Documents of one collection with secondary indexes on declared indexed fields.
///
/// A key is allocated once per document and shared by the document map, the
/// indexes and the change feed.
#[derive(Debug, Clone)]
pub(crate) struct CollState {
    pub schema: &'static Schema,
    /// The collection name, shared by every change published.
    pub name: Arc<str>,
    docs: HashMap<Arc<str>, Arc<Value>>,
    indexes: Vec<Index>,
}

impl CollState {
    pub fn new(schema: &'static Schema) -> Self {
        let indexes = schema
            .indexed_fields()
            .map(|f| Index::new(f.path()))
            .collect();
        CollState {
            schema,
            name: Arc::from(schema.name()),
            docs: HashMap::default(),
            indexes,
        }
    }

    fn index(&self, path: &str) -> Option<&Index> {
        self.indexes.iter().find(|ix| ix.path == path)
    }

    /// The stored key equal to `key`, shared, or a new one.
    fn shared_key(&self, key: &str) -> Arc<str> {
        match self.docs.get_key_value(key) {
            Some((k, _)) => Arc::clone(k),
            None => Arc::from(key),
        }
    }

    fn name(&self) -> &str {
        self.schema.name()
    }

    fn expired(&self, doc: &Value, now: Timestamp) -> bool {
        let Some(ttl) = self.schema.ttl() else {
            return false;
        };
        get_path(doc, &ttl.field)
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<Timestamp>().ok())
            .is_some_and(|at| at.add(ttl.after) <= now)
    }

    /// Drops expired documents so they free their keys and unique values.
    pub fn purge_expired(&mut self, now: Timestamp) -> u64 {
        if self.schema.ttl().is_none() {
            return 0;
        }
        let dead: Vec<Arc<str>> = self
            .docs
            .iter()
            .filter(|(_, d)| self.expired(d, now))
            .map(|(k, _)| Arc::clone(k))
            .collect();
        for key in &dead {
            self.remove(key);
        }
        dead.len() as u64
    }

    fn put(&mut self, key: Arc<str>, doc: Arc<Value>) {
        if let Some(old) = self.docs.get(&key).cloned() {
            self.unindex(&key, &old);
        }
        self.put_new(key, doc);
    }

    /// Stores a document under a key that holds none.
    fn put_new(&mut self, key: Arc<str>, doc: Arc<Value>) {
        for ix in &mut self.indexes {
            if let Some(v) = get_path(&doc, ix.path) {
                ix.add(v, &key);
            }
        }
        self.docs.insert(key, doc);
    }

    fn remove(&mut self, key: &str) -> Option<Arc<Value>> {
        let old = self.docs.remove(key)?;
        self.unindex(key, &old);
        Some(old)
    }

    fn unindex(&mut self, key: &str, doc: &Value) {
        for ix in &mut self.indexes {
            let Some(v) = get_path(doc, ix.path) else {
                continue;
            };
            ix.remove(v, key);
        }
    }

    /// Fails with `Conflict` when `doc` would duplicate a unique value held by
    /// another key (`pending` holds documents of the same batch).
    fn check_unique(&self, key: &str, doc: &Value, pending: &[&Value]) -> Result<()> {
        for field in self
            .schema
            .fields()
            .iter()
            .filter(|f| f.is_unique() && f.path() != self.schema.key())
        {
            let Some(v) = get_path(doc, field.path()) else {
                continue;
            };
            let taken = self
                .index(field.path())
                .and_then(|ix| ix.keys(v))
                .is_some_and(|keys| keys.iter().any(|k| &**k != key));
            let in_batch = pending
                .iter()
                .any(|p| get_path(p, field.path()).is_some_and(|w| same_index_value(w, v)));
            if taken || in_batch {
                return Err(StoreError::Conflict(format!(
                    "`{}` already has a document with {} = {v} (inserting `{key}`)",
                    self.name(),
                    field.path()
                )));
            }
        }
        Ok(())
    }

    fn key_of<'a>(&self, doc: &'a Value) -> &'a str {
        doc.get(self.schema.key())
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    pub fn get(&self, key: &str, now: Timestamp) -> Option<Arc<Value>> {
        self.docs
            .get(key)
            .filter(|d| !self.expired(d, now))
            .cloned()
    }

    pub fn insert(&mut self, doc: Value, now: Timestamp) -> Result<Change> {
        self.purge_expired(now);
        self.schema.check_document(&doc)?;
        let key = self.key_of(&doc);
        if self.docs.contains_key(key) {
            return Err(StoreError::Conflict(format!(
                "`{}` already has a document with key `{key}`",
                self.name()
            )));
        }
        self.check_unique(key, &doc, &[])?;
        let key: Arc<str> = Arc::from(key);
        let doc = Arc::new(doc);
        self.put_new(Arc::clone(&key), Arc::clone(&doc));
        Ok(Change {
            op: ChangeOp::Insert,
            key,
            doc: Some(doc),
        })
    }

    pub fn insert_many(&mut self, docs: Vec<Value>, now: Timestamp) -> Result<Vec<Change>> {
        self.purge_expired(now);
        for (i, doc) in docs.iter().enumerate() {
            self.schema.check_document(doc)?;
            let key = self.key_of(doc);
            let dup_in_batch = docs[..i].iter().any(|d| self.key_of(d) == key);
            if dup_in_batch || self.docs.contains_key(key) {
                return Err(StoreError::Conflict(format!(
                    "`{}` already has a document with key `{key}` (batch of {}, nothing inserted)",
                    self.name(),
                    docs.len()
                )));
            }
            let earlier: Vec<&Value> = docs[..i].iter().collect();
            self.check_unique(key, doc, &earlier)?;
        }
        let mut changes = Vec::with_capacity(docs.len());
        for doc in docs {
            let key: Arc<str> = Arc::from(self.key_of(&doc));
            let doc = Arc::new(doc);
            self.put(Arc::clone(&key), Arc::clone(&doc));
            changes.push(Change {
                op: ChangeOp::Insert,
                key,
                doc: Some(doc),
            });
        }
        Ok(changes)
    }

    /// Candidate documents: an index lookup when the filter pins an indexed field
    /// or the key, else every document. `ordered` puts index hits in key order,
    /// for callers whose effects follow the order they visit documents in.
    fn candidates(&self, filter: &Filter, ordered: bool) -> Vec<&Arc<Value>> {
        for (path, value) in filter.required_equalities() {
            if path == self.schema.key() {
                return value
                    .as_str()
                    .and_then(|k| self.docs.get(k))
                    .into_iter()
                    .collect();
            }
            if let Some(ix) = self.index(path) {
                let Some(keys) = ix.keys(value) else {
                    return Vec::new();
                };
                let mut keys: Vec<&Arc<str>> = keys.iter().collect();
                if ordered {
                    keys.sort_unstable();
                }
                return keys.into_iter().filter_map(|k| self.docs.get(k)).collect();
            }
        }
        self.docs.values().collect()
    }

    fn matching(&self, filter: &Filter, now: Timestamp, ordered: bool) -> Vec<Arc<Value>> {
        self.candidates(filter, ordered)
            .into_iter()
            .filter(|d| eval::matches(filter, d) && !self.expired(d, now))
            .cloned()
            .collect()
    }

    fn sorted(&self, query: &Query, now: Timestamp) -> Vec<Arc<Value>> {
        // The sort below is total (the key breaks ties), so any visiting order works.
        let mut docs = self.matching(&query.filter, now, false);
        let mut sort = query.sort.clone();
        sort.extend(self.schema.default_sort().iter().cloned());
        docs.sort_by(|a, b| eval::compare_docs(a, b, &sort, self.schema.key()));
        docs
    }

    pub fn find(&self, query: &Checked<Query>, now: Timestamp) -> Vec<Arc<Value>> {
        window(self.sorted(query, now), query.skip, query.limit)
    }

    pub fn find_page(&self, query: &Checked<Query>, now: Timestamp) -> Page<Arc<Value>> {
        let docs = self.sorted(query, now);
        let total = docs.len() as u64;
        Page {
            items: window(docs, query.skip, query.limit),
            total,
        }
    }

    pub fn count(&self, filter: &Checked<Filter>, now: Timestamp) -> u64 {
        self.candidates(filter, false)
            .into_iter()
            .filter(|d| eval::matches(filter, d) && !self.expired(d, now))
            .count() as u64
    }

    /// Applies an update to a stored document; returns the new document and
    /// whether it changed. Uniqueness is left to the caller, which knows what
    /// else the same write changes.
    fn apply(
        &self,
        old: &Value,
        update: &Checked<Update>,
        inserting: bool,
    ) -> Result<(Value, bool)> {
        self.schema.updated(old, update, inserting)
    }

    /// Fails with `Conflict` when the state after `writes` (new documents under
    /// existing keys) would hold a unique value twice. Checked before anything
    /// is written, so a conflicting batch writes nothing, and against the whole
    /// post-state, so values the batch moves away from are free for it.
    fn check_unique_writes(&self, writes: &[(Arc<str>, Value)]) -> Result<()> {
        let written: HashSet<&str> = writes.iter().map(|(k, _)| &**k).collect();
        for field in self
            .schema
            .fields()
            .iter()
            .filter(|f| f.is_unique() && f.path() != self.schema.key())
        {
            let mut batch = Index::new(field.path());
            for (key, doc) in writes {
                let Some(v) = get_path(doc, field.path()) else {
                    continue;
                };
                let held_elsewhere = self
                    .index(field.path())
                    .and_then(|ix| ix.keys(v))
                    .is_some_and(|keys| keys.iter().any(|k| !written.contains(&**k)));
                let in_batch = batch.keys(v).is_some_and(|keys| !keys.is_empty());
                if held_elsewhere || in_batch {
                    return Err(StoreError::Conflict(format!(
                        "`{}` already has a document with {} = {v} (updating `{key}`, \
                         batch of {}, nothing written)",
                        self.name(),
                        field.path(),
                        writes.len()
                    )));
                }
                batch.add(v, key);
            }
        }
        Ok(())
    }

    pub fn update_one(
        &mut self,
        key: &str,
        update: &Checked<Update>,
        now: Timestamp,
    ) -> Result<(Value, Option<Change>)> {
        self.purge_expired(now);
        let Some(old) = self.docs.get(key).cloned() else {
            return Err(StoreError::NotFound(format!(
                "update of `{key}` in `{}`: no such document",
                self.name()
            )));
        };
        let (doc, changed) = self.apply(&old, update, false)?;
        if !changed {
            return Ok((doc, None));
        }
        let key = self.shared_key(key);
        self.check_unique(&key, &doc, &[])?;
        let arc = Arc::new(doc.clone());
        self.put(Arc::clone(&key), Arc::clone(&arc));
        Ok((
            doc,
            Some(Change {
                op: ChangeOp::Update,
                key,
                doc: Some(arc),
            }),
        ))
    }

    pub fn update_many(
        &mut self,
        filter: &Checked<Filter>,
        update: &Checked<Update>,
        now: Timestamp,
    ) -> Result<(UpdateCount, Vec<Change>)> {
        self.purge_expired(now);
        let targets = self.matching(filter, now, true);
        // Compute every new document and check the post-state first, so a
        // failure writes nothing.
        let mut writes = Vec::new();
        for old in &targets {
            let (doc, changed) = self.apply(old, update, false)?;
            if changed {
                writes.push((self.shared_key(self.key_of(old)), doc));
            }
        }
        self.check_unique_writes(&writes)?;
        let counts = UpdateCount {
            matched: targets.len() as u64,
            modified: writes.len() as u64,
        };
        Ok((counts, self.put_writes(writes)))
    }

    /// Stores checked new documents under existing keys.
    fn put_writes(&mut self, writes: Vec<(Arc<str>, Value)>) -> Vec<Change> {
        let mut changes = Vec::with_capacity(writes.len());
        for (key, doc) in writes {
            let arc = Arc::new(doc);
            self.put(Arc::clone(&key), Arc::clone(&arc));
            changes.push(Change {
                op: ChangeOp::Update,
                key,
                doc: Some(arc),
            });
        }
        changes
    }

    pub fn upsert(
        &mut self,
        key: &str,
        update: &Checked<Update>,
        now: Timestamp,
    ) -> Result<(Upserted<Value>, Option<Change>)> {
        self.purge_expired(now);
        check_key(self.name(), key)?;
        if self.docs.contains_key(key) {
            let (document, change) = self.update_one(key, update, now)?;
            return Ok((
                Upserted {
                    inserted: false,
                    document,
                },
                change,
            ));
        }
        let mut seed = serde_json::Map::new();
        seed.insert(self.schema.key().to_owned(), Value::String(key.to_owned()));
        let (doc, _) = self
            .apply(&Value::Object(seed), update, true)
            .map_err(|e| match e {
                StoreError::Validation(m) => {
                    StoreError::Validation(format!("upsert would insert an invalid document: {m}"))
                }
                other => other,
            })?;
        let change = self.insert(doc.clone(), now)?;
        Ok((
            Upserted {
                inserted: true,
                document: doc,
            },
            Some(change),
        ))
    }

    pub fn replace(&mut self, doc: Value, now: Timestamp) -> Result<Change> {
        self.purge_expired(now);
        self.schema.check_document(&doc)?;
        let key = self.key_of(&doc);
        if !self.docs.contains_key(key) {
            return Err(StoreError::NotFound(format!(
                "replace of `{key}` in `{}`: no such document",
                self.name()
            )));
        }
        self.check_unique(key, &doc, &[])?;
        let key = self.shared_key(key);
        let doc = Arc::new(doc);
        self.put(Arc::clone(&key), Arc::clone(&doc));
        Ok(Change {
            op: ChangeOp::Replace,
            key,
            doc: Some(doc),
        })
    }

    pub fn delete(&mut self, key: &str, now: Timestamp) -> Option<Change> {
        self.purge_expired(now);
        let key = self.shared_key(key);
        self.remove(&key).map(|_| Change {
            op: ChangeOp::Delete,
            key,
            doc: None,
        })
    }

    pub fn delete_many(&mut self, filter: &Checked<Filter>, now: Timestamp) -> Vec<Change> {
        self.purge_expired(now);
        let keys: Vec<Arc<str>> = self
            .matching(filter, now, true)
            .iter()
            .map(|d| self.shared_key(self.key_of(d)))
            .collect();
        keys.into_iter()
            .filter_map(|k| self.delete(&k, now))
            .collect()
    }

    pub fn count_by(
        &self,
        filter: &Checked<Filter>,
        field: &Checked<AggField>,
        now: Timestamp,
    ) -> Vec<(Value, u64)> {
        let mut groups: HashMap<String, (Value, u64)> = HashMap::default();
        for doc in self.matching(filter, now, true) {
            let v = get_path(&doc, field.path()).cloned().unwrap_or(Value::Null);
            groups.entry(index_key(&v)).or_insert((v, 0)).1 += 1;
        }
        let mut out: Vec<(Value, u64)> = groups.into_values().collect();
        out.sort_by(|a, b| {
            eval::sort_cmp(
                Some(&a.0).filter(|v| !v.is_null()),
                Some(&b.0).filter(|v| !v.is_null()),
            )
        });
        out
    }

    pub fn aggregate(
        &self,
        filter: &Checked<Filter>,
        field: &Checked<AggField>,
        agg: Agg,
        now: Timestamp,
    ) -> Value {
        let mut acc = eval::aggregate_start(agg);
        if agg == Agg::Sum && field.field_type() == FieldType::Float {
            acc = Value::from(0.0);
        }
        for doc in self.matching(filter, now, true) {
            acc = eval::fold_aggregate(agg, acc, get_path(&doc, field.path()));
        }
        acc
    }

    pub fn claim(
        &mut self,
        query: &Checked<Query>,
        update: &Checked<Update>,
        now: Timestamp,
    ) -> Result<(Vec<Value>, Vec<Change>)> {
        self.purge_expired(now);
        let targets = self.find(query, now);
        // Every claimed document is computed and checked before any is written.
        let mut out = Vec::with_capacity(targets.len());
        let mut writes = Vec::new();
        for old in &targets {
            let (doc, changed) = self.apply(old, update, false)?;
            if changed {
                writes.push((self.shared_key(self.key_of(old)), doc.clone()));
            }
            out.push(doc);
        }
        self.check_unique_writes(&writes)?;
        Ok((out, self.put_writes(writes)))
    }
}

/// Skip and limit (0 = all) over a sorted list.
fn window(docs: Vec<Arc<Value>>, skip: u64, limit: u64) -> Vec<Arc<Value>> {
    let skip = usize::try_from(skip).unwrap_or(usize::MAX);
    let limit = if limit == 0 {
        usize::MAX
    } else {
        usize::try_from(limit).unwrap_or(usize::MAX)
    };
    docs.into_iter().skip(skip).take(limit).collect()
}
