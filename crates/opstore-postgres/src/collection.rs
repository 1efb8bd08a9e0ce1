//! The `Collection` port on an entity table.

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use opstore_domain::check::Checked;
use opstore_domain::schema::check_key;
use opstore_domain::{
    Agg, Collection, FieldType, Filter, Isolation, Page, Query, Result, Schema, StoreError,
    StoredDoc, Update, UpdateCount, UpdateOp, Upserted, Value, eval,
};
use sqlx::Row;
use sqlx::postgres::PgValueFormat;

use crate::config::MAX_DOCUMENT_BYTES;
use crate::error::{Ctx, map};
use crate::schema::{column, quote};
use crate::translate::{Bind, Dialect, Sql, Translator};

mod copy;
mod in_process;
use crate::exec::{self, Exec, Pooled};

/// One entity table, on the pool or inside a transaction.
pub(crate) struct PgCollection {
    schema: &'static Schema,
    exec: Exec,
    dialect: Dialect,
    table: String,
    key_col: String,
}

impl PgCollection {
    pub(crate) fn new(schema: &'static Schema, exec: Exec, dialect: Dialect) -> Self {
        PgCollection {
            schema,
            exec,
            dialect,
            table: quote(schema.name()),
            key_col: quote(schema.key()),
        }
    }

    fn ctx<'a>(&'a self, op: &'a str) -> Ctx<'a> {
        Ctx::new(op, self.schema.name()).schema(self.schema)
    }

