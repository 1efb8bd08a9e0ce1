//! The in-process change log: one sequence per store, retained by age and count.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use opstore_domain::eval;
use opstore_domain::{
    ChangeEvent, ChangeFeed, ChangeOp, ChangeStream, Clock, Filter, Result, ResumeToken, StartAt,
    StoreError, Timestamp, Value, WatchRequest,
};
use tokio::sync::watch;

use crate::state::Change;

#[derive(Debug)]
struct Entry {
    seq: u64,
    collection: Arc<str>,
    op: ChangeOp,
    key: Arc<str>,
    doc: Option<Arc<Value>>,
    at: Timestamp,
}

#[derive(Debug)]
struct Log {
    entries: VecDeque<Entry>,
    /// Sequence number the next entry gets; the first is 1.
    next_seq: u64,
}

impl Log {
    /// Sequence of the oldest retained entry (or `next_seq` when none is).
    fn first_seq(&self) -> u64 {
        self.entries.front().map_or(self.next_seq, |e| e.seq)
    }
}

/// Retention limits of the change log.
#[derive(Debug, Clone, Copy)]
pub struct FeedRetention {
    /// Entries older than this are dropped.
    pub max_age: Duration,
    /// At most this many entries are kept.
    pub max_entries: usize,
}

#[derive(Debug)]
pub(crate) struct Feed {
    /// Distinguishes tokens of this store instance from any other's.
    epoch: u64,
    log: Mutex<Log>,
    head: watch::Sender<u64>,
    retention: FeedRetention,
    clock: Arc<dyn Clock>,
}

fn poisoned() -> StoreError {
    StoreError::Backend {
        message: "memory change log lock poisoned".into(),
        source: None,
    }
}

impl Feed {
    pub fn new(retention: FeedRetention, clock: Arc<dyn Clock>) -> Self {
        let (head, _) = watch::channel(0);
        Feed {
            epoch: rand::random(),
            log: Mutex::new(Log {
                entries: VecDeque::new(),
                next_seq: 1,
            }),
            head,
            retention,
            clock,
        }
    }

    /// Appends committed changes in order.
    pub fn publish(&self, collection: &Arc<str>, changes: Vec<Change>) {
        if changes.is_empty() {
            return;
        }
        let now = self.clock.now();
        let Ok(mut log) = self.log.lock() else { return };
        for c in changes {
            let seq = log.next_seq;
            log.next_seq += 1;
            log.entries.push_back(Entry {
                seq,
                collection: Arc::clone(collection),
                op: c.op,
                key: c.key,
                doc: c.doc,
                at: now,
            });
        }
        self.prune(&mut log, now);
        let head = log.next_seq - 1;
        drop(log);
        // Nobody to wake: a watcher that subscribes later reads the log (under
        // the lock just released) after subscribing, so it sees these entries.
        if self.head.receiver_count() > 0 {
            self.head.send_replace(head);
        }
    }

    fn prune(&self, log: &mut Log, now: Timestamp) {
        let horizon = now.sub(self.retention.max_age);
        while log
            .entries
            .front()
            .is_some_and(|e| e.at < horizon || log.entries.len() > self.retention.max_entries)
        {
            log.entries.pop_front();
        }
    }

    fn token(&self, seq: u64) -> ResumeToken {
        let mut bytes = Vec::with_capacity(16);
        bytes.extend_from_slice(&self.epoch.to_be_bytes());
        bytes.extend_from_slice(&seq.to_be_bytes());
        ResumeToken::from_bytes(bytes)
    }

    fn parse(&self, token: &ResumeToken) -> Result<u64> {
        let b = token.as_bytes();
        let (Some(epoch), Some(seq)) = (b.get(..8), b.get(8..16)) else {
            return Err(StoreError::Validation(format!(
                "resume token {token} is not a memory-store token"
            )));
        };
        let epoch = u64::from_be_bytes(epoch.try_into().unwrap_or_default());
        if b.len() != 16 || epoch != self.epoch {
            return Err(StoreError::ResumeTokenExpired(format!(
                "resume token {token} belongs to another store instance; its history is gone"
            )));
        }
        Ok(u64::from_be_bytes(seq.try_into().unwrap_or_default()))
    }

