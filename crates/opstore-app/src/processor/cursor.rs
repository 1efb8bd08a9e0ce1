//! A change stream that reconnects after transient errors and applies the
//! expired-token policy.

use std::pin::Pin;
use std::sync::Arc;

use backon::ExponentialBackoff;
use futures::StreamExt;
use futures::future::BoxFuture;
use opstore_domain::{
    ChangeEvent, ChangeFeed, ChangeStream, Filter, Schema, StartAt, StoreError, WatchRequest,
};
use tokio::time::Sleep;
use tracing::warn;

use super::ProcessorError;
use super::config::{ExpiredTokenPolicy, RetryPolicy};

pub(crate) struct FeedCursor {
    name: Arc<str>,
    feed: Arc<dyn ChangeFeed>,
    schema: &'static Schema,
    filter: Option<Filter>,
    on_expired: ExpiredTokenPolicy,
    retry: RetryPolicy,
    /// Where the next watch starts: right after the last event returned, or the
    /// initial position before any.
    resume: StartAt,
    state: State,
    reconnect: Option<ExponentialBackoff>,
}

/// Where the cursor is between calls. Every wait lives here rather than in
/// the `next` future, so a caller that drops `next` (a `select!` whose other
/// branch won) resumes the same wait on the following call instead of
/// starting it over: a watch that takes longer to open than the caller's
/// shortest timer still completes.
enum State {
    /// No stream; the next call opens one at `resume`.
    Closed,
    /// A watch call in progress.
    Opening(BoxFuture<'static, Result<ChangeStream, StoreError>>),
    Open(ChangeStream),
    /// Waiting before reopening after an error.
    Backoff(Pin<Box<Sleep>>),
}

pub(crate) struct CursorConfig {
    pub name: Arc<str>,
    pub feed: Arc<dyn ChangeFeed>,
    pub schema: &'static Schema,
    pub filter: Option<Filter>,
    pub on_expired: ExpiredTokenPolicy,
    pub retry: RetryPolicy,
    pub start: StartAt,
}

impl FeedCursor {
    pub fn new(config: CursorConfig) -> Self {
        FeedCursor {
            name: config.name,
            feed: config.feed,
            schema: config.schema,
            filter: config.filter,
            on_expired: config.on_expired,
            retry: config.retry,
            resume: config.start,
            state: State::Closed,
            reconnect: None,
        }
    }

    /// The next change. Cancel-safe: dropping the future loses no event, and
    /// the next call continues the watch call or reconnect wait in progress.
    pub async fn next(&mut self) -> Result<ChangeEvent, ProcessorError> {
        loop {
            match &mut self.state {
                State::Closed => {
                    let feed = Arc::clone(&self.feed);
                    let request = WatchRequest {
                        schema: self.schema,
                        start: self.resume.clone(),
                        filter: self.filter.clone(),
                    };
                    self.state = State::Opening(Box::pin(async move { feed.watch(request).await }));
                }
                State::Opening(opening) => {
                    // Nothing but this await suspends until the state changes,
                    // so a completed future is never polled again.
                    match opening.await {
                        Ok(stream) => self.state = State::Open(stream),
                        Err(error) => self.recover(error)?,
                    }
                }
                State::Open(stream) => match stream.next().await {
                    Some(Ok(event)) => {
                        self.resume = StartAt::After(event.token.clone());
                        self.reconnect = None;
                        return Ok(event);
                    }
                    Some(Err(error)) => self.recover(error)?,
                    None => self.recover(StoreError::Connection(format!(
                        "change stream on `{}` ended",
                        self.schema.name()
                    )))?,
                },
                State::Backoff(sleep) => {
                    sleep.as_mut().await;
                    self.state = State::Closed;
                }
            }
        }
    }

    /// Decides what follows a failed watch or stream: reopen at once (expired
    /// token with [`ExpiredTokenPolicy::RestartFromNow`]), reopen after a
    /// backoff (an error that may heal), or stop.
    fn recover(&mut self, error: StoreError) -> Result<(), ProcessorError> {
        self.state = State::Closed;
        if error.is_resume_token_expired() {
            return match self.on_expired {
                ExpiredTokenPolicy::Fail => Err(self.fail(error)),
                ExpiredTokenPolicy::RestartFromNow => {
                    warn!(
                        processor = %self.name,
                        collection = self.schema.name(),
                        %error,
                        "checkpoint is older than the change feed's history; restarting from now, changes in between are not delivered"
                    );
                    self.resume = StartAt::Now;
                    Ok(())
                }
            };
        }
        if !reconnectable(&error) {
            return Err(self.fail(error));
        }
        let retry = self.retry;
        let delay = self
            .reconnect
            .get_or_insert_with(|| retry.endless_backoff())
            .next()
            .unwrap_or(retry.max_delay);
        warn!(
            processor = %self.name,
            collection = self.schema.name(),
            %error,
            ?delay,
            "change feed failed; reconnecting"
        );
        self.state = State::Backoff(Box::pin(tokio::time::sleep(delay)));
        Ok(())
    }

