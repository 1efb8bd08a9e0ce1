//! The [`Collection`] port: reads in SQL where the query model translates
//! exactly, the reference evaluator for the rest; writes as read, compute,
//! write inside one write transaction (see `write`).

mod write;

use async_trait::async_trait;
use opstore_domain::check::Checked;
use opstore_domain::eval::{self, get_path};
use opstore_domain::{
    Agg, Collection, FieldType, Filter, Page, Query, Result, Schema, StoreError, Timestamp, Update,
    UpdateCount, Upserted, Value,
};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use crate::config::MAX_DOCUMENT_BYTES;
use crate::error::{Ctx, decode};
use crate::exec::{Exec, Writer};
use crate::schema::{EXPIRES, quote};
use crate::translate::{Bind, Sql, Translator};

/// One entity's table, outside or inside a transaction.
pub(crate) struct SqliteCollection {
    schema: &'static Schema,
    exec: Exec,
    table: String,
    key_col: String,
}

/// Where a read runs: a plain read, or inside a write in progress.
enum On<'a> {
    Read(&'a Exec),
    Write(&'a mut Writer),
}

impl On<'_> {
    async fn fetch_all(&mut self, ctx: Ctx<'_>, sql: Sql) -> Result<Vec<SqliteRow>> {
        match self {
            On::Read(exec) => exec.fetch_all(ctx, sql).await,
            On::Write(w) => w.fetch_all(ctx, sql).await,
        }
    }
}

/// Which documents a read wants and in which order.
struct Select<'q> {
    filter: &'q Filter,
    /// Sort keys; `None` when order does not matter (then key order).
    query: Option<&'q Checked<Query>>,
    skip: u64,
    limit: u64,
    /// Whether the caller needs the number matching (a page's total).
    total: bool,
}

impl SqliteCollection {
    pub(crate) fn new(schema: &'static Schema, exec: Exec) -> Self {
        SqliteCollection {
            schema,
            table: quote(schema.name()),
            key_col: quote(schema.key()),
            exec,
        }
    }

    fn ctx<'a>(&'a self, op: &'a str) -> Ctx<'a> {
        Ctx::new(op, self.schema.name()).schema(self.schema)
    }

    /// A condition hiding documents whose TTL ran out.
    fn visible(&self, sql: &mut Sql) -> String {
        if self.schema.ttl().is_none() {
            return "1".to_owned();
        }
        let now = sql.now(self.exec.clock());
        format!("({EXPIRES} IS NULL OR {EXPIRES} > {now})")
    }

