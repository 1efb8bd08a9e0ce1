//! The change feed on ScyllaDB CDC log tables.
//!
//! Every entity table is created `WITH cdc`, so each write leaves a row in
//! `<table>_scylla_cdc_log` keyed by CDC stream and `cdc$time` (a timeuuid). The
//! watcher polls every stream of the current CDC generations up to a horizon
//! `confidence_window` behind now, merges the rows in `(cdc$time, stream,
//! batch_seq_no)` order, and delivers them. The resume token is that position:
//! it implies every stream's position (each stream resumes after it), so it stays
//! a few dozen bytes however many streams the cluster has.
//!
//! Ordering guarantee: per partition (one document's changes arrive in commit
//! order); changes of different documents are ordered by their coordinators'
//! clocks, which is not a commit order across partitions.

use std::cmp::Ordering;

use async_trait::async_trait;
use futures::stream;
use opstore_domain::eval;
use opstore_domain::{
    ChangeEvent, ChangeFeed, ChangeOp, ChangeStream, Result, ResumeToken, StartAt, StoreError,
    Timestamp, WatchRequest,
};

use crate::error::Op;
use crate::exec::Exec;
use crate::table::{DOC, LAST_OP, TableLayout, quote};
use crate::value::{CqlValue, Row};

const TOKEN_VERSION: u8 = 1;
/// 100 ns intervals between the UUID epoch (1582-10-15) and the Unix epoch.
const UUID_EPOCH_OFFSET: i64 = 0x01B2_1DD2_1381_4000;

/// Microseconds since the Unix epoch of a version-1 (time) UUID.
pub fn timeuuid_micros(u: &[u8; 16]) -> i64 {
    let time_low = u64::from(u32::from_be_bytes([u[0], u[1], u[2], u[3]]));
    let time_mid = u64::from(u16::from_be_bytes([u[4], u[5]]));
    let time_hi = u64::from(u16::from_be_bytes([u[6], u[7]]) & 0x0fff);
    let ticks = (time_hi << 48) | (time_mid << 32) | time_low;
    (i64::try_from(ticks).unwrap_or(i64::MAX) - UUID_EPOCH_OFFSET) / 10
}

/// A position in the merged order of a table's CDC log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// `cdc$time`.
    pub time: [u8; 16],
    /// `cdc$stream_id`.
    pub stream: Vec<u8>,
    /// `cdc$batch_seq_no`.
    pub seq: i32,
}

impl Position {
    fn sort_key(&self) -> (i64, [u8; 16], &[u8], i32) {
        (
            timeuuid_micros(&self.time),
            self.time,
            &self.stream,
            self.seq,
        )
    }
}

impl PartialOrd for Position {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Position {
    fn cmp(&self, other: &Self) -> Ordering {
        self.sort_key().cmp(&other.sort_key())
    }
}

/// Encodes the token of a position in `table`.
pub fn encode_token(table: &str, pos: &Position) -> ResumeToken {
    let mut b = vec![TOKEN_VERSION, u8::try_from(table.len()).unwrap_or(u8::MAX)];
    b.extend_from_slice(&table.as_bytes()[..table.len().min(255)]);
    b.extend_from_slice(&pos.time);
    b.extend_from_slice(&u16::try_from(pos.stream.len()).unwrap_or(0).to_be_bytes());
    b.extend_from_slice(&pos.stream);
    b.extend_from_slice(&pos.seq.to_be_bytes());
    ResumeToken::from_bytes(b)
}

/// Decodes a token issued for `table`.
pub fn decode_token(table: &str, token: &ResumeToken) -> Result<Position> {
    let bad = || {
        StoreError::Validation(format!(
            "resume token {token} is not a scylla token of `{table}`"
        ))
    };
    let b = token.as_bytes();
    if b.first() != Some(&TOKEN_VERSION) {
        return Err(bad());
    }
    let n = usize::from(*b.get(1).ok_or_else(bad)?);
    if b.get(2..2 + n) != Some(table.as_bytes()) {
        return Err(bad());
    }
    let rest = &b[2 + n..];
    let time: [u8; 16] = rest
        .get(..16)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(bad)?;
    let len = usize::from(u16::from_be_bytes(
        rest.get(16..18)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(bad)?,
    ));
    let stream = rest.get(18..18 + len).ok_or_else(bad)?.to_vec();
    let seq = i32::from_be_bytes(
        rest.get(18 + len..22 + len)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(bad)?,
    );
    if rest.len() != 22 + len {
        return Err(bad());
    }
    Ok(Position { time, stream, seq })
}

/// Where the next read starts.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cursor {
    /// Changes at or after this instant (milliseconds).
    From(i64),
    /// Changes after this position.
    After(Position),
}

