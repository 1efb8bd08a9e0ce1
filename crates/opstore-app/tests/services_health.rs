//! The health-event service end to end, on every backend.

#[macro_use]
mod services_support;

use std::sync::Arc;
use std::time::Duration;

use opstore_app::services::health::{CreateOutcome, HealthEventService, StatusChange};
use opstore_app::services::repository;
use opstore_domain::entities::health::{
    HealthEventRecord, MaintenanceEvent, OperationState, OperationStatus, QuarantineStatus,
};
use opstore_domain::{Clock, Filter, ManualClock, Store, StoreError};
use services_support::{gpu_event, t0};

on_every_backend!(
    duplicate_idempotency_key_is_stored_once_and_counted,
    latest_and_lookups_follow_creation_order,
    batches_cover_everything_and_stop_on_callback_error,
    status_changes_stamp_their_timestamps,
    node_wide_update_changes_every_event,
    cancel_marks_only_the_current_session,
    cancel_is_a_no_op_unless_the_node_is_quarantined,
    maintenance_events_store_alongside,
);

fn service(store: Arc<dyn Store>) -> (HealthEventService, ManualClock) {
    let clock = ManualClock::new(t0());
    let events = repository::<HealthEventRecord>(store.as_ref()).unwrap();
    let maintenance = repository::<MaintenanceEvent>(store.as_ref()).unwrap();
    (
        HealthEventService::from_parts(store, events, maintenance, Arc::new(clock.clone())),
        clock,
    )
}

/// Creates an event on `node` with `status`, one second after the previous one.
async fn event_with(
    svc: &HealthEventService,
    clock: &ManualClock,
    node: &str,
    status: Option<QuarantineStatus>,
) -> String {
    clock.advance(Duration::from_secs(1));
    let CreateOutcome::Created(record) = svc.create(gpu_event(node)).await.unwrap() else {
        panic!("expected a new event");
    };
    if let Some(status) = status {
        svc.update_quarantine_status(&record.id, status)
            .await
            .unwrap();
    }
    record.id
}

async fn duplicate_idempotency_key_is_stored_once_and_counted(store: Arc<dyn Store>) {
    let (svc, _) = service(store);
    let mut event = gpu_event("node-1");
    event.idempotency_key = Some("agent-1/42".into());
    let CreateOutcome::Created(first) = svc.create(event.clone()).await.unwrap() else {
        panic!("first create")
    };
    let second = svc.create(event).await.unwrap();
    assert_eq!(
        second,
        CreateOutcome::Duplicate {
            existing_id: first.id.clone()
        }
    );
    assert_eq!(svc.duplicates_skipped(), 1);
    assert_eq!(svc.find_by_node("node-1").await.unwrap().len(), 1);
    // Events without a key are never deduplicated.
    svc.create(gpu_event("node-1")).await.unwrap();
    svc.create(gpu_event("node-1")).await.unwrap();
    assert_eq!(svc.find_by_node("node-1").await.unwrap().len(), 3);
}

async fn latest_and_lookups_follow_creation_order(store: Arc<dyn Store>) {
    let (svc, clock) = service(store);
    assert_eq!(svc.latest_for_node("node-1").await.unwrap(), None);
    let a = event_with(&svc, &clock, "node-1", Some(QuarantineStatus::Quarantined)).await;
    let b = event_with(&svc, &clock, "node-1", None).await;
    event_with(&svc, &clock, "node-2", Some(QuarantineStatus::Quarantined)).await;
    assert_eq!(svc.latest_for_node("node-1").await.unwrap().unwrap().id, b);
    let ids: Vec<String> = svc
        .find_by_node("node-1")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(ids, vec![a.clone(), b]);
    let quarantined = svc
        .find_by_quarantine_status(QuarantineStatus::Quarantined)
        .await
        .unwrap();
    assert_eq!(quarantined.len(), 2);
    assert_eq!(quarantined[0].id, a);
}

