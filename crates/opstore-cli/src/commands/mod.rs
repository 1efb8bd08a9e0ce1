//! One module per command. Each exposes the command's logic as a function over
//! an open store, and a printer for its result.

pub mod bench;
pub mod deadletters;
pub mod demo;
pub mod health;
pub mod locks;
pub mod migrate;
pub mod watch;
