//! opstore-scylla.
