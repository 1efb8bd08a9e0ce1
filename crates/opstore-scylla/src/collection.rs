//! The [`Collection`] port on one table: LWT inserts, compare-and-set updates on
//! the `doc` column, planned reads, unique fields through claim tables.

use std::sync::Arc;

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt, stream};
use opstore_domain::eval::{self, get_path, index_key};
use opstore_domain::schema::check_key;
use opstore_domain::{
    Agg, Checked, Collection, FieldType, Filter, Page, Query, Result, Schema, StoreError,
    Timestamp, Update, UpdateCount, Upserted, Value,
};

use crate::codegen::unique_table;
use crate::error::{Op, lwt_conflict};
use crate::exec::Exec;
use crate::planner::{Access, Plan, plan};
use crate::table::{DOC, TableLayout};
use crate::value::CqlValue;

mod unique;

/// Attempts of a compare-and-set loop before giving up with `Conflict`.
const CAS_ATTEMPTS: usize = 64;

/// Waits a random while after a lost compare-and-set, growing with `attempt` up to
/// about 100 ms, so writers contending for one document spread out instead of
/// colliding again at once (each round of an LWT race has one winner).
async fn after_lost_race(attempt: usize) {
    let cap_ms = 1u64 << attempt.min(7);
    let wait = rand::random_range(0..=cap_ms * 1000);
    tokio::time::sleep(std::time::Duration::from_micros(wait)).await;
}

/// A stored document with the exact `doc` text its compare-and-set compares against.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    pub doc: Value,
    pub text: String,
}

/// One entity table.
#[derive(Debug, Clone)]
pub struct ScyllaCollection {
    exec: Exec,
    layout: Arc<TableLayout>,
}

impl ScyllaCollection {
    /// The collection of `schema` in the configured keyspace.
    pub fn new(exec: Exec, schema: &'static Schema) -> Self {
        let layout = Arc::new(TableLayout::new(&exec.config.keyspace, schema));
        ScyllaCollection { exec, layout }
    }

    fn name(&self) -> &str {
        self.layout.name()
    }

    fn op<'a>(&'a self, name: &'a str) -> Op<'a> {
        Op::new(name, self.layout.name())
    }

    fn now(&self) -> Timestamp {
        Timestamp::now()
    }

