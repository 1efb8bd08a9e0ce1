//! opstore-scylla.
pub mod breaker;
pub mod codegen;
pub mod collection;
pub mod config;
pub mod coord;
pub mod error;
pub mod exec;
pub mod planner;
pub mod session;
pub mod table;
pub mod value;
