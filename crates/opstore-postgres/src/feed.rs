//! The change feed: a changelog written by triggers, read in commit order.
//!
//! Entity triggers append every change to `opstore_changelog` in the writing
//! transaction. At commit, a deferred trigger takes a per-schema advisory lock
//! and draws the transaction's commit sequence number (`opstore_commits.seq`),
//! then sends `NOTIFY`. The lock is released only after the commit is visible,
//! so a sequence number is never visible before a smaller one: a reader that
//! follows the position (commit seq, changelog id) never skips a transaction that
//! committed late, which a plain insertion sequence would.
//!
//! Watchers wake on `NOTIFY` (one listener connection per store) and also poll,
//! so a missed notification only delays delivery. After a connection loss they
//! retry until the server is back and resume from their last position.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use opstore_domain::{
    ChangeEvent, ChangeFeed, ChangeOp, ChangeStream, Filter, Result, ResumeToken, StartAt,
    StoreError, Timestamp, WatchRequest, eval,
};
use sqlx::postgres::{PgListener, PgRow};
use sqlx::{PgPool, Row};
use tokio::sync::{Notify, mpsc};

use crate::error::Ctx;
use crate::translate::{Bind, Sql};
use crate::tx::Exec;

/// Events fetched per round trip.
const BATCH: i64 = 512;

/// A position in the feed: after changelog row `id` of commit `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Position {
    seq: i64,
    id: i64,
}

impl Position {
    fn token(self) -> ResumeToken {
        let mut bytes = Vec::with_capacity(16);
        bytes.extend_from_slice(&self.seq.to_be_bytes());
        bytes.extend_from_slice(&self.id.to_be_bytes());
        ResumeToken::from_bytes(bytes)
    }

    fn from_token(token: &ResumeToken) -> Result<Self> {
        let b = token.as_bytes();
        let (Ok(seq), Ok(id)) = (
            b.get(..8)
                .unwrap_or_default()
                .try_into()
                .map(i64::from_be_bytes),
            b.get(8..16)
                .unwrap_or_default()
                .try_into()
                .map(i64::from_be_bytes),
        ) else {
            return Err(StoreError::Validation(format!(
                "resume token {token} is not a PostgreSQL feed position"
            )));
        };
        if b.len() != 16 || seq < 0 || id < 0 {
            return Err(StoreError::Validation(format!(
                "resume token {token} is not a PostgreSQL feed position"
            )));
        }
        Ok(Position { seq, id })
    }

    /// The position before every change of commits after `seq`.
    fn after_commit(seq: i64) -> Self {
        Position { seq, id: i64::MAX }
    }
}

/// Shared wake-up signal fed by the store's `LISTEN` connection.
pub(crate) struct Wake {
    notify: Notify,
    listener: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Wake {
    pub(crate) fn new() -> Self {
        Wake {
            notify: Notify::new(),
            listener: std::sync::Mutex::new(None),
        }
    }

    /// Stops the listener task.
    pub(crate) fn stop(&self) {
        if let Ok(mut guard) = self.listener.lock() {
            if let Some(task) = guard.take() {
                task.abort();
            }
        }
    }
}

impl Drop for Wake {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The `ChangeFeed` port.
pub(crate) struct PgFeed {
    pub pool: PgPool,
    pub channel: String,
    pub retention: Duration,
    pub poll: Duration,
    pub wake: Arc<Wake>,
}

impl PgFeed {
    fn ensure_listener(&self) {
        let Ok(mut guard) = self.wake.listener.lock() else {
            return;
        };
        if guard.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        let (pool, channel, wake) = (
            self.pool.clone(),
            self.channel.clone(),
            Arc::downgrade(&self.wake),
        );
        *guard = Some(tokio::spawn(listen(pool, channel, wake)));
    }
}

/// Forwards notifications to the watchers; reconnects after failures and wakes
/// everyone then, since notifications may have been missed meanwhile.
async fn listen(pool: PgPool, channel: String, wake: std::sync::Weak<Wake>) {
    let mut delay = Duration::from_millis(50);
    loop {
        let connected = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(&channel).await?;
            Ok::<_, sqlx::Error>(listener)
        }
        .await;
        let Ok(mut listener) = connected else {
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(1));
            continue;
        };
        delay = Duration::from_millis(50);
        loop {
            let received = listener.recv().await;
            let Some(wake) = wake.upgrade() else { return };
            wake.notify.notify_waiters();
            if received.is_err() {
                tokio::time::sleep(delay).await;
                break;
            }
        }
    }
}

