//! A job-queue worker over any collection: claims due jobs in batches, runs a
//! handler on them with bounded concurrency, and acknowledges in batches, with
//! every write fenced by the claim it was made under.
//!
//! The job entity is the caller's; [`QueueFields`] names the four fields the
//! queue manages:
//!
//! - `due_at` (timestamp, indexed, optional): set while the job waits, absent
//!   once it is claimed or finished. Claims take jobs whose `due_at` has come,
//!   oldest first, so finished jobs never slow a claim down however many pile up.
//! - `claimed_by` (string, optional): the worker holding the claim.
//! - `claim_token` (string, optional): a fresh random token per claim. An
//!   acknowledgement only applies to jobs still carrying the token it was
//!   claimed with, so a worker whose claim expired and was taken over cannot
//!   finish a job another worker now holds.
//! - `claimed_until` (timestamp, indexed, optional): when the claim lapses
//!   unless extended; [`JobQueue::requeue_expired`] puts lapsed jobs back.
//!
//! [`JobQueue`] holds the primitives (one claim, one batched acknowledgement);
//! [`JobWorker`] runs them the way a service does: one batch prefetched while
//! the previous one runs, acknowledgements flushed in batches, claims of
//! running jobs extended, lapsed claims requeued.
//!
//! Claim times are compared with the worker's clock, so workers sharing a queue
//! need clocks that agree to well within the claim TTL.

mod queue;
mod runner;

pub use queue::{
    AckCount, Claim, ClaimedBatch, Completion, FailurePolicy, JobQueue, QueueFields, QueueUpdates,
};
pub use runner::{ClaimedJob, JobError, JobWorker, JobWorkerConfig, WorkerStats};
