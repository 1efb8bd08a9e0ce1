//! Event processors: a change feed drives a handler, with retries, dead letters,
//! checkpoints, metrics and graceful stop.
//!
//! * [`EventProcessor`] handles one event at a time in feed order.
//! * [`QueueEventProcessor`] spreads events over N workers by a partition key,
//!   keeping feed order per key, and checkpoints only below the oldest
//!   unfinished event.
//!
//! Both resume from the processor's checkpoint after a restart, so delivery is
//! at least once: a crash between handling and checkpointing hands the same
//! events to the handler again, and nothing is lost. An event whose retries run
//! out goes to the dead-letter collection ([`DeadLetter`]) or, in
//! [`FailureMode::Stop`], stops the processor before its checkpoint.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use opstore_app::processor::{EventProcessor, HandlerError, ProcessorConfig, ProcessorPorts, StartFrom};
//! use opstore_app::{DataStore, StoreConfig};
//! use opstore_domain::entities::errors::{ErrorRecord, Priority};
//! use opstore_domain::{ChangeEvent, Entity, Repository, Timestamp};
//! use tokio::sync::mpsc;
//!
//! let store = DataStore::open(&StoreConfig::from_url("memory://")?).await?;
//! let (seen_tx, mut seen) = mpsc::unbounded_channel();
//! let config = ProcessorConfig::new("pager", ErrorRecord::schema(), StartFrom::Beginning);
//! let ports = ProcessorPorts::from_store(store.store().as_ref())?;
//! let handle = EventProcessor::new(config, ports, move |event: ChangeEvent| {
//!     let seen_tx = seen_tx.clone();
//!     async move {
//!         seen_tx.send(event.key).map_err(|_| HandlerError::permanent("receiver gone"))
//!     }
//! })
//! .spawn();
//!
//! let mut record = ErrorRecord::new("fp-1", "prod", "api-0", "OOMKilled", Priority::P1, Timestamp::now());
//! record.id = "e1".into();
//! store.repository::<ErrorRecord>()?.insert(&record).await?;
//! assert_eq!(seen.recv().await.as_deref(), Some("e1"));
//!
//! // A graceful stop finishes in-flight work and writes the checkpoint, which the
//! // next start of a processor with the same name resumes from.
//! let report = handle.stop().await?;
//! assert_eq!(report.stats.handled, 1);
//! assert_eq!(store.checkpoints().load("pager").await?, report.checkpoint);
//! # Ok(()) }
//! ```
//!
//! [`DeadLetter`]: opstore_domain::entities::dead_letter::DeadLetter

mod checkpoint;
mod config;
mod cursor;
mod dispatch;
mod handler;
mod queue;
mod single;
mod telemetry;
mod tracker;

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use opstore_domain::entities::dead_letter::DeadLetter;
use opstore_domain::{
    ChangeFeed, CheckpointStore, Clock, Repository, ResumeToken, StartAt, Store, StoreError,
    StoreExt, SystemClock,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::{
    CheckpointPolicy, ExpiredTokenPolicy, FailureMode, PartitionKey, ProcessorConfig, QueueConfig,
    RetryPolicy, StartFrom,
};
pub use handler::{EventHandler, HandlerError};
pub use queue::QueueEventProcessor;
pub use single::EventProcessor;
pub use telemetry::{ProcessorStats, StatsSnapshot, names as metric_names};

use checkpoint::Checkpointer;
use cursor::{CursorConfig, FeedCursor};
use dispatch::Dispatcher;
use telemetry::Metrics;

/// The ports a processor uses.
#[derive(Clone)]
pub struct ProcessorPorts {
    /// Source of change events.
    pub feed: Arc<dyn ChangeFeed>,
    /// Where the processor's resume token is kept.
    pub checkpoints: Arc<dyn CheckpointStore>,
    /// Where events that exhausted their retries go.
    pub dead_letters: Arc<dyn Repository<DeadLetter>>,
    /// Time for dead letters and the lag metric.
    pub clock: Arc<dyn Clock>,
}

impl fmt::Debug for ProcessorPorts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessorPorts").finish_non_exhaustive()
    }
}

impl ProcessorPorts {
    /// The feed, checkpoints and dead-letter collection of `store` (migrated
    /// with the [`DeadLetter`] schema beforehand), with the system clock.
    pub fn from_store(store: &(impl Store + ?Sized)) -> Result<Self, StoreError> {
        Ok(ProcessorPorts {
            feed: store.change_feed(),
            checkpoints: store.checkpoints(),
            dead_letters: Arc::new(store.repository::<DeadLetter>()?),
            clock: Arc::new(SystemClock),
        })
    }
}

/// Why a processor stopped other than by request.
#[derive(Debug, thiserror::Error)]
pub enum ProcessorError {
    /// A port call failed in a way retrying does not fix.
    #[error("processor `{processor}` could not {operation}: {source}")]
    Store {
        /// Processor name.
        processor: String,
        /// What it was doing.
        operation: &'static str,
        /// The port's error.
        #[source]
        source: StoreError,
    },
    /// In [`FailureMode::Stop`], an event exhausted its retries.
    #[error(
        "processor `{processor}` stopped: handling `{collection}` key `{key}` failed after {attempts} attempts: {}",
        source.chain()
    )]
    HandlerFailed {
        /// Processor name.
        processor: String,
        /// Source collection.
        collection: String,
        /// Key of the changed document.
        key: String,
        /// Attempts made.
        attempts: u32,
        /// The last error.
        #[source]
        source: HandlerError,
    },
    /// The processor's task panicked or was aborted.
    #[error("processor `{processor}` task ended abnormally: {message}")]
    Task {
        /// Processor name.
        processor: String,
        /// What the runtime reported.
        message: String,
    },
}