/// Deletes commits older than the retention (a prefix of the sequence) and
/// remembers the last purged sequence number.
pub(crate) async fn purge(exec: &Exec, retention: Duration) -> Result<u64> {
    let mut sql = Sql::new();
    let r = sql.bind(Bind::Int(
        i64::try_from(retention.as_micros()).unwrap_or(i64::MAX),
    ));
    sql.push(&format!(
        "WITH cut AS (SELECT max(seq) AS s FROM opstore_commits \
             WHERE committed_at < clock_timestamp() - {r} * interval '1 microsecond'), \
         d AS (DELETE FROM opstore_commits m USING cut WHERE m.seq <= cut.s RETURNING m.xid, m.seq), \
         dl AS (DELETE FROM opstore_changelog c USING d WHERE c.xid = d.xid RETURNING 1) \
         UPDATE opstore_feed_state SET purged_through = greatest(purged_through, coalesce((SELECT max(seq) FROM d), 0)) \
         WHERE id = 1 RETURNING (SELECT count(*) FROM dl)"
    ));
    let row = exec
        .fetch_one(Ctx::new("purge", "opstore_changelog"), sql)
        .await?;
    let n: i64 = row
        .try_get(0)
        .map_err(|e| StoreError::backend("decoding purge count", e))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

async fn purged_through(exec: &Exec) -> Result<i64> {
    let mut sql = Sql::new();
    sql.push("SELECT purged_through FROM opstore_feed_state WHERE id = 1");
    let row = exec
        .fetch_one(Ctx::new("watch", "opstore_feed_state"), sql)
        .await?;
    row.try_get(0)
        .map_err(|e| StoreError::backend("decoding feed state", e))
}

fn expired(collection: &str, pos: Position) -> StoreError {
    StoreError::ResumeTokenExpired(format!(
        "watch `{collection}` after {}: that part of the change history was purged",
        pos.token()
    ))
}

#[async_trait]
impl ChangeFeed for PgFeed {
    async fn watch(&self, request: WatchRequest) -> Result<ChangeStream> {
        let schema = request.schema;
        let filter = request
            .filter
            .as_ref()
            .map(|f| schema.check_filter(f))
            .transpose()?
            .map(|f| f.into_inner());
        let exec = Exec::Pool(self.pool.clone());
        self.ensure_listener();
        purge(&exec, self.retention).await?;
        let purged = purged_through(&exec).await?;
        let start = match &request.start {
            StartAt::Beginning => Position::after_commit(purged),
            StartAt::Now => {
                let mut sql = Sql::new();
                sql.push("SELECT coalesce(max(seq), 0) FROM opstore_commits");
                let row = exec
                    .fetch_one(Ctx::new("watch", schema.name()), sql)
                    .await?;
                let seq: i64 = row
                    .try_get(0)
                    .map_err(|e| StoreError::backend("decoding feed position", e))?;
                Position::after_commit(seq.max(purged))
            }
            StartAt::After(token) => {
                let pos = Position::from_token(token)?;
                if pos.seq <= purged {
                    return Err(expired(schema.name(), pos));
                }
                pos
            }
        };
        let (tx, rx) = mpsc::channel(1024);
        let watcher = Watcher {
            exec,
            collection: schema.name().to_owned(),
            filter,
            wake: Arc::clone(&self.wake),
            poll: self.poll,
            retention: self.retention,
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
    wake: Arc<Wake>,
    poll: Duration,
    retention: Duration,
}

impl Watcher {
    async fn run(self, mut pos: Position, tx: mpsc::Sender<Result<ChangeEvent>>) {
        let mut delay = Duration::from_millis(20);
        let purge_every =
            (self.retention / 4).clamp(Duration::from_millis(200), Duration::from_secs(60));
        let mut last_purge = tokio::time::Instant::now();
        loop {
            let notified = self.wake.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if last_purge.elapsed() >= purge_every {
                last_purge = tokio::time::Instant::now();
                // A failed purge is retried on the next round; delivery does not depend on it.
                let _ = purge(&self.exec, self.retention).await;
            }
            let fetched = self.fetch(pos).await;
            let (purged, rows) = match fetched {
                Ok(batch) => batch,
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
            if pos.seq < purged {
                let _ = tx.send(Err(expired(&self.collection, pos))).await;
                return;
            }
            let full = rows.len() as i64 >= BATCH;
            for row in rows {
                let event = match self.event(&row) {
                    Ok(event) => event,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                pos = event.0;
                let Some(event) = event.1 else { continue };
                if tx.send(Ok(event)).await.is_err() {
                    return;
                }
            }
            if full {
                continue;
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep(self.poll) => {}
                _ = tx.closed() => return,
            }
        }
    }

    /// The next batch after `pos`, with the purge horizon read in the same snapshot.
    async fn fetch(&self, pos: Position) -> Result<(i64, Vec<PgRow>)> {
        let mut sql = Sql::new();
        let c = sql.bind(Bind::Text(self.collection.clone()));
        let s = sql.bind(Bind::Int(pos.seq));
        let i = sql.bind(Bind::Int(pos.id));
        let l = sql.bind(Bind::Int(BATCH));
        sql.push(&format!(
            "SELECT f.purged_through, e.seq, e.id, e.op, e.key, e.doc, e.committed_at \
             FROM opstore_feed_state f LEFT JOIN LATERAL ( \
                 SELECT m.seq, c.id, c.op, c.key, c.doc, m.committed_at \
                 FROM opstore_commits m JOIN opstore_changelog c ON c.xid = m.xid \
                 WHERE m.seq >= {s} AND (m.seq, c.id) > ({s}, {i}) AND c.collection = {c} \
                 ORDER BY m.seq, c.id LIMIT {l}) e ON true \
             WHERE f.id = 1 ORDER BY e.seq, e.id"
        ));
        let rows = self
            .exec
            .fetch_all(Ctx::new("watch", &self.collection), sql)
            .await?;
        let purged = match rows.first() {
            Some(r) => r
                .try_get(0)
                .map_err(|e| StoreError::backend("decoding feed state", e))?,
            None => 0,
        };
        let rows = rows
            .into_iter()
            .filter(|r| r.try_get::<Option<i64>, _>(1).ok().flatten().is_some())
            .collect();
        Ok((purged, rows))
    }

    /// The row's position, and its event unless the filter drops it.
    fn event(&self, row: &PgRow) -> Result<(Position, Option<ChangeEvent>)> {
        let dec = |e: sqlx::Error| StoreError::backend("decoding a change event", e);
        let pos = Position {
            seq: row.try_get(1).map_err(dec)?,
            id: row.try_get(2).map_err(dec)?,
        };
        let op: String = row.try_get(3).map_err(dec)?;
        let op = match op.as_str() {
            "insert" => ChangeOp::Insert,
            "update" => ChangeOp::Update,
            "replace" => ChangeOp::Replace,
            _ => ChangeOp::Delete,
        };
        let key: String = row.try_get(4).map_err(dec)?;
        let document: Option<serde_json::Value> = row.try_get(5).map_err(dec)?;
        let at: chrono::DateTime<chrono::Utc> = row.try_get(6).map_err(dec)?;
        if let Some(filter) = &self.filter {
            let keep = document.as_ref().is_some_and(|d| eval::matches(filter, d));
            if !keep {
                return Ok((pos, None));
            }
        }
        let event = ChangeEvent {
            collection: self.collection.clone(),
            op,
            key,
            document,
            token: pos.token(),
            at: Timestamp::from_datetime(at),
        };
        Ok((pos, Some(event)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_order_like_positions() {
        let a = Position { seq: 3, id: 900 };
        let b = Position { seq: 4, id: 2 };
        assert_eq!(Position::from_token(&a.token()).unwrap(), a);
        assert!(a.token() < b.token());
        assert!(
            Position::from_token(&ResumeToken::from_bytes(vec![1, 2, 3]))
                .unwrap_err()
                .is_validation()
        );
    }
}
