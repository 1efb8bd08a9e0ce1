//! The control plane's usage, outputs, audit, RBAC and idempotency end to end, on
//! every backend.

#[macro_use]
mod services_support;

use std::sync::Arc;
use std::time::Duration;

use opstore_app::services::control_plane::{ControlPlaneParts, ControlPlaneService, Idempotent};
use opstore_domain::entities::control_plane::{
    AuditEvent, AuditStatus, ClusterOutputs, PrincipalType, RbacMapping, RbacRole, UsageSample,
};
use opstore_domain::{Clock, ManualClock, Store, StoreError, json};
use services_support::t0;

on_every_backend!(
    usage_samples_are_unique_per_cluster_and_instant,
    outputs_upsert_keeps_absent_fields,
    audit_and_rbac_records,
    idempotent_requests_run_once,
);

const HOUR: Duration = Duration::from_secs(3600);

fn service(store: Arc<dyn Store>) -> (ControlPlaneService, ManualClock) {
    let clock = ManualClock::new(t0());
    let mut parts = ControlPlaneParts::from_store(store).unwrap();
    parts.clock = Arc::new(clock.clone());
    (ControlPlaneService::from_parts(parts), clock)
}

async fn usage_samples_are_unique_per_cluster_and_instant(store: Arc<dyn Store>) {
    let (svc, _) = service(store);
    let sample = |at, workers, cost| UsageSample {
        id: String::new(),
        cluster_id: "clu_1".into(),
        sample_time: at,
        state: "READY".into(),
        control_plane_replicas: 3,
        worker_replicas: workers,
        estimated_hourly_cost: cost,
        metadata: None,
    };
    let first = svc.record_usage(sample(t0(), 2, Some(1.5))).await.unwrap();
    assert_eq!(first.id, UsageSample::key_for("clu_1", t0()));
    let again = svc.record_usage(sample(t0(), 5, None)).await.unwrap();
    assert_eq!(
        (again.worker_replicas, again.estimated_hourly_cost),
        (5, None)
    );
    svc.record_usage(sample(t0().add(HOUR), 5, Some(2.0)))
        .await
        .unwrap();
    assert_eq!(svc.usage_for_cluster("clu_1", None).await.unwrap().len(), 2);
    assert_eq!(
        svc.usage_for_cluster("clu_1", Some(t0().add(HOUR)))
            .await
            .unwrap()
            .len(),
        1
    );
}

async fn outputs_upsert_keeps_absent_fields(store: Arc<dyn Store>) {
    let (svc, clock) = service(store);
    let api = ClusterOutputs {
        cluster_id: "clu_1".into(),
        api_url: Some("https://api".into()),
        ..Default::default()
    };
    let created = svc.upsert_outputs(&api).await.unwrap();
    assert_eq!(created.created_at, Some(clock.now()));
    clock.advance(Duration::from_secs(60));
    let console = ClusterOutputs {
        cluster_id: "clu_1".into(),
        console_url: Some("https://console".into()),
        ..Default::default()
    };
    let merged = svc.upsert_outputs(&console).await.unwrap();
    assert_eq!(merged.api_url.as_deref(), Some("https://api"));
    assert_eq!(merged.console_url.as_deref(), Some("https://console"));
    assert_eq!(
        (merged.created_at, merged.updated_at),
        (Some(t0()), Some(clock.now()))
    );
    assert_eq!(svc.get_outputs("clu_1").await.unwrap(), Some(merged));
    assert_eq!(svc.get_outputs("clu_2").await.unwrap(), None);
}

async fn audit_and_rbac_records(store: Arc<dyn Store>) {
    let (svc, clock) = service(store);
    for action in ["cluster.create", "cluster.destroy"] {
        clock.advance(Duration::from_secs(1));
        svc.record_audit(AuditEvent {
            id: String::new(),
            actor: "ann".into(),
            action: action.into(),
            target_cluster_id: Some("clu_1".into()),
            target_job_id: None,
            status: AuditStatus::Success,
            metadata: None,
            ip_address: None,
            user_agent: None,
            created_at: t0(),
        })
        .await
        .unwrap();
    }
    let page = svc.audit_for_cluster("clu_1", 0, 1).await.unwrap();
    assert_eq!(
        (page.total, page.items[0].action.as_str()),
        (2, "cluster.destroy")
    );
    assert_eq!(svc.audit_by_actor("bob", 0, 0).await.unwrap().total, 0);

    let mapping = |team: &str| RbacMapping {
        id: String::new(),
        iam_principal_arn: "arn:aws:iam::1:role/dev".into(),
        iam_principal_type: PrincipalType::Role,
        team: team.into(),
        role: RbacRole::Requester,
        enabled: true,
        created_at: t0(),
        updated_at: t0(),
        created_by: None,
        notes: None,
    };
    let a = svc.create_rbac_mapping(mapping("a")).await.unwrap();
    svc.create_rbac_mapping(mapping("b")).await.unwrap();
    assert_eq!(
        svc.rbac_for_principal("arn:aws:iam::1:role/dev")
            .await
            .unwrap()
            .len(),
        2
    );
    svc.set_rbac_enabled(&a.id, false).await.unwrap();
    assert_eq!(
        svc.rbac_for_principal("arn:aws:iam::1:role/dev")
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(svc.rbac_for_team("a").await.unwrap().is_empty());
    assert!(!svc.get_rbac_mapping(&a.id).await.unwrap().enabled);
    assert!(
        svc.set_rbac_enabled("missing", true)
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert!(svc.delete_rbac_mapping(&a.id).await.unwrap());
    assert!(
        svc.get_rbac_mapping(&a.id)
            .await
            .unwrap_err()
            .is_not_found()
    );
}

async fn idempotent_requests_run_once(store: Arc<dyn Store>) {
    let (svc, _) = service(store);
    let first = svc
        .idempotent("req-1", "fp-a", HOUR, || async {
            Ok(json!({"cluster": "clu_1"}))
        })
        .await
        .unwrap();
    assert_eq!(first, Idempotent::Fresh(json!({"cluster": "clu_1"})));
    let replay = svc
        .idempotent("req-1", "fp-a", HOUR, || async {
            panic!("a replay must not run the work")
        })
        .await
        .unwrap();
    assert_eq!(replay, Idempotent::Replayed(json!({"cluster": "clu_1"})));
    let mismatch = svc
        .idempotent("req-1", "fp-b", HOUR, || async { Ok(json!(null)) })
        .await
        .unwrap_err();
    assert!(mismatch.is_conflict(), "{mismatch}");

    let failed = svc
        .idempotent("req-2", "fp", HOUR, || async {
            Err(StoreError::Validation("bad request".into()))
        })
        .await
        .unwrap_err();
    assert!(failed.is_validation());
    let retried = svc
        .idempotent("req-2", "fp", HOUR, || async { Ok(json!(2)) })
        .await
        .unwrap();
    assert_eq!(retried.into_response(), json!(2));
}