    /// Next sequence to deliver for `start`, checked against retention.
    fn start_seq(&self, start: &StartAt) -> Result<u64> {
        let mut log = self.log.lock().map_err(|_| poisoned())?;
        self.prune(&mut log, self.clock.now());
        match start {
            StartAt::Now => Ok(log.next_seq),
            StartAt::Beginning => Ok(log.first_seq()),
            StartAt::After(token) => {
                let next = self.parse(token)?.saturating_add(1);
                if next > log.next_seq {
                    return Err(StoreError::Validation(format!(
                        "resume token {token} is ahead of the change log"
                    )));
                }
                if next < log.first_seq() {
                    return Err(expired(token));
                }
                Ok(next)
            }
        }
    }

    /// The next matching event at or after `*next`, advancing `*next` past it.
    fn poll(
        &self,
        collection: &str,
        filter: Option<&Filter>,
        next: &mut u64,
    ) -> Result<Option<ChangeEvent>> {
        let mut log = self.log.lock().map_err(|_| poisoned())?;
        self.prune(&mut log, self.clock.now());
        if *next < log.first_seq() {
            return Err(StoreError::ResumeTokenExpired(format!(
                "watcher on `{collection}` fell behind the retained change log (wanted #{next}, oldest is #{})",
                log.first_seq()
            )));
        }
        let offset = usize::try_from(*next - log.first_seq()).unwrap_or(usize::MAX);
        for entry in log.entries.iter().skip(offset) {
            *next = entry.seq + 1;
            if &*entry.collection != collection {
                continue;
            }
            let pass = match (filter, &entry.doc) {
                (None, _) => true,
                (Some(f), Some(doc)) => eval::matches(f, doc),
                (Some(_), None) => false,
            };
            if pass {
                return Ok(Some(ChangeEvent {
                    collection: collection.to_owned(),
                    op: entry.op,
                    key: entry.key.to_string(),
                    document: entry.doc.as_deref().cloned(),
                    token: self.token(entry.seq),
                    at: entry.at,
                }));
            }
        }
        Ok(None)
    }
}

fn expired(token: &ResumeToken) -> StoreError {
    StoreError::ResumeTokenExpired(format!(
        "resume token {token} is older than the retained change log"
    ))
}

/// The [`ChangeFeed`] port over the store's log.
#[derive(Debug, Clone)]
pub(crate) struct MemoryFeed(pub Arc<Feed>);

struct WatchState {
    feed: Arc<Feed>,
    collection: String,
    filter: Option<Filter>,
    next: u64,
    head: watch::Receiver<u64>,
    done: bool,
}

#[async_trait]
impl ChangeFeed for MemoryFeed {
    async fn watch(&self, request: WatchRequest) -> Result<ChangeStream> {
        request.check_watchable()?;
        let filter = match &request.filter {
            Some(f) => Some(request.schema.check_filter(f)?.into_inner()),
            None => None,
        };
        let head = self.0.head.subscribe();
        let next = self.0.start_seq(&request.start)?;
        let state = WatchState {
            feed: Arc::clone(&self.0),
            collection: request.schema.name().to_owned(),
            filter,
            next,
            head,
            done: false,
        };
        let stream = futures::stream::unfold(state, |mut st| async move {
            if st.done {
                return None;
            }
            loop {
                // Mark the current head as seen before reading, so a publish
                // between the read and the wait still wakes us.
                st.head.borrow_and_update();
                match st
                    .feed
                    .poll(&st.collection, st.filter.as_ref(), &mut st.next)
                {
                    Ok(Some(event)) => return Some((Ok(event), st)),
                    Ok(None) => {}
                    Err(e) => {
                        st.done = true;
                        return Some((Err(e), st));
                    }
                }
                if st.head.changed().await.is_err() {
                    return None;
                }
            }
        });
        Ok(stream.boxed())
    }
}
