//! The control-plane service end to end, on every backend.

#[macro_use]
mod services_support;

use std::sync::Arc;
use std::time::Duration;

use opstore_app::services::control_plane::{
    ControlPlaneParts, ControlPlaneService, Idempotent, RecoveryAction,
};
use opstore_domain::entities::control_plane::{
    AuditEvent, AuditStatus, ClusterOutputs, ClusterStatus, JobStatus, JobType, PrincipalType,
    RbacMapping, RbacRole, UsageSample,
};
use opstore_domain::{Clock, ManualClock, Store, StoreError, json};
use opstore_memory::{MemoryConfig, MemoryStore};
use services_support::{cluster, t0};

on_every_backend!(
    one_active_cluster_per_name_platform_and_domain,
    pending_jobs_are_oldest_first_and_skip_future_retries,
    job_state_changes_and_unknown_ids,
    start_job_locks_the_cluster_and_moves_its_status,
    start_job_rejects_an_invalid_transition_and_frees_the_lock,
    stuck_jobs_are_retried_then_failed,
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

async fn one_active_cluster_per_name_platform_and_domain(store: Arc<dyn Store>) {
    let (svc, _) = service(store);
    let first = svc.create_cluster(cluster("dev")).await.unwrap();
    assert!(first.id.starts_with("clu_"));
    let err = svc.create_cluster(cluster("dev")).await.unwrap_err();
    assert!(err.is_conflict(), "{err}");
    assert!(err.to_string().contains("dev"), "{err}");
    let mut other_platform = cluster("dev");
    other_platform.platform = "gcp".into();
    svc.create_cluster(other_platform).await.unwrap();

    // DESTROY_FAILED still holds the name: resources may remain.
    svc.update_cluster_status(&first.id, ClusterStatus::DestroyFailed)
        .await
        .unwrap();
    assert!(
        svc.create_cluster(cluster("dev"))
            .await
            .unwrap_err()
            .is_conflict()
    );
    let gone = svc
        .update_cluster_status(&first.id, ClusterStatus::Destroyed)
        .await
        .unwrap();
    assert!(gone.destroyed_at.is_some());
    let second = svc.create_cluster(cluster("dev")).await.unwrap();
    // Reactivating the destroyed one would make two.
    assert!(
        svc.update_cluster_status(&first.id, ClusterStatus::Ready)
            .await
            .unwrap_err()
            .is_conflict()
    );
    svc.update_cluster_status(&second.id, ClusterStatus::Failed)
        .await
        .unwrap();
    svc.create_cluster(cluster("dev")).await.unwrap();
    assert!(
        svc.update_cluster_status("clu_missing", ClusterStatus::Ready)
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert_eq!(
        svc.list_clusters(&Default::default(), 0, 0)
            .await
            .unwrap()
            .total,
        4
    );
}

async fn pending_jobs_are_oldest_first_and_skip_future_retries(store: Arc<dyn Store>) {
    let (svc, clock) = service(store);
    let c = svc.create_cluster(cluster("c")).await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..4 {
        clock.advance(Duration::from_secs(1));
        ids.push(
            svc.create_job(&c.id, JobType::ScaleWorkers, None, None)
                .await
                .unwrap()
                .id,
        );
    }
    svc.mark_job_started(&ids[1]).await.unwrap();
    svc.mark_job_failed_for_retry(&ids[0], "E", "boom", Some(clock.now().add(HOUR)))
        .await
        .unwrap();
    svc.increment_attempt(&ids[3]).await.unwrap();
    let pending: Vec<String> = svc
        .pending_jobs(10)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(pending, vec![ids[2].clone(), ids[3].clone()]);
    assert_eq!(svc.count_pending_jobs().await.unwrap(), 3);
    clock.advance(HOUR);
    let pending: Vec<String> = svc
        .pending_jobs(2)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(pending, vec![ids[0].clone(), ids[2].clone()]);
}

async fn job_state_changes_and_unknown_ids(store: Arc<dyn Store>) {
    let (svc, clock) = service(store);
    assert!(
        svc.create_job("clu_missing", JobType::Create, None, None)
            .await
            .unwrap_err()
            .is_not_found()
    );
    let c = svc.create_cluster(cluster("c")).await.unwrap();
    let job = svc
        .create_job(&c.id, JobType::Create, None, Some(json!({"k": 1})))
        .await
        .unwrap();
    assert_eq!(
        (job.status, job.attempt, job.max_attempts),
        (JobStatus::Pending, 1, 3)
    );
    let started = svc.mark_job_started(&job.id).await.unwrap();
    assert_eq!(
        (started.status, started.started_at),
        (JobStatus::Running, Some(clock.now()))
    );
    let retry = svc
        .mark_job_failed_for_retry(&job.id, "QUOTA", "no quota", None)
        .await
        .unwrap();
    assert_eq!((retry.status, retry.attempt), (JobStatus::Pending, 1));
    assert_eq!((retry.started_at, retry.ended_at), (None, None));
    assert_eq!(
        (retry.error_code.as_deref(), retry.error_message.as_deref()),
        (Some("QUOTA"), Some("no quota"))
    );
    let bumped = svc.increment_attempt(&job.id).await.unwrap();
    assert_eq!((bumped.status, bumped.attempt), (JobStatus::Retrying, 2));
    clock.advance(Duration::from_secs(5));
    let done = svc
        .mark_job_succeeded(&job.id, Some(json!({"done": true})))
        .await
        .unwrap();
    assert_eq!(
        (done.status, done.ended_at, done.metadata),
        (
            JobStatus::Succeeded,
            Some(clock.now()),
            Some(json!({"done": true}))
        )
    );
    let failed = svc.mark_job_failed(&job.id, "X", "y").await.unwrap();
    assert_eq!(failed.status, JobStatus::Failed);
    assert_eq!(svc.jobs_for_cluster(&c.id).await.unwrap().len(), 1);
    for err in [
        svc.mark_job_started("job_missing").await.unwrap_err(),
        svc.mark_job_succeeded("job_missing", None)
            .await
            .unwrap_err(),
        svc.mark_job_failed_for_retry("job_missing", "E", "m", None)
            .await
            .unwrap_err(),
        svc.mark_job_failed("job_missing", "E", "m")
            .await
            .unwrap_err(),
        svc.increment_attempt("job_missing").await.unwrap_err(),
        svc.start_job("job_missing", "w1", HOUR).await.unwrap_err(),
    ] {
        assert!(err.is_not_found(), "{err}");
    }
}

async fn start_job_locks_the_cluster_and_moves_its_status(store: Arc<dyn Store>) {
    let (svc, _) = service(store);
    let c = svc.create_cluster(cluster("c")).await.unwrap();
    let create = svc
        .create_job(&c.id, JobType::Create, None, None)
        .await
        .unwrap();
    let other = svc
        .create_job(&c.id, JobType::OrphanSweep, None, None)
        .await
        .unwrap();

    let started = svc.start_job(&create.id, "worker-1", HOUR).await.unwrap();
    assert_eq!(started.job.status, JobStatus::Running);
    assert_eq!(started.cluster.status, ClusterStatus::Creating);
    assert_eq!(started.lease.owner(), "worker-1");
    assert!(started.lease_lost.is_none(), "no lease hook installed");
    assert_eq!(
        svc.get_cluster(&c.id).await.unwrap().unwrap().status,
        ClusterStatus::Creating
    );
    let lock = svc.job_lock(&c.id).await.unwrap().unwrap();
    assert_eq!(lock.job_id.as_deref(), Some(create.id.as_str()));

    let err = svc
        .start_job(&other.id, "worker-2", HOUR)
        .await
        .unwrap_err();
    assert!(err.is_lock_held(), "{err}");
    assert_eq!(
        svc.get_job(&other.id).await.unwrap().unwrap().status,
        JobStatus::Pending
    );
    // The same job cannot start twice, even by the lock holder.
    svc.release_job_lock(&started.lease).await.unwrap();
    assert!(
        svc.start_job(&create.id, "worker-1", HOUR)
            .await
            .unwrap_err()
            .is_conflict()
    );
    assert_eq!(svc.job_lock(&c.id).await.unwrap(), None);

    let renewed = svc.start_job(&other.id, "worker-2", HOUR).await.unwrap();
    assert_eq!(
        renewed.cluster.status,
        ClusterStatus::Creating,
        "an orphan sweep leaves the status"
    );
    assert!(renewed.lease.token() > started.lease.token());
    let lease = svc.renew_job_lock(&renewed.lease, HOUR).await.unwrap();
    svc.release_job_lock(&lease).await.unwrap();
    assert!(
        svc.release_job_lock(&lease)
            .await
            .unwrap_err()
            .is_lock_lost()
    );
}

async fn start_job_rejects_an_invalid_transition_and_frees_the_lock(store: Arc<dyn Store>) {
    let (svc, _) = service(store);
    let c = svc.create_cluster(cluster("c")).await.unwrap();
    let scale = svc
        .create_job(&c.id, JobType::ScaleWorkers, None, None)
        .await
        .unwrap();
    let err = svc
        .start_job(&scale.id, "worker-1", HOUR)
        .await
        .unwrap_err();
    assert!(
        err.is_conflict() && err.to_string().contains("PENDING"),
        "{err}"
    );
    assert_eq!(
        svc.get_job(&scale.id).await.unwrap().unwrap().status,
        JobStatus::Pending
    );
    assert_eq!(
        svc.job_lock(&c.id).await.unwrap(),
        None,
        "the lease was released"
    );
    svc.update_cluster_status(&c.id, ClusterStatus::Ready)
        .await
        .unwrap();
    let started = svc.start_job(&scale.id, "worker-1", HOUR).await.unwrap();
    assert_eq!(started.cluster.status, ClusterStatus::Ready);
}

async fn stuck_jobs_are_retried_then_failed(store: Arc<dyn Store>) {
    let (svc, clock) = service(store);
    let c = svc.create_cluster(cluster("c")).await.unwrap();
    let create = svc
        .create_job(&c.id, JobType::Create, Some(2), None)
        .await
        .unwrap();
    svc.start_job(&create.id, "worker-1", HOUR).await.unwrap();
    assert!(
        svc.recover_stuck_jobs(HOUR).await.unwrap().is_empty(),
        "not stuck yet"
    );
    clock.advance(2 * HOUR);
    let recovered = svc.recover_stuck_jobs(HOUR).await.unwrap();
    assert_eq!(recovered.len(), 1);
    assert_eq!(recovered[0].action, RecoveryAction::Retried);
    let job = svc.get_job(&create.id).await.unwrap().unwrap();
    assert_eq!(
        (job.status, job.attempt, job.started_at),
        (JobStatus::Retrying, 2, None)
    );
    assert_eq!(
        svc.job_lock(&c.id).await.unwrap(),
        None,
        "the lock was released"
    );

    svc.start_job(&create.id, "worker-2", HOUR).await.unwrap();
    clock.advance(2 * HOUR);
    let recovered = svc.recover_stuck_jobs(HOUR).await.unwrap();
    assert_eq!(recovered[0].action, RecoveryAction::Failed);
    assert_eq!(
        svc.get_job(&create.id).await.unwrap().unwrap().status,
        JobStatus::Failed
    );
    assert_eq!(
        svc.get_cluster(&c.id).await.unwrap().unwrap().status,
        ClusterStatus::Failed
    );

    let d = svc.create_cluster(cluster("d")).await.unwrap();
    svc.update_cluster_status(&d.id, ClusterStatus::Ready)
        .await
        .unwrap();
    let destroy = svc
        .create_job(&d.id, JobType::Destroy, Some(1), None)
        .await
        .unwrap();
    svc.start_job(&destroy.id, "worker-1", HOUR).await.unwrap();
    clock.advance(2 * HOUR);
    assert_eq!(
        svc.recover_stuck_jobs(HOUR).await.unwrap()[0].action,
        RecoveryAction::Failed
    );
    assert_eq!(
        svc.get_cluster(&d.id).await.unwrap().unwrap().status,
        ClusterStatus::DestroyFailed
    );
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

/// Lease expiry is judged by the backend's clock, so this runs on memory, whose
/// clock the test drives.
#[tokio::test]
async fn an_expired_job_lock_is_taken_over() {
    let clock = ManualClock::new(t0());
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new(MemoryConfig {
        clock: Arc::new(clock.clone()),
        ..MemoryConfig::default()
    }));
    store
        .migrate(&opstore_domain::entities::all_schemas())
        .await
        .unwrap();
    let mut parts = ControlPlaneParts::from_store(store).unwrap();
    parts.clock = Arc::new(clock.clone());
    let svc = ControlPlaneService::from_parts(parts);
    let c = svc.create_cluster(cluster("c")).await.unwrap();
    let first = svc
        .create_job(&c.id, JobType::Create, None, None)
        .await
        .unwrap();
    let second = svc
        .create_job(&c.id, JobType::OrphanSweep, None, None)
        .await
        .unwrap();
    let held = svc
        .start_job(&first.id, "worker-1", Duration::from_secs(60))
        .await
        .unwrap();
    assert!(
        svc.acquire_job_lock(&c.id, &second.id, "worker-2", Duration::from_secs(60))
            .await
            .unwrap()
            .is_none()
    );

    clock.advance(Duration::from_secs(61));
    let taken = svc
        .acquire_job_lock(&c.id, &second.id, "worker-2", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    assert!(taken.token() > held.lease.token());
    assert_eq!(
        svc.job_lock(&c.id)
            .await
            .unwrap()
            .unwrap()
            .job_id
            .as_deref(),
        Some(second.id.as_str())
    );
    // The stale holder learns it lost the lock, and its release leaves the new record.
    assert!(
        svc.renew_job_lock(&held.lease, HOUR)
            .await
            .unwrap_err()
            .is_lock_lost()
    );
    assert!(
        svc.release_job_lock(&held.lease)
            .await
            .unwrap_err()
            .is_lock_lost()
    );
    assert_eq!(
        svc.job_lock(&c.id)
            .await
            .unwrap()
            .unwrap()
            .job_id
            .as_deref(),
        Some(second.id.as_str())
    );
}