    /// When a document expires, in microseconds since the epoch.
    fn expires_of(&self, doc: &Value) -> Bind {
        let Some(ttl) = self.schema.ttl() else {
            return Bind::Null;
        };
        get_path(doc, &ttl.field)
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<Timestamp>().ok())
            .map_or(Bind::Null, |at| Bind::Int(at.add(ttl.after).as_micros()))
    }

    fn encode(&self, doc: &Value) -> Result<String> {
        let text = serde_json::to_string(doc).map_err(|e| {
            StoreError::Validation(format!(
                "cannot encode a document of `{}`: {e}",
                self.schema.name()
            ))
        })?;
        if text.len() > MAX_DOCUMENT_BYTES {
            return Err(StoreError::Validation(format!(
                "document `{}` in `{}` is {} bytes; at most {MAX_DOCUMENT_BYTES} allowed",
                self.key_of(doc),
                self.schema.name(),
                text.len()
            )));
        }
        Ok(text)
    }

    fn key_of<'d>(&self, doc: &'d Value) -> &'d str {
        doc.get(self.schema.key())
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    fn decode_doc(&self, row: &SqliteRow) -> Result<Value> {
        let text: &str = row.try_get(0).map_err(|e| decode("a document", e))?;
        serde_json::from_str(text).map_err(|e| {
            StoreError::backend(
                format!("stored document in `{}` is not JSON", self.schema.name()),
                e,
            )
        })
    }

    /// The document with this key, unless expired.
    async fn by_key(&self, on: &mut On<'_>, op: &str, key: &str) -> Result<Option<Value>> {
        let mut sql = Sql::new();
        let k = sql.bind(Bind::Text(key.to_owned()));
        let vis = self.visible(&mut sql);
        sql.push(&format!(
            "SELECT doc FROM {} WHERE {} = {k} AND {vis}",
            self.table, self.key_col
        ));
        let rows = on.fetch_all(self.ctx(op).key(key), sql).await?;
        rows.first().map(|r| self.decode_doc(r)).transpose()
    }

    /// Matching documents in order and windowed, and the number matching.
    async fn select(
        &self,
        on: &mut On<'_>,
        op: &str,
        sel: Select<'_>,
    ) -> Result<(Vec<Value>, u64)> {
        let filter = self.schema.check_filter(sel.filter)?;
        let mut sql = Sql::new();
        let vis = self.visible(&mut sql);
        let plan = Translator {
            schema: self.schema,
            sql: &mut sql,
        }
        .plan(&filter);
        let mut order = None;
        if plan.residual.is_none() {
            let mut scratch = sql.clone();
            order = match sel.query {
                Some(q) => Translator {
                    schema: self.schema,
                    sql: &mut scratch,
                }
                .order_by(q),
                None => Some(format!("{} ASC", self.key_col)),
            };
            if order.is_some() {
                sql = scratch;
            }
        }
        let base = format!("FROM {} WHERE {vis} AND {}", self.table, plan.sql_where);
        if let Some(order) = order {
            // SQL decides membership and order: only the window travels.
            let count_sql = Sql {
                text: format!("SELECT count(*) {base}"),
                binds: sql.binds.clone(),
            };
            let limit = if sel.limit == 0 {
                -1
            } else {
                i64::try_from(sel.limit).unwrap_or(i64::MAX)
            };
            let l = sql.bind(Bind::Int(limit));
            let o = sql.bind(Bind::Int(i64::try_from(sel.skip).unwrap_or(i64::MAX)));
            sql.text = format!("SELECT doc {base} ORDER BY {order} LIMIT {l} OFFSET {o}");
            let rows = on.fetch_all(self.ctx(op), sql).await?;
            let docs = rows
                .iter()
                .map(|r| self.decode_doc(r))
                .collect::<Result<Vec<_>>>()?;
            let whole = sel.skip == 0 && (sel.limit == 0 || (docs.len() as u64) < sel.limit);
            let total = if whole || !sel.total {
                docs.len() as u64
            } else {
                let rows = on.fetch_all(self.ctx(op), count_sql).await?;
                let n: i64 = match rows.first() {
                    Some(r) => r.try_get(0).map_err(|e| decode("a count", e))?,
                    None => 0,
                };
                u64::try_from(n).unwrap_or(0)
            };
            return Ok((docs, total));
        }
        sql.text = format!("SELECT doc {base}");
        let rows = on.fetch_all(self.ctx(op), sql).await?;
        let mut docs = Vec::with_capacity(rows.len());
        for row in &rows {
            let doc = self.decode_doc(row)?;
            if plan
                .residual
                .as_ref()
                .is_none_or(|f| eval::matches(f, &doc))
            {
                docs.push(doc);
            }
        }
        let mut sort = sel.query.map(|q| q.sort.clone()).unwrap_or_default();
        if sel.query.is_some() {
            sort.extend(self.schema.default_sort().iter().cloned());
        }
        let key = self.schema.key();
        docs.sort_by(|a, b| eval::compare_docs(a, b, &sort, key));
        let total = docs.len() as u64;
        Ok((window(docs, sel.skip, sel.limit), total))
    }

    /// Every matching document, in key order.
    async fn matching(&self, on: &mut On<'_>, op: &str, filter: &Filter) -> Result<Vec<Value>> {
        let sel = Select {
            filter,
            query: None,
            skip: 0,
            limit: 0,
            total: false,
        };
        Ok(self.select(on, op, sel).await?.0)
    }

    async fn find_docs(
        &self,
        on: &mut On<'_>,
        op: &str,
        query: &Query,
        total: bool,
    ) -> Result<(Vec<Value>, u64)> {
        let checked = self.schema.check_query(query)?;
        let sel = Select {
            filter: &query.filter,
            query: Some(&checked),
            skip: query.skip,
            limit: query.limit,
            total,
        };
        self.select(on, op, sel).await
    }

    /// The number of matching documents: counted by SQL when it decides the
    /// whole filter, else over the rows the evaluator accepts.
    async fn count_in(&self, on: &mut On<'_>, filter: &Filter) -> Result<u64> {
        let checked = self.schema.check_filter(filter)?;
        let mut sql = Sql::new();
        let vis = self.visible(&mut sql);
        let plan = Translator {
            schema: self.schema,
            sql: &mut sql,
        }
        .plan(&checked);
        if plan.residual.is_some() {
            return Ok(self.matching(on, "count", filter).await?.len() as u64);
        }
        sql.text = format!(
            "SELECT count(*) FROM {} WHERE {vis} AND {}",
            self.table, plan.sql_where
        );
        let rows = on.fetch_all(self.ctx("count"), sql).await?;
        let n: i64 = match rows.first() {
            Some(r) => r.try_get(0).map_err(|e| decode("a count", e))?,
            None => 0,
        };
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn start_write(&self, op: &str) -> Result<Writer> {
        self.exec.writer(self.ctx(op)).await
    }
}

