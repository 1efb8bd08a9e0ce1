//! opstore-memory.
