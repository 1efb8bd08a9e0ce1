//! Transactions: private copies of the touched collections, swapped in at commit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use opstore_domain::{Collection, Lease, Result, Schema, Transaction, TxHandle, TxWork};

use crate::collection::MemCollection;
use crate::error::poisoned;
use crate::state::{Change, CollState};
use crate::store::Shared;

/// Runs `work` as one transaction of `shared`.
pub(crate) async fn run(shared: &Arc<Shared>, work: &TxWork<'_>) -> Result<()> {
    // Transactions run one at a time and exclude plain writes, so they are
    // serializable and never need a conflict retry.
    let _gate = shared.gate.lock().await;
    let inner = Arc::new(TxInner {
        shared: Arc::clone(shared),
        state: Mutex::new(TxState::open()),
    });
    let outcome = work(Arc::new(MemTx(Arc::clone(&inner))) as TxHandle).await;
    let state = {
        let mut guard = inner.state.lock().map_err(|_| poisoned())?;
        std::mem::replace(&mut *guard, TxState::closed())
    };
    outcome?;
    let mut data = shared.data.write().map_err(|_| poisoned())?;
    for (name, coll) in state.colls {
        data.insert(name, coll);
    }
    drop(data);
    for (name, changes) in state.changes {
        shared.feed.publish(&name, changes);
    }
    Ok(())
}

/// Writes of an open transaction: private copies of the collections it touched.
pub(crate) struct TxState {
    pub open: bool,
    pub colls: HashMap<String, CollState>,
    pub changes: Vec<(Arc<str>, Vec<Change>)>,
}

impl TxState {
    fn open() -> Self {
        TxState {
            open: true,
            colls: HashMap::new(),
            changes: Vec::new(),
        }
    }
    fn closed() -> Self {
        TxState {
            open: false,
            ..TxState::open()
        }
    }
}

/// An open transaction; collections handed out share its state.
pub(crate) struct MemTx(Arc<TxInner>);

pub(crate) struct TxInner {
    pub shared: Arc<Shared>,
    pub state: Mutex<TxState>,
}

#[async_trait]
impl Transaction for MemTx {
    fn collection(&self, schema: &'static Schema) -> Result<Arc<dyn Collection>> {
        Ok(Arc::new(MemCollection::new(
            Arc::clone(&self.0.shared),
            schema,
            Some(Arc::clone(&self.0)),
        )))
    }

    async fn check_fence(&self, lease: &Lease) -> Result<()> {
        self.0.shared.locks.check_held(lease)
    }
}
