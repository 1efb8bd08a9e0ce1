//! The change feed: a changelog table written in the same transaction as the
//! data, read in id order.
//!
//! SQLite has one writer per file at a time and every write transaction
//! starts with `BEGIN IMMEDIATE`, so changelog ids (`AUTOINCREMENT`, never
//! reused) are drawn in commit order and a reader never sees a later id
//! before an earlier one: the position is simply the last id delivered.
//! Commits of this store wake its watchers at once; commits of another
//! process on the same file are found by polling every `feed_poll_interval`.
//!
//! History older than the retention is purged as a prefix of ids, and
//! `opstore_feed_state.purged_through` remembers the last purged id: a token
//! below it resumes after a purged change and is `ResumeTokenExpired`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use opstore_domain::{
    ChangeEvent, ChangeFeed, ChangeOp, ChangeStream, Filter, Result, ResumeToken, StartAt,
    StoreError, Timestamp, WatchRequest, eval,
};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use tokio::sync::mpsc;

use crate::error::{Ctx, decode};
use crate::exec::{Exec, Shared};
use crate::translate::{Bind, Sql};

/// Events fetched per round trip.
const BATCH: i64 = 512;

const CHANGELOG: &str = "opstore_changelog";

fn token(id: i64) -> ResumeToken {
    ResumeToken::from_bytes(id.to_be_bytes().to_vec())
}

fn from_token(t: &ResumeToken) -> Result<i64> {
    let bytes: [u8; 8] = t.as_bytes().try_into().map_err(|_| {
        StoreError::Validation(format!("resume token {t} is not a SQLite feed position"))
    })?;
    let id = i64::from_be_bytes(bytes);
    if id < 0 {
        return Err(StoreError::Validation(format!(
            "resume token {t} is not a SQLite feed position"
        )));
    }
    Ok(id)
}

/// Deletes changes older than the retention (a prefix of ids) and records the
/// last id removed; returns the number of changelog rows removed.
pub(crate) async fn purge(exec: &Exec, retention: Duration) -> Result<u64> {
    let ctx = Ctx::new("purge", CHANGELOG);
    let mut w = exec.writer(ctx).await?;
    let r = async {
        let mut sql = Sql::new();
        let now = sql.now(exec.clock());
        let r = sql.bind(Bind::Int(
            i64::try_from(retention.as_micros()).unwrap_or(i64::MAX),
        ));
        sql.push(&format!(
            "SELECT max(id) FROM {CHANGELOG} WHERE at < {now} - {r}"
        ));
        let rows = w.fetch_all(ctx, sql).await?;
        let cut: Option<i64> = match rows.first() {
            Some(row) => row.try_get(0).map_err(|e| decode("the purge horizon", e))?,
            None => None,
        };
        let Some(cut) = cut else { return Ok(0) };
        let mut sql = Sql::new();
        let c = sql.bind(Bind::Int(cut));
        sql.push(&format!("DELETE FROM {CHANGELOG} WHERE id <= {c}"));
        let n = w.execute(ctx, sql).await?;
        let mut sql = Sql::new();
        let c = sql.bind(Bind::Int(cut));
        sql.push(&format!(
            "UPDATE opstore_feed_state SET purged_through = max(purged_through, {c}) WHERE id = 1"
        ));
        w.execute(ctx, sql).await?;
        Ok(n)
    }
    .await;
    w.finish(ctx, r).await
}

async fn purged_through(exec: &Exec) -> Result<i64> {
    let mut sql = Sql::new();
    sql.push("SELECT purged_through FROM opstore_feed_state WHERE id = 1");
    let row = exec
        .fetch_one(Ctx::new("watch", "opstore_feed_state"), sql)
        .await?;
    row.try_get(0).map_err(|e| decode("the feed state", e))
}

fn expired(collection: &str, id: i64) -> StoreError {
    StoreError::ResumeTokenExpired(format!(
        "watch `{collection}` after {}: that part of the change history was purged",
        token(id)
    ))
}

/// The `ChangeFeed` port.
pub(crate) struct SqliteFeed {
    pub exec: Exec,
}

#[async_trait]
impl ChangeFeed for SqliteFeed {
    async fn watch(&self, request: WatchRequest) -> Result<ChangeStream> {
        request.check_watchable()?;
        let schema = request.schema;
        let filter = request
            .filter
            .as_ref()
            .map(|f| schema.check_filter(f))
            .transpose()?
            .map(|f| f.into_inner());
        let shared = Arc::clone(self.exec.shared());
        purge(&self.exec, shared.feed_retention).await?;
        let purged = purged_through(&self.exec).await?;
        let start = match &request.start {
            StartAt::Beginning => purged,
            StartAt::Now => {
                let mut sql = Sql::new();
                sql.push(&format!("SELECT coalesce(max(id), 0) FROM {CHANGELOG}"));
                let row = self
                    .exec
                    .fetch_one(Ctx::new("watch", schema.name()), sql)
                    .await?;
                let id: i64 = row.try_get(0).map_err(|e| decode("the feed position", e))?;
                id.max(purged)
            }
            StartAt::After(t) => {
                let id = from_token(t)?;
                if id < purged {
                    return Err(expired(schema.name(), id));
                }
                id
            }
        };
        let (tx, rx) = mpsc::channel(1024);
        let watcher = Watcher {
            exec: Exec::Pool(shared),
            collection: schema.name().to_owned(),
            filter,
        };
        tokio::spawn(watcher.run(start, tx));
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        Ok(stream.boxed())
    }
}

