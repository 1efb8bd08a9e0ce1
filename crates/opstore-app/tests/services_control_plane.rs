//! The control plane's clusters and jobs end to end, on every backend.

#[macro_use]
mod services_support;

use std::sync::Arc;
use std::time::Duration;

use opstore_app::services::control_plane::{ControlPlaneParts, ControlPlaneService, JobScope};
use opstore_domain::entities::control_plane::{ClusterStatus, JobStatus, JobType};
use opstore_domain::{Clock, ManualClock, Store, json};
use services_support::{cluster, t0};

on_every_backend!(
    one_active_cluster_per_name_platform_and_domain,
    pending_jobs_are_oldest_first_and_skip_future_retries,
    pending_jobs_are_scoped_by_cluster_and_job_type,
    job_state_changes_and_unknown_ids,
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
        .pending_jobs(&JobScope::default(), 10)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(pending, vec![ids[2].clone(), ids[3].clone()]);
    assert_eq!(
        svc.count_pending_jobs(&JobScope::default()).await.unwrap(),
        3
    );
    clock.advance(HOUR);
    let pending: Vec<String> = svc
        .pending_jobs(&JobScope::default(), 2)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(pending, vec![ids[0].clone(), ids[2].clone()]);
}

async fn pending_jobs_are_scoped_by_cluster_and_job_type(store: Arc<dyn Store>) {
    let (svc, clock) = service(store);
    let a = svc.create_cluster(cluster("a")).await.unwrap();
    let b = svc.create_cluster(cluster("b")).await.unwrap();
    let job = |cluster_id: String, job_type: JobType| {
        clock.advance(Duration::from_secs(1));
        let svc = &svc;
        async move {
            svc.create_job(&cluster_id, job_type, None, None)
                .await
                .unwrap()
                .id
        }
    };
    let a_create = job(a.id.clone(), JobType::Create).await;
    let b_create = job(b.id.clone(), JobType::Create).await;
    let a_scale = job(a.id.clone(), JobType::ScaleWorkers).await;
    let b_sweep = job(b.id.clone(), JobType::OrphanSweep).await;
    let ids = |jobs: Vec<opstore_domain::entities::control_plane::ClusterJob>| {
        jobs.into_iter().map(|j| j.id).collect::<Vec<_>>()
    };

    let of_a = JobScope::cluster(&a.id);
    assert_eq!(
        ids(svc.pending_jobs(&of_a, 10).await.unwrap()),
        vec![a_create.clone(), a_scale.clone()]
    );
    assert_eq!(svc.count_pending_jobs(&of_a).await.unwrap(), 2);
    let creates = JobScope::default().of_types([JobType::Create]);
    assert_eq!(
        ids(svc.pending_jobs(&creates, 10).await.unwrap()),
        vec![a_create.clone(), b_create.clone()]
    );
    let b_sweeps = JobScope::cluster(&b.id).of_types([JobType::OrphanSweep, JobType::ScaleWorkers]);
    assert_eq!(
        ids(svc.pending_jobs(&b_sweeps, 10).await.unwrap()),
        vec![b_sweep.clone()]
    );
    assert_eq!(
        ids(svc.pending_jobs(&JobScope::default(), 10).await.unwrap()),
        vec![a_create, b_create, a_scale, b_sweep]
    );
    assert!(
        svc.pending_jobs(&JobScope::cluster("clu_missing"), 10)
            .await
            .unwrap()
            .is_empty()
    );
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
