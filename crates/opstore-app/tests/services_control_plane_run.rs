//! The worker pattern in one call (`run_job`), on every backend, and lease loss
//! on memory, whose clock the test drives.

#[macro_use]
mod services_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opstore_app::services::control_plane::{
    ControlPlaneParts, ControlPlaneService, JobFailure, JobRun, JobRunConfig, JobScope,
};
use opstore_domain::entities::control_plane::{ClusterStatus, JobStatus, JobType};
use opstore_domain::{ManualClock, Store};
use opstore_memory::{MemoryConfig, MemoryStore};
use services_support::{cluster, t0};
use tokio::sync::oneshot;

on_every_backend!(
    run_job_marks_the_job_succeeded_and_releases_the_lock,
    run_job_retries_a_failed_job_then_fails_it_when_attempts_run_out,
    run_job_records_nothing_for_a_holder_whose_lock_was_taken_over,
    run_job_reports_a_held_lock_without_running_the_work,
);

const HOUR: Duration = Duration::from_secs(3600);

fn config() -> JobRunConfig {
    JobRunConfig::new(HOUR, Duration::from_secs(30))
}

async fn run_job_marks_the_job_succeeded_and_releases_the_lock(store: Arc<dyn Store>) {
    let svc = ControlPlaneService::new(store).unwrap();
    let c = svc.create_cluster(cluster("c")).await.unwrap();
    let job = svc
        .create_job(&c.id, JobType::Create, None, None)
        .await
        .unwrap();
    let run = svc
        .run_job(&job.id, "worker-1", &config(), |ctx| async move {
            assert_eq!(ctx.job.status, JobStatus::Running);
            assert_eq!(ctx.cluster.status, ClusterStatus::Creating);
            assert_eq!(ctx.lease.owner(), "worker-1");
            assert!(!ctx.lease_lost.is_cancelled());
            Ok::<_, JobFailure>(7)
        })
        .await
        .unwrap();
    let JobRun::Succeeded { job: done, output } = run else {
        panic!("expected success, got {run:?}");
    };
    assert_eq!(output, 7);
    assert_eq!(done.status, JobStatus::Succeeded);
    assert!(done.ended_at.is_some());
    assert_eq!(
        svc.get_job(&job.id).await.unwrap().unwrap().status,
        JobStatus::Succeeded
    );
    assert_eq!(svc.job_lock(&c.id).await.unwrap(), None, "lock released");
}

async fn run_job_retries_a_failed_job_then_fails_it_when_attempts_run_out(store: Arc<dyn Store>) {
    let svc = ControlPlaneService::new(store).unwrap();
    let c = svc.create_cluster(cluster("c")).await.unwrap();
    let job = svc
        .create_job(&c.id, JobType::Create, Some(2), None)
        .await
        .unwrap();
    let fail = |_| async { Err::<(), _>(JobFailure::new("E_QUOTA", "quota exceeded")) };

    let run = svc
        .run_job(&job.id, "worker-1", &config(), fail)
        .await
        .unwrap();
    let JobRun::Retrying { job: retried, .. } = run else {
        panic!("expected a retry, got {run:?}");
    };
    assert_eq!(
        (retried.status, retried.attempt, retried.started_at),
        (JobStatus::Retrying, 2, None)
    );
    assert_eq!(retried.error_code.as_deref(), Some("E_QUOTA"));
    assert!(retried.retry_after.is_some());
    assert!(
        svc.pending_jobs(&JobScope::cluster(&c.id), 10)
            .await
            .unwrap()
            .is_empty(),
        "not due before the retry delay"
    );
    assert_eq!(svc.job_lock(&c.id).await.unwrap(), None);

    let run = svc
        .run_job(&job.id, "worker-2", &config(), fail)
        .await
        .unwrap();
    let JobRun::Failed {
        job: failed,
        failure,
    } = run
    else {
        panic!("expected a final failure, got {run:?}");
    };
    assert_eq!(failure.message, "quota exceeded");
    assert_eq!((failed.status, failed.attempt), (JobStatus::Failed, 2));
    assert_eq!(
        svc.get_cluster(&c.id).await.unwrap().unwrap().status,
        ClusterStatus::Failed
    );
    assert_eq!(svc.job_lock(&c.id).await.unwrap(), None);
}

/// An operator takes the lock away mid-run and another worker takes it: the
/// first worker's late success is fenced out.
async fn run_job_records_nothing_for_a_holder_whose_lock_was_taken_over(store: Arc<dyn Store>) {
    let svc = ControlPlaneService::new(Arc::clone(&store)).unwrap();
    let c = svc.create_cluster(cluster("c")).await.unwrap();
    let job = svc
        .create_job(&c.id, JobType::Create, None, None)
        .await
        .unwrap();
    let sweep = svc
        .create_job(&c.id, JobType::OrphanSweep, None, None)
        .await
        .unwrap();
    let (started_tx, started_rx) = oneshot::channel();
    let (go_tx, go_rx) = oneshot::channel::<()>();
    let config = config();
    let run = svc.run_job(&job.id, "worker-1", &config, |_| async move {
        started_tx.send(()).unwrap();
        go_rx.await.unwrap();
        Ok::<_, JobFailure>(())
    });
    let takeover = async {
        started_rx.await.unwrap();
        let name = ControlPlaneService::job_lock_name(&c.id);
        assert!(store.locks().force_release(&name).await.unwrap());
        let lease = svc
            .acquire_job_lock(&c.id, &sweep.id, "worker-2", HOUR)
            .await
            .unwrap()
            .unwrap();
        go_tx.send(()).unwrap();
        lease
    };
    let (run, lease) = tokio::join!(run, takeover);
    assert_eq!(
        run.unwrap(),
        JobRun::LeaseLost {
            job_id: job.id.clone()
        }
    );
    assert_eq!(
        svc.get_job(&job.id).await.unwrap().unwrap().status,
        JobStatus::Running,
        "left to stuck-job recovery"
    );
    let lock = svc.job_lock(&c.id).await.unwrap().unwrap();
    assert_eq!(lock.lease, lease, "the new holder keeps the lock");
    assert_eq!(lock.job_id.as_deref(), Some(sweep.id.as_str()));
}