/// The CQL of one poll of a batch of streams.
pub(crate) fn log_select(layout: &TableLayout, after_uuid: bool) -> String {
    let lower = if after_uuid {
        "\"cdc$time\" >= ?"
    } else {
        "\"cdc$time\" >= minTimeuuid(?)"
    };
    format!(
        "SELECT \"cdc$stream_id\", \"cdc$time\", \"cdc$batch_seq_no\", \"cdc$operation\", {}, {DOC}, {LAST_OP} \
         FROM {}_scylla_cdc_log WHERE \"cdc$stream_id\" IN ? AND {lower} AND \"cdc$time\" <= maxTimeuuid(?)",
        quote(layout.schema.key()),
        layout.qualified()
    )
}

/// Turns a CDC log row into an event; `None` for rows that are not changes
/// (pre/post-images) or lack the key.
pub(crate) fn event_of(layout: &TableLayout, row: &Row) -> Result<Option<(Position, ChangeEvent)>> {
    let (Some(CqlValue::Blob(stream)), Some(CqlValue::Timeuuid(time))) =
        (row.get("cdc$stream_id"), row.get("cdc$time"))
    else {
        return Ok(None);
    };
    let seq = row
        .int("cdc$batch_seq_no")
        .and_then(|s| i32::try_from(s).ok())
        .unwrap_or(0);
    let Some(key) = row.text(layout.schema.key()) else {
        return Ok(None);
    };
    let op = match row.int("cdc$operation") {
        Some(3 | 4) => ChangeOp::Delete,
        Some(1 | 2) => match row.text(LAST_OP) {
            Some("insert") => ChangeOp::Insert,
            Some("replace") => ChangeOp::Replace,
            _ => ChangeOp::Update,
        },
        _ => return Ok(None),
    };
    let document = if op == ChangeOp::Delete {
        None
    } else {
        match row.text(DOC) {
            Some(_) => Some(layout.document(row)?),
            None => return Ok(None),
        }
    };
    let pos = Position {
        time: *time,
        stream: stream.clone(),
        seq,
    };
    let event = ChangeEvent {
        collection: layout.name().to_owned(),
        op,
        key: key.to_owned(),
        document,
        token: encode_token(layout.name(), &pos),
        at: Timestamp::from_micros(timeuuid_micros(time)),
    };
    Ok(Some((pos, event)))
}

/// The change feed of a store.
#[derive(Debug, Clone)]
pub struct ScyllaFeed {
    exec: Exec,
}

impl ScyllaFeed {
    /// The feed over the configured keyspace.
    pub fn new(exec: Exec) -> Self {
        ScyllaFeed { exec }
    }

