//! Unit tests of the control plane's own rules, against mocked ports.

use std::sync::Arc;
use std::time::Duration;

use opstore_domain::entities::control_plane::{ClusterStatus as S, JobType as J};
use opstore_domain::ports::collection::MockRepository;
use opstore_domain::ports::coordination::{MockIdempotencyStore, MockLockManager};
use opstore_domain::ports::store::MockStore;
use opstore_domain::{Lease, ManualClock, StoreError, Timestamp, Upserted};

use super::*;

fn t0() -> Timestamp {
    Timestamp::from_micros(1_767_225_600_000_000)
}

/// Parts whose every port rejects any call it was not told to expect.
struct Mocks {
    store: MockStore,
    clusters: MockRepository<Cluster>,
    jobs: MockRepository<ClusterJob>,
    job_locks: MockRepository<JobLock>,
    locks: MockLockManager,
}

impl Mocks {
    fn new() -> Self {
        let mut store = MockStore::new();
        store.expect_backend().return_const("mock");
        Mocks {
            store,
            clusters: MockRepository::new(),
            jobs: MockRepository::new(),
            job_locks: MockRepository::new(),
            locks: MockLockManager::new(),
        }
    }

    fn service(self) -> ControlPlaneService {
        ControlPlaneService::from_parts(ControlPlaneParts {
            store: Arc::new(self.store),
            clusters: Arc::new(self.clusters),
            jobs: Arc::new(self.jobs),
            job_locks: Arc::new(self.job_locks),
            audit: Arc::new(MockRepository::new()),
            usage: Arc::new(MockRepository::new()),
            outputs: Arc::new(MockRepository::new()),
            rbac: Arc::new(MockRepository::new()),
            locks: Arc::new(self.locks),
            idempotency: Arc::new(MockIdempotencyStore::new()),
            clock: Arc::new(ManualClock::new(t0())),
        })
    }
}

fn job(id: &str, cluster_id: &str) -> ClusterJob {
    ClusterJob {
        id: id.into(),
        cluster_id: cluster_id.into(),
        job_type: J::Create,
        status: JobStatus::Pending,
        attempt: 1,
        max_attempts: 3,
        error_code: None,
        error_message: None,
        started_at: None,
        ended_at: None,
        retry_after: None,
        created_at: t0(),
        updated_at: t0(),
        metadata: None,
    }
}

fn lease(name: &str) -> Lease {
    Lease::granted(
        name.into(),
        "worker-1".into(),
        7,
        t0().add(Duration::from_secs(60)),
    )
}

#[test]
fn transitions_follow_the_job_type() {
    assert_eq!(transition(S::Pending, J::Create), Some(S::Creating));
    assert_eq!(transition(S::Creating, J::Create), Some(S::Creating));
    assert_eq!(transition(S::Ready, J::Create), None);
    for from in [
        S::Creating,
        S::Ready,
        S::Destroying,
        S::Failed,
        S::DestroyFailed,
    ] {
        assert_eq!(
            transition(from, J::Destroy),
            Some(S::Destroying),
            "{from:?}"
        );
        assert_eq!(
            transition(from, J::JanitorDestroy),
            Some(S::Destroying),
            "{from:?}"
        );
    }
    assert_eq!(transition(S::Destroyed, J::Destroy), None);
    assert_eq!(transition(S::Pending, J::Destroy), None);
    assert_eq!(transition(S::Ready, J::ScaleWorkers), Some(S::Ready));
    assert_eq!(transition(S::Creating, J::ScaleWorkers), None);
    assert_eq!(transition(S::Destroyed, J::OrphanSweep), Some(S::Destroyed));
}

#[test]
fn only_destroyed_and_failed_clusters_are_inactive() {
    let inactive: Vec<S> = [
        S::Pending,
        S::Creating,
        S::Ready,
        S::Destroying,
        S::Destroyed,
        S::Failed,
        S::DestroyFailed,
    ]
    .into_iter()
    .filter(|s| !s.is_active())
    .collect();
    assert_eq!(inactive, vec![S::Destroyed, S::Failed]);
}