struct Watcher {
    exec: Exec,
    collection: String,
    filter: Option<Filter>,
}

impl Watcher {
    async fn run(self, mut pos: i64, tx: mpsc::Sender<Result<ChangeEvent>>) {
        let shared: Arc<Shared> = Arc::clone(self.exec.shared());
        let retention = shared.feed_retention;
        let purge_every =
            (retention / 4).clamp(Duration::from_millis(200), Duration::from_secs(60));
        let mut last_purge = tokio::time::Instant::now();
        let mut delay = Duration::from_millis(20);
        loop {
            let notified = shared.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if last_purge.elapsed() >= purge_every {
                last_purge = tokio::time::Instant::now();
                // A failed purge is retried on the next round; delivery does not depend on it.
                let _ = purge(&self.exec, retention).await;
            }
            let rows = match self.fetch(pos).await {
                Ok(rows) => rows,
                Err(e) if e.is_transient() => {
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = tx.closed() => return,
                    }
                    delay = (delay * 2).min(Duration::from_secs(1));
                    continue;
                }
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            delay = Duration::from_millis(20);
            let (purged, rows) = rows;
            if pos < purged {
                let _ = tx.send(Err(expired(&self.collection, pos))).await;
                return;
            }
            let full = rows.len() as i64 >= BATCH;
            for row in &rows {
                let (id, event) = match self.event(row) {
                    Ok(e) => e,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                pos = id;
                let Some(event) = event else { continue };
                if tx.send(Ok(event)).await.is_err() {
                    return;
                }
            }
            if full {
                continue;
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep(shared.feed_poll_interval) => {}
                _ = tx.closed() => return,
            }
        }
    }

    /// The purge horizon and the next changes of this collection after `pos`,
    /// read in one snapshot.
    async fn fetch(&self, pos: i64) -> Result<(i64, Vec<SqliteRow>)> {
        let mut sql = Sql::new();
        let c = sql.bind(Bind::Text(self.collection.clone()));
        let p = sql.bind(Bind::Int(pos));
        let l = sql.bind(Bind::Int(BATCH));
        sql.push(&format!(
            "SELECT f.purged_through, e.id, e.op, e.key, e.doc, e.at \
             FROM opstore_feed_state f LEFT JOIN ( \
                 SELECT id, op, key, doc, at FROM {CHANGELOG} \
                 WHERE collection = {c} AND id > {p} ORDER BY id LIMIT {l}) e \
             WHERE f.id = 1 ORDER BY e.id"
        ));
        let rows = self
            .exec
            .fetch_all(Ctx::new("watch", &self.collection), sql)
            .await?;
        let Some(first) = rows.first() else {
            return Err(StoreError::Backend {
                message: "watch: the feed state row is missing".into(),
                source: None,
            });
        };
        let purged: i64 = first.try_get(0).map_err(|e| decode("the feed state", e))?;
        let rows = rows
            .into_iter()
            .filter(|r| r.try_get::<Option<i64>, _>(1).ok().flatten().is_some())
            .collect();
        Ok((purged, rows))
    }

    /// The id of a changelog row, and its event unless the filter drops it.
    fn event(&self, row: &SqliteRow) -> Result<(i64, Option<ChangeEvent>)> {
        let dec = |e: sqlx::Error| decode("a change event", e);
        let id: i64 = row.try_get(1).map_err(dec)?;
        let op: String = row.try_get(2).map_err(dec)?;
        let op = match op.as_str() {
            "insert" => ChangeOp::Insert,
            "update" => ChangeOp::Update,
            "replace" => ChangeOp::Replace,
            _ => ChangeOp::Delete,
        };
        let key: String = row.try_get(3).map_err(dec)?;
        let doc: Option<String> = row.try_get(4).map_err(dec)?;
        let document = doc
            .map(|d| serde_json::from_str(&d))
            .transpose()
            .map_err(|e| StoreError::backend("a change event's document is not JSON", e))?;
        let at: i64 = row.try_get(5).map_err(dec)?;
        if let Some(filter) = &self.filter {
            let keep = document.as_ref().is_some_and(|d| eval::matches(filter, d));
            if !keep {
                return Ok((id, None));
            }
        }
        let event = ChangeEvent {
            collection: self.collection.clone(),
            op,
            key,
            document,
            token: token(id),
            at: Timestamp::from_micros(at),
        };
        Ok((id, Some(event)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_order_like_ids() {
        assert_eq!(from_token(&token(42)).unwrap(), 42);
        assert!(token(3) < token(300));
        assert!(
            from_token(&ResumeToken::from_bytes(vec![1, 2, 3]))
                .unwrap_err()
                .is_validation()
        );
    }
}
