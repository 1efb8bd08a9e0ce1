//! Unit tests of the health-event service's own logic, against mocked ports.

use std::sync::{Arc, Mutex};

use mockall::predicate::eq;
use opstore_domain::ports::collection::MockRepository;
use opstore_domain::ports::store::MockStore;
use opstore_domain::{Filter, ManualClock, Query, StoreError, Timestamp, UpdateOp, Value};

use super::*;

fn t(secs: i64) -> Timestamp {
    Timestamp::from_micros(1_767_225_600_000_000 + secs * 1_000_000)
}

fn record(id: &str, secs: i64, key: Option<&str>) -> HealthEventRecord {
    let event = HealthEvent {
        node_name: "node-1".into(),
        idempotency_key: key.map(str::to_owned),
        ..HealthEvent::default()
    };
    HealthEventRecord {
        id: id.into(),
        created_at: t(secs),
        event,
        status: HealthEventStatus::default(),
    }
}

fn service(events: MockRepository<HealthEventRecord>) -> HealthEventService {
    HealthEventService::from_parts(
        Arc::new(MockStore::new()),
        Arc::new(events),
        Arc::new(MockRepository::new()),
        Arc::new(ManualClock::new(t(0))),
    )
}

#[tokio::test]
async fn a_stored_idempotency_key_skips_the_insert_and_counts() {
    let mut events = MockRepository::new();
    events
        .expect_get_by_field()
        .with(eq(IDEMPOTENCY_KEY), eq(Value::from("k1")))
        .times(2)
        .returning(|_, _| Ok(Some(record("stored", 1, Some("k1")))));
    events.expect_insert().never();
    let svc = service(events);
    for _ in 0..2 {
        let outcome = svc.create_record(record("", 2, Some("k1"))).await.unwrap();
        assert_eq!(
            outcome,
            CreateOutcome::Duplicate {
                existing_id: "stored".into()
            }
        );
    }
    assert_eq!(svc.duplicates_skipped(), 2);
}

#[tokio::test]
async fn a_conflict_from_a_concurrent_writer_is_a_duplicate() {
    let mut events = MockRepository::new();
    let mut lookups = mockall::Sequence::new();
    events
        .expect_get_by_field()
        .times(1)
        .in_sequence(&mut lookups)
        .returning(|_, _| Ok(None));
    events.expect_insert().times(1).returning(|_| {
        Err(StoreError::Conflict(
            "unique healthevent.idempotencykey".into(),
        ))
    });
    events
        .expect_get_by_field()
        .times(1)
        .in_sequence(&mut lookups)
        .returning(|_, _| Ok(Some(record("winner", 1, Some("k1")))));
    let svc = service(events);
    let outcome = svc
        .create_record(record("mine", 2, Some("k1")))
        .await
        .unwrap();
    assert_eq!(
        outcome,
        CreateOutcome::Duplicate {
            existing_id: "winner".into()
        }
    );
    assert_eq!(svc.duplicates_skipped(), 1);
}

#[tokio::test]
async fn a_conflict_without_a_key_is_returned() {
    let mut events = MockRepository::new();
    events.expect_get_by_field().never();
    events
        .expect_insert()
        .returning(|_| Err(StoreError::Conflict("duplicate id".into())));
    let err = service(events)
        .create_record(record("dup", 1, None))
        .await
        .unwrap_err();
    assert!(err.is_conflict());
}

#[tokio::test]
async fn create_generates_an_id_and_stamps_the_clock() {
    let mut events = MockRepository::new();
    events.expect_insert().times(1).returning(|_| Ok(()));
    let svc = service(events);
    let CreateOutcome::Created(stored) = svc.create(HealthEvent::default()).await.unwrap() else {
        panic!("expected created");
    };
    assert_eq!(stored.id.len(), 32);
    assert_eq!(stored.created_at, t(0));
}

fn sets(update: &Update) -> Vec<&str> {
    update
        .ops
        .iter()
        .filter_map(|op| match op {
            UpdateOp::Set(p, _) => Some(p.as_str()),
            _ => None,
        })
        .collect()
}

#[test]
fn quarantine_sets_the_finish_time_only_when_quarantining() {
    for (status, stamped) in [
        (QuarantineStatus::Quarantined, true),
        (QuarantineStatus::AlreadyQuarantined, true),
        (QuarantineStatus::UnQuarantined, false),
        (QuarantineStatus::Cancelled, false),
    ] {
        let update = StatusChange::Quarantine(status).to_update(t(5));
        let has = sets(&update).contains(&"healtheventstatus.quarantinefinishtimestamp");
        assert_eq!(has, stamped, "{status:?}");
    }
}

#[test]
fn eviction_and_remediation_stamp_their_times_when_finished() {
    let op = |status| OperationStatus {
        status,
        message: None,
    };
    let drained = StatusChange::Eviction(op(OperationState::AlreadyDrained)).to_update(t(5));
    assert!(sets(&drained).contains(&"healtheventstatus.drainfinishtimestamp"));
    let running = StatusChange::Eviction(op(OperationState::InProgress)).to_update(t(5));
    assert!(!sets(&running).contains(&"healtheventstatus.drainfinishtimestamp"));
    assert!(
        running
            .ops
            .contains(&UpdateOp::Unset(format!("{EVICTION}.message")))
    );
    let failed = StatusChange::Remediation(op(OperationState::Failed)).to_update(t(5));
    assert!(failed.ops.contains(&UpdateOp::Set(
        "healtheventstatus.faultremediated".into(),
        Value::Bool(false)
    )));
}

#[tokio::test]
async fn batches_page_after_the_last_event_seen() {
    let queries: Arc<Mutex<Vec<Query>>> = Arc::default();
    let mut events = MockRepository::new();
    let seen = Arc::clone(&queries);
    events.expect_find().times(2).returning(move |q| {
        let mut seen = seen.lock().unwrap();
        seen.push(q.clone());
        Ok(if seen.len() == 1 {
            vec![record("a", 1, None), record("b", 2, None)]
        } else {
            vec![record("c", 2, None)]
        })
    });
    let svc = service(events);
    let total = svc
        .find_in_batches(&Filter::All, 2, |_| async { Ok::<(), StoreError>(()) })
        .await
        .unwrap();
    assert_eq!(total, 3);
    let queries = queries.lock().unwrap();
    assert_eq!(queries[0].filter, Filter::All);
    let after_b =
        Filter::gt(CREATED_AT, t(2)).or(Filter::eq(CREATED_AT, t(2)).and(Filter::gt("id", "b")));
    assert_eq!(queries[1].filter, after_b);
    assert_eq!(queries[1].limit, 2);
}

#[tokio::test]
async fn a_callback_error_stops_the_walk() {
    let mut events = MockRepository::new();
    events
        .expect_find()
        .times(1)
        .returning(|_| Ok(vec![record("a", 1, None), record("b", 2, None)]));
    let svc = service(events);
    let err = svc
        .find_in_batches(&Filter::All, 2, |_| async {
            Err(StoreError::Timeout("handler".into()))
        })
        .await
        .unwrap_err();
    assert!(err.is_timeout());
}