#[tokio::test]
async fn a_held_lock_fails_the_start_before_any_transaction() {
    let mut m = Mocks::new();
    m.jobs
        .expect_get()
        .returning(|id| Ok(Some(job(id, "clu_1"))));
    m.locks
        .expect_try_acquire()
        .withf(|name, owner, _| name == "cluster-job/clu_1" && owner == "worker-2")
        .returning(|_, _, _| Ok(None));
    m.store.expect_transaction().never();
    let err = m
        .service()
        .start_job("job_1", "worker-2", Duration::from_secs(60))
        .await
        .unwrap_err();
    assert!(err.is_lock_held(), "{err}");
}

#[tokio::test]
async fn a_failed_start_transaction_releases_the_lease() {
    let mut m = Mocks::new();
    m.jobs
        .expect_get()
        .returning(|id| Ok(Some(job(id, "clu_1"))));
    m.locks
        .expect_try_acquire()
        .returning(|name, _, _| Ok(Some(lease(name))));
    m.store
        .expect_transaction()
        .times(1)
        .returning(|_, _| Err(StoreError::Conflict("invalid transition".into())));
    m.locks
        .expect_release()
        .withf(|l| l.token() == 7)
        .times(1)
        .returning(|_| Ok(()));
    let err = m
        .service()
        .start_job("job_1", "worker-1", Duration::from_secs(60))
        .await
        .unwrap_err();
    assert!(err.is_conflict());
}

#[tokio::test]
async fn a_duplicate_active_cluster_is_refused_before_insert() {
    let mut m = Mocks::new();
    let key = Cluster::active_key_for("dev", "aws", "example.test");
    m.clusters
        .expect_exists()
        .withf(move |f| *f == Filter::eq("active_key", key.as_str()))
        .returning(|_| Ok(true));
    m.clusters.expect_insert().never();
    let cluster = Cluster {
        id: String::new(),
        name: "dev".into(),
        platform: "aws".into(),
        version: "4.16".into(),
        profile: "small".into(),
        region: "r".into(),
        base_domain: "example.test".into(),
        owner: "o".into(),
        team: "t".into(),
        cost_center: "c".into(),
        status: S::Pending,
        requested_by: "arn".into(),
        ttl_hours: 1,
        destroy_at: None,
        tags: Default::default(),
        created_at: t0(),
        updated_at: t0(),
        destroyed_at: None,
        active_key: None,
    };
    assert!(
        m.service()
            .create_cluster(cluster)
            .await
            .unwrap_err()
            .is_conflict()
    );
}

#[tokio::test]
async fn a_lock_whose_record_cannot_be_written_is_given_up() {
    let mut m = Mocks::new();
    m.locks
        .expect_try_acquire()
        .returning(|name, _, _| Ok(Some(lease(name))));
    m.job_locks
        .expect_upsert()
        .returning(|_, _| Err(StoreError::Connection("lost".into())));
    m.locks.expect_release().times(1).returning(|_| Ok(()));
    let err = m
        .service()
        .acquire_job_lock("clu_1", "job_1", "worker-1", Duration::from_secs(60))
        .await
        .unwrap_err();
    assert!(err.is_connection());
}

#[tokio::test]
async fn acquiring_records_the_holder() {
    let mut m = Mocks::new();
    m.locks
        .expect_try_acquire()
        .returning(|name, _, _| Ok(Some(lease(name))));
    m.job_locks
        .expect_upsert()
        .withf(|key, update| key == "clu_1" && update.ops.len() == 4)
        .times(1)
        .returning(|key, _| {
            let document = JobLock {
                cluster_id: key.into(),
                job_id: "job_1".into(),
                locked_by: "worker-1".into(),
                locked_at: t0(),
                fencing_token: 7,
            };
            Ok(Upserted {
                inserted: true,
                document,
            })
        });
    let lease = m
        .service()
        .acquire_job_lock("clu_1", "job_1", "worker-1", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(lease.map(|l| l.token()), Some(7));
}
