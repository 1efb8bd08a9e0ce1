//! Updates a native SQL statement may not apply as the reference does, run in
//! process under row locks in one transaction.

// The parent's imports and its `PgCollection`, whose methods this file adds.
use super::*;

/// Updates a native SQL update may not apply as the reference does (see
/// `Checked::<Update>::needs_document_check`) run in process: the documents are
/// read under row locks, updated by the reference rules, checked against the
/// schema and written back, all in one transaction.
impl PgCollection {
    /// Runs `work` on this collection inside a transaction: the caller's, or one
    /// of its own that commits when `work` succeeds and rolls back otherwise.
    pub(super) async fn atomically<R, F, Fut>(&self, op: &str, work: F) -> Result<R>
    where
        F: FnOnce(PgCollection) -> Fut,
        Fut: Future<Output = Result<R>>,
    {
        let pool = match &self.exec {
            Exec::Tx(_) => {
                let inner = PgCollection::new(self.schema, self.exec.clone(), self.dialect);
                return work(inner).await;
            }
            Exec::Pool(pooled) => pooled,
        };
        let state = exec::begin(pool, Isolation::ReadCommitted, self.ctx(op)).await?;
        let inner = PgCollection::new(self.schema, Exec::Tx(Arc::clone(&state)), self.dialect);
        let out = work(inner).await;
        exec::end(&state, self.ctx(op), out.is_ok()).await?;
        out
    }

    /// The live documents matching `filter`, locked, in key order (the order
    /// concurrent in-process updates lock rows in).
    pub(super) async fn lock_matching(
        &self,
        op: &str,
        filter: &Checked<Filter>,
    ) -> Result<Vec<Value>> {
        let mut sql = Sql::new();
        let w = self.where_clause(&mut sql, filter)?;
        sql.push(&format!(
            "SELECT doc FROM {} WHERE {w} ORDER BY {} FOR UPDATE",
            self.table, self.key_col
        ));
        self.fetch_docs(op, sql).await
    }

    /// The live document under `key`, locked.
    pub(super) async fn lock_key(&self, op: &str, key: &str) -> Result<Option<Value>> {
        let mut sql = Sql::new();
        let k = sql.bind(Bind::Text(key.to_owned()));
        sql.push(&format!(
            "SELECT doc FROM {} WHERE {} = {k} AND {} FOR UPDATE",
            self.table,
            self.key_col,
            self.live()
        ));
        let row = self.exec.fetch_optional(self.ctx(op).key(key), sql).await?;
        row.map(|r| decode_doc(&r, 0)).transpose()
    }

    /// Writes updated documents back over their rows, in one statement.
    pub(super) async fn write_back(&self, op: &str, docs: &[Value]) -> Result<()> {
        if docs.is_empty() {
            return Ok(());
        }
        let texts = docs
            .iter()
            .map(|d| self.document_text(d))
            .collect::<Result<Vec<_>>>()?;
        let keys: Vec<String> = docs.iter().map(|d| self.key_of(d).to_owned()).collect();
        let mut sql = Sql::new();
        let k = sql.bind(Bind::TextArr(keys));
        let d = sql.bind(Bind::TextArr(texts));
        sql.push(&format!(
            "UPDATE {t} SET doc = u.d::jsonb FROM unnest({k}::text[], {d}::text[]) AS u(k, d) \
             WHERE {t}.{kc} = u.k",
            t = self.table,
            kc = self.key_col
        ));
        let ctx = match docs {
            [one] => self.ctx(op).key(self.key_of(one)),
            _ => self.ctx(op),
        };
        self.exec.execute(ctx, sql).await.map(drop)
    }

    pub(super) async fn update_one_in_process(
        &self,
        key: &str,
        update: &Checked<Update>,
    ) -> Result<Value> {
        let Some(mut doc) = self.lock_key("update_one", key).await? else {
            return Err(StoreError::NotFound(format!(
                "update_one `{key}` in `{}`",
                self.schema.name()
            )));
        };
        if self.schema.apply_update_to(&mut doc, update, false)? {
            self.write_back("update_one", std::slice::from_ref(&doc))
                .await?;
        }
        Ok(doc)
    }

