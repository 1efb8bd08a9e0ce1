//! The coordination ports on the adapter's own collections: leases with fencing
//! tokens (`lease`), idempotency keys and processor checkpoints (`idempotency`).

mod idempotency;
mod lease;

pub(crate) use idempotency::{CHECKPOINTS, IDEMPOTENCY, MongoCheckpoints, MongoIdempotency};
pub(crate) use lease::{LEASES, MongoLocks, fence_in};
