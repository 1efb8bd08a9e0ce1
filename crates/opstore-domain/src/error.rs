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
///
/// Callers branch on the kind with the `is_*` helpers rather than on messages:
///
/// ```
/// # use std::sync::LazyLock;
/// # use opstore_domain::{Entity, Field, FieldType, Schema};
/// # #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
/// # struct Node { id: String, rack: i64, state: String }
/// # static NODE: LazyLock<Schema> = LazyLock::new(|| {
/// #     Schema::builder("nodes", "id")
/// #         .field(Field::new("rack", FieldType::Int).indexed())
/// #         .field(Field::new("state", FieldType::String).indexed())
/// #         .build()
/// # });
/// # impl Entity for Node {
/// #     fn schema() -> &'static Schema { &NODE }
/// #     fn key(&self) -> String { self.id.clone() }
/// # }
/// # fn node(id: &str, rack: i64, state: &str) -> Node {
/// #     Node { id: id.into(), rack, state: state.into() }
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> opstore_domain::Result<()> {
/// use opstore_domain::{Filter, Query, Repository, StoreError, StoreExt, Update};
/// use opstore_memory::MemoryStore;
///
/// let store = MemoryStore::new(Default::default());
/// let nodes = store.repository::<Node>()?;
/// nodes.insert(&node("n1", 4, "Healthy")).await?;
///
/// let duplicate = nodes.insert(&node("n1", 4, "Healthy")).await.unwrap_err();
/// assert!(duplicate.is_conflict());
/// let missing = nodes.update_one("n9", &Update::new().set("rack", 1)).await.unwrap_err();
/// assert!(missing.is_not_found());
/// assert!(missing.to_string().contains("n9"), "messages name the key: {missing}");
/// // Unknown field paths never reach a backend.
/// let unknown = nodes.find(&Query::filter(Filter::eq("owner", "x"))).await.unwrap_err();
/// assert!(matches!(unknown, StoreError::Validation(_)));
/// // Only connection losses and timeouts are worth retrying as they are.
/// assert!(!unknown.is_transient());
/// assert!(StoreError::Timeout("find on nodes".into()).is_transient());
/// # Ok(()) }
/// ```
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
