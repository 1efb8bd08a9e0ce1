//! The change feed: a changelog written by triggers, read in commit order.
//!
//! Entity triggers append every change to `opstore_changelog` in the writing
//! transaction. At commit, a deferred trigger draws the transaction's commit
//! sequence number (`opstore_commits.seq`) and sends `NOTIFY`. Numbers follow
//! commit order: a transaction that waited for another's row lock commits after
//! it and draws a larger number. No lock is held across the commit, so
//! concurrent commits share WAL flushes.
//!
//! The price is that a number may become visible after a larger one (two
//! commits in flight at once). A reader follows the position (commit seq,
//! changelog id) and never steps over a missing number: at a gap it stops. The
//! gap usually closes within a fetch or two, when the commit in flight lands
//! (its `NOTIFY` wakes the reader). If it stays open, the reader takes a
//! witness: a transaction id assigned after the missing numbers were drawn
//! (its own, via `pg_current_xact_id()`). Once every transaction id up to the
//! witness has finished (`pg_snapshot_xmin` has passed it) and a number is still
//! missing, the number belongs to no commit (the transaction failed after
//! drawing it, or the sequence skipped it after a crash) and the reader passes
//! it. So a change whose transaction commits late is never skipped; a
//! long-running writing transaction only delays passing such a dead number.
//!
//! Watchers wake on `NOTIFY` (one listener connection per store) and also poll,
//! so a missed notification only delays delivery. PostgreSQL serializes commits
//! that notify through their WAL flushes, so a commit skips its `NOTIFY` while
//! another commit that notifies is in flight; a watcher that found commits
//! looks again after `LINGER`, which catches a commit that landed just after. After a connection loss they
//! retry until the server is back and resume from their last position.
//! `StartAt::Now` starts after the highest visible commit; a transaction whose
//! commit was in flight at that moment may or may not be delivered.

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
use crate::exec::{Exec, Pooled};
use crate::translate::{Bind, Sql};

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
    pub pooled: Pooled,
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
            self.pooled.pool.clone(),
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
        request.check_watchable()?;
        let schema = request.schema;
        let filter = request
            .filter
            .as_ref()
            .map(|f| schema.check_filter(f))
            .transpose()?
            .map(|f| f.into_inner());
        let exec = Exec::Pool(self.pooled.clone());
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

/// Commit numbers a reader found missing below a visible larger one.
struct Gap {
    /// Every missing number up to here was drawn before the reader first looked.
    through: i64,
    /// Fetches that stopped at this gap.
    sightings: u32,
    /// A transaction id assigned after the missing numbers were drawn: once
    /// every transaction id up to it has finished, a number still missing
    /// belongs to no commit.
    witness: Option<String>,
}

/// One fetch: the purge horizon, whether every transaction up to the pending
/// gap's witness has finished, a new witness when one was asked for, and the rows.
struct Batch {
    purged: i64,
    settled: bool,
    witness: Option<String>,
    rows: Vec<PgRow>,
}

/// Fetches that stop at a gap before the reader asks for a witness: most gaps
/// close on their own within a fetch or two, when the commit in flight lands.
const GAP_SIGHTINGS_BEFORE_WITNESS: u32 = 2;

/// How soon a reader looks again, without a notification, after a fetch that
/// found commits: a commit that skipped its `NOTIFY` (another one was in
/// flight) may land just after the fetch that the other's notification caused.
const LINGER: Duration = Duration::from_millis(2);

/// How long a reader stopped at a gap waits before looking again when no
/// notification arrives (the gap's owner notifies when it commits).
const GAP_RECHECK: Duration = Duration::from_millis(2);

