//! The control plane's worker pattern and job locks end to end, on every backend.

#[macro_use]
mod services_support;

use std::sync::Arc;
use std::time::Duration;

use opstore_app::services::control_plane::{
    ControlPlaneParts, ControlPlaneService, JobLeaseHook, Recovery, RecoveryAction,
};
use opstore_domain::entities::control_plane::{ClusterStatus, JobStatus, JobType};
use opstore_domain::{Lease, LockManager, ManualClock, Store};
use opstore_memory::{MemoryConfig, MemoryStore};
use services_support::{cluster, t0};
use tokio_util::sync::CancellationToken;

on_every_backend!(
    start_job_locks_the_cluster_and_moves_its_status,
    start_job_rejects_an_invalid_transition_and_frees_the_lock,
    stuck_jobs_are_retried_then_failed,
    a_started_job_hands_its_lease_to_the_hook,
);

const HOUR: Duration = Duration::from_secs(3600);

fn service(store: Arc<dyn Store>) -> (ControlPlaneService, ManualClock) {
    let clock = ManualClock::new(t0());
    let mut parts = ControlPlaneParts::from_store(store).unwrap();
    parts.clock = Arc::new(clock.clone());
    (ControlPlaneService::from_parts(parts), clock)
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

/// Drops a cluster's job lock the way a vanished worker's lock lapses. The
/// backend judges lease expiry by its own clock, which these tests cannot move.
async fn lapse(locks: &Arc<dyn LockManager>, cluster_id: &str) {
    let name = ControlPlaneService::job_lock_name(cluster_id);
    assert!(locks.force_release(&name).await.unwrap(), "lock was live");
}

async fn stuck_jobs_are_retried_then_failed(store: Arc<dyn Store>) {
    let locks = store.locks();
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
    assert!(
        svc.recover_stuck_jobs(HOUR).await.unwrap().is_empty(),
        "past the run time, but its worker still holds the live job lock"
    );
    lapse(&locks, &c.id).await;
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
    lapse(&locks, &c.id).await;
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
    lapse(&locks, &d.id).await;
    assert_eq!(
        svc.recover_stuck_jobs(HOUR).await.unwrap()[0].action,
        RecoveryAction::Failed
    );
    assert_eq!(
        svc.get_cluster(&d.id).await.unwrap().unwrap().status,
        ClusterStatus::DestroyFailed
    );
}

async fn a_started_job_hands_its_lease_to_the_hook(store: Arc<dyn Store>) {
    let hook = Arc::new(RecordingHook::default());
    let svc = ControlPlaneService::new(store)
        .unwrap()
        .with_lease_hook(hook.clone());
    let c = svc.create_cluster(cluster("c")).await.unwrap();
    let job = svc
        .create_job(&c.id, JobType::Create, None, None)
        .await
        .unwrap();
    let started = svc.start_job(&job.id, "worker-1", HOUR).await.unwrap();
    let kept = hook.kept.lock().unwrap().clone();
    assert_eq!(kept, vec![(started.lease.clone(), HOUR)]);
    let lost = started.lease_lost.expect("hook installed");
    assert!(!lost.is_cancelled());
    hook.lost.cancel();
    assert!(
        lost.is_cancelled(),
        "the work sees the loss the keeper signals"
    );
}

/// Records the leases it is asked to keep alive.
#[derive(Debug, Default)]
struct RecordingHook {
    kept: std::sync::Mutex<Vec<(Lease, Duration)>>,
    lost: CancellationToken,
}

impl JobLeaseHook for RecordingHook {
    fn keep_alive(&self, lease: Lease, ttl: Duration) -> CancellationToken {
        self.kept.lock().unwrap().push((lease, ttl));
        self.lost.clone()
    }
}

/// The service on a memory store whose lease expiry follows the same manual
/// clock as the service.
async fn memory_service() -> (ControlPlaneService, ManualClock) {
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
    (ControlPlaneService::from_parts(parts), clock)
}

/// Lease expiry is judged by the backend's clock, so this runs on memory, whose
/// clock the test drives.
#[tokio::test]
async fn a_long_job_with_a_renewed_lock_is_not_recovered_until_the_lock_lapses() {
    let (svc, clock) = memory_service().await;
    let ttl = Duration::from_secs(60);
    let c = svc.create_cluster(cluster("c")).await.unwrap();
    let job = svc
        .create_job(&c.id, JobType::Create, None, None)
        .await
        .unwrap();
    let started = svc.start_job(&job.id, "worker-1", ttl).await.unwrap();

    // The worker runs for two hours, renewing its lock every 40 seconds.
    let mut lease = started.lease.clone();
    for _ in 0..180 {
        clock.advance(Duration::from_secs(40));
        lease = svc.renew_job_lock(&lease, ttl).await.unwrap();
    }
    assert!(
        svc.recover_stuck_jobs(HOUR).await.unwrap().is_empty(),
        "a live, renewed lock means the job is still being worked on"
    );
    let running = svc.get_job(&job.id).await.unwrap().unwrap();
    assert_eq!((running.status, running.attempt), (JobStatus::Running, 1));
    assert_eq!(
        svc.job_lock(&c.id)
            .await
            .unwrap()
            .unwrap()
            .job_id
            .as_deref(),
        Some(job.id.as_str())
    );

    // The worker vanishes: its lock lapses and the job is recovered.
    clock.advance(ttl + Duration::from_secs(1));
    assert_eq!(
        svc.recover_stuck_jobs(HOUR).await.unwrap(),
        vec![Recovery {
            job_id: job.id.clone(),
            cluster_id: c.id.clone(),
            action: RecoveryAction::Retried,
        }]
    );
    let retried = svc.get_job(&job.id).await.unwrap().unwrap();
    assert_eq!((retried.status, retried.attempt), (JobStatus::Retrying, 2));

    // The next start fences the old worker out.
    let restarted = svc.start_job(&job.id, "worker-2", ttl).await.unwrap();
    assert!(restarted.lease.token() > started.lease.token());
    assert!(
        svc.renew_job_lock(&lease, ttl)
            .await
            .unwrap_err()
            .is_lock_lost()
    );
    assert!(svc.recover_stuck_jobs(HOUR).await.unwrap().is_empty());
}

/// A job whose cluster lock is live but recorded for another job is not
/// protected by it: its own worker is gone.
#[tokio::test]
async fn a_live_lock_of_another_job_does_not_protect_a_stuck_job() {
    let (svc, clock) = memory_service().await;
    let ttl = Duration::from_secs(60);
    let c = svc.create_cluster(cluster("c")).await.unwrap();
    let stuck = svc
        .create_job(&c.id, JobType::Create, None, None)
        .await
        .unwrap();
    let sweep = svc
        .create_job(&c.id, JobType::OrphanSweep, None, None)
        .await
        .unwrap();
    svc.start_job(&stuck.id, "worker-1", ttl).await.unwrap();
    clock.advance(2 * HOUR);
    let other = svc.start_job(&sweep.id, "worker-2", ttl).await.unwrap();
    let recovered = svc.recover_stuck_jobs(HOUR).await.unwrap();
    assert_eq!(recovered.len(), 1);
    assert_eq!(recovered[0].job_id, stuck.id);
    // The other job keeps its lock.
    let lock = svc.job_lock(&c.id).await.unwrap().unwrap();
    assert_eq!(lock.lease.token(), other.lease.token());
    assert_eq!(lock.job_id.as_deref(), Some(sweep.id.as_str()));
}

/// Lease expiry is judged by the backend's clock, so this runs on memory, whose
/// clock the test drives.
#[tokio::test]
async fn an_expired_job_lock_is_taken_over() {
    let (svc, clock) = memory_service().await;
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
