//! opstore's application layer: the [`DataStore`](config) wiring that turns a URL
//! into a store, the domain services of the four systems opstore serves, event
//! processors, and the lease keeper.

pub mod services;