/// Skip and limit (0 = all) over a sorted list.
fn window(docs: Vec<Value>, skip: u64, limit: u64) -> Vec<Value> {
    let skip = usize::try_from(skip).unwrap_or(usize::MAX);
    let limit = if limit == 0 {
        usize::MAX
    } else {
        usize::try_from(limit).unwrap_or(usize::MAX)
    };
    docs.into_iter().skip(skip).take(limit).collect()
}

#[async_trait]
impl Collection for SqliteCollection {
    fn schema(&self) -> &'static Schema {
        self.schema
    }

    async fn insert(&self, doc: Value) -> Result<()> {
        self.schema.check_document(&doc)?;
        let text = self.encode(&doc)?;
        let mut w = self.start_write("insert").await?;
        let r = self.insert_in(&mut w, &doc, text).await;
        w.finish(self.ctx("insert"), r).await
    }

    async fn insert_many(&self, docs: Vec<Value>) -> Result<u64> {
        if docs.is_empty() {
            return Ok(0);
        }
        let mut texts = Vec::with_capacity(docs.len());
        for doc in &docs {
            self.schema.check_document(doc)?;
            texts.push(self.encode(doc)?);
        }
        let mut w = self.start_write("insert_many").await?;
        let r = self.insert_many_in(&mut w, &docs, texts).await;
        w.finish(self.ctx("insert_many"), r).await
    }

    async fn get(&self, key: &str) -> Result<Option<Value>> {
        self.by_key(&mut On::Read(&self.exec), "get", key).await
    }

    async fn get_for_update(&self, key: &str) -> Result<Option<Value>> {
        // A transaction holds the database's write lock from its start, so a
        // plain read inside it already keeps the row from other writers.
        self.by_key(&mut On::Read(&self.exec), "get_for_update", key)
            .await
    }

    async fn find(&self, query: &Query) -> Result<Vec<Value>> {
        Ok(self
            .find_docs(&mut On::Read(&self.exec), "find", query, false)
            .await?
            .0)
    }

    async fn find_page(&self, query: &Query) -> Result<Page<Value>> {
        let (items, total) = self
            .find_docs(&mut On::Read(&self.exec), "find_page", query, true)
            .await?;
        Ok(Page { items, total })
    }

    async fn count(&self, filter: &Filter) -> Result<u64> {
        self.count_in(&mut On::Read(&self.exec), filter).await
    }

    async fn update_one(&self, key: &str, update: &Update) -> Result<Value> {
        let update = self.schema.check_update(update)?;
        let mut w = self.start_write("update_one").await?;
        let r = self.update_one_in(&mut w, key, &update).await;
        w.finish(self.ctx("update_one").key(key), r).await
    }

    async fn update_many(&self, filter: &Filter, update: &Update) -> Result<UpdateCount> {
        self.schema.check_filter(filter)?;
        let update = self.schema.check_update(update)?;
        let mut w = self.start_write("update_many").await?;
        let r = self.update_many_in(&mut w, filter, &update).await;
        w.finish(self.ctx("update_many"), r).await
    }

    async fn upsert(&self, key: &str, update: &Update) -> Result<Upserted<Value>> {
        opstore_domain::schema::check_key(self.schema.name(), key)?;
        let update = self.schema.check_update(update)?;
        let mut w = self.start_write("upsert").await?;
        let r = self.upsert_in(&mut w, key, &update).await;
        w.finish(self.ctx("upsert").key(key), r).await
    }

    async fn replace(&self, doc: Value) -> Result<()> {
        self.schema.check_document(&doc)?;
        let text = self.encode(&doc)?;
        let mut w = self.start_write("replace").await?;
        let r = self.replace_in(&mut w, &doc, text).await;
        w.finish(self.ctx("replace"), r).await
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        let mut w = self.start_write("delete").await?;
        let r = self.delete_in(&mut w, key).await;
        w.finish(self.ctx("delete").key(key), r).await
    }

    async fn delete_many(&self, filter: &Filter) -> Result<u64> {
        self.schema.check_filter(filter)?;
        let mut w = self.start_write("delete_many").await?;
        let r = self.delete_many_in(&mut w, filter).await;
        w.finish(self.ctx("delete_many"), r).await
    }

    async fn count_by(&self, filter: &Filter, path: &str) -> Result<Vec<(Value, u64)>> {
        self.schema.check_filter(filter)?;
        let field = self.schema.check_agg_field(path, None)?;
        let docs = self
            .matching(&mut On::Read(&self.exec), "count_by", filter)
            .await?;
        let mut groups: std::collections::HashMap<String, (Value, u64)> =
            std::collections::HashMap::new();
        for doc in &docs {
            let v = get_path(doc, field.path()).cloned().unwrap_or(Value::Null);
            groups.entry(eval::index_key(&v)).or_insert((v, 0)).1 += 1;
        }
        let mut out: Vec<(Value, u64)> = groups.into_values().collect();
        out.sort_by(|a, b| {
            eval::sort_cmp(
                Some(&a.0).filter(|v| !v.is_null()),
                Some(&b.0).filter(|v| !v.is_null()),
            )
        });
        Ok(out)
    }

    async fn aggregate(&self, filter: &Filter, path: &str, agg: Agg) -> Result<Value> {
        self.schema.check_filter(filter)?;
        let field = self.schema.check_agg_field(path, Some(agg))?;
        let docs = self
            .matching(&mut On::Read(&self.exec), "aggregate", filter)
            .await?;
        let mut acc = eval::aggregate_start(agg);
        if agg == Agg::Sum && field.field_type() == FieldType::Float {
            acc = Value::from(0.0);
        }
        for doc in &docs {
            acc = eval::fold_aggregate(agg, acc, get_path(doc, field.path()));
        }
        Ok(acc)
    }

    async fn claim(&self, query: &Query, update: &Update) -> Result<Vec<Value>> {
        self.schema.check_query(query)?;
        let update = self.schema.check_update(update)?;
        let mut w = self.start_write("claim").await?;
        let r = self.claim_in(&mut w, query, &update).await;
        w.finish(self.ctx("claim"), r).await
    }
}
