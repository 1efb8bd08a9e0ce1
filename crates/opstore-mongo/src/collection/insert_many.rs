//! `insert_many`, all or nothing: in the bound transaction, in one of its own
//! (retried on transient errors) on a replica set, else by undoing the documents
//! written before the one that failed.

// The parent's imports, its `exec!` and its `MongoCollection`, whose methods this
// file adds.
use super::*;

impl MongoCollection {
    /// Inserts `docs`; see [`Collection::insert_many`].
    pub(super) async fn insert_many_docs(&self, docs: Vec<Value>) -> Result<u64> {
        if docs.is_empty() {
            return Ok(0);
        }
        let mut keys = Vec::with_capacity(docs.len());
        let mut stored = Vec::with_capacity(docs.len());
        for doc in &docs {
            let key = self.key_of(doc)?;
            stored.push(to_stored(self.schema, key, doc, "insert_many")?);
            keys.push(key.to_owned());
        }
        let n = stored.len() as u64;
        if let Some(tx) = &self.tx {
            let mut session = tx.session.lock().await;
            let r = self.insert_many_in(&mut session, &stored).await;
            tx.note(&r);
            return r.map(|()| n).map_err(|e| self.insert_many_error(&keys, e));
        }
        if self.ctx.replica_set {
            let mut last = None;
            for _ in 0..3 {
                let mut session = self
                    .ctx
                    .client
                    .start_session()
                    .await
                    .map_err(|e| error::map("insert_many: session", e))?;
                session
                    .start_transaction()
                    .await
                    .map_err(|e| error::map("insert_many: transaction", e))?;
                let r = match self.insert_many_in(&mut session, &stored).await {
                    Ok(()) => crate::tx::commit(&mut session).await,
                    Err(e) => {
                        let _ = session.abort_transaction().await;
                        Err(e)
                    }
                };
                match r {
                    Ok(()) => return Ok(n),
                    Err(e)
                        if error::is_transient_tx(&e) && error::code(&e) != Some(DUPLICATE_KEY) =>
                    {
                        last = Some(e)
                    }
                    Err(e) => return Err(self.insert_many_error(&keys, e)),
                }
            }
            let e = last.map_or_else(
                || {
                    StoreError::Conflict(format!(
                        "insert_many into `{}`: retries exhausted",
                        self.name()
                    ))
                },
                |e| self.insert_many_error(&keys, e),
            );
            return Err(e);
        }
        match self.coll.insert_many(stored).await {
            Ok(_) => Ok(n),
            Err(e) => {
                let failed = match e.kind.as_ref() {
                    mongodb::error::ErrorKind::InsertMany(m) => m
                        .write_errors
                        .as_ref()
                        .and_then(|ws| ws.first().map(|w| w.index)),
                    _ => None,
                };
                let written = failed.unwrap_or(keys.len()).min(keys.len());
                if written > 0 {
                    let ids: Vec<&str> = keys[..written].iter().map(String::as_str).collect();
                    self.coll
                        .delete_many(doc! { "_id": { "$in": ids } })
                        .await
                        .map_err(|d| {
                            error::map(&format!("insert_many into `{}`: undo", self.name()), d)
                        })?;
                }
                Err(self.insert_many_error(&keys, e))
            }
        }
    }

    async fn insert_many_in(
        &self,
        session: &mut mongodb::ClientSession,
        docs: &[Document],
    ) -> mongodb::error::Result<()> {
        self.coll
            .insert_many(docs.to_vec())
            .session(session)
            .await
            .map(drop)
    }

    /// Maps an `insert_many` failure, naming the document that broke the batch.
    fn insert_many_error(&self, keys: &[String], e: mongodb::error::Error) -> StoreError {
        let index = match e.kind.as_ref() {
            mongodb::error::ErrorKind::InsertMany(m) => m
                .write_errors
                .as_ref()
                .and_then(|ws| ws.first().map(|w| w.index)),
            _ => None,
        };
        match index.and_then(|i| keys.get(i).map(|k| (i, k))) {
            Some((i, key)) => error::map(
                &format!("insert_many into `{}`: document #{i} `{key}`", self.name()),
                e,
            ),
            None => error::map(&format!("insert_many into `{}`", self.name()), e),
        }
    }
}
