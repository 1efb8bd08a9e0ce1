//! The coordination ports on the adapter's own tables: leases with fencing
//! tokens (`lease`), idempotency keys and processor checkpoints (`idempotency`).

mod idempotency;
mod lease;

pub(crate) use idempotency::{PgCheckpoints, PgIdempotency};
pub(crate) use lease::PgLocks;
