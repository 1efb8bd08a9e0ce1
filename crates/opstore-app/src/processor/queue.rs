//! The worker-pool processor: parallel across partition keys, ordered within one.

use std::fmt;
use std::sync::Arc;

use opstore_domain::ChangeEvent;
use tokio::sync::mpsc;
use tokio::task::{JoinError, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::checkpoint::{Checkpointer, tick};
use super::dispatch::{Dispatcher, Outcome};
use super::telemetry::ProcessorStats;
use super::tracker::Tracker;
use super::{
    Core, EventHandler, ProcessorConfig, ProcessorError, ProcessorHandle, ProcessorPorts,
    ProcessorReport, QueueConfig,
};

/// Watches a collection from its checkpoint and spreads the changes over a pool
/// of workers.
///
/// Events with the same [`PartitionKey`](super::PartitionKey) go to the same
/// worker and are handled in feed order; other keys run in parallel. Each worker
/// has a bounded queue, and the feed is read only while the target worker has
/// room, so a slow handler slows the reader instead of growing memory. The
/// checkpoint is the token of the newest event below which every event is done:
/// a slow event holds it back however many later events finish, so a crash
/// loses nothing (later events are delivered again).
///
/// Retries, dead letters and [`FailureMode::Stop`](super::FailureMode::Stop)
/// work as in [`EventProcessor`](super::EventProcessor); on a stop failure the
/// worker that failed takes no further events, the others finish the event in
/// hand, and the checkpoint stays before the failed event.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::num::NonZeroUsize;
/// use opstore_app::processor::{PartitionKey, ProcessorConfig, ProcessorPorts, QueueConfig};
/// use opstore_app::processor::{QueueEventProcessor, StartFrom};
/// use opstore_app::services::health::HealthEventService;
/// use opstore_app::{DataStore, StoreConfig};
/// use opstore_domain::entities::health::{HealthEvent, HealthEventRecord};
/// use opstore_domain::{ChangeEvent, Entity};
/// use tokio::sync::mpsc;
///
/// let store = DataStore::open(&StoreConfig::from_url("memory://")?).await?;
/// let (done_tx, mut done) = mpsc::unbounded_channel();
/// // Four workers; all events of one node go to the same worker, in feed order.
/// let queue = QueueConfig {
///     workers: NonZeroUsize::new(4).unwrap(),
///     queue_capacity: NonZeroUsize::new(64).unwrap(),
///     partition: PartitionKey::Field("healthevent.nodename".into()),
/// };
/// let config = ProcessorConfig::new("quarantine", HealthEventRecord::schema(), StartFrom::Beginning);
/// let ports = ProcessorPorts::from_store(store.store().as_ref())?;
/// let handle = QueueEventProcessor::new(config, queue, ports, move |event: ChangeEvent| {
///     let done_tx = done_tx.clone();
///     async move {
///         let _ = done_tx.send(event.key);
///         Ok(())
///     }
/// })
/// .spawn();
///
/// let health = HealthEventService::new(store.store().clone())?;
/// for node in ["gpu-1", "gpu-2", "gpu-1"] {
///     let event = HealthEvent { node_name: node.into(), is_fatal: true, ..HealthEvent::default() };
///     health.create(event).await?;
/// }
/// for _ in 0..3 {
///     done.recv().await;
/// }
/// let report = handle.stop().await?;
/// assert_eq!(report.stats.handled, 3);
/// # Ok(()) }
/// ```
pub struct QueueEventProcessor {
    core: Core,
    queue: QueueConfig,
}

impl fmt::Debug for QueueEventProcessor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueEventProcessor")
            .field("config", &self.core.config)
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

struct Job {
    seq: u64,
    event: ChangeEvent,
}

struct Completion {
    seq: u64,
    event: ChangeEvent,
    result: Result<Outcome, ProcessorError>,
}

impl QueueEventProcessor {
    /// A processor; metric handles are registered with the recorder installed now.
    pub fn new(
        config: ProcessorConfig,
        queue: QueueConfig,
        ports: ProcessorPorts,
        handler: impl EventHandler,
    ) -> Self {
        Self::with_shared_handler(config, queue, ports, Arc::new(handler))
    }

    /// Like [`new`](Self::new) with a handler shared with other owners.
    pub fn with_shared_handler(
        config: ProcessorConfig,
        queue: QueueConfig,
        ports: ProcessorPorts,
        handler: Arc<dyn EventHandler>,
    ) -> Self {
        QueueEventProcessor {
            core: Core::new(config, ports, handler),
            queue,
        }
    }

    /// Live counters; clones share them.
    pub fn stats(&self) -> ProcessorStats {
        self.core.stats.clone()
    }

    /// Runs on a new task until stopped through the handle or by an error.
    pub fn spawn(self) -> ProcessorHandle {
        let name = Arc::clone(&self.core.name);
        let stats = self.core.stats.clone();
        ProcessorHandle::spawn(name, stats, |cancel| self.run(cancel))
    }

    /// Runs until `cancel` fires (then each worker finishes the event in hand,
    /// queued events are left for the next run, and the checkpoint is written)
    /// or until an error. The workers run as tasks owned by this future:
    /// dropping it aborts them.
    pub async fn run(self, cancel: CancellationToken) -> Result<ProcessorReport, ProcessorError> {
        let span = tracing::info_span!(
            "queue_event_processor",
            processor = %self.core.name,
            collection = self.core.config.schema.name(),
            workers = self.queue.workers.get(),
        );
        self.run_inner(cancel).instrument(span).await
    }

    async fn run_inner(self, cancel: CancellationToken) -> Result<ProcessorReport, ProcessorError> {
        let core = &self.core;
        let (mut cursor, mut checkpointer) = core.open().await?;
        let mut ticker = checkpointer.ticker();

        let workers_cancel = CancellationToken::new();
        // Aborting a task takes effect only at its next await, so a worker busy on
        // another thread when this future is dropped could still start a handler.
        // The guard cancels synchronously on drop, and workers check it before
        // every event.
        let _stop_workers_on_drop = workers_cancel.clone().drop_guard();
        let (done_tx, mut done_rx) = mpsc::unbounded_channel();
        let mut senders = Vec::with_capacity(self.queue.workers.get());
        let mut workers = JoinSet::new();
        for index in 0..self.queue.workers.get() {
            let (tx, rx) = mpsc::channel(self.queue.queue_capacity.get());
            senders.push(tx);
            let worker = worker(
                rx,
                Arc::clone(&core.dispatcher),
                done_tx.clone(),
                workers_cancel.clone(),
            )
            .instrument(tracing::debug_span!("worker", index));
            workers.spawn(worker);
        }
        drop(done_tx);

        let mut tracker = Tracker::default();
        let mut pending: Option<(usize, Job)> = None;
        let mut failure: Option<ProcessorError> = None;
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                Some(done) = done_rx.recv() => {
                    if let Err(e) = self.on_done(done, &mut tracker, &mut checkpointer).await {
                        failure = Some(e);
                        break;
                    }
                }
                _ = tick(&mut ticker) => checkpointer.save_logged().await,
                permit = reserve(&senders, pending.as_ref()), if pending.is_some() => {
                    match (permit, pending.take()) {
                        (Ok(permit), Some((_, job))) => permit.send(job),
                        _ => {
                            failure = Some(self.task_error("a worker queue closed"));
                            break;
                        }
                    }
                }
                event = cursor.next(), if pending.is_none() => {
                    let event = match event {
                        Ok(event) => event,
                        Err(e) => {
                            failure = Some(e);
                            break;
                        }
                    };
                    let seq = tracker.push(event.token.clone());
                    let index = self.queue.worker_of(&event);
                    pending = Some((index, Job { seq, event }));
                }
                Some(joined) = workers.join_next() => {
                    failure = Some(self.worker_ended(joined));
                    break;
                }
            }
        }

        // Stop the workers between events and record what they finished.
        workers_cancel.cancel();
        drop(senders);
        while let Some(done) = done_rx.recv().await {
            if let Err(e) = self.on_done(done, &mut tracker, &mut checkpointer).await {
                failure.get_or_insert(e);
            }
        }
        while let Some(joined) = workers.join_next().await {
            if joined.is_err() {
                failure.get_or_insert(self.worker_ended(joined));
            }
        }
        let flushed = checkpointer.flush().await;
        if let Some(error) = failure {
            if let Err(flush_error) = flushed {
                tracing::warn!(error = %flush_error, "final checkpoint write failed");
            }
            return Err(error);
        }
        flushed?;
        tracing::info!(unfinished = tracker.in_flight(), "processor stopped");
        Ok(core.report(&checkpointer))
    }

    async fn on_done(
        &self,
        done: Completion,
        tracker: &mut Tracker,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        match done.result? {
            Outcome::Handled | Outcome::DeadLettered => {
                ProcessorStats::add(&self.core.stats.0.acknowledged);
                if let Some((token, count)) = tracker.complete(done.seq) {
                    checkpointer.advance(token, count);
                    checkpointer.save_if_due().await;
                }
                Ok(())
            }
            Outcome::Interrupted => Ok(()),
            Outcome::Failed { attempts, error } => {
                Err(self.core.handler_failed(&done.event, attempts, error))
            }
        }
    }

    fn worker_ended(&self, joined: Result<(), JoinError>) -> ProcessorError {
        match joined {
            Ok(()) => self.task_error("a worker ended unexpectedly"),
            Err(e) => self.task_error(&format!("a worker failed: {e}")),
        }
    }

    fn task_error(&self, message: &str) -> ProcessorError {
        ProcessorError::Task {
            processor: self.core.name.to_string(),
            message: message.to_owned(),
        }
    }
}

