//! The job-automation repositories and health check end to end, on every backend.

#[macro_use]
mod services_support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use opstore_app::services::automation::{AutomationService, NoRawQuery};
use opstore_domain::breaker::{BreakerConfig, BreakerState};
use opstore_domain::entities::automation::{Keeper, User};
use opstore_domain::{ManualClock, Store, Update, Value, json};
use services_support::t0;

on_every_backend!(
    repositories_create_get_update_and_query,
    batch_create_is_all_or_nothing,
    raw_query_without_an_executor_is_unsupported,
    health_check_passes_through_a_closed_breaker,
);

fn service(store: Arc<dyn Store>) -> AutomationService {
    let backend = store.backend();
    let breaker = BreakerConfig::five_failures(Duration::from_secs(30));
    AutomationService::new(
        store,
        Arc::new(NoRawQuery(backend)),
        breaker,
        Arc::new(ManualClock::new(t0())),
    )
    .unwrap()
}

fn user(id: &str, address: &str) -> User {
    User {
        user_id: id.into(),
        user_address: address.into(),
        email_id: None,
        job_ids: BTreeSet::new(),
        opx_consumed: "0".into(),
        total_jobs: 0,
        total_tasks: 0,
        created_at: t0(),
        last_updated_at: t0(),
    }
}

fn keeper(id: &str, online: bool) -> Keeper {
    Keeper {
        keeper_id: id.into(),
        keeper_name: format!("keeper-{id}"),
        keeper_address: format!("0xk{id}"),
        rewards_address: "0xr".into(),
        consensus_address: "0xc".into(),
        registered_tx: "0xt".into(),
        operator_id: "1".into(),
        voting_power: "1000000000000000000000".into(),
        whitelisted: true,
        registered: true,
        online,
        version: "1.0.0".into(),
        on_imua: false,
        public_ip: None,
        peer_id: None,
        chat_id: None,
        email_id: None,
        rewards_booster: "1".into(),
        no_executed_tasks: 0,
        no_attested_tasks: 0,
        uptime: 0,
        keeper_points: "0".into(),
        last_checked_in: None,
    }
}

async fn repositories_create_get_update_and_query(store: Arc<dyn Store>) {
    let svc = service(store);
    let users = svc.users();
    users.create(&user("1", "0xa")).await.unwrap();
    users.create(&user("2", "0xb")).await.unwrap();
    assert!(
        users
            .create(&user("1", "0xc"))
            .await
            .unwrap_err()
            .is_conflict()
    );
    assert!(
        users
            .create(&user("3", "0xa"))
            .await
            .unwrap_err()
            .is_conflict(),
        "unique address"
    );

    assert_eq!(users.get("1").await.unwrap().unwrap().user_address, "0xa");
    assert_eq!(users.get("9").await.unwrap(), None);
    assert_eq!(
        users
            .get_by_non_id("user_address", json!("0xb"))
            .await
            .unwrap()
            .unwrap()
            .user_id,
        "2"
    );
    assert_eq!(users.count().await.unwrap(), 2);
    assert!(users.exists("1").await.unwrap());
    assert!(!users.exists("9").await.unwrap());
    assert!(
        users
            .exists_by_field("user_address", json!("0xa"))
            .await
            .unwrap()
    );
    assert!(
        !users
            .exists_by_field("user_address", json!("0xz"))
            .await
            .unwrap()
    );

    // Partial updates leave the other fields alone.
    let update = Update::new().push("job_ids", "77").inc("total_jobs", 1);
    let updated = users.update("1", &update).await.unwrap();
    assert_eq!(
        (updated.total_jobs, updated.user_address.as_str()),
        (1, "0xa")
    );
    assert_eq!(updated.job_ids, BTreeSet::from(["77".to_owned()]));
    let mut fields = serde_json::Map::new();
    fields.insert("email_id".into(), json!("a@example.test"));
    let updated = users.update_fields("1", fields).await.unwrap();
    assert_eq!(
        (updated.email_id.as_deref(), updated.total_jobs),
        (Some("a@example.test"), 1)
    );
    assert!(users.update("9", &update).await.unwrap_err().is_not_found());
    assert!(
        users
            .update("1", &Update::new().set("no_such_field", 1))
            .await
            .unwrap_err()
            .is_validation()
    );

    let keepers = svc.keepers();
    keepers.create(&keeper("1", true)).await.unwrap();
    keepers.create(&keeper("2", false)).await.unwrap();
    keepers.create(&keeper("3", true)).await.unwrap();
    let online: Vec<String> = keepers
        .get_by_field("online", Value::Bool(true))
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.keeper_id)
        .collect();
    assert_eq!(online, vec!["1", "3"]);
    let both = keepers
        .get_by_fields(&[("online", json!(true)), ("keeper_name", json!("keeper-3"))])
        .await
        .unwrap();
    assert_eq!(both.len(), 1);
    assert_eq!(keepers.list().await.unwrap().len(), 3);
    assert!(
        keepers
            .get_by_field("no_such_field", json!(1))
            .await
            .unwrap_err()
            .is_validation()
    );
}

async fn batch_create_is_all_or_nothing(store: Arc<dyn Store>) {
    let svc = service(store);
    let users = svc.users();
    assert_eq!(users.batch_create(&[]).await.unwrap(), 0);
    assert_eq!(
        users
            .batch_create(&[user("1", "0xa"), user("2", "0xb")])
            .await
            .unwrap(),
        2
    );
    let err = users
        .batch_create(&[user("3", "0xc"), user("1", "0xd")])
        .await
        .unwrap_err();
    assert!(err.is_conflict(), "{err}");
    assert!(
        !users.exists("3").await.unwrap(),
        "a failed batch writes nothing"
    );
}

async fn raw_query_without_an_executor_is_unsupported(store: Arc<dyn Store>) {
    let backend = store.backend();
    let svc = service(store);
    let err = svc
        .tasks()
        .execute_query("SELECT * FROM task_data", &[])
        .await
        .unwrap_err();
    assert!(err.is_unsupported(), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("task_data") && text.contains(backend),
        "{text}"
    );
}

async fn health_check_passes_through_a_closed_breaker(store: Arc<dyn Store>) {
    let svc = service(store);
    let report = svc.health_check().await.unwrap();
    assert!(!report.backend.is_empty());
    assert_eq!(svc.breaker().state(), BreakerState::Closed { failures: 0 });
}
