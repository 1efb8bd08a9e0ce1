//! The one error type every port returns.

use std::error::Error as StdError;

/// Result alias used by every port.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Boxed source error carried by [`StoreError::Backend`].
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Errors returned by opstore ports.
///
/// Messages name the operation, the collection and the key involved. They never
/// contain credentials: adapters build them from redacted configuration only.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The addressed document, lease or record does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// A unique key would be duplicated, or a concurrent write won.
    #[error("conflict: {0}")]
    Conflict(String),
    /// A lease is held by another owner.
    #[error("lock held: {0}")]
    LockHeld(String),
    /// The caller's lease expired or was taken over; its work must stop.
    #[error("lock lost: {0}")]
    LockLost(String),
    /// The request is malformed: unknown field path, wrong value type, bad id, oversized document.
    #[error("invalid request: {0}")]
    Validation(String),
    /// The backend lacks a capability the call needs; the message says which and what to do.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A change-feed resume token is older than the retained history.
    #[error("resume token expired: {0}")]
    ResumeTokenExpired(String),
    /// The operation did not finish in time (statement timeout, pool exhaustion).
    #[error("timeout: {0}")]
    Timeout(String),
    /// The backend could not be reached or the connection broke.
    #[error("connection failed: {0}")]
    Connection(String),
    /// Any other backend failure, with its source.
    #[error("backend error: {message}")]
    Backend {
        /// What was being done when it failed.
        message: String,
        /// The driver's error.
        #[source]
        source: Option<BoxError>,
    },
}

macro_rules! is_variant {
    ($($fn_name:ident => $variant:ident),* $(,)?) => {
        $(
            #[doc = concat!("True for [`StoreError::", stringify!($variant), "`].")]
            pub fn $fn_name(&self) -> bool {
                matches!(self, StoreError::$variant { .. })
            }
        )*
    };
}

impl StoreError {
    is_variant! {
        is_not_found => NotFound,
        is_conflict => Conflict,
        is_lock_held => LockHeld,
        is_lock_lost => LockLost,
        is_validation => Validation,
        is_unsupported => Unsupported,
        is_resume_token_expired => ResumeTokenExpired,
        is_timeout => Timeout,
        is_connection => Connection,
        is_backend => Backend,
    }

    /// A backend error with a source.
    pub fn backend(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        StoreError::Backend {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// Whether retrying the same call later may succeed (connection loss, timeouts).
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Timeout(_) | StoreError::Connection(_))
    }
}

/// Shorthand for a [`StoreError::Validation`] result.
pub(crate) fn invalid<T>(message: impl Into<String>) -> Result<T> {
    Err(StoreError::Validation(message.into()))
}