    pub(super) async fn update_many_in_process(
        &self,
        filter: &Checked<Filter>,
        update: &Checked<Update>,
    ) -> Result<UpdateCount> {
        let docs = self.lock_matching("update_many", filter).await?;
        let matched = docs.len() as u64;
        let mut writes = Vec::new();
        for mut doc in docs {
            if self.schema.apply_update_to(&mut doc, update, false)? {
                writes.push(doc);
            }
        }
        self.write_back("update_many", &writes).await?;
        Ok(UpdateCount {
            matched,
            modified: writes.len() as u64,
        })
    }

    pub(super) async fn upsert_in_process(
        &self,
        key: &str,
        update: &Checked<Update>,
    ) -> Result<Upserted<Value>> {
        if self.schema.ttl().is_some() {
            // An expired document under the key frees it for the insert below.
            let mut sql = Sql::new();
            let k = sql.bind(Bind::Text(key.to_owned()));
            sql.push(&format!(
                "DELETE FROM {} WHERE {} = {k} AND {}",
                self.table,
                self.key_col,
                self.expired()
            ));
            self.exec.execute(self.ctx("upsert").key(key), sql).await?;
        }
        // A concurrent upsert may insert the key between the read and the
        // insert; the second round then finds and updates its document.
        for _ in 0..2 {
            if let Some(mut document) = self.lock_key("upsert", key).await? {
                if self.schema.apply_update_to(&mut document, update, false)? {
                    self.write_back("upsert", std::slice::from_ref(&document))
                        .await?;
                }
                return Ok(Upserted {
                    inserted: false,
                    document,
                });
            }
            let mut document = Value::Object(Default::default());
            eval::set_path(
                &mut document,
                self.schema.key(),
                Value::String(key.to_owned()),
            );
            self.schema.apply_update_to(&mut document, update, true)?;
            let text = self.document_text(&document)?;
            let mut sql = Sql::new();
            let d = sql.bind(Bind::Text(text));
            sql.push(&format!(
                "INSERT INTO {} (doc) VALUES ({d}::jsonb) ON CONFLICT ({}) DO NOTHING RETURNING doc",
                self.table, self.key_col
            ));
            if let Some(row) = self
                .exec
                .fetch_optional(self.ctx("upsert").key(key), sql)
                .await?
            {
                return Ok(Upserted {
                    inserted: true,
                    document: decode_doc(&row, 0)?,
                });
            }
        }
        Err(StoreError::Conflict(format!(
            "upsert `{key}` in `{}`: the document was inserted and removed concurrently",
            self.schema.name()
        )))
    }

    pub(super) async fn claim_in_process(
        &self,
        query: &Checked<Query>,
        update: &Checked<Update>,
    ) -> Result<Vec<Value>> {
        let mut sql = Sql::new();
        let filter = self.schema.check_filter(&query.filter)?;
        let w = self.where_clause(&mut sql, &filter)?;
        let order = self.tr(&mut sql).order_by(&query.sort)?;
        sql.push(&format!(
            "SELECT doc FROM {} WHERE {w} ORDER BY {order}",
            self.table
        ));
        push_limit(&mut sql, query.skip, query.limit);
        sql.push(" FOR UPDATE SKIP LOCKED");
        let docs = self.fetch_docs("claim", sql).await?;
        let mut writes = Vec::new();
        let mut out = Vec::with_capacity(docs.len());
        for mut doc in docs {
            if self.schema.apply_update_to(&mut doc, update, false)? {
                writes.push(doc.clone());
            }
            out.push(doc);
        }
        self.write_back("claim", &writes).await?;
        Ok(out)
    }

    /// Names the `Int` fields an update increments when the database reports
    /// an integer out of range (SQLSTATE 22003): their checked sum overflowed.
    pub(super) fn name_overflow(&self, e: StoreError, update: &Update) -> StoreError {
        let StoreError::Validation(msg) = &e else {
            return e;
        };
        if !msg.ends_with("(22003)") {
            return e;
        }
        let paths: Vec<&str> = update
            .ops
            .iter()
            .filter_map(|op| match op {
                UpdateOp::Inc(p, _) if matches!(self.schema.resolve(p), Ok(FieldType::Int)) => {
                    Some(p.as_str())
                }
                _ => None,
            })
            .collect();
        if paths.is_empty() {
            return e;
        }
        StoreError::Validation(format!(
            "{msg}: inc of `{}` would leave the 64-bit integer range of the field",
            paths.join("`, `")
        ))
    }
}