/// Room in the target worker's queue for the pending job.
async fn reserve<'a>(
    senders: &'a [mpsc::Sender<Job>],
    pending: Option<&(usize, Job)>,
) -> Result<mpsc::Permit<'a, Job>, mpsc::error::SendError<()>> {
    match pending.and_then(|(index, _)| senders.get(*index)) {
        Some(sender) => sender.reserve().await,
        None => Err(mpsc::error::SendError(())),
    }
}

async fn worker(
    mut jobs: mpsc::Receiver<Job>,
    dispatcher: Arc<Dispatcher>,
    done: mpsc::UnboundedSender<Completion>,
    cancel: CancellationToken,
) {
    loop {
        let job = tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            job = jobs.recv() => match job {
                Some(job) => job,
                None => return,
            },
        };
        // Stopped or dropped while this event was being received: leave it for
        // the next run.
        if cancel.is_cancelled() {
            return;
        }
        let result = dispatcher.dispatch(&job.event, &cancel).await;
        // After a failure or an interruption this worker takes no later events,
        // so events of one partition key are never handled out of order.
        let keep_going = matches!(result, Ok(Outcome::Handled | Outcome::DeadLettered));
        let completion = Completion {
            seq: job.seq,
            event: job.event,
            result,
        };
        if done.send(completion).is_err() || !keep_going {
            return;
        }
    }
}