impl ProcessorError {
    /// Whether the processor stopped because its checkpoint was older than the
    /// feed's history (with [`ExpiredTokenPolicy::Fail`]).
    pub fn is_resume_token_expired(&self) -> bool {
        matches!(self, ProcessorError::Store { source, .. } if source.is_resume_token_expired())
    }
}

/// What a processor did, returned when it stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessorReport {
    /// Its counters.
    pub stats: StatsSnapshot,
    /// The last checkpoint written (or loaded, when nothing was written).
    pub checkpoint: Option<ResumeToken>,
}

/// A running processor. Dropping the handle leaves it running; call
/// [`stop`](ProcessorHandle::stop) to end it.
#[derive(Debug)]
pub struct ProcessorHandle {
    name: Arc<str>,
    cancel: CancellationToken,
    stats: ProcessorStats,
    task: JoinHandle<Result<ProcessorReport, ProcessorError>>,
}

impl ProcessorHandle {
    fn spawn<F>(
        name: Arc<str>,
        stats: ProcessorStats,
        run: impl FnOnce(CancellationToken) -> F,
    ) -> Self
    where
        F: Future<Output = Result<ProcessorReport, ProcessorError>> + Send + 'static,
    {
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run(cancel.clone()));
        ProcessorHandle {
            name,
            cancel,
            stats,
            task,
        }
    }

    /// Requests a graceful stop and waits for it: handler calls in progress
    /// finish, waits between retries end early (those events stay
    /// unacknowledged and are delivered again after a restart), and the
    /// checkpoint is written.
    pub async fn stop(self) -> Result<ProcessorReport, ProcessorError> {
        self.cancel.cancel();
        self.join().await
    }

    /// Waits until the processor ends by itself (an error) or by a stop through
    /// its [`cancellation_token`](Self::cancellation_token).
    pub async fn join(self) -> Result<ProcessorReport, ProcessorError> {
        match self.task.await {
            Ok(result) => result,
            Err(e) => Err(ProcessorError::Task {
                processor: self.name.to_string(),
                message: e.to_string(),
            }),
        }
    }

    /// The token whose cancellation stops the processor gracefully.
    pub fn cancellation_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Counters now.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// Whether the processor has ended.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

/// What both processors share: configuration, ports and the dispatcher.
struct Core {
    name: Arc<str>,
    config: ProcessorConfig,
    ports: ProcessorPorts,
    stats: ProcessorStats,
    dispatcher: Arc<Dispatcher>,
}

impl Core {
    fn new(config: ProcessorConfig, ports: ProcessorPorts, handler: Arc<dyn EventHandler>) -> Self {
        let name: Arc<str> = Arc::from(config.name.as_str());
        let stats = ProcessorStats::default();
        let metrics = Metrics::new(&config.name, config.schema.name(), &config.labels);
        let dispatcher = Arc::new(Dispatcher {
            name: Arc::clone(&name),
            handler,
            retry: config.retry,
            failure_mode: config.failure_mode,
            dead_letters: Arc::clone(&ports.dead_letters),
            clock: Arc::clone(&ports.clock),
            metrics,
            stats: stats.clone(),
        });
        Core {
            name,
            config,
            ports,
            stats,
            dispatcher,
        }
    }

    /// Loads the checkpoint and positions the feed after it.
    async fn open(&self) -> Result<(FeedCursor, Checkpointer), ProcessorError> {
        let loaded = self
            .ports
            .checkpoints
            .load(&self.name)
            .await
            .map_err(|source| ProcessorError::Store {
                processor: self.name.to_string(),
                operation: "load the checkpoint",
                source,
            })?;
        let start = match &loaded {
            Some(token) => StartAt::After(token.clone()),
            None => self.config.start.start_at(),
        };
        tracing::info!(processor = %self.name, ?start, "processor starting");
        let cursor = FeedCursor::new(CursorConfig {
            name: Arc::clone(&self.name),
            feed: Arc::clone(&self.ports.feed),
            schema: self.config.schema,
            filter: self.config.filter.clone(),
            on_expired: self.config.on_expired_token,
            retry: self.config.retry,
            start,
        });
        let checkpointer = Checkpointer::new(
            Arc::clone(&self.name),
            Arc::clone(&self.ports.checkpoints),
            self.config.checkpoint,
            self.stats.clone(),
            loaded,
        );
        Ok((cursor, checkpointer))
    }

    fn report(&self, checkpointer: &Checkpointer) -> ProcessorReport {
        ProcessorReport {
            stats: self.stats.snapshot(),
            checkpoint: checkpointer.saved().cloned(),
        }
    }

    fn handler_failed(
        &self,
        event: &opstore_domain::ChangeEvent,
        attempts: u32,
        source: HandlerError,
    ) -> ProcessorError {
        ProcessorError::HandlerFailed {
            processor: self.name.to_string(),
            collection: event.collection.clone(),
            key: event.key.clone(),
            attempts,
            source,
        }
    }
}
