//! opstore-scylla.
pub mod breaker;
pub mod codegen;
pub mod config;
pub mod error;
pub mod session;
pub mod table;
pub mod value;
