//! PostgreSQL stopped and restarted in the middle of a workload.
//!
//! The test runs its own throwaway cluster (so stopping it disturbs no other
//! test), with the binaries `cargo xtask test` names. While a writer inserts
//! continuously, a raw change-feed watcher and an event processor follow the
//! collection and a lease is held, the server is stopped (`pg_ctl -m fast`) and
//! started again. Checked: operations in flight and during the outage fail with
//! `Connection` or `Timeout` and none hangs; the pool serves again after the
//! restart; the lease expired meanwhile and is taken over with a higher fencing
//! token while the old holder is fenced off; every row that is in the table at
//! the end (every acknowledged insert, and any insert whose acknowledgement was
//! lost) reached both watchers, which resumed from their tokens.

mod fault_support;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fault_support::{HANG_GUARD, PgCluster};
use futures::StreamExt;
use opstore_app::processor::{
    CheckpointPolicy, EventProcessor, HandlerError, ProcessorConfig, ProcessorPorts, RetryPolicy,
    StartFrom,
};
use opstore_domain::entities::dead_letter::DeadLetter;
use opstore_domain::{
    ChangeEvent, Entity, Query, Repository, ResumeToken, StartAt, Store, StoreError, StoreExt,
    TxExt, TxOptions, WatchRequest, run_transaction,
};
use opstore_postgres::{PgConfig, PgStore};
use opstore_testkit::fixtures::{Item, item};
use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;

const SENTINEL: &str = "zz-sentinel";

/// Awaits `fut` under the hang guard: an operation that never returns fails
/// the test instead of stalling it.
async fn guarded<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(HANG_GUARD, fut)
        .await
        .unwrap_or_else(|_| panic!("{what} hung for {HANG_GUARD:?}"))
}

fn transient_kind(e: &StoreError) -> &'static str {
    match e {
        StoreError::Connection(_) => "connection",
        StoreError::Timeout(_) => "timeout",
        other => panic!("expected Connection or Timeout during the outage, got {other:?}"),
    }
}