async fn batches_cover_everything_and_stop_on_callback_error(store: Arc<dyn Store>) {
    let (svc, clock) = service(store);
    for _ in 0..7 {
        event_with(&svc, &clock, "node-1", None).await;
    }
    event_with(&svc, &clock, "node-2", None).await;
    let filter = Filter::eq("healthevent.nodename", "node-1");
    let mut sizes = Vec::new();
    let mut seen = Vec::new();
    let total = svc
        .find_in_batches(&filter, 3, |batch| {
            sizes.push(batch.len());
            seen.extend(batch.into_iter().map(|e| e.id));
            async { Ok::<(), StoreError>(()) }
        })
        .await
        .unwrap();
    assert_eq!((total, sizes), (7, vec![3, 3, 1]));
    let expected: Vec<String> = svc
        .find_by_node("node-1")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(seen, expected);

    let mut calls = 0;
    let err = svc
        .find_in_batches(&filter, 3, |_| {
            calls += 1;
            let fail = calls == 2;
            async move {
                if fail {
                    Err(StoreError::Validation("handler refused batch 2".into()))
                } else {
                    Ok(())
                }
            }
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("handler refused batch 2"), "{err}");
    assert_eq!(calls, 2);
}

async fn status_changes_stamp_their_timestamps(store: Arc<dyn Store>) {
    let (svc, clock) = service(store);
    let id = event_with(&svc, &clock, "node-1", None).await;
    let unq = svc
        .update_quarantine_status(&id, QuarantineStatus::UnQuarantined)
        .await
        .unwrap();
    assert_eq!(unq.status.quarantine_finished_at, None);
    let q = svc
        .update_quarantine_status(&id, QuarantineStatus::AlreadyQuarantined)
        .await
        .unwrap();
    assert_eq!(
        q.status.node_quarantined,
        Some(QuarantineStatus::AlreadyQuarantined)
    );
    assert_eq!(q.status.quarantine_finished_at, Some(clock.now()));

    let running = OperationStatus {
        status: OperationState::InProgress,
        message: Some("draining".into()),
    };
    let e = svc.update_eviction_status(&id, running).await.unwrap();
    assert_eq!(e.status.drain_finished_at, None);
    assert!(!svc.is_node_drained("node-1").await.unwrap());
    let done = OperationStatus {
        status: OperationState::Succeeded,
        message: None,
    };
    let e = svc.update_eviction_status(&id, done).await.unwrap();
    assert_eq!(e.status.user_pods_eviction.message, None);
    assert!(e.status.drain_finished_at.is_some());
    assert!(svc.is_node_drained("node-1").await.unwrap());
    assert!(!svc.is_node_drained("node-2").await.unwrap());

    let fixed = OperationStatus {
        status: OperationState::Succeeded,
        message: None,
    };
    let r = svc.update_remediation_status(&id, fixed).await.unwrap();
    assert_eq!(r.status.fault_remediated, Some(true));
    assert!(r.status.last_remediation_at.is_some());

    let err = svc
        .update_quarantine_status("missing", QuarantineStatus::Quarantined)
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err}");
}

async fn node_wide_update_changes_every_event(store: Arc<dyn Store>) {
    let (svc, clock) = service(store);
    for _ in 0..3 {
        event_with(&svc, &clock, "node-1", None).await;
    }
    let other = event_with(&svc, &clock, "node-2", None).await;
    let change = StatusChange::Eviction(OperationStatus {
        status: OperationState::AlreadyDrained,
        message: None,
    });
    let count = svc.update_node_status("node-1", &change).await.unwrap();
    assert_eq!((count.matched, count.modified), (3, 3));
    for e in svc.find_by_node("node-1").await.unwrap() {
        assert_eq!(
            e.status.user_pods_eviction.status,
            OperationState::AlreadyDrained
        );
    }
    let untouched = svc.get(&other).await.unwrap().unwrap();
    assert_eq!(
        untouched.status.user_pods_eviction.status,
        OperationState::NotStarted
    );
}

