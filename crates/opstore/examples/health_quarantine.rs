//! The health monitor's quarantine flow: agents report faults on a node, the first
//! fatal event quarantines it and later ones find it already quarantined, a repeated
//! report is skipped by its idempotency key, and an operator's manual uncordon
//! cancels the quarantine session so that automation leaves the node alone.
//!
//! `cargo run -p opstore --example health_quarantine` runs it on the embedded
//! memory store; set `OPSTORE_URL` (e.g. `postgres://app:secret@db/ops`) for a server.

use opstore::prelude::*;
use opstore::services::health::{CreateOutcome, HealthEventService};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store = DataStore::open(&StoreConfig::from_env()?).await?;
    let events = HealthEventService::new(store.store().clone())?;
    // A fresh node name per run, so that reruns against a server start clean.
    let node = format!("gpu-node-{}", &opstore::services::new_id()[..8]);

    let report = |xid: &str| HealthEvent {
        agent: "gpu-health-monitor".into(),
        component_class: "GPU".into(),
        check_name: "XidCheck".into(),
        is_fatal: true,
        message: format!("XID {xid} on GPU 0"),
        recommended_action: "RESTART_VM".into(),
        error_codes: vec![xid.into()],
        node_name: node.clone(),
        idempotency_key: Some(format!("{node}/xid-{xid}")),
        ..HealthEvent::default()
    };
    let mut ids = Vec::new();
    for xid in ["79", "48", "79"] {
        match events.create(report(xid)).await? {
            CreateOutcome::Created(record) => ids.push(record.id),
            CreateOutcome::Duplicate { existing_id } => {
                println!("repeated report of XID {xid} skipped (stored as {existing_id})")
            }
        }
    }
    // The quarantine module records what it did for each event.
    events
        .update_quarantine_status(&ids[0], QuarantineStatus::Quarantined)
        .await?;
    events
        .update_quarantine_status(&ids[1], QuarantineStatus::AlreadyQuarantined)
        .await?;
    println!("{node} quarantined after {} fatal events", ids.len());

    // An operator uncordons the node by hand: the session is cancelled in one transaction.
    let cancelled = events.cancel_latest_quarantine(&node).await?;
    println!("manual uncordon cancelled {cancelled} events of the session");
    for event in events.find_by_node(&node).await? {
        let status = event.status.node_quarantined;
        println!("  {} {:?}: {status:?}", event.id, event.event.error_codes);
    }
    store.close().await;
    if cancelled != 2 {
        return Err(format!("expected 2 cancelled events, got {cancelled}").into());
    }
    Ok(())
}
