//! A job worker with leases and fencing: two workers race for the same cluster job.
//! The first takes the cluster's job lock (a lease with a fencing token), and a
//! lease keeper renews it while the work runs; the second is turned away with
//! `LockHeld`. Once the lock is released, a write fenced by the old lease is
//! rejected, and the next holder gets a larger fencing token.
//!
//! `cargo run -p opstore --example job_worker` runs it on the embedded memory
//! store; set `OPSTORE_URL` (e.g. `postgres://app:secret@db/ops`) for a server.

use std::time::Duration;

use opstore::prelude::*;
use opstore::services::control_plane::{ControlPlaneService, JobFailure, JobRun, JobRunConfig};
use opstore::services::new_id;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store = DataStore::open(&StoreConfig::from_env()?).await?;
    let plane = ControlPlaneService::new(store.store().clone())?;
    let now = Timestamp::now();
    let cluster: Cluster = serde_json::from_value(json!({
        "id": "", "name": format!("demo-{}", &new_id()[..8]), "platform": "aws",
        "version": "4.16", "profile": "small", "region": "eu-west-1",
        "base_domain": "example.test", "owner": "ann", "team": "platform",
        "cost_center": "cc-1", "status": "PENDING", "requested_by": "ann",
        "ttl_hours": 24, "created_at": now, "updated_at": now,
    }))?;
    let cluster = plane.create_cluster(cluster).await?;
    let job = plane
        .create_job(&cluster.id, JobType::Create, None, None)
        .await?;

    // The lock lives 2 s and is renewed every third of that while the work runs.
    let config = JobRunConfig::new(Duration::from_secs(2), Duration::from_secs(1));
    let (plane_ref, config_ref, job_id) = (&plane, &config, &job.id);
    let run = plane.run_job(&job.id, "worker-a", &config, |ctx| async move {
        let lease = ctx.lease;
        println!(
            "worker-a runs {} holding {} with fencing token {}",
            ctx.job.id,
            lease.name(),
            lease.token()
        );
        // A second worker tries the same job while worker-a holds its lock.
        let second = plane_ref.run_job(job_id, "worker-b", config_ref, |_| async { Ok(()) });
        match second.await {
            Err(e) if e.is_lock_held() => println!("worker-b turned away: {e}"),
            other => return Err(JobFailure::new("race", format!("worker-b got {other:?}"))),
        }
        Ok(lease) // the work's output: the lease, to show fencing below
    });
    let JobRun::Succeeded { job, output: lease } = run.await? else {
        return Err("the job did not succeed".into());
    };
    println!("job {} is {:?}", job.id, job.status);

    // worker-a's lease is gone: a write it fences is rejected inside the transaction.
    let stale = run_transaction(store.store().as_ref(), TxOptions::default(), |tx| {
        let lease = lease.clone();
        async move { tx.check_fence(&lease).await }
    })
    .await;
    println!("write fenced by the released lease: {stale:?}");
    let next = store
        .locks()
        .try_acquire(lease.name(), "worker-c", Duration::from_secs(2))
        .await?;
    let next = next.ok_or("the lock should be free")?;
    println!(
        "worker-c holds it with fencing token {} > {}",
        next.token(),
        lease.token()
    );
    store.locks().release(&next).await?;
    store.close().await;
    if !stale.is_err_and(|e| e.is_lock_lost()) || next.token() <= lease.token() {
        return Err("fencing did not reject the stale holder".into());
    }
    Ok(())
}