    /// Every CDC stream of the generations that cover `from_ms` onwards.
    async fn streams(&self, from_ms: i64) -> Result<Vec<Vec<u8>>> {
        let op = Op::new("watch", "system_distributed.cdc_generation_timestamps");
        let gens = self
            .exec
            .run(op, &self.exec.stmt("SELECT time FROM system_distributed.cdc_generation_timestamps WHERE key = 'timestamps'".into()), &[])
            .await?;
        let mut times: Vec<i64> = gens
            .iter()
            .filter_map(|r| match r.get("time") {
                Some(CqlValue::Timestamp(ms)) => Some(*ms),
                _ => None,
            })
            .collect();
        times.sort_unstable();
        let first = times.iter().rposition(|t| *t <= from_ms).unwrap_or(0);
        let mut out = Vec::new();
        for t in times.get(first..).unwrap_or(&[]) {
            let stmt = self.exec.stmt(
                "SELECT streams FROM system_distributed.cdc_streams_descriptions_v2 WHERE time = ?"
                    .into(),
            );
            for row in self.exec.run(op, &stmt, &[CqlValue::Timestamp(*t)]).await? {
                if let Some(CqlValue::Set(items) | CqlValue::List(items)) = row.get("streams") {
                    for i in items {
                        if let CqlValue::Blob(b) = i {
                            if !out.contains(b) {
                                out.push(b.clone());
                            }
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// Reads the changes after `cursor` up to `horizon_ms`, in merged order.
    pub(crate) async fn poll(
        &self,
        layout: &TableLayout,
        cursor: &Cursor,
        horizon_ms: i64,
    ) -> Result<Vec<(Position, ChangeEvent)>> {
        let from_ms = match cursor {
            Cursor::From(ms) => *ms,
            Cursor::After(p) => timeuuid_micros(&p.time).div_euclid(1000),
        };
        let streams = self.streams(from_ms).await?;
        let (cql, lower) = match cursor {
            Cursor::From(ms) => (log_select(layout, false), CqlValue::Timestamp(*ms)),
            Cursor::After(p) => (log_select(layout, true), CqlValue::Timeuuid(p.time)),
        };
        let stmt = self.exec.stmt(cql);
        let mut out = Vec::new();
        for chunk in streams.chunks(64) {
            let values = [
                CqlValue::List(chunk.iter().cloned().map(CqlValue::Blob).collect()),
                lower.clone(),
                CqlValue::Timestamp(horizon_ms),
            ];
            let mut state = None;
            loop {
                let page = self
                    .exec
                    .page(Op::new("watch", layout.name()), &stmt, &values, state)
                    .await?;
                for row in &page.rows {
                    if let Some((pos, ev)) = event_of(layout, row)? {
                        if matches!(cursor, Cursor::After(p) if pos <= *p) {
                            continue;
                        }
                        out.push((pos, ev));
                    }
                }
                state = page.paging_state;
                if state.is_none() {
                    break;
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}

#[async_trait]
impl ChangeFeed for ScyllaFeed {
    async fn watch(&self, request: WatchRequest) -> Result<ChangeStream> {
        request.check_watchable()?;
        if !self.exec.flavour.has_cdc_log() {
            return Err(StoreError::Unsupported(format!(
                "watch `{}` on {}: capability change_feed is missing (Cassandra's CDC writes \
                 commit-log segments for external readers, not CQL tables); use ScyllaDB, \
                 PostgreSQL or MongoDB for a change feed",
                request.schema.name(),
                self.exec.flavour.name()
            )));
        }
        let layout = TableLayout::new(&self.exec.config.keyspace, request.schema);
        if let Some(f) = &request.filter {
            request.schema.check_filter(f)?;
        }
        let now = Timestamp::now();
        let retention = self.exec.config.feed.retention;
        let cursor = match &request.start {
            StartAt::Now => Cursor::From(now.as_millis()),
            StartAt::Beginning => Cursor::From(now.sub(retention).as_millis()),
            StartAt::After(token) => {
                let pos = decode_token(layout.name(), token)?;
                if Timestamp::from_micros(timeuuid_micros(&pos.time)) < now.sub(retention) {
                    return Err(StoreError::ResumeTokenExpired(format!(
                        "token {token} of `{}` is older than the CDC log retention of {retention:?}",
                        layout.name()
                    )));
                }
                Cursor::After(pos)
            }
        };
        let feed = self.clone();
        let filter = request.filter.clone();
        let state = (
            feed,
            layout,
            cursor,
            std::collections::VecDeque::<ChangeEvent>::new(),
            false,
        );
        let s = stream::unfold(state, move |(feed, layout, mut cursor, mut buf, failed)| {
            let filter = filter.clone();
            async move {
                if failed {
                    return None;
                }
                loop {
                    if let Some(ev) = buf.pop_front() {
                        return Some((Ok(ev), (feed, layout, cursor, buf, false)));
                    }
                    let cfg = feed.exec.config.feed;
                    let horizon = Timestamp::now().sub(cfg.confidence_window).as_millis();
                    match feed.poll(&layout, &cursor, horizon).await {
                        Err(e) => return Some((Err(e), (feed, layout, cursor, buf, true))),
                        Ok(events) if events.is_empty() => {
                            tokio::time::sleep(cfg.poll_interval).await;
                        }
                        Ok(events) => {
                            for (pos, ev) in events {
                                cursor = Cursor::After(pos);
                                let keep = match (&filter, &ev.document) {
                                    (None, _) => true,
                                    (Some(f), Some(doc)) => eval::matches(f, doc),
                                    (Some(_), None) => false,
                                };
                                if keep {
                                    buf.push_back(ev);
                                }
                            }
                        }
                    }
                }
            }
        });
        Ok(Box::pin(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opstore_domain::{Field, FieldType, Schema, json};
    use std::sync::LazyLock;

    static T: LazyLock<Schema> = LazyLock::new(|| {
        Schema::builder("things", "id")
            .field(Field::new("n", FieldType::Int))
            .build()
    });

    /// A v1 UUID at `micros` since the Unix epoch.
    pub(crate) fn uuid_at(micros: i64, node: u8) -> [u8; 16] {
        let ticks = u64::try_from(micros * 10 + UUID_EPOCH_OFFSET).unwrap();
        let mut u = [node; 16];
        u[0..4].copy_from_slice(&((ticks & 0xffff_ffff) as u32).to_be_bytes());
        u[4..6].copy_from_slice(&(((ticks >> 32) & 0xffff) as u16).to_be_bytes());
        u[6..8].copy_from_slice(&((((ticks >> 48) & 0x0fff) as u16) | 0x1000).to_be_bytes());
        u
    }

    #[test]
    fn timeuuid_time_is_extracted() {
        let u = uuid_at(1_767_225_600_123_456, 0);
        assert_eq!(timeuuid_micros(&u), 1_767_225_600_123_456);
    }

    #[test]
    fn tokens_round_trip_and_belong_to_their_table() {
        let pos = Position {
            time: uuid_at(5, 1),
            stream: vec![9; 16],
            seq: 2,
        };
        let token = encode_token("things", &pos);
        assert_eq!(decode_token("things", &token).unwrap(), pos);
        assert!(decode_token("other", &token).unwrap_err().is_validation());
        let junk = ResumeToken::from_bytes(vec![1, 2, 3]);
        assert!(decode_token("things", &junk).unwrap_err().is_validation());
    }

    #[test]
    fn positions_order_by_time_then_stream_then_seq() {
        let a = Position {
            time: uuid_at(10, 0),
            stream: vec![2],
            seq: 0,
        };
        let b = Position {
            time: uuid_at(10, 0),
            stream: vec![2],
            seq: 1,
        };
        let c = Position {
            time: uuid_at(10, 0),
            stream: vec![3],
            seq: 0,
        };
        let d = Position {
            time: uuid_at(11, 0),
            stream: vec![1],
            seq: 0,
        };
        let mut v = vec![d.clone(), c.clone(), b.clone(), a.clone()];
        v.sort();
        assert_eq!(v, vec![a, b, c, d]);
    }

    #[test]
    fn log_rows_become_events() {
        let layout = TableLayout::new("ks", &T);
        let row = |op: i64, last: &str, doc: Option<&str>| {
            Row::from_pairs(vec![
                ("cdc$stream_id", CqlValue::Blob(vec![7])),
                ("cdc$time", CqlValue::Timeuuid(uuid_at(1_000_000, 0))),
                ("cdc$batch_seq_no", CqlValue::Int(0)),
                ("cdc$operation", CqlValue::BigInt(op)),
                ("id", CqlValue::Text("a".into())),
                (
                    DOC,
                    doc.map_or(CqlValue::Null, |d| CqlValue::Text(d.into())),
                ),
                (LAST_OP, CqlValue::Text(last.into())),
            ])
        };
        let (_, ev) = event_of(&layout, &row(2, "insert", Some(r#"{"id":"a","n":1}"#)))
            .unwrap()
            .unwrap();
        assert_eq!(ev.op, ChangeOp::Insert);
        assert_eq!(ev.document, Some(json!({"id": "a", "n": 1})));
        assert_eq!(ev.at, Timestamp::from_micros(1_000_000));
        let (_, ev) = event_of(&layout, &row(1, "replace", Some(r#"{"id":"a","n":2}"#)))
            .unwrap()
            .unwrap();
        assert_eq!(ev.op, ChangeOp::Replace);
        let (_, ev) = event_of(&layout, &row(1, "update", Some(r#"{"id":"a","n":3}"#)))
            .unwrap()
            .unwrap();
        assert_eq!(ev.op, ChangeOp::Update);
        let (_, ev) = event_of(&layout, &row(4, "", None)).unwrap().unwrap();
        assert_eq!((ev.op, ev.document), (ChangeOp::Delete, None));
        assert!(
            event_of(&layout, &row(0, "", None)).unwrap().is_none(),
            "pre-image rows are skipped"
        );
    }

    #[test]
    fn log_select_reads_streams_between_bounds() {
        let layout = TableLayout::new("ks", &T);
        assert_eq!(
            log_select(&layout, true),
            "SELECT \"cdc$stream_id\", \"cdc$time\", \"cdc$batch_seq_no\", \"cdc$operation\", \"id\", doc, last_op \
             FROM ks.things_scylla_cdc_log WHERE \"cdc$stream_id\" IN ? AND \"cdc$time\" >= ? AND \"cdc$time\" <= maxTimeuuid(?)"
        );
        assert!(log_select(&layout, false).contains("\"cdc$time\" >= minTimeuuid(?)"));
    }
}