    fn tr<'s>(&self, sql: &'s mut Sql) -> Translator<'s> {
        Translator {
            schema: self.schema,
            dialect: self.dialect,
            sql,
        }
    }

    /// True for rows whose TTL has not run out (always true without a TTL).
    /// Expiry is judged by the database clock.
    fn live(&self) -> String {
        let Some(ttl) = self.schema.ttl() else {
            return "true".to_owned();
        };
        let expr = self.ttl_expr();
        format!(
            "({expr} IS NULL OR {expr} > now() - interval '{} microseconds')",
            ttl.after.as_micros()
        )
    }

    fn expired(&self) -> String {
        format!("NOT {}", self.live())
    }

    fn ttl_expr(&self) -> String {
        let Some(ttl) = self.schema.ttl() else {
            return "NULL".to_owned();
        };
        if column(self.schema, &ttl.field).is_some() {
            return quote(&ttl.field);
        }
        let segs: Vec<&str> = ttl.field.split('.').collect();
        let mut text = String::from("doc");
        for (i, seg) in segs.iter().enumerate() {
            text.push_str(if i + 1 == segs.len() {
                " ->> '"
            } else {
                " -> '"
            });
            text.push_str(seg);
            text.push('\'');
        }
        format!("opstore_ts({text})")
    }

    /// Deletes every expired document; returns how many.
    pub(crate) async fn delete_expired(&self) -> Result<u64> {
        if self.schema.ttl().is_none() {
            return Ok(0);
        }
        let mut sql = Sql::new();
        sql.push(&format!(
            "DELETE FROM {} WHERE {}",
            self.table,
            self.expired()
        ));
        self.exec.execute(self.ctx("purge_expired"), sql).await
    }

    fn key_of<'d>(&self, doc: &'d Value) -> &'d str {
        eval::get_path(doc, self.schema.key())
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// Validates a document and returns its JSON text.
    fn document_text(&self, doc: &Value) -> Result<String> {
        self.schema.check_document(doc)?;
        let text = serde_json::to_string(doc).map_err(|e| {
            StoreError::Validation(format!(
                "document for `{}` cannot be encoded: {e}",
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

    fn check_key(&self, key: &str) -> Result<()> {
        check_key(self.schema.name(), key)
    }

    /// `WITH gone AS (DELETE expired rows with these keys) ` for TTL tables, so a
    /// key whose document expired can be written again.
    fn purge_expired_keys(&self, sql: &mut Sql, keys: Vec<String>) -> String {
        if self.schema.ttl().is_none() {
            return String::new();
        }
        let p = sql.bind(Bind::TextArr(keys));
        format!(
            "WITH gone AS (DELETE FROM {} WHERE {} = ANY({p}) AND {}) ",
            self.table,
            self.key_col,
            self.expired()
        )
    }

    fn where_clause(&self, sql: &mut Sql, filter: &Checked<Filter>) -> Result<String> {
        let f = self.tr(sql).filter(filter)?;
        Ok(format!("({f}) AND {}", self.live()))
    }

    fn select_sql(&self, query: &Checked<Query>, with_total: bool) -> Result<Sql> {
        let mut sql = Sql::new();
        let filter = self.schema.check_filter(&query.filter)?;
        let w = self.where_clause(&mut sql, &filter)?;
        let order = self.tr(&mut sql).order_by(&query.sort)?;
        let total = if with_total {
            ", count(*) OVER () AS total"
        } else {
            ""
        };
        sql.push(&format!(
            "SELECT doc{total} FROM {} WHERE {w} ORDER BY {order}",
            self.table
        ));
        push_limit(&mut sql, query.skip, query.limit);
        Ok(sql)
    }

    async fn fetch_docs(&self, op: &str, sql: Sql) -> Result<Vec<Value>> {
        let rows = self.exec.fetch_all(self.ctx(op), sql).await?;
        rows.iter().map(|r| decode_doc(r, 0)).collect()
    }

    /// Like `fetch_docs`, keeping each document's JSON text for typed reads.
    async fn fetch_stored(&self, op: &str, sql: Sql) -> Result<Vec<StoredDoc>> {
        let rows = self.exec.fetch_all(self.ctx(op), sql).await?;
        rows.iter().map(|r| decode_text(r, 0)).collect()
    }

    /// The document an upsert creates: the key plus `set`, `set_on_insert`,
    /// `inc` and `push` applied to nothing.
    fn upsert_document(&self, key: &str, update: &Checked<Update>) -> Value {
        let mut doc = Value::Object(Default::default());
        eval::set_path(&mut doc, self.schema.key(), Value::String(key.to_owned()));
        eval::apply_update(&mut doc, update, true);
        for field in self.schema.fields() {
            if let (FieldType::Set(_), Some(Value::Array(items))) =
                (field.ty(), eval::get_path(&doc, field.path()))
            {
                let mut items = items.clone();
                eval::dedup_array(&mut items);
                eval::set_path(&mut doc, field.path(), Value::Array(items));
            }
        }
        doc
    }
}

/// LIMIT and OFFSET as literals: they are integers formatted here (no caller
/// text), and literal values let the planner pick a top-N plan.
fn push_limit(sql: &mut Sql, skip: u64, limit: u64) {
    if limit > 0 {
        sql.push(&format!(" LIMIT {}", limit.min(i64::MAX as u64)));
    }
    if skip > 0 {
        sql.push(&format!(" OFFSET {}", skip.min(i64::MAX as u64)));
    }
}

fn decode_doc(row: &sqlx::postgres::PgRow, idx: usize) -> Result<Value> {
    row.try_get::<Value, _>(idx)
        .map_err(|e| StoreError::backend("decoding a stored document", e))
}

/// A `jsonb` column's JSON text, undecoded: the binary format is a version
/// byte (1) followed by the text.
fn decode_text(row: &sqlx::postgres::PgRow, idx: usize) -> Result<StoredDoc> {
    let failed = |e| StoreError::backend("decoding a stored document", e);
    let raw = row.try_get_raw(idx).map_err(|e| failed(e.into()))?;
    let bytes = raw.as_bytes().map_err(failed)?;
    let json = match (raw.format(), bytes.split_first()) {
        (PgValueFormat::Text, _) => bytes,
        (PgValueFormat::Binary, Some((1, text))) => text,
        (PgValueFormat::Binary, _) => {
            return Err(failed("unsupported jsonb format version".into()));
        }
    };
    let text = std::str::from_utf8(json).map_err(|e| failed(e.into()))?;
    Ok(StoredDoc::Json(text.to_owned()))
}

fn decode_u64(row: &sqlx::postgres::PgRow, idx: usize) -> Result<u64> {
    let n: i64 = row
        .try_get(idx)
        .map_err(|e| StoreError::backend("decoding a count", e))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

#[async_trait]
impl Collection for PgCollection {
    fn schema(&self) -> &'static Schema {
        self.schema
    }

    async fn insert(&self, doc: Value) -> Result<()> {
        let text = self.document_text(&doc)?;
        let key = self.key_of(&doc).to_owned();
        let mut sql = Sql::new();
        let with = self.purge_expired_keys(&mut sql, vec![key.clone()]);
        let d = sql.bind(Bind::Text(text));
        sql.push(&format!(
            "{with}INSERT INTO {} (doc) VALUES ({d}::jsonb)",
            self.table
        ));
        self.exec.execute(self.ctx("insert").key(&key), sql).await?;
        Ok(())
    }

    async fn insert_many(&self, docs: Vec<Value>) -> Result<u64> {
        if docs.is_empty() {
            return Ok(0);
        }
        if let (Exec::Pool(pooled), None) = (&self.exec, self.schema.ttl()) {
            return self.copy_many(pooled, &docs).await;
        }
        let texts = docs
            .iter()
            .map(|d| self.document_text(d))
            .collect::<Result<Vec<_>>>()?;
        let mut sql = Sql::new();
        let keys = docs.iter().map(|d| self.key_of(d).to_owned()).collect();
        let with = self.purge_expired_keys(&mut sql, keys);
        let d = sql.bind(Bind::TextArr(texts));
        sql.push(&format!(
            "{with}INSERT INTO {} (doc) SELECT d::jsonb FROM unnest({d}::text[]) AS d",
            self.table
        ));
        self.exec.execute(self.ctx("insert_many"), sql).await
    }

    async fn get(&self, key: &str) -> Result<Option<Value>> {
        self.check_key(key)?;
        let mut sql = Sql::new();
        let k = sql.bind(Bind::Text(key.to_owned()));
        sql.push(&format!(
            "SELECT doc FROM {} WHERE {} = {k} AND {}",
            self.table,
            self.key_col,
            self.live()
        ));
        let row = self
            .exec
            .fetch_optional(self.ctx("get").key(key), sql)
            .await?;
        row.map(|r| decode_doc(&r, 0)).transpose()
    }

    async fn get_for_update(&self, key: &str) -> Result<Option<Value>> {
        self.check_key(key)?;
        let mut sql = Sql::new();
        let k = sql.bind(Bind::Text(key.to_owned()));
        sql.push(&format!(
            "SELECT doc FROM {} WHERE {} = {k} AND {} FOR UPDATE",
            self.table,
            self.key_col,
            self.live()
        ));
        let row = self
            .exec
            .fetch_optional(self.ctx("get_for_update").key(key), sql)
            .await?;
        row.map(|r| decode_doc(&r, 0)).transpose()
    }

    async fn find(&self, query: &Query) -> Result<Vec<Value>> {
        let docs = self.find_stored(query).await?;
        docs.into_iter().map(StoredDoc::into_tree).collect()
    }

    async fn find_stored(&self, query: &Query) -> Result<Vec<StoredDoc>> {
        let query = self.schema.check_query(query)?;
        let sql = self.select_sql(&query, false)?;
        self.fetch_stored("find", sql).await
    }

    async fn find_page(&self, query: &Query) -> Result<Page<Value>> {
        let query = self.schema.check_query(query)?;
        let sql = self.select_sql(&query, true)?;
        let rows = self.exec.fetch_all(self.ctx("find_page"), sql).await?;
        let total = match rows.first() {
            Some(r) => decode_u64(r, 1)?,
            None if query.skip == 0 => 0,
            None => self.count(&query.filter).await?,
        };
        let items = rows
            .iter()
            .map(|r| decode_doc(r, 0))
            .collect::<Result<Vec<_>>>()?;
        Ok(Page { items, total })
    }

    async fn count(&self, filter: &Filter) -> Result<u64> {
        let filter = self.schema.check_filter(filter)?;
        let mut sql = Sql::new();
        let w = self.where_clause(&mut sql, &filter)?;
        sql.push(&format!("SELECT count(*) FROM {} WHERE {w}", self.table));
        let row = self.exec.fetch_one(self.ctx("count"), sql).await?;
        decode_u64(&row, 0)
    }

    async fn update_one(&self, key: &str, update: &Update) -> Result<Value> {
        self.check_key(key)?;
        let update = self.schema.check_update(update)?;
        if update.needs_document_check(self.schema) {
            return self
                .atomically("update_one", |c| async move {
                    c.update_one_in_process(key, &update).await
                })
                .await;
        }
        let mut sql = Sql::new();
        let k = sql.bind(Bind::Text(key.to_owned()));
        let new = self.tr(&mut sql).update(&update, "doc", false)?;
        let changed = self.tr(&mut sql).changes(&update, "doc", &new)?;
        let (t, kc, live) = (&self.table, &self.key_col, self.live());
        sql.push(&format!(
            "WITH cur AS (SELECT doc AS old FROM {t} WHERE {kc} = {k} AND {live} FOR UPDATE), \
             upd AS (UPDATE {t} SET doc = {new} WHERE {kc} = {k} AND EXISTS (SELECT 1 FROM cur) \
                 AND {changed} RETURNING doc) \
             SELECT cur.old, (SELECT doc FROM upd) FROM cur"
        ));
        let row = self
            .exec
            .fetch_optional(self.ctx("update_one").key(key), sql)
            .await
            .map_err(|e| self.name_overflow(e, &update))?;
        let Some(row) = row else {
            return Err(StoreError::NotFound(format!(
                "update_one `{key}` in `{}`",
                self.schema.name()
            )));
        };
        let new: Option<Value> = row
            .try_get(1)
            .map_err(|e| StoreError::backend("decoding a document", e))?;
        match new {
            Some(doc) => Ok(doc),
            None => decode_doc(&row, 0),
        }
    }

    async fn update_many(&self, filter: &Filter, update: &Update) -> Result<UpdateCount> {
        let filter = self.schema.check_filter(filter)?;
        let update = self.schema.check_update(update)?;
        if update.needs_document_check(self.schema) {
            return self
                .atomically("update_many", |c| async move {
                    c.update_many_in_process(&filter, &update).await
                })
                .await;
        }
        let mut sql = Sql::new();
        let w = self.where_clause(&mut sql, &filter)?;
        let new = self.tr(&mut sql).update(&update, "doc", false)?;
        let t = &self.table;
        if eval::removes_a_matched_field(&filter, &update) {
            // Every matched document changes, so one scan counts both.
            sql.push(&format!(
                "WITH upd AS (UPDATE {t} SET doc = {new} WHERE {w} RETURNING 1) \
                 SELECT count(*), count(*) FROM upd"
            ));
        } else {
            let changed = self.tr(&mut sql).changes(&update, "doc", &new)?;
            sql.push(&format!(
                "WITH upd AS (UPDATE {t} SET doc = {new} WHERE {w} AND {changed} RETURNING 1) \
                 SELECT (SELECT count(*) FROM {t} WHERE {w}), (SELECT count(*) FROM upd)"
            ));
        }
        let row = self
            .exec
            .fetch_one(self.ctx("update_many"), sql)
            .await
            .map_err(|e| self.name_overflow(e, &update))?;
        let modified = decode_u64(&row, 1)?;
        let matched = decode_u64(&row, 0)?.max(modified);
        Ok(UpdateCount { matched, modified })
    }

    async fn upsert(&self, key: &str, update: &Update) -> Result<Upserted<Value>> {
        self.check_key(key)?;
        let update = self.schema.check_update(update)?;
        if update.needs_document_check(self.schema) {
            return self
                .atomically("upsert", |c| async move {
                    c.upsert_in_process(key, &update).await
                })
                .await;
        }
        let created = self.upsert_document(key, &update);
        let text = match self.document_text(&created) {
            Ok(text) => text,
            // The document could not be created, but an existing one may still be updated.
            Err(invalid) => {
                return match self.update_one(key, &update).await {
                    Ok(document) => Ok(Upserted {
                        inserted: false,
                        document,
                    }),
                    Err(e) if e.is_not_found() => Err(invalid),
                    Err(e) => Err(e),
                };
            }
        };
        let mut sql = Sql::new();
        let with = self.purge_expired_keys(&mut sql, vec![key.to_owned()]);
        let d = sql.bind(Bind::Text(text));
        let new = self.tr(&mut sql).update(&update, "t.doc", false)?;
        sql.push(&format!(
            "{with}INSERT INTO {} AS t (doc) VALUES ({d}::jsonb) ON CONFLICT ({}) DO UPDATE SET doc = {new} \
             WHERE {new} IS DISTINCT FROM t.doc RETURNING doc, (xmax::text = '0') AS inserted",
            self.table, self.key_col
        ));
        let row = self
            .exec
            .fetch_optional(self.ctx("upsert").key(key), sql)
            .await
            .map_err(|e| self.name_overflow(e, &update))?;
        match row {
            Some(row) => {
                let inserted: bool = row
                    .try_get(1)
                    .map_err(|e| StoreError::backend("decoding upsert", e))?;
                Ok(Upserted {
                    inserted,
                    document: decode_doc(&row, 0)?,
                })
            }
            // The existing document was already in the requested state.
            None => match self.get(key).await? {
                Some(document) => Ok(Upserted {
                    inserted: false,
                    document,
                }),
                None => Err(StoreError::Conflict(format!(
                    "upsert `{key}` in `{}`: the document was deleted concurrently",
                    self.schema.name()
                ))),
            },
        }
    }

    async fn replace(&self, doc: Value) -> Result<()> {
        let text = self.document_text(&doc)?;
        let key = self.key_of(&doc).to_owned();
        let mut sql = Sql::new();
        let d = sql.bind(Bind::Text(text));
        let k = sql.bind(Bind::Text(key.clone()));
        // The hint tells the change-feed trigger this is a replace, not an update.
        sql.push(&format!(
            "UPDATE {} SET doc = {d}::jsonb FROM (SELECT set_config('opstore.op', 'replace', true)) AS hint \
             WHERE {} = {k} AND {}",
            self.table,
            self.key_col,
            self.live()
        ));
        let n = self
            .exec
            .execute(self.ctx("replace").key(&key), sql)
            .await?;
        if n == 0 {
            return Err(StoreError::NotFound(format!(
                "replace `{key}` in `{}`",
                self.schema.name()
            )));
        }
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        self.check_key(key)?;
        let mut sql = Sql::new();
        let k = sql.bind(Bind::Text(key.to_owned()));
        sql.push(&format!(
            "DELETE FROM {} WHERE {} = {k} RETURNING {}",
            self.table,
            self.key_col,
            self.live()
        ));
        let row = self
            .exec
            .fetch_optional(self.ctx("delete").key(key), sql)
            .await?;
        match row {
            Some(r) => r
                .try_get::<bool, _>(0)
                .map_err(|e| StoreError::backend("decoding delete", e)),
            None => Ok(false),
        }
    }

    async fn delete_many(&self, filter: &Filter) -> Result<u64> {
        let filter = self.schema.check_filter(filter)?;
        let mut sql = Sql::new();
        let w = self.where_clause(&mut sql, &filter)?;
        sql.push(&format!("DELETE FROM {} WHERE {w}", self.table));
        self.exec.execute(self.ctx("delete_many"), sql).await
    }

    async fn count_by(&self, filter: &Filter, path: &str) -> Result<Vec<(Value, u64)>> {
        let filter = self.schema.check_filter(filter)?;
        let field = self.schema.check_agg_field(path, None)?;
        let mut sql = Sql::new();
        let w = self.where_clause(&mut sql, &filter)?;
        let v = self.tr(&mut sql).value_expr(&field);
        let order = value_order(field.field_type());
        sql.push(&format!(
            "SELECT v, count(*) FROM (SELECT coalesce({v}, 'null'::jsonb) AS v FROM {} WHERE {w}) s \
             GROUP BY v ORDER BY {order} NULLS FIRST",
            self.table
        ));
        let rows = self.exec.fetch_all(self.ctx("count_by"), sql).await?;
        rows.iter()
            .map(|r| Ok((decode_doc(r, 0)?, decode_u64(r, 1)?)))
            .collect()
    }

    async fn aggregate(&self, filter: &Filter, path: &str, agg: Agg) -> Result<Value> {
        let filter = self.schema.check_filter(filter)?;
        let field = self.schema.check_agg_field(path, Some(agg))?;
        let ty = field.field_type();
        let mut sql = Sql::new();
        let w = self.where_clause(&mut sql, &filter)?;
        let v = self.tr(&mut sql).value_expr(&field);
        let inner = format!(
            "SELECT {v} AS v, {} AS k FROM {} WHERE {w}",
            self.key_col, self.table
        );
        match agg {
            Agg::Min | Agg::Max => {
                let dir = if agg == Agg::Min { "ASC" } else { "DESC" };
                let order = value_order(ty);
                sql.push(&format!(
                    "SELECT v FROM ({inner}) s WHERE coalesce(jsonb_typeof(v), 'null') <> 'null' ORDER BY {order} {dir}, k LIMIT 1"
                ));
                let row = self.exec.fetch_optional(self.ctx("aggregate"), sql).await?;
                row.map(|r| decode_doc(&r, 0))
                    .transpose()
                    .map(|v| v.unwrap_or(Value::Null))
            }
            Agg::Sum if ty == FieldType::Int => {
                sql.push(&format!(
                    "SELECT coalesce(sum((v #>> '{{}}')::numeric), 0)::text FROM ({inner}) s WHERE jsonb_typeof(v) = 'number'"
                ));
                let row = self.exec.fetch_one(self.ctx("aggregate"), sql).await?;
                let text: String = row
                    .try_get(0)
                    .map_err(|e| StoreError::backend("decoding a sum", e))?;
                Ok(match text.parse::<i64>() {
                    Ok(i) => Value::from(i),
                    Err(_) => text
                        .parse::<f64>()
                        .ok()
                        .and_then(serde_json::Number::from_f64)
                        .map_or(Value::Null, Value::Number),
                })
            }
            Agg::Sum => {
                // Float sums are folded here in key order, so rounding matches the
                // reference evaluator bit for bit.
                sql.push(&format!(
                    "SELECT v FROM ({inner}) s WHERE jsonb_typeof(v) = 'number' ORDER BY k"
                ));
                let values = self.fetch_docs("aggregate", sql).await?;
                Ok(values
                    .iter()
                    .fold(eval::aggregate_start(Agg::Sum), |acc, v| {
                        eval::fold_aggregate(Agg::Sum, acc, Some(v))
                    }))
            }
        }
    }

    async fn claim(&self, query: &Query, update: &Update) -> Result<Vec<Value>> {
        let docs = self.claim_stored(query, update).await?;
        docs.into_iter().map(StoredDoc::into_tree).collect()
    }

    async fn claim_stored(&self, query: &Query, update: &Update) -> Result<Vec<StoredDoc>> {
        let query = self.schema.check_query(query)?;
        let update = self.schema.check_update(update)?;
        if update.needs_document_check(self.schema) {
            let docs = self
                .atomically("claim", |c| async move {
                    c.claim_in_process(&query, &update).await
                })
                .await?;
            return Ok(docs.into_iter().map(StoredDoc::Tree).collect());
        }
        let mut sql = Sql::new();
        let filter = self.schema.check_filter(&query.filter)?;
        let w = self.where_clause(&mut sql, &filter)?;
        let order = self.tr(&mut sql).order_by(&query.sort)?;
        let new = self.tr(&mut sql).update(&update, "doc", false)?;
        let (t, kc) = (&self.table, &self.key_col);
        let mut pick = Sql {
            text: String::new(),
            binds: std::mem::take(&mut sql.binds),
        };
        pick.push(&format!("SELECT {kc} FROM {t} WHERE {w} ORDER BY {order}"));
        push_limit(&mut pick, query.skip, query.limit);
        let pick_text = std::mem::take(&mut pick.text);
        let mut sql = Sql {
            text: String::new(),
            binds: pick.binds,
        };
        sql.push(&format!(
            "WITH c AS MATERIALIZED ({pick_text} FOR UPDATE SKIP LOCKED), \
             n AS (SELECT {kc} AS claimed, row_number() OVER () AS rn FROM c), \
             u AS (UPDATE {t} SET doc = {new} FROM n WHERE {kc} = n.claimed RETURNING doc, n.rn) \
             SELECT doc FROM u ORDER BY rn"
        ));
        self.fetch_stored("claim", sql)
            .await
            .map_err(|e| self.name_overflow(e, &update))
    }
}

/// Orders grouped JSON values `v` of a scalar type like the typed column would.
fn value_order(ty: FieldType) -> &'static str {
    match ty {
        FieldType::Int | FieldType::Float => "(v #>> '{}')::numeric",
        FieldType::Bool => "(v #>> '{}')::boolean",
        _ => "(v #>> '{}') COLLATE \"C\"",
    }
}