async fn cancel_marks_only_the_current_session(store: Arc<dyn Store>) {
    use QuarantineStatus::*;
    let (svc, clock) = service(store);
    // An earlier session that ended: stays as it is.
    let old_q = event_with(&svc, &clock, "node-1", Some(Quarantined)).await;
    let old_already = event_with(&svc, &clock, "node-1", Some(AlreadyQuarantined)).await;
    event_with(&svc, &clock, "node-1", Some(UnQuarantined)).await;
    // The current session.
    let q = event_with(&svc, &clock, "node-1", Some(Quarantined)).await;
    let already = event_with(&svc, &clock, "node-1", Some(AlreadyQuarantined)).await;
    let unrelated = event_with(&svc, &clock, "node-1", None).await;
    let other_node = event_with(&svc, &clock, "node-2", Some(Quarantined)).await;

    assert_eq!(svc.cancel_latest_quarantine("node-1").await.unwrap(), 2);
    let status = |id: String| {
        let svc = &svc;
        async move { svc.get(&id).await.unwrap().unwrap().status.node_quarantined }
    };
    assert_eq!(status(q).await, Some(Cancelled));
    assert_eq!(status(already).await, Some(Cancelled));
    assert_eq!(status(old_q).await, Some(Quarantined));
    assert_eq!(status(old_already).await, Some(AlreadyQuarantined));
    assert_eq!(status(unrelated).await, None);
    assert_eq!(status(other_node).await, Some(Quarantined));
    // The session is cancelled now: a second cancel finds no quarantined boundary.
    assert_eq!(svc.cancel_latest_quarantine("node-1").await.unwrap(), 0);
}

async fn cancel_is_a_no_op_unless_the_node_is_quarantined(store: Arc<dyn Store>) {
    use QuarantineStatus::*;
    let (svc, clock) = service(store);
    assert_eq!(svc.cancel_latest_quarantine("node-1").await.unwrap(), 0);
    let q = event_with(&svc, &clock, "node-1", Some(Quarantined)).await;
    event_with(&svc, &clock, "node-1", Some(UnQuarantined)).await;
    assert_eq!(svc.cancel_latest_quarantine("node-1").await.unwrap(), 0);
    assert_eq!(
        svc.get(&q).await.unwrap().unwrap().status.node_quarantined,
        Some(Quarantined)
    );
}

async fn maintenance_events_store_alongside(store: Arc<dyn Store>) {
    let (svc, _) = service(store);
    let mut event = MaintenanceEvent {
        id: "gcp-op-1".into(),
        csp: "gcp".into(),
        cluster_name: "c1".into(),
        node_name: "node-1".into(),
        resource_id: Some("i-1".into()),
        maintenance_type: "SCHEDULED".into(),
        status: "DETECTED".into(),
        csp_status: None,
        scheduled_start: Some(t0()),
        scheduled_end: None,
        actual_start: None,
        actual_end: None,
        recommended_action: None,
        metadata: Default::default(),
        received_at: t0(),
        updated_at: t0(),
    };
    svc.save_maintenance(&event).await.unwrap();
    event.status = "QUARANTINE_TRIGGERED".into();
    event.resource_id = None;
    svc.save_maintenance(&event).await.unwrap();
    assert_eq!(
        svc.get_maintenance("gcp-op-1").await.unwrap(),
        Some(event.clone())
    );
    assert_eq!(
        svc.maintenance_for_node("node-1").await.unwrap(),
        vec![event.clone()]
    );
    assert_eq!(
        svc.maintenance_by_status("QUARANTINE_TRIGGERED")
            .await
            .unwrap(),
        vec![event]
    );
    assert!(
        svc.maintenance_by_status("DETECTED")
            .await
            .unwrap()
            .is_empty()
    );
}