    fn key_of<'d>(&self, doc: &'d Value) -> &'d str {
        doc.get(self.layout.schema.key())
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// Reads the live document with `key`.
    pub(crate) async fn load(&self, key: &str) -> Result<Option<Stored>> {
        check_key(self.name(), key)?;
        let stmt = self.exec.stmt(self.layout.select_by_key_cql());
        let rows = self
            .exec
            .run(
                self.op("get").key(key),
                &stmt,
                &[CqlValue::Text(key.to_owned())],
            )
            .await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let doc = self.layout.document(row)?;
        if self.layout.expired(&doc, self.now()) {
            return Ok(None);
        }
        let text = row.text(DOC).map_or_else(|| doc.to_string(), str::to_owned);
        Ok(Some(Stored { doc, text }))
    }

    /// Every live document matching `filter`, read through `plan`, unsorted.
    async fn matching(&self, op: &str, filter: &Filter) -> Result<Vec<Stored>> {
        let plan: Plan = plan(&self.layout, filter, self.exec.config.scan_policy, op)?;
        let limit = match plan.access {
            Access::Scan { max_rows, .. } => max_rows,
            _ => self.exec.config.max_served_rows,
        };
        let now = self.now();
        let mut out = Vec::new();
        let mut read: u64 = 0;
        let mut seen = std::collections::HashSet::new();
        for (cql, values) in plan.statements(&self.layout) {
            let stmt = self.exec.stmt(cql);
            let mut state = None;
            loop {
                let page = self.exec.page(self.op(op), &stmt, &values, state).await?;
                read += page.rows.len() as u64;
                if read > limit {
                    return Err(self.too_many(op, &plan, limit));
                }
                for row in &page.rows {
                    let doc = self.layout.document(row)?;
                    if self.layout.expired(&doc, now) || !eval::matches(filter, &doc) {
                        continue;
                    }
                    if !seen.insert(self.key_of(&doc).to_owned()) {
                        continue;
                    }
                    let text = row.text(DOC).map_or_else(|| doc.to_string(), str::to_owned);
                    out.push(Stored { doc, text });
                }
                state = page.paging_state;
                if state.is_none() {
                    break;
                }
            }
        }
        Ok(out)
    }

    fn too_many(&self, op: &str, plan: &Plan, limit: u64) -> StoreError {
        if plan.is_scan() {
            StoreError::Unsupported(format!(
                "{op} on `{}`: the bounded scan read more than max_rows = {limit} rows; \
                 narrow the filter with an equality on the key or an indexed field, or raise ScanPolicy::Bounded max_rows",
                self.name()
            ))
        } else {
            StoreError::Unsupported(format!(
                "{op} on `{}`: the key or index lookup selects more than {limit} rows, too many to sort \
                 and window in process (capability sort_any_field); use a more selective index or raise max_served_rows",
                self.name()
            ))
        }
    }

    async fn sorted(&self, op: &str, query: &Query) -> Result<Vec<Stored>> {
        let mut docs = self.matching(op, &query.filter).await?;
        let mut sort = query.sort.clone();
        sort.extend(self.layout.schema.default_sort().iter().cloned());
        let key = self.layout.schema.key();
        docs.sort_by(|a, b| eval::compare_docs(&a.doc, &b.doc, &sort, key));
        Ok(docs)
    }

    /// Applies a checked update; returns the new document and whether it changed.
    fn apply(
        &self,
        old: &Value,
        update: &Checked<Update>,
        inserting: bool,
    ) -> Result<(Value, bool)> {
        let (doc, changed) = self.layout.schema.updated(old, update, inserting)?;
        if let Some(col) = self.layout.clustering_changed(old, &doc) {
            if !inserting {
                return Err(StoreError::Validation(format!(
                    "clustering column `{col}` of `{}` is part of the primary key and cannot change; delete and insert instead",
                    self.name()
                )));
            }
        }
        Ok((doc, changed))
    }

    /// Inserts a new document with `INSERT ... IF NOT EXISTS`; an expired row still
    /// present (TTL is whole seconds) is overwritten by compare-and-set.
    async fn insert_doc(&self, doc: &Value, op_name: &str) -> Result<bool> {
        let key = self.key_of(doc).to_owned();
        let op = self.op(op_name).key(&key);
        self.claim_unique(&key, None, doc).await?;
        let now = self.now();
        let ttl = self.layout.ttl_seconds(doc, now);
        let stmt = self.exec.lwt(self.layout.insert_cql(true));
        let values = self.layout.insert_values(doc, "insert", ttl)?;
        let (ok, row) = self.exec.cas(op, &stmt, &values).await?;
        if ok {
            return Ok(true);
        }
        if let Some(row) = row {
            let current = self.layout.document(&row)?;
            if self.layout.expired(&current, now) {
                let text = row
                    .text(DOC)
                    .map_or_else(|| current.to_string(), str::to_owned);
                let stmt = self.exec.lwt(self.layout.update_cas_cql());
                let values = self.layout.update_values(doc, "insert", ttl, &text)?;
                if self.exec.cas(op, &stmt, &values).await?.0 {
                    return Ok(true);
                }
            }
        }
        self.release_unique(&key, doc, None).await?;
        Ok(false)
    }

    /// Compare-and-set of `new` over `old`; `false` when another writer got there first.
    async fn cas_write(
        &self,
        old: &Stored,
        new: &Value,
        op_name: &str,
        last_op: &str,
    ) -> Result<bool> {
        let key = self.key_of(new).to_owned();
        let op = self.op(op_name).key(&key);
        self.claim_unique(&key, Some(&old.doc), new).await?;
        let ttl = self.layout.ttl_seconds(new, self.now());
        let stmt = self.exec.lwt(self.layout.update_cas_cql());
        let values = self.layout.update_values(new, last_op, ttl, &old.text)?;
        let (ok, _) = self.exec.cas(op, &stmt, &values).await?;
        if ok {
            self.release_unique(&key, &old.doc, Some(new)).await?;
        } else {
            self.release_unique(&key, new, Some(&old.doc)).await?;
        }
        Ok(ok)
    }

    async fn cas_delete(&self, old: &Stored, op_name: &str) -> Result<bool> {
        let key = self.key_of(&old.doc).to_owned();
        let stmt = self.exec.lwt(self.layout.delete_cas_cql());
        let mut values = self.layout.pk_values(&old.doc)?;
        values.push(CqlValue::Text(old.text.clone()));
        let (ok, _) = self
            .exec
            .cas(self.op(op_name).key(&key), &stmt, &values)
            .await?;
        if ok {
            self.release_unique(&key, &old.doc, None).await?;
        }
        Ok(ok)
    }

    /// Updates one stored document that matched `filter` (re-reading it when a
    /// concurrent writer changed it). Returns the new document if it still matched
    /// and whether it changed.
    async fn update_stored(
        &self,
        mut current: Stored,
        filter: Option<&Filter>,
        update: &Checked<Update>,
        op_name: &str,
    ) -> Result<Option<(Value, bool)>> {
        let key = self.key_of(&current.doc).to_owned();
        for attempt in 0..CAS_ATTEMPTS {
            let (new, changed) = self.apply(&current.doc, update, false)?;
            if !changed {
                return Ok(Some((new, false)));
            }
            if self.cas_write(&current, &new, op_name, "update").await? {
                return Ok(Some((new, true)));
            }
            after_lost_race(attempt).await;
            match self.load(&key).await? {
                Some(s) if filter.is_none_or(|f| eval::matches(f, &s.doc)) => current = s,
                _ => return Ok(None),
            }
        }
        Err(lwt_conflict(
            self.op(op_name).key(&key),
            "document kept changing under concurrent writers",
        ))
    }
}

