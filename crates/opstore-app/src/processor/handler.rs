//! The handler a processor calls for each change, and its error.

use std::future::Future;

use async_trait::async_trait;
use opstore_domain::{BoxError, ChangeEvent, StoreError};

/// Handles one change event. Called again for the same event when it fails (up
/// to the retry policy) and after a restart for events not yet checkpointed, so
/// it must tolerate duplicates.
///
/// Any `Fn(ChangeEvent) -> impl Future<Output = Result<(), HandlerError>>` is a
/// handler:
///
/// ```
/// use opstore_app::processor::{EventHandler, HandlerError};
/// use opstore_domain::ChangeEvent;
///
/// fn assert_handler(_: impl EventHandler) {}
/// assert_handler(|event: ChangeEvent| async move {
///     if event.key.is_empty() {
///         return Err(HandlerError::permanent("event without a key"));
///     }
///     Ok(())
/// });
/// ```
#[async_trait]
pub trait EventHandler: Send + Sync + 'static {
    /// Handles `event`; an error is retried unless it is permanent.
    async fn handle(&self, event: &ChangeEvent) -> Result<(), HandlerError>;
}

#[async_trait]
impl<F, Fut> EventHandler for F
where
    F: Fn(ChangeEvent) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send,
{
    async fn handle(&self, event: &ChangeEvent) -> Result<(), HandlerError> {
        self(event.clone()).await
    }
}

/// Why a handler failed.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct HandlerError {
    message: String,
    #[source]
    source: Option<BoxError>,
    retry: Retry,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    Allowed,
    Pointless,
}

impl HandlerError {
    /// A failure that may succeed when retried.
    pub fn new(message: impl Into<String>) -> Self {
        HandlerError {
            message: message.into(),
            source: None,
            retry: Retry::Allowed,
        }
    }

    /// A retryable failure with its cause.
    pub fn with_source(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        HandlerError {
            message: message.into(),
            source: Some(source.into()),
            retry: Retry::Allowed,
        }
    }

    /// A failure that retrying cannot fix (a malformed event): the retry policy
    /// is skipped and the failure mode applies at once.
    pub fn permanent(message: impl Into<String>) -> Self {
        HandlerError {
            message: message.into(),
            source: None,
            retry: Retry::Pointless,
        }
    }

    /// Whether retrying is pointless.
    pub fn is_permanent(&self) -> bool {
        self.retry == Retry::Pointless
    }

    /// The message and its chain of causes, for logs and dead letters.
    pub fn chain(&self) -> String {
        let mut text = self.message.clone();
        let mut cause = std::error::Error::source(self);
        while let Some(c) = cause {
            text.push_str(": ");
            text.push_str(&c.to_string());
            cause = c.source();
        }
        text
    }
}

impl From<StoreError> for HandlerError {
    /// Store errors are retryable, except validation errors, which repeat.
    fn from(error: StoreError) -> Self {
        let retry = if error.is_validation() {
            Retry::Pointless
        } else {
            Retry::Allowed
        };
        HandlerError {
            message: "store call failed".into(),
            source: Some(Box::new(error)),
            retry,
        }
    }
}