async fn run_job_reports_a_held_lock_without_running_the_work(store: Arc<dyn Store>) {
    let svc = ControlPlaneService::new(store).unwrap();
    let c = svc.create_cluster(cluster("c")).await.unwrap();
    let job = svc
        .create_job(&c.id, JobType::Create, None, None)
        .await
        .unwrap();
    let held = svc
        .acquire_job_lock(&c.id, "other", "worker-2", HOUR)
        .await
        .unwrap()
        .unwrap();
    let ran = AtomicBool::new(false);
    let err = svc
        .run_job(&job.id, "worker-1", &config(), |_| async {
            ran.store(true, Ordering::SeqCst);
            Ok::<_, JobFailure>(())
        })
        .await
        .unwrap_err();
    assert!(err.is_lock_held(), "{err}");
    assert!(!ran.load(Ordering::SeqCst));
    assert_eq!(
        svc.get_job(&job.id).await.unwrap().unwrap().status,
        JobStatus::Pending
    );
    svc.release_job_lock(&held).await.unwrap();
}

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

/// Sets its flag when dropped, to show the work was stopped.
struct Dropped(Arc<AtomicBool>);

impl Drop for Dropped {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// The lock expires on the store's clock while the work runs: the keeper's next
/// renewal fails, the work is stopped, and nothing is recorded on the job.
#[tokio::test]
async fn losing_the_lock_stops_the_work_and_records_nothing() {
    let (svc, clock) = memory_service().await;
    let c = svc.create_cluster(cluster("c")).await.unwrap();
    let job = svc
        .create_job(&c.id, JobType::Create, None, None)
        .await
        .unwrap();
    // Renewals every 100 ms of real time; the store judges expiry by `clock`.
    let config = JobRunConfig::new(Duration::from_millis(300), Duration::ZERO);
    let stopped = Arc::new(AtomicBool::new(false));
    let (started_tx, started_rx) = oneshot::channel();
    let guard = Dropped(Arc::clone(&stopped));
    let run = svc.run_job(&job.id, "worker-1", &config, |ctx| async move {
        let _guard = guard;
        started_tx.send(ctx.lease_lost.clone()).unwrap();
        std::future::pending::<()>().await;
        Ok::<_, JobFailure>(())
    });
    let expire = async {
        let lost = started_rx.await.unwrap();
        clock.advance(Duration::from_secs(1));
        lost.cancelled().await;
    };
    let (run, ()) = tokio::join!(run, expire);
    assert_eq!(
        run.unwrap(),
        JobRun::LeaseLost {
            job_id: job.id.clone()
        }
    );
    assert!(stopped.load(Ordering::SeqCst), "the work was stopped");
    assert_eq!(
        svc.get_job(&job.id).await.unwrap().unwrap().status,
        JobStatus::Running,
        "not marked succeeded by the holder that lost the lock"
    );
}

/// The lock expires and another worker takes it over before the work ends: the
/// stale holder's success is rejected by the fence.
#[tokio::test]
async fn a_stale_holder_cannot_mark_the_job_succeeded() {
    let (svc, clock) = memory_service().await;
    let c = svc.create_cluster(cluster("c")).await.unwrap();
    let job = svc
        .create_job(&c.id, JobType::Create, None, None)
        .await
        .unwrap();
    let sweep = svc
        .create_job(&c.id, JobType::OrphanSweep, None, None)
        .await
        .unwrap();
    let ttl = Duration::from_secs(60);
    let config = JobRunConfig::new(ttl, Duration::ZERO);
    let (started_tx, started_rx) = oneshot::channel();
    let (go_tx, go_rx) = oneshot::channel::<()>();
    let run = svc.run_job(&job.id, "worker-1", &config, |_| async move {
        started_tx.send(()).unwrap();
        go_rx.await.unwrap();
        Ok::<_, JobFailure>(())
    });
    let takeover = async {
        started_rx.await.unwrap();
        clock.advance(ttl + Duration::from_secs(1));
        let lease = svc
            .acquire_job_lock(&c.id, &sweep.id, "worker-2", ttl)
            .await
            .unwrap()
            .expect("an expired lock is taken over");
        go_tx.send(()).unwrap();
        lease
    };
    let (run, lease) = tokio::join!(run, takeover);
    assert!(matches!(run.unwrap(), JobRun::LeaseLost { .. }));
    assert_eq!(
        svc.get_job(&job.id).await.unwrap().unwrap().status,
        JobStatus::Running
    );
    let lock = svc.job_lock(&c.id).await.unwrap().unwrap();
    assert_eq!(lock.lease, lease);
    assert_eq!(lock.job_id.as_deref(), Some(sweep.id.as_str()));
}
