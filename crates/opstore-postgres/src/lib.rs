//! opstore-postgres.
