//! The state a store shares with everything it hands out (collections, feed,
//! coordination ports, transactions) and the state of an open transaction, in a
//! module of its own so that none of them imports the store or the runner.

use std::sync::atomic::{AtomicBool, Ordering};

use mongodb::bson::Bson;
use mongodb::{Client, ClientSession, Database};
use opstore_domain::Timestamp;
use tokio::sync::Mutex;

use crate::config::{ExpiryClock, MongoConfig};
use crate::error;

/// Shared state of a store and everything it hands out.
pub(crate) struct Ctx {
    pub(crate) client: Client,
    pub(crate) db: Database,
    pub(crate) config: MongoConfig,
    /// The server is a replica-set member or a mongos (transactions and change streams work).
    pub(crate) replica_set: bool,
    /// Server description for health reports.
    pub(crate) server: String,
}

impl Ctx {
    /// "Now" for expiry decisions made in the query itself.
    pub(crate) fn now(&self) -> Timestamp {
        match &self.config.clock {
            ExpiryClock::Server | ExpiryClock::Client => Timestamp::now(),
            ExpiryClock::Manual(c) => opstore_domain::Clock::now(c),
        }
    }

    /// "Now" inside server-side expressions: `$$NOW`, or the manual clock.
    pub(crate) fn now_expr(&self) -> Bson {
        match &self.config.clock {
            ExpiryClock::Server => Bson::String("$$NOW".to_owned()),
            ExpiryClock::Client => Bson::DateTime(mongodb::bson::DateTime::from_millis(
                Timestamp::now().as_millis(),
            )),
            ExpiryClock::Manual(c) => Bson::DateTime(mongodb::bson::DateTime::from_millis(
                opstore_domain::Clock::now(c).as_millis(),
            )),
        }
    }
}

/// The session of an open transaction, shared by its collections.
pub(crate) struct TxState {
    pub(crate) session: Mutex<ClientSession>,
    /// Set when an operation failed in a way that a rerun may fix.
    pub(crate) transient: AtomicBool,
}

impl TxState {
    /// Records whether a driver result says the transaction may succeed when rerun.
    pub(crate) fn note<T>(&self, r: &mongodb::error::Result<T>) {
        if let Err(e) = r {
            // A duplicate key fails again when rerun: it is a `Conflict` to report.
            if error::is_transient_tx(e) && error::code(e) != Some(error::DUPLICATE_KEY) {
                self.transient.store(true, Ordering::SeqCst);
            }
        }
    }
}