impl Watcher {
    async fn run(self, mut pos: Position, tx: mpsc::Sender<Result<ChangeEvent>>) {
        let mut delay = Duration::from_millis(20);
        let purge_every =
            (self.retention / 4).clamp(Duration::from_millis(200), Duration::from_secs(60));
        let mut last_purge = tokio::time::Instant::now();
        let mut gap: Option<Gap> = None;
        loop {
            let notified = self.wake.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if last_purge.elapsed() >= purge_every {
                last_purge = tokio::time::Instant::now();
                // A failed purge is retried on the next round; delivery does not depend on it.
                let _ = purge(&self.exec, self.retention).await;
            }
            let witness = gap.as_ref().and_then(|g| g.witness.clone());
            let observe = gap.as_ref().is_some_and(|g| {
                g.witness.is_none() && g.sightings >= GAP_SIGHTINGS_BEFORE_WITNESS
            });
            let batch = match self.fetch(pos, witness, observe).await {
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
            if pos.seq < batch.purged {
                let _ = tx.send(Err(expired(&self.collection, pos))).await;
                return;
            }
            // Missing numbers up to here belong to no commit.
            let passable = gap
                .as_ref()
                .filter(|_| batch.settled)
                .map_or(i64::MIN, |g| g.through);
            let full = batch.rows.len() as i64 >= BATCH;
            let highest = batch
                .rows
                .last()
                .and_then(|r| r.try_get::<i64, _>(0).ok())
                .unwrap_or(pos.seq);
            let mut stopped = false;
            for row in &batch.rows {
                let seq: i64 = match row.try_get(0) {
                    Ok(seq) => seq,
                    Err(e) => {
                        let _ = tx
                            .send(Err(StoreError::backend("decoding a change event", e)))
                            .await;
                        return;
                    }
                };
                if seq > pos.seq + 1 && seq - 1 > passable {
                    stopped = true;
                    break;
                }
                let (next, event) = match self.event(seq, row) {
                    Ok(event) => event,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                pos = next;
                let Some(event) = event else { continue };
                if tx.send(Ok(event)).await.is_err() {
                    return;
                }
            }
            if stopped {
                match &mut gap {
                    // Still the gap seen before: its numbers were drawn before then.
                    Some(g) if pos.seq < g.through && !batch.settled => {
                        g.sightings += 1;
                        if g.witness.is_none() {
                            g.witness = batch.witness;
                        }
                    }
                    _ => {
                        gap = Some(Gap {
                            through: highest,
                            sightings: 1,
                            witness: None,
                        })
                    }
                }
            } else if gap.as_ref().is_some_and(|g| pos.seq >= g.through) {
                gap = None;
            }
            if full && !stopped {
                continue;
            }
            let wait = if stopped {
                self.poll.min(GAP_RECHECK)
            } else if batch.rows.is_empty() {
                self.poll
            } else {
                self.poll.min(LINGER)
            };
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep(wait) => {}
                _ = tx.closed() => return,
            }
        }
    }

    /// The next commits after `pos` (one row per matching change, or one row
    /// without a change for a commit with none here), read in one snapshot with
    /// the purge horizon and whether every transaction id up to `witness` has
    /// finished; with `observe`, a new witness (this statement's own
    /// transaction id, assigned after everything this snapshot shows).
    async fn fetch(&self, pos: Position, witness: Option<String>, observe: bool) -> Result<Batch> {
        let mut sql = Sql::new();
        let c = sql.bind(Bind::Text(self.collection.clone()));
        let s = sql.bind(Bind::Int(pos.seq));
        let i = sql.bind(Bind::Int(pos.id));
        let l = sql.bind(Bind::Int(BATCH));
        let has_w = witness.is_some();
        let w = sql.bind(Bind::Text(witness.unwrap_or_else(|| "0".to_owned())));
        let o = sql.bind(Bind::Bool(observe));
        sql.push(&format!(
            "SELECT e.seq, e.id, e.op, e.key, e.doc, e.committed_at, f.purged_through, \
                 pg_snapshot_xmin(pg_current_snapshot()) > {w}::text::xid8 AS settled, \
                 CASE WHEN {o} THEN pg_current_xact_id()::text END AS witness \
             FROM opstore_feed_state f LEFT JOIN LATERAL ( \
                 SELECT m.seq, c.id, c.op, c.key, c.doc, m.committed_at \
                 FROM (SELECT seq, xid, committed_at FROM opstore_commits \
                       WHERE seq >= {s} ORDER BY seq LIMIT {l}) m \
                 LEFT JOIN LATERAL ( \
                     SELECT c.id, c.op, c.key, c.doc FROM opstore_changelog c \
                     WHERE c.xid = m.xid AND c.collection = {c} AND (m.seq > {s} OR c.id > {i}) \
                     ORDER BY c.id LIMIT {l}) c ON true \
                 ORDER BY m.seq, c.id LIMIT {l}) e ON true \
             WHERE f.id = 1 ORDER BY e.seq, e.id"
        ));
        let rows = self
            .exec
            .fetch_all(Ctx::new("watch", &self.collection), sql)
            .await?;
        let dec = |e: sqlx::Error| StoreError::backend("decoding feed state", e);
        let Some(first) = rows.first() else {
            return Err(StoreError::Backend {
                message: "watch: the feed state row is missing".into(),
                source: None,
            });
        };
        let purged: i64 = first.try_get(6).map_err(dec)?;
        let settled = has_w && first.try_get::<bool, _>(7).map_err(dec)?;
        let witness: Option<String> = first.try_get(8).map_err(dec)?;
        let rows = rows
            .into_iter()
            .filter(|r| r.try_get::<Option<i64>, _>(0).ok().flatten().is_some())
            .collect();
        Ok(Batch {
            purged,
            settled,
            witness,
            rows,
        })
    }

    /// The position after the row of commit `seq`, and its event unless the
    /// commit has no change here or the filter drops it.
    fn event(&self, seq: i64, row: &PgRow) -> Result<(Position, Option<ChangeEvent>)> {
        let dec = |e: sqlx::Error| StoreError::backend("decoding a change event", e);
        let Some(id) = row.try_get::<Option<i64>, _>(1).map_err(dec)? else {
            return Ok((Position::after_commit(seq), None));
        };
        let pos = Position { seq, id };
        let op: String = row.try_get(2).map_err(dec)?;
        let op = match op.as_str() {
            "insert" => ChangeOp::Insert,
            "update" => ChangeOp::Update,
            "replace" => ChangeOp::Replace,
            _ => ChangeOp::Delete,
        };
        let key: String = row.try_get(3).map_err(dec)?;
        let document: Option<serde_json::Value> = row.try_get(4).map_err(dec)?;
        let at: chrono::DateTime<chrono::Utc> = row.try_get(5).map_err(dec)?;
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
