//! Unit tests of the automation repositories and guarded health check, against
//! mocked ports.

use std::sync::Arc;
use std::time::Duration;

use opstore_domain::ports::collection::MockRepository;
use opstore_domain::ports::store::MockStore;
use opstore_domain::{ManualClock, StoreError, Timestamp, json};

use super::*;
use opstore_domain::breaker::BreakerState;

fn api_key(key: &str) -> ApiKey {
    ApiKey {
        key: key.into(),
        owner: "o".into(),
        is_active: true,
        rate_limit: 10,
        success_count: 0,
        failed_count: 0,
        last_used: None,
        created_at: Timestamp::from_micros(0),
    }
}

#[tokio::test]
async fn an_empty_batch_does_no_io() {
    let mut repo = MockRepository::<ApiKey>::new();
    repo.expect_insert_many().never();
    let keys = EntityRepository::new(Arc::new(repo), Arc::new(NoRawQuery("test")));
    assert_eq!(keys.batch_create(&[]).await.unwrap(), 0);
}

#[tokio::test]
async fn a_batch_is_one_insert_many() {
    let mut repo = MockRepository::<ApiKey>::new();
    repo.expect_insert_many()
        .times(1)
        .withf(|docs| docs.len() == 2)
        .returning(|docs| Ok(docs.len() as u64));
    repo.expect_insert().never();
    let keys = EntityRepository::new(Arc::new(repo), Arc::new(NoRawQuery("test")));
    assert_eq!(
        keys.batch_create(&[api_key("a"), api_key("b")])
            .await
            .unwrap(),
        2
    );
}

#[tokio::test]
async fn raw_queries_go_to_the_executor_and_decode() {
    let mut raw = MockRawQuery::new();
    raw.expect_execute()
        .withf(|schema, query, params| {
            schema.name() == "apikeys" && query == "SELECT" && params == [json!(1)]
        })
        .returning(|_, _, _| Ok(vec![serde_json::to_value(api_key("a")).unwrap()]));
    let keys = EntityRepository::<ApiKey>::new(Arc::new(MockRepository::new()), Arc::new(raw));
    assert_eq!(
        keys.execute_query("SELECT", &[json!(1)]).await.unwrap(),
        vec![api_key("a")]
    );
}

fn service(mut store: MockStore, clock: &ManualClock) -> AutomationService {
    store.expect_backend().return_const("mock");
    AutomationService::with_parts(
        Arc::new(store),
        Arc::new(NoRawQuery("mock")),
        BreakerConfig::five_failures(Duration::from_secs(30)),
        Arc::new(clock.clone()),
    )
}

#[tokio::test]
async fn the_breaker_opens_after_five_failures_and_fails_fast() {
    let clock = ManualClock::new(Timestamp::from_micros(1_000_000));
    let mut store = MockStore::new();
    store
        .expect_health()
        .times(5)
        .returning(|| Err(StoreError::Connection("down".into())));
    let svc = service(store, &clock);
    for _ in 0..5 {
        assert!(
            svc.health_check()
                .await
                .unwrap_err()
                .to_string()
                .contains("down")
        );
    }
    let err = svc.health_check().await.unwrap_err();
    assert!(
        err.is_connection() && err.to_string().contains("circuit open"),
        "{err}"
    );
    assert!(matches!(svc.breaker().state(), BreakerState::Open { .. }));
}

#[tokio::test]
async fn after_the_cool_down_one_probe_closes_the_circuit() {
    let clock = ManualClock::new(Timestamp::from_micros(1_000_000));
    let mut store = MockStore::new();
    let mut seq = mockall::Sequence::new();
    store
        .expect_health()
        .times(5)
        .in_sequence(&mut seq)
        .returning(|| Err(StoreError::Timeout("slow".into())));
    store
        .expect_health()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|| {
            Ok(HealthReport {
                backend: "mock",
                server: "ok".into(),
                latency: Duration::ZERO,
            })
        });
    let svc = service(store, &clock);
    for _ in 0..5 {
        svc.health_check().await.unwrap_err();
    }
    clock.advance(Duration::from_secs(30));
    assert_eq!(svc.health_check().await.unwrap().server, "ok");
    assert_eq!(svc.breaker().state(), BreakerState::Closed { failures: 0 });
}
