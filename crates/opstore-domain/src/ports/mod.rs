//! Port traits: what the application needs from storage.

pub mod collection;
pub mod coordination;
pub mod feed;
pub mod store;
