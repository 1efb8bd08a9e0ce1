//! A change stream that reconnects after transient errors and applies the
//! expired-token policy.

use std::sync::Arc;

use backon::ExponentialBackoff;
use futures::StreamExt;
use opstore_domain::{
    ChangeEvent, ChangeFeed, ChangeStream, Filter, Schema, StartAt, StoreError, WatchRequest,
};
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
    stream: Option<ChangeStream>,
    reconnect: Option<ExponentialBackoff>,
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
            stream: None,
            reconnect: None,
        }
    }

    /// The next change. Cancel-safe: dropping the future loses no event.
    pub async fn next(&mut self) -> Result<ChangeEvent, ProcessorError> {
        loop {
            let stream = match &mut self.stream {
                Some(stream) => stream,
                None => {
                    let request = WatchRequest {
                        schema: self.schema,
                        start: self.resume.clone(),
                        filter: self.filter.clone(),
                    };
                    match self.feed.watch(request).await {
                        Ok(stream) => self.stream.insert(stream),
                        Err(error) => {
                            self.recover(error).await?;
                            continue;
                        }
                    }
                }
            };
            match stream.next().await {
                Some(Ok(event)) => {
                    self.resume = StartAt::After(event.token.clone());
                    self.reconnect = None;
                    return Ok(event);
                }
                Some(Err(error)) => {
                    self.stream = None;
                    self.recover(error).await?;
                }
                None => {
                    self.stream = None;
                    self.recover(StoreError::Connection(format!(
                        "change stream on `{}` ended",
                        self.schema.name()
                    )))
                    .await?;
                }
            }
        }
    }

    async fn recover(&mut self, error: StoreError) -> Result<(), ProcessorError> {
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
        if !error.is_transient() {
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
        tokio::time::sleep(delay).await;
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