fn window<T>(docs: Vec<T>, skip: u64, limit: u64) -> Vec<T> {
    let skip = usize::try_from(skip).unwrap_or(usize::MAX);
    let limit = if limit == 0 {
        usize::MAX
    } else {
        usize::try_from(limit).unwrap_or(usize::MAX)
    };
    docs.into_iter().skip(skip).take(limit).collect()
}

#[async_trait]
impl Collection for ScyllaCollection {
    fn schema(&self) -> &'static Schema {
        self.layout.schema
    }

    async fn insert(&self, doc: Value) -> Result<()> {
        self.layout.schema.check_document(&doc)?;
        let key = self.key_of(&doc).to_owned();
        if self.insert_doc(&doc, "insert").await? {
            Ok(())
        } else {
            Err(StoreError::Conflict(format!(
                "`{}` already has a document with key `{key}`",
                self.name()
            )))
        }
    }

    /// All or none: keys and unique values are checked first (so a duplicate
    /// writes nothing); the rows are then written by concurrent conditional
    /// inserts, and if a concurrent writer takes a key meanwhile, the rows this
    /// call wrote are deleted again before `Conflict` is returned.
    async fn insert_many(&self, docs: Vec<Value>) -> Result<u64> {
        if docs.is_empty() {
            return Ok(0);
        }
        let n = docs.len();
        for (i, doc) in docs.iter().enumerate() {
            self.layout.schema.check_document(doc)?;
            let key = self.key_of(doc);
            if docs[..i].iter().any(|d| self.key_of(d) == key) {
                return Err(StoreError::Conflict(format!(
                    "`{}`: key `{key}` appears twice in a batch of {n}; nothing inserted",
                    self.name()
                )));
            }
            for path in self.unique_fields() {
                let Some(v) = get_path(doc, path) else {
                    continue;
                };
                if docs[..i]
                    .iter()
                    .any(|d| get_path(d, path).is_some_and(|w| index_key(w) == index_key(v)))
                {
                    return Err(StoreError::Conflict(format!(
                        "`{}`: {path} = {v} appears twice in a batch of {n}; nothing inserted",
                        self.name()
                    )));
                }
            }
        }
        let concurrency = self.exec.config.write_concurrency;
        let existing: Vec<Option<String>> = stream::iter(docs.clone())
            .map(|d| {
                let this = self.clone();
                async move {
                    let key = this.key_of(&d).to_owned();
                    Ok::<_, StoreError>(this.load(&key).await?.map(|_| key))
                }
            })
            .buffered(concurrency)
            .try_collect()
            .await?;
        if let Some(key) = existing.into_iter().flatten().next() {
            return Err(StoreError::Conflict(format!(
                "`{}` already has a document with key `{key}` (batch of {n}, nothing inserted)",
                self.name()
            )));
        }
        let outcomes: Vec<Result<bool>> = stream::iter(docs.clone())
            .map(|d| {
                let this = self.clone();
                async move { this.insert_doc(&d, "insert_many").await }
            })
            .buffered(concurrency)
            .collect()
            .await;
        let failed = outcomes.iter().any(|o| !matches!(o, Ok(true)));
        if !failed {
            return Ok(n as u64);
        }
        for (doc, outcome) in docs.iter().zip(&outcomes) {
            if matches!(outcome, Ok(true)) {
                let stored = Stored {
                    doc: doc.clone(),
                    text: doc.to_string(),
                };
                self.cas_delete(&stored, "insert_many rollback").await?;
            }
        }
        for outcome in outcomes {
            outcome?;
        }
        Err(StoreError::Conflict(format!(
            "`{}`: a concurrent writer inserted a key of this batch of {n}; nothing inserted",
            self.name()
        )))
    }

    async fn get(&self, key: &str) -> Result<Option<Value>> {
        Ok(self.load(key).await?.map(|s| s.doc))
    }

    async fn get_for_update(&self, key: &str) -> Result<Option<Value>> {
        // No transactions on this backend, so there is nothing to hold a lock for.
        self.get(key).await
    }

    async fn find(&self, query: &Query) -> Result<Vec<Value>> {
        let query = self.layout.schema.check_query(query)?;
        let docs = self.sorted("find", &query).await?;
        Ok(window(docs, query.skip, query.limit)
            .into_iter()
            .map(|s| s.doc)
            .collect())
    }

    async fn find_page(&self, query: &Query) -> Result<Page<Value>> {
        let query = self.layout.schema.check_query(query)?;
        let docs = self.sorted("find_page", &query).await?;
        let total = docs.len() as u64;
        Ok(Page {
            items: window(docs, query.skip, query.limit)
                .into_iter()
                .map(|s| s.doc)
                .collect(),
            total,
        })
    }

    async fn count(&self, filter: &Filter) -> Result<u64> {
        let filter = self.layout.schema.check_filter(filter)?;
        Ok(self.matching("count", &filter).await?.len() as u64)
    }

    async fn update_one(&self, key: &str, update: &Update) -> Result<Value> {
        let update = self.layout.schema.check_update(update)?;
        let missing = || {
            StoreError::NotFound(format!(
                "update of `{key}` in `{}`: no such document",
                self.name()
            ))
        };
        let current = self.load(key).await?.ok_or_else(missing)?;
        match self
            .update_stored(current, None, &update, "update_one")
            .await?
        {
            Some((doc, _)) => Ok(doc),
            None => Err(missing()),
        }
    }

    async fn update_many(&self, filter: &Filter, update: &Update) -> Result<UpdateCount> {
        let filter = self.layout.schema.check_filter(filter)?;
        let update = self.layout.schema.check_update(update)?;
        let targets = self.matching("update_many", &filter).await?;
        // Validate every new document first so a bad update writes nothing.
        let mut news = Vec::with_capacity(targets.len());
        for t in &targets {
            news.push(self.apply(&t.doc, &update, false)?.0);
        }
        self.check_unique_among(&news)?;
        let mut counts = UpdateCount::default();
        for t in targets {
            if let Some((_, changed)) = self
                .update_stored(t, Some(&filter), &update, "update_many")
                .await?
            {
                counts.matched += 1;
                counts.modified += u64::from(changed);
            }
        }
        Ok(counts)
    }

    async fn upsert(&self, key: &str, update: &Update) -> Result<Upserted<Value>> {
        let update = self.layout.schema.check_update(update)?;
        check_key(self.name(), key)?;
        for _ in 0..CAS_ATTEMPTS {
            if let Some(current) = self.load(key).await? {
                if let Some((document, _)) =
                    self.update_stored(current, None, &update, "upsert").await?
                {
                    return Ok(Upserted {
                        inserted: false,
                        document,
                    });
                }
                continue;
            }
            let mut seed = serde_json::Map::new();
            seed.insert(
                self.layout.schema.key().to_owned(),
                Value::String(key.to_owned()),
            );
            let (doc, _) =
                self.apply(&Value::Object(seed), &update, true)
                    .map_err(|e| match e {
                        StoreError::Validation(m) => StoreError::Validation(format!(
                            "upsert would insert an invalid document: {m}"
                        )),
                        other => other,
                    })?;
            if self.insert_doc(&doc, "upsert").await? {
                return Ok(Upserted {
                    inserted: true,
                    document: doc,
                });
            }
        }
        Err(lwt_conflict(
            self.op("upsert").key(key),
            "document kept changing under concurrent writers",
        ))
    }

    async fn replace(&self, doc: Value) -> Result<()> {
        self.layout.schema.check_document(&doc)?;
        let key = self.key_of(&doc).to_owned();
        for _ in 0..CAS_ATTEMPTS {
            let Some(current) = self.load(&key).await? else {
                return Err(StoreError::NotFound(format!(
                    "replace of `{key}` in `{}`: no such document",
                    self.name()
                )));
            };
            if let Some(col) = self.layout.clustering_changed(&current.doc, &doc) {
                return Err(StoreError::Validation(format!(
                    "clustering column `{col}` of `{}` cannot change in replace",
                    self.name()
                )));
            }
            if self.cas_write(&current, &doc, "replace", "replace").await? {
                return Ok(());
            }
        }
        Err(lwt_conflict(
            self.op("replace").key(&key),
            "document kept changing under concurrent writers",
        ))
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        for _ in 0..CAS_ATTEMPTS {
            let Some(current) = self.load(key).await? else {
                return Ok(false);
            };
            if self.cas_delete(&current, "delete").await? {
                return Ok(true);
            }
        }
        Err(lwt_conflict(
            self.op("delete").key(key),
            "document kept changing under concurrent writers",
        ))
    }

    async fn delete_many(&self, filter: &Filter) -> Result<u64> {
        let filter = self.layout.schema.check_filter(filter)?;
        let targets = self.matching("delete_many", &filter).await?;
        let mut deleted = 0;
        for mut t in targets {
            let key = self.key_of(&t.doc).to_owned();
            for _ in 0..CAS_ATTEMPTS {
                if self.cas_delete(&t, "delete_many").await? {
                    deleted += 1;
                    break;
                }
                match self.load(&key).await? {
                    Some(s) if eval::matches(&filter, &s.doc) => t = s,
                    _ => break,
                }
            }
        }
        Ok(deleted)
    }

    async fn count_by(&self, filter: &Filter, path: &str) -> Result<Vec<(Value, u64)>> {
        let filter = self.layout.schema.check_filter(filter)?;
        let field = self.layout.schema.check_agg_field(path, None)?;
        let path = field.path();
        let mut groups: Vec<(Value, u64)> = Vec::new();
        let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
        for s in self.matching("count_by", &filter).await? {
            let v = get_path(&s.doc, path).cloned().unwrap_or(Value::Null);
            let k = index_key(&v);
            match index.get(&k) {
                Some(&i) => groups[i].1 += 1,
                None => {
                    index.insert(k, groups.len());
                    groups.push((v, 1));
                }
            }
        }
        groups.sort_by(|a, b| {
            eval::sort_cmp(
                Some(&a.0).filter(|v| !v.is_null()),
                Some(&b.0).filter(|v| !v.is_null()),
            )
        });
        Ok(groups)
    }

    async fn aggregate(&self, filter: &Filter, path: &str, agg: Agg) -> Result<Value> {
        let filter = self.layout.schema.check_filter(filter)?;
        let field = self.layout.schema.check_agg_field(path, Some(agg))?;
        let (path, ty) = (field.path(), field.field_type());
        let mut acc = eval::aggregate_start(agg);
        if agg == Agg::Sum && ty == FieldType::Float {
            acc = Value::from(0.0);
        }
        for s in self.matching("aggregate", &filter).await? {
            acc = eval::fold_aggregate(agg, acc, get_path(&s.doc, path));
        }
        Ok(acc)
    }

    /// Each candidate is taken by compare-and-set on its `doc`, so two claimers
    /// never take the same document.
    async fn claim(&self, query: &Query, update: &Update) -> Result<Vec<Value>> {
        let query = self.layout.schema.check_query(query)?;
        let update = self.layout.schema.check_update(update)?;
        let candidates = self.sorted("claim", &query).await?;
        let want = if query.limit == 0 {
            usize::MAX
        } else {
            usize::try_from(query.limit).unwrap_or(usize::MAX)
        };
        let mut out = Vec::new();
        for c in candidates
            .into_iter()
            .skip(usize::try_from(query.skip).unwrap_or(usize::MAX))
        {
            if out.len() >= want {
                break;
            }
            let (new, _) = self.apply(&c.doc, &update, false)?;
            if self.cas_write(&c, &new, "claim", "update").await? {
                out.push(new);
            }
        }
        Ok(out)
    }
}