    fn fail(&self, source: StoreError) -> ProcessorError {
        ProcessorError::Store {
            processor: self.name.to_string(),
            operation: "watch the change feed",
            source,
        }
    }
}

/// Whether reopening the feed at the last delivered position may succeed:
/// connection loss and timeouts, and conflicts (a feed's own bookkeeping, such
/// as purging old history, can lose a race with a concurrent writer). Invalid
/// requests, unsupported feeds and backend faults stop the processor.
fn reconnectable(error: &StoreError) -> bool {
    error.is_transient() || error.is_conflict()
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;
    use std::time::Duration;

    use async_trait::async_trait;
    use futures::FutureExt;
    use opstore_domain::entities::dead_letter::DeadLetter;
    use opstore_domain::{ChangeOp, Entity, ResumeToken, Timestamp};
    use tokio::sync::watch;

    use super::*;

    fn event(n: u8) -> ChangeEvent {
        ChangeEvent {
            collection: DeadLetter::schema().name().to_owned(),
            op: ChangeOp::Insert,
            key: format!("k{n}"),
            document: None,
            token: ResumeToken::from_bytes(vec![n]),
            at: Timestamp::now(),
        }
    }

    /// Answers each watch with the next scripted stream once `open` is true,
    /// and records where each watch started.
    struct ScriptedFeed {
        open: watch::Receiver<bool>,
        streams: Mutex<VecDeque<Vec<Result<ChangeEvent, StoreError>>>>,
        starts: Mutex<Vec<StartAt>>,
    }

    #[async_trait]
    impl ChangeFeed for ScriptedFeed {
        async fn watch(&self, request: WatchRequest) -> opstore_domain::Result<ChangeStream> {
            self.starts.lock().unwrap().push(request.start);
            let mut open = self.open.clone();
            open.wait_for(|o| *o)
                .await
                .map_err(|_| StoreError::Connection("gate dropped".into()))?;
            let items = self.streams.lock().unwrap().pop_front().unwrap_or_default();
            Ok(futures::stream::iter(items)
                .chain(futures::stream::pending())
                .boxed())
        }
    }

    fn cursor(
        streams: Vec<Vec<Result<ChangeEvent, StoreError>>>,
        open: bool,
    ) -> (FeedCursor, Arc<ScriptedFeed>, watch::Sender<bool>) {
        let (gate, open) = watch::channel(open);
        let feed = Arc::new(ScriptedFeed {
            open,
            streams: Mutex::new(streams.into()),
            starts: Mutex::default(),
        });
        let cursor = FeedCursor::new(CursorConfig {
            name: Arc::from("test"),
            feed: Arc::clone(&feed) as Arc<dyn ChangeFeed>,
            schema: DeadLetter::schema(),
            filter: None,
            on_expired: ExpiredTokenPolicy::Fail,
            retry: RetryPolicy::exponential(3, Duration::from_millis(1), Duration::from_millis(1)),
            start: StartAt::Beginning,
        });
        (cursor, feed, gate)
    }

    #[tokio::test]
    async fn a_dropped_next_keeps_the_watch_in_progress() {
        let (mut cursor, feed, gate) = cursor(vec![vec![Ok(event(1))]], false);
        // Each poll starts or continues the watch and is then dropped, like a
        // `select!` branch that lost to a timer.
        for _ in 0..3 {
            assert!(cursor.next().now_or_never().is_none());
        }
        gate.send_replace(true);
        let got = cursor.next().await.unwrap();
        assert_eq!(got.key, "k1");
        assert_eq!(*feed.starts.lock().unwrap(), vec![StartAt::Beginning]);
    }

    #[tokio::test]
    async fn conflicts_and_transient_errors_reconnect_after_the_last_event() {
        let streams = vec![
            vec![
                Ok(event(1)),
                Err(StoreError::Conflict("purge serialization failure".into())),
            ],
            vec![Ok(event(2)), Err(StoreError::Connection("reset".into()))],
            vec![Ok(event(3))],
        ];
        let (mut cursor, feed, _gate) = cursor(streams, true);
        for n in 1..=3 {
            assert_eq!(cursor.next().await.unwrap().key, format!("k{n}"));
        }
        assert_eq!(
            *feed.starts.lock().unwrap(),
            vec![
                StartAt::Beginning,
                StartAt::After(event(1).token),
                StartAt::After(event(2).token),
            ]
        );
    }

    #[tokio::test]
    async fn invalid_requests_stop_the_cursor() {
        let streams = vec![vec![Err(StoreError::Validation("bad token".into()))]];
        let (mut cursor, _feed, _gate) = cursor(streams, true);
        let error = cursor.next().await.unwrap_err();
        assert!(matches!(
            error,
            ProcessorError::Store { ref source, .. } if source.is_validation()
        ));
    }
}