#[derive(Debug, Default)]
struct Outage {
    acknowledged_inserts: usize,
    failed_inserts: usize,
    failed_inserts_committed_anyway: usize,
    connection_errors: usize,
    timeout_errors: usize,
    attempts_until_pool_served: usize,
    watcher_stream_errors: usize,
    watcher_resumes: usize,
    rows_at_end: usize,
    missed_by_watcher: usize,
    missed_by_processor: usize,
    resumed_from_pre_outage_token: usize,
    missed_by_resumed_watch: usize,
    in_flight_transaction_error: &'static str,
    stale_token: u64,
    takeover_token: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_mid_workload_loses_nothing_committed() {
    let Some(cluster) = PgCluster::start_plain().await else {
        return;
    };
    let mut config = PgConfig::from_url(cluster.url(""));
    config.max_connections = 6;
    config.acquire_timeout = Duration::from_secs(2);
    config.statement_timeout = Some(Duration::from_secs(20));
    config.feed_poll_interval = Duration::from_millis(100);
    let store: Arc<dyn Store> = Arc::new(PgStore::connect(config).await.unwrap());
    store
        .migrate(&[Item::schema(), DeadLetter::schema()])
        .await
        .unwrap();
    let items = store.repository::<Item>().unwrap();
    let mut figures = Outage::default();

    // The raw watcher resumes by hand from the last token it saw.
    let first = store
        .change_feed()
        .watch(WatchRequest {
            schema: Item::schema(),
            start: StartAt::Now,
            filter: None,
        })
        .await
        .unwrap();
    // Keys seen and the last token, updated together.
    let watched: Arc<Mutex<(BTreeSet<String>, Option<ResumeToken>)>> = Arc::default();
    let (watcher_done_tx, watcher_done) = oneshot::channel::<(usize, usize)>();
    let watcher = {
        let feed = store.change_feed();
        let watched = Arc::clone(&watched);
        tokio::spawn(async move {
            let (mut errors, mut resumes) = (0, 0);
            let mut stream = first;
            let mut last = None;
            loop {
                match stream.next().await {
                    Some(Ok(event)) => {
                        let done = event.key == SENTINEL;
                        let mut w = watched.lock().unwrap();
                        w.0.insert(event.key);
                        w.1 = Some(event.token.clone());
                        drop(w);
                        last = Some(event.token);
                        if done {
                            let _ = watcher_done_tx.send((errors, resumes));
                            return;
                        }
                        continue;
                    }
                    Some(Err(e)) => {
                        errors += 1;
                        transient_kind(&e);
                    }
                    None => errors += 1,
                }
                // Reconnect from the last token until the server is back.
                loop {
                    let start = last.clone().map_or(StartAt::Now, StartAt::After);
                    let request = WatchRequest {
                        schema: Item::schema(),
                        start,
                        filter: None,
                    };
                    match feed.watch(request).await {
                        Ok(s) => {
                            stream = s;
                            resumes += 1;
                            break;
                        }
                        Err(e) => {
                            errors += 1;
                            transient_kind(&e);
                            // Paces reconnection attempts to a server that is down.
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            }
        })
    };

    // The processor reconnects by itself and checkpoints as it goes.
    let handled: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let (sentinel_tx, mut sentinel_rx) = watch::channel(false);
    let processor_cancel = CancellationToken::new();
    let processor = {
        let mut config = ProcessorConfig::new("restart", Item::schema(), StartFrom::Beginning);
        config.retry =
            RetryPolicy::exponential(50, Duration::from_millis(20), Duration::from_millis(200));
        config.checkpoint = CheckpointPolicy::every_event();
        let handled = Arc::clone(&handled);
        let handler = move |event: ChangeEvent| {
            let handled = Arc::clone(&handled);
            let sentinel_tx = sentinel_tx.clone();
            async move {
                if event.key == SENTINEL {
                    sentinel_tx.send_replace(true);
                }
                handled.lock().unwrap().insert(event.key);
                Ok::<(), HandlerError>(())
            }
        };
        let ports = ProcessorPorts::from_store(&*store).unwrap();
        tokio::spawn(EventProcessor::new(config, ports, handler).run(processor_cancel.clone()))
    };

    // The lease of a worker that will be cut off by the outage.
    let locks = store.locks();
    let ttl = Duration::from_secs(2);
    let stale = locks
        .try_acquire("restart-job", "holder-a", ttl)
        .await
        .unwrap()
        .unwrap();

    // The writer inserts until told to stop, each insert under the hang guard.
    let acknowledged: Arc<Mutex<Vec<String>>> = Arc::default();
    let failed: Arc<Mutex<Vec<(String, &'static str)>>> = Arc::default();
    let (progress_tx, mut progress) = watch::channel((0usize, 0usize));
    let stop_writer = CancellationToken::new();
    let writer = {
        let items = store.repository::<Item>().unwrap();
        let (acknowledged, failed, stop) = (
            Arc::clone(&acknowledged),
            Arc::clone(&failed),
            stop_writer.clone(),
        );
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.is_cancelled() {
                let id = format!("w-{n:05}");
                n += 1;
                match guarded("an insert", items.insert(&item(&id).build())).await {
                    Ok(()) => acknowledged.lock().unwrap().push(id),
                    Err(e) => {
                        let kind = transient_kind(&e);
                        failed.lock().unwrap().push((id, kind));
                        // Paces the writer while the server is down.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                let ok = acknowledged.lock().unwrap().len();
                let bad = failed.lock().unwrap().len();
                progress_tx.send_replace((ok, bad));
            }
        })
    };

    // A transaction that is open when the server goes away.
    let (stopped_tx, stopped_rx) = oneshot::channel::<()>();
    let stopped_rx = Arc::new(Mutex::new(Some(stopped_rx)));
    let in_flight = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            let options = TxOptions {
                max_retries: 0,
                ..TxOptions::default()
            };
            run_transaction(&*store, options, move |tx| {
                let stopped = stopped_rx.lock().unwrap().take();
                async move {
                    let repo = tx.repository::<Item>()?;
                    repo.insert(&item("tx-in-flight-1").build()).await?;
                    if let Some(stopped) = stopped {
                        let _ = stopped.await;
                    }
                    repo.insert(&item("tx-in-flight-2").build()).await?;
                    Ok(())
                }
            })
            .await
        })
    };

    guarded(
        "the writer's first commits",
        progress.wait_for(|p| p.0 >= 30),
    )
    .await
    .unwrap();

    // The outage. A third watcher will resume from the token seen now.
    let (seen_before, token_before) = watched.lock().unwrap().clone();
    let token_before = token_before.expect("events arrived before the outage");
    let down = Arc::clone(&cluster);
    tokio::task::spawn_blocking(move || down.stop())
        .await
        .unwrap();
    let _ = stopped_tx.send(());
    let tx_result = guarded("the in-flight transaction", in_flight)
        .await
        .unwrap();
    let tx_error = tx_result.expect_err("a transaction open across the outage cannot commit");
    figures.in_flight_transaction_error = transient_kind(&tx_error);
    let before = progress.borrow().1;
    guarded(
        "failures during the outage",
        progress.wait_for(|p| p.1 >= before + 3),
    )
    .await
    .unwrap();
    let read = guarded("a read during the outage", items.get("w-00000")).await;
    transient_kind(&read.expect_err("reads fail while the server is down"));
    let renew = guarded("a renewal during the outage", locks.renew(&stale, ttl)).await;
    transient_kind(&renew.expect_err("renewals fail while the server is down"));

    let up = Arc::clone(&cluster);
    tokio::task::spawn_blocking(move || up.restart_stopped())
        .await
        .unwrap();

    // The pool serves again: the first call may still meet a dead connection.
    figures.attempts_until_pool_served = guarded("the pool's recovery", async {
        let mut attempts = 0;
        loop {
            attempts += 1;
            match store.health().await {
                Ok(_) => return attempts,
                Err(e) => {
                    transient_kind(&e);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    })
    .await;

    // The lease expired during the outage: another owner takes it over (polling
    // until the server's clock says so) and the old holder is fenced off.
    let takeover = guarded("the lease takeover", async {
        loop {
            if let Some(lease) = locks
                .try_acquire("restart-job", "holder-b", Duration::from_secs(60))
                .await
                .unwrap()
            {
                return lease;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(takeover.token() > stale.token());
    assert!(locks.renew(&stale, ttl).await.unwrap_err().is_lock_lost());
    let fenced = run_transaction(&*store, TxOptions::default(), |tx| {
        let stale = stale.clone();
        async move {
            tx.check_fence(&stale).await?;
            tx.repository::<Item>()?
                .insert(&item("stale-write").build())
                .await
        }
    })
    .await;
    assert!(matches!(fenced, Err(StoreError::LockLost(_))), "{fenced:?}");
    figures.stale_token = stale.token();
    figures.takeover_token = takeover.token();

    // The workload goes on after the restart.
    let after = progress.borrow().0;
    guarded(
        "commits after the restart",
        progress.wait_for(|p| p.0 >= after + 30),
    )
    .await
    .unwrap();
    stop_writer.cancel();
    guarded("the writer", writer).await.unwrap();
    items.insert(&item(SENTINEL).build()).await.unwrap();

    let (errors, resumes) = guarded("the raw watcher", watcher_done).await.unwrap();
    watcher.await.unwrap();
    figures.watcher_stream_errors = errors;
    figures.watcher_resumes = resumes;
    guarded("the processor", sentinel_rx.wait_for(|s| *s))
        .await
        .unwrap();
    processor_cancel.cancel();
    guarded("the processor's stop", processor)
        .await
        .unwrap()
        .unwrap();

    // Nothing committed is lost: every row in the table reached both watchers.
    let rows: BTreeSet<String> = items
        .find(&Query::new())
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    let watched = watched.lock().unwrap().0.clone();
    let mut resumed = store
        .change_feed()
        .watch(WatchRequest {
            schema: Item::schema(),
            start: StartAt::After(token_before),
            filter: None,
        })
        .await
        .unwrap();
    let mut after_token = BTreeSet::new();
    loop {
        let event = guarded("the resumed watch", resumed.next())
            .await
            .expect("the resumed stream goes on")
            .unwrap();
        let done = event.key == SENTINEL;
        assert!(
            !seen_before.contains(&event.key),
            "{} came again after its token",
            event.key
        );
        after_token.insert(event.key);
        if done {
            break;
        }
    }
    figures.resumed_from_pre_outage_token = after_token.len();
    figures.missed_by_resumed_watch = rows
        .iter()
        .filter(|k| !seen_before.contains(*k) && !after_token.contains(*k))
        .count();
    let handled = handled.lock().unwrap().clone();
    let acknowledged = acknowledged.lock().unwrap().clone();
    let failed = failed.lock().unwrap().clone();
    for id in &acknowledged {
        assert!(rows.contains(id), "acknowledged insert {id} is missing");
    }
    assert!(
        !rows.contains("tx-in-flight-1"),
        "half a transaction committed"
    );
    assert!(!rows.contains("stale-write"));
    figures.acknowledged_inserts = acknowledged.len();
    figures.failed_inserts = failed.len();
    figures.failed_inserts_committed_anyway =
        failed.iter().filter(|(id, _)| rows.contains(id)).count();
    figures.connection_errors = failed.iter().filter(|f| f.1 == "connection").count();
    figures.timeout_errors = failed.iter().filter(|f| f.1 == "timeout").count();
    figures.rows_at_end = rows.len();
    figures.missed_by_watcher = rows.difference(&watched).count();
    figures.missed_by_processor = rows.difference(&handled).count();
    println!("FIGURES fault_pg_restart {figures:?}");
    assert_eq!(figures.missed_by_watcher, 0, "{figures:?}");
    assert_eq!(figures.missed_by_processor, 0, "{figures:?}");
    assert_eq!(figures.missed_by_resumed_watch, 0, "{figures:?}");
    assert!(figures.failed_inserts > 0, "the outage was not observed");
    drop(resumed);
    guarded("closing the store", store.close()).await;
}
