//! `opstore demo`: a complete remediation pipeline built only from the public
//! API, checking its own invariants.
//!
//! A producer writes health events for a fleet of nodes. An [`EventProcessor`]
//! quarantines nodes on fatal events, deduplicates error records and queues one
//! drain job per quarantine session. Drain workers start jobs with the worker
//! pattern of the control plane (job lock lease, heartbeats through a
//! [`LeaseKeeper`], fenced writes) and write remediation logs. Along the way
//! some handler calls fail once and are retried, one poison event exhausts its
//! retries and lands in the dead letters, one worker crashes holding a lease
//! (another worker takes the lease over and the stale holder is fenced out),
//! and an operator cancels a node's quarantine session midway.
//!
//! Every random choice comes from a [`StdRng`] seeded with `--seed`, and the
//! operator acts at a point where the pipeline is idle, so the counts in the
//! summary are the same for the same seed; only timings vary.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use opstore_app::lease_keeper::{LeaseKeeper, LeaseKeeperConfig};
use opstore_app::processor::{
    EventProcessor, HandlerError, ProcessorConfig, ProcessorPorts, RetryPolicy, StartFrom,
};
use opstore_app::services::control_plane::{ControlPlaneService, StartedJob};
use opstore_app::services::errors::{ErrorService, ErrorServiceConfig};
use opstore_app::services::health::{CreateOutcome, HealthEventService, StatusChange};
use opstore_app::{DataStore, StoreConfig};
use opstore_domain::entities::control_plane::{
    Cluster, ClusterJob, ClusterStatus, JobStatus, JobType,
};
use opstore_domain::entities::dead_letter::DeadLetter;
use opstore_domain::entities::errors::{ErrorRecord, Priority, RemediationLog, RemediationOutcome};
use opstore_domain::entities::health::{
    HealthEvent, HealthEventRecord, OperationState, OperationStatus, QuarantineStatus,
};
use opstore_domain::{
    ChangeEvent, ChangeOp, CollectionRepository, Entity, Filter, Lease, Query, Repository,
    StoreError, Timestamp, from_document, json, to_document,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::cli::DemoArgs;
use crate::error::CliError;
use crate::output::{OutputFormat, Table, write_json};

const NODE: &str = "healthevent.nodename";
const QUARANTINE: &str = "healtheventstatus.nodequarantined";
const CREATED_AT: &str = "createdAt";
const POISON_CHECK: &str = "XidCorruptPayload";
const CHECKS: [&str; 6] = [
    "GpuXidError",
    "GpuThermalWatch",
    "NvlinkDown",
    "EccUncorrectable",
    "PcieReplayRate",
    "GpuFallenOffBus",
];
/// Lease TTL of a drain job's lock; the keeper renews at a third of it.
const LEASE_TTL: Duration = Duration::from_millis(1_000);
/// A job running longer than this without finishing is recovered. Drain jobs
/// take milliseconds, so only a crashed worker's job gets here.
const STUCK_AFTER: Duration = Duration::from_millis(1_500);
/// How often idle workers, the reaper and the waits look again.
const POLL: Duration = Duration::from_millis(5);

/// The shape of a demo run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemoConfig {
    /// Nodes in the fleet.
    pub nodes: u32,
    /// Health events the producer sends (re-sent duplicates included).
    pub events: u32,
    /// Drain workers.
    pub workers: u32,
    /// Seed of every random choice.
    pub seed: u64,
}

impl From<&DemoArgs> for DemoConfig {
    fn from(args: &DemoArgs) -> Self {
        DemoConfig {
            nodes: args.nodes,
            events: args.events,
            workers: args.workers,
            seed: args.seed,
        }
    }
}

/// One invariant the demo checks, and whether it held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Invariant {
    /// What must hold.
    pub name: String,
    /// Whether it did.
    pub holds: bool,
    /// The figures behind the verdict.
    pub detail: String,
}

/// What a demo run did. Every count is the same for the same seed and shape;
/// latencies, elapsed time and throughput are measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DemoSummary {
    /// Backend name.
    pub backend: String,
    /// Seed.
    pub seed: u64,
    /// Nodes in the fleet.
    pub nodes: u32,
    /// Drain workers.
    pub workers: u32,
    /// Health events the producer sent.
    pub events_sent: u64,
    /// Re-sent events skipped by their idempotency key.
    pub duplicates_skipped: u64,
    /// Health events stored.
    pub events: u64,
    /// Events the quarantine processor handled.
    pub processed: u64,
    /// Handler retries after failed attempts.
    pub retried: u64,
    /// Events that exhausted their retries.
    pub dead_lettered: u64,
    /// Quarantine sessions started (one drain job each).
    pub quarantine_sessions: u64,
    /// Drain jobs finished.
    pub jobs_done: u64,
    /// Jobs recovered after their worker vanished.
    pub jobs_recovered: u64,
    /// Expired job locks taken over by another worker.
    pub lease_takeovers: u64,
    /// Stale lease holders whose fenced write was refused.
    pub stale_holders_fenced: u64,
    /// Quarantine sessions an operator cancelled.
    pub cancelled_sessions: u64,
    /// Events set to Cancelled by those cancellations.
    pub cancelled_events: u64,
    /// Fatal events on nodes under operator control, left alone.
    pub events_left_to_operator: u64,
    /// Error occurrences saved.
    pub error_occurrences: u64,
    /// Error records after deduplication by fingerprint.
    pub error_records: u64,
    /// Remediation log entries written.
    pub remediation_logs: u64,
    /// Median handler call, milliseconds.
    pub handler_p50_ms: f64,
    /// 99th percentile handler call, milliseconds.
    pub handler_p99_ms: f64,
    /// Wall time of the pipeline, seconds.
    pub elapsed_s: f64,
    /// Stored events per second through the whole pipeline.
    pub throughput_events_per_s: f64,
    /// The invariants checked.
    pub invariants: Vec<Invariant>,
}

impl DemoSummary {
    /// Whether every invariant held.
    pub fn ok(&self) -> bool {
        self.invariants.iter().all(|i| i.holds)
    }
}

/// One event the producer will send.
#[derive(Debug, Clone)]
struct Planned {
    node: usize,
    check: &'static str,
    fatal: bool,
    transient: bool,
    poison: bool,
    /// Re-sends the idempotency key of this earlier event.
    resend_of: Option<usize>,
}

/// Everything random about a run, drawn up front from the seed.
#[derive(Debug)]
struct Plan {
    events: Vec<Planned>,
    /// The operator cancels this node's session after the first half.
    cancel_node: Option<usize>,
    /// The drain job of this session (by start order) crashes on its first run.
    crash_session: u64,
}

impl Plan {
    fn draw(config: &DemoConfig) -> Plan {
        let mut rng = StdRng::seed_from_u64(config.seed);
        let n = config.events as usize;
        let half = n / 2;
        let poison = rng.random_range(half..n);
        let mut events: Vec<Planned> = Vec::with_capacity(n);
        for i in 0..n {
            let resend_of = (i > 0 && i != poison && rng.random_bool(0.02))
                .then(|| rng.random_range(0..i))
                .filter(|&j| events[j].resend_of.is_none() && !events[j].poison);
            let planned = match resend_of {
                Some(j) => Planned {
                    resend_of: Some(j),
                    ..events[j].clone()
                },
                None => Planned {
                    node: rng.random_range(0..config.nodes as usize),
                    check: CHECKS[rng.random_range(0..CHECKS.len())],
                    fatal: rng.random_bool(0.3),
                    transient: i != poison && rng.random_bool(0.03),
                    poison: i == poison,
                    resend_of: None,
                },
            };
            let planned = if i == poison {
                Planned {
                    check: POISON_CHECK,
                    ..planned
                }
            } else {
                planned
            };
            events.push(planned);
        }
        let candidates: BTreeSet<usize> = events[..half]
            .iter()
            .filter(|e| e.fatal && !e.poison && e.resend_of.is_none())
            .map(|e| e.node)
            .collect();
        let candidates: Vec<usize> = candidates.into_iter().collect();
        let cancel_node =
            (!candidates.is_empty()).then(|| candidates[rng.random_range(0..candidates.len())]);
        let sessions = candidates.len().max(1) as u64;
        let crash_session = rng.random_range(0..sessions.min(3));
        Plan {
            events,
            cancel_node,
            crash_session,
        }
    }
}

/// What the handler and the workers share.
#[derive(Debug)]
struct Pipeline {
    run: String,
    health: HealthEventService,
    health_events: CollectionRepository<HealthEventRecord>,
    errors: ErrorService,
    control: ControlPlaneService,
    store: DataStore,
    clusters: Vec<String>,
    crash_session: u64,
    attempts: Mutex<HashMap<String, u32>>,
    processed: Mutex<BTreeSet<String>>,
    latencies: Mutex<Vec<Duration>>,
    sessions: AtomicU64,
    left_to_operator: AtomicU64,
    fingerprints: Mutex<BTreeSet<String>>,
    error_occurrences: AtomicU64,
    jobs_created: Mutex<BTreeSet<String>>,
    executions: Mutex<BTreeMap<String, u32>>,
    jobs_done: AtomicU64,
    crashed: Mutex<Vec<(String, Lease)>>,
    takeovers: AtomicU64,
    fenced: AtomicU64,
    recovered: AtomicU64,
    remediation_logs: AtomicU64,
}

fn node_name(i: usize) -> String {
    format!("node-{i:03}")
}

fn store_err(context: &str) -> impl Fn(StoreError) -> CliError + '_ {
    move |e| CliError::store(context, e)
}

impl Pipeline {
    fn processed_count(&self) -> u64 {
        self.processed.lock().map(|p| p.len() as u64).unwrap_or(0)
    }

    fn fingerprint(&self, node: &str, check: &str) -> String {
        format!("{}/{node}/{check}", self.run)
    }

    /// The quarantine processor's handler: inserts only; status updates that
    /// the pipeline itself writes come back through the feed and are ignored.
    async fn handle(&self, event: ChangeEvent) -> Result<(), HandlerError> {
        if event.op != ChangeOp::Insert {
            return Ok(());
        }
        let started = Instant::now();
        let result = self.handle_insert(event).await;
        if let Ok(mut l) = self.latencies.lock() {
            l.push(started.elapsed());
        }
        result
    }

    async fn handle_insert(&self, event: ChangeEvent) -> Result<(), HandlerError> {
        let doc = event
            .document
            .ok_or_else(|| HandlerError::permanent("insert without a document"))?;
        let record: HealthEventRecord = from_document(doc)
            .map_err(|e| HandlerError::permanent(format!("not a health event: {e}")))?;
        let attempt = {
            let mut attempts = self
                .attempts
                .lock()
                .map_err(|_| HandlerError::permanent("attempt table poisoned"))?;
            let n = attempts.entry(record.id.clone()).or_insert(0);
            *n += 1;
            *n
        };
        let ev = &record.event;
        if ev.check_name == POISON_CHECK {
            return Err(HandlerError::new(format!(
                "event `{}`: error codes {:?} do not parse",
                record.id, ev.error_codes
            )));
        }
        if attempt == 1 && ev.metadata.get("demo.transient").is_some_and(|v| v == "1") {
            return Err(HandlerError::new(
                "quarantine API timed out (simulated transient failure)",
            ));
        }
        if ev.is_fatal {
            self.quarantine(&record).await?;
        }
        if let Ok(mut p) = self.processed.lock() {
            p.insert(record.id.clone());
        }
        Ok(())
    }

    async fn quarantine(&self, record: &HealthEventRecord) -> Result<(), HandlerError> {
        let ev = &record.event;
        let node = ev.node_name.as_str();
        let fingerprint = self.fingerprint(node, &ev.check_name);
        let now = Timestamp::now();
        self.errors
            .save(ErrorRecord {
                id: String::new(),
                fingerprint: fingerprint.clone(),
                timestamp: now,
                namespace: "gpu-fleet".into(),
                pod: node.to_owned(),
                container: ev.component_class.clone(),
                message: ev.message.clone(),
                priority: Priority::P1,
                count: 1,
                first_seen: record.created_at,
                last_seen: record.created_at,
                rule_matched: ev.check_name.clone(),
                remediated: false,
                remediated_at: None,
                labels: BTreeMap::from([("run".to_owned(), self.run.clone())]),
            })
            .await?;
        self.error_occurrences.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut f) = self.fingerprints.lock() {
            f.insert(fingerprint.clone());
        }
        // The node's session: its latest event that opened, closed or was
        // cancelled by an operator.
        let boundary = Query::filter(Filter::all_of([
            Filter::eq(NODE, node),
            Filter::ne("id", record.id.as_str()),
            Filter::is_in(
                QUARANTINE,
                [
                    QuarantineStatus::Quarantined.as_str(),
                    QuarantineStatus::AlreadyQuarantined.as_str(),
                    QuarantineStatus::UnQuarantined.as_str(),
                    QuarantineStatus::Cancelled.as_str(),
                ],
            ),
        ]))
        .sort_desc(CREATED_AT)
        .sort_desc("id")
        .limit(1);
        let latest = self.health.find(&boundary).await?.into_iter().next();
        match latest.and_then(|l| l.status.node_quarantined) {
            None | Some(QuarantineStatus::UnQuarantined) => {
                self.health
                    .update_quarantine_status(&record.id, QuarantineStatus::Quarantined)
                    .await?;
                let session = self.sessions.fetch_add(1, Ordering::Relaxed);
                let index: usize = node
                    .strip_prefix("node-")
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| HandlerError::permanent(format!("unknown node `{node}`")))?;
                let cluster = self
                    .clusters
                    .get(index)
                    .ok_or_else(|| HandlerError::permanent(format!("unknown node `{node}`")))?;
                let job = self
                    .control
                    .create_job(
                        cluster,
                        JobType::ScaleWorkers,
                        Some(3),
                        Some(json!({
                            "node": node,
                            "event": record.id,
                            "fingerprint": fingerprint,
                            "crash": session == self.crash_session,
                        })),
                    )
                    .await?;
                if let Ok(mut j) = self.jobs_created.lock() {
                    j.insert(job.id);
                }
            }
            Some(QuarantineStatus::Quarantined | QuarantineStatus::AlreadyQuarantined) => {
                self.health
                    .update_quarantine_status(&record.id, QuarantineStatus::AlreadyQuarantined)
                    .await?;
            }
            Some(QuarantineStatus::Cancelled) => {
                // An operator took the node over; automation keeps its hands off.
                self.left_to_operator.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// A drain worker: claims due jobs until told to stop. Workers start at
    /// different offsets of the due list so they rarely race for one job, and
    /// back off for a moment when nothing could be started.
    async fn worker(
        self: Arc<Self>,
        index: usize,
        stop: CancellationToken,
    ) -> Result<(), CliError> {
        let name = format!("drain-worker-{index}");
        let batch = 16;
        loop {
            if stop.is_cancelled() {
                return Ok(());
            }
            let mut jobs = self
                .control
                .pending_jobs(batch)
                .await
                .map_err(store_err("listing pending drain jobs"))?;
            let mut started_any = false;
            if !jobs.is_empty() {
                let offset = index % jobs.len();
                jobs.rotate_left(offset);
            }
            for job in jobs {
                match self.control.start_job(&job.id, &name, LEASE_TTL).await {
                    Ok(started) => {
                        started_any = true;
                        self.drain(&name, started).await?;
                    }
                    // Another worker got there first, or took the lock over
                    // before our start committed; the job is someone else's.
                    Err(e) if e.is_lock_held() || e.is_conflict() || e.is_lock_lost() => {
                        tracing::debug!(job = %job.id, error = %e, "job not started");
                    }
                    Err(e) => {
                        return Err(CliError::store(&format!("starting job `{}`", job.id), e));
                    }
                }
            }
            if !started_any {
                tokio::select! {
                    _ = stop.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(POLL) => {}
                }
            }
        }
    }

    async fn drain(&self, worker: &str, started: StartedJob) -> Result<(), CliError> {
        let job = started.job;
        let lease = started.lease;
        self.note_takeover(&job, &lease).await?;
        let keeper = LeaseKeeper::start(
            lease.clone(),
            self.store.locks(),
            LeaseKeeperConfig::new(LEASE_TTL, 1.0 / 3.0),
        )
        .map_err(store_err("starting the lease keeper"))?;
        let meta = job.metadata.clone().unwrap_or_default();
        let text = |k: &str| {
            meta.get(k)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned()
        };
        let (node, event_id, fingerprint) = (text("node"), text("event"), text("fingerprint"));
        if job.attempt == 1 && meta.get("crash").and_then(|v| v.as_bool()) == Some(true) {
            // The worker dies holding the lease: no renewals, no release.
            if let Ok(mut c) = self.crashed.lock() {
                c.push((job.id.clone(), lease));
            }
            drop(keeper);
            return Ok(());
        }
        let lost = keeper.cancellation_token();
        // Fenced write: only the live holder may touch the node's events, and an
        // operator's cancellation always wins over the drain.
        let fence = self.store.locks().check(&keeper.lease()).await;
        if lost.is_cancelled() || fence.is_err() {
            tracing::warn!(job = %job.id, "lease lost before the drain; leaving the job to recovery");
            return Ok(());
        }
        let drained = StatusChange::Eviction(OperationStatus {
            status: OperationState::Succeeded,
            message: Some(format!("user pods evicted by {worker}")),
        })
        .to_update(Timestamp::now());
        let not_cancelled = Filter::eq("id", event_id.as_str())
            .and(Filter::ne(QUARANTINE, QuarantineStatus::Cancelled.as_str()));
        let touched = self
            .health_events
            .update_many(&not_cancelled, &drained)
            .await
            .map_err(store_err("recording the drain"))?
            .modified;
        if let Ok(mut e) = self.executions.lock() {
            *e.entry(job.id.clone()).or_insert(0) += 1;
        }
        let error_id = self
            .errors
            .get_by_fingerprint(&fingerprint)
            .await
            .map_err(store_err("reading the error record"))?
            .map(|e| e.id)
            .unwrap_or_default();
        self.errors
            .save_remediation_log(RemediationLog {
                id: String::new(),
                error_id,
                action: "drain".into(),
                target: node,
                status: if touched > 0 {
                    RemediationOutcome::Success
                } else {
                    RemediationOutcome::Skipped
                },
                message: format!("job {} by {worker}", job.id),
                timestamp: Timestamp::now(),
                dry_run: false,
            })
            .await
            .map_err(store_err("writing the remediation log"))?;
        self.remediation_logs.fetch_add(1, Ordering::Relaxed);
        self.control
            .mark_job_succeeded(&job.id, None)
            .await
            .map_err(store_err("finishing the drain job"))?;
        let held = keeper.lease();
        drop(keeper);
        if let Err(e) = self.control.release_job_lock(&held).await {
            tracing::warn!(job = %job.id, error = %e, "releasing the job lock");
        }
        self.jobs_done.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// A job started again after its first worker crashed: the new lease took the
    /// expired one over, and the crashed holder's fenced check now fails.
    async fn note_takeover(&self, job: &ClusterJob, lease: &Lease) -> Result<(), CliError> {
        let stale = self.crashed.lock().ok().and_then(|c| {
            c.iter()
                .find(|(id, _)| id == &job.id)
                .map(|(_, l)| l.clone())
        });
        let Some(stale) = stale else {
            return Ok(());
        };
        if lease.token() > stale.token() {
            self.takeovers.fetch_add(1, Ordering::Relaxed);
        }
        match self.store.locks().check(&stale).await {
            Err(e) if e.is_lock_lost() => {
                self.fenced.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => Err(CliError::store("checking the stale lease", e)),
            Ok(()) => Ok(()),
        }
    }

    /// Recovers jobs whose worker vanished, until told to stop.
    async fn reaper(self: Arc<Self>, stop: CancellationToken) -> Result<(), CliError> {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = tokio::time::sleep(STUCK_AFTER / 10) => {}
            }
            let recovered = self
                .control
                .recover_stuck_jobs(STUCK_AFTER)
                .await
                .map_err(store_err("recovering stuck jobs"))?;
            self.recovered
                .fetch_add(recovered.len() as u64, Ordering::Relaxed);
        }
    }

    fn jobs_outstanding(&self) -> bool {
        let created = self
            .jobs_created
            .lock()
            .map(|j| j.len() as u64)
            .unwrap_or(0);
        self.jobs_done.load(Ordering::Relaxed) < created
    }
}

/// Opens the store, runs the demo, prints the summary; a failed invariant is a
/// runtime error after the summary.
pub async fn run(
    config: &StoreConfig,
    args: &DemoArgs,
    format: OutputFormat,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let store = DataStore::open(config)
        .await
        .map_err(|e| crate::connect_error(config, e))?;
    let progress = if format == OutputFormat::Table && std::io::stdout().is_terminal() {
        ProgressBar::with_draw_target(Some(u64::from(args.events)), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    let summary = run_demo(&store, &DemoConfig::from(args), &progress).await;
    progress.finish_and_clear();
    store.close().await;
    let summary = summary?;
    print(&summary, format, out)?;
    let failed: Vec<&str> = summary
        .invariants
        .iter()
        .filter(|i| !i.holds)
        .map(|i| i.name.as_str())
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(CliError::runtime(format!(
            "demo invariant failed: {}",
            failed.join("; ")
        )))
    }
}

/// Runs the pipeline on `store` and checks its invariants.
pub async fn run_demo(
    store: &DataStore,
    config: &DemoConfig,
    progress: &ProgressBar,
) -> Result<DemoSummary, CliError> {
    if config.events < 2 || config.nodes < 1 || config.workers < 1 {
        return Err(CliError::usage(
            "demo needs at least 2 events, 1 node and 1 worker",
        ));
    }
    progress.set_style(
        ProgressStyle::with_template("{spinner} [{bar:40}] {pos}/{len} events  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let plan = Plan::draw(config);
    let backend = store.store().backend().to_owned();
    // Runs on a shared server stay apart from each other's data.
    let run = if backend == "memory" {
        format!("demo-{}", config.seed)
    } else {
        format!(
            "demo-{}-{}",
            config.seed,
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0)
        )
    };
    let shared = store.store().clone();
    let control =
        ControlPlaneService::new(shared.clone()).map_err(store_err("opening the control plane"))?;
    let mut clusters = Vec::with_capacity(config.nodes as usize);
    progress.set_message("registering nodes");
    for i in 0..config.nodes as usize {
        let now = Timestamp::now();
        let cluster = control
            .create_cluster(Cluster {
                id: String::new(),
                name: node_name(i),
                platform: "gpu-fleet".into(),
                version: "1".into(),
                profile: "h100x8".into(),
                region: "demo".into(),
                base_domain: format!("{run}.opstore.test"),
                owner: "fleet-ops".into(),
                team: "fleet".into(),
                cost_center: "demo".into(),
                status: ClusterStatus::Ready,
                requested_by: "opstore demo".into(),
                ttl_hours: 0,
                destroy_at: None,
                tags: BTreeMap::new(),
                created_at: now,
                updated_at: now,
                destroyed_at: None,
                active_key: None,
            })
            .await
            .map_err(store_err("registering a node"))?;
        clusters.push(cluster.id);
    }
    let pipeline = Arc::new(Pipeline {
        run: run.clone(),
        health: HealthEventService::new(shared.clone())
            .map_err(store_err("opening health events"))?,
        health_events: store
            .repository::<HealthEventRecord>()
            .map_err(store_err("opening health events"))?,
        errors: ErrorService::new(shared.as_ref(), ErrorServiceConfig { max_errors: None })
            .map_err(store_err("opening error records"))?,
        control,
        store: store.clone(),
        clusters,
        crash_session: plan.crash_session,
        attempts: Mutex::default(),
        processed: Mutex::default(),
        latencies: Mutex::default(),
        sessions: AtomicU64::new(0),
        left_to_operator: AtomicU64::new(0),
        fingerprints: Mutex::default(),
        error_occurrences: AtomicU64::new(0),
        jobs_created: Mutex::default(),
        executions: Mutex::default(),
        jobs_done: AtomicU64::new(0),
        crashed: Mutex::default(),
        takeovers: AtomicU64::new(0),
        fenced: AtomicU64::new(0),
        recovered: AtomicU64::new(0),
        remediation_logs: AtomicU64::new(0),
    });

    // The quarantine processor, over this run's events only.
    let processor_name = format!("{run}-quarantine");
    let mut processor_config = ProcessorConfig::new(
        processor_name.clone(),
        HealthEventRecord::schema(),
        StartFrom::Beginning,
    );
    processor_config.filter = Some(Filter::eq("healthevent.agent", run.as_str()));
    processor_config.retry =
        RetryPolicy::exponential(3, Duration::from_millis(1), Duration::from_millis(8));
    let ports = ProcessorPorts::from_store(shared.as_ref())
        .map_err(store_err("opening the processor ports"))?;
    let handler_pipeline = Arc::clone(&pipeline);
    let processor = EventProcessor::new(processor_config, ports, move |event: ChangeEvent| {
        let p = Arc::clone(&handler_pipeline);
        async move { p.handle(event).await }
    })
    .spawn();

    let stop = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..config.workers {
        tasks.spawn(Arc::clone(&pipeline).worker(w as usize, stop.clone()));
    }
    tasks.spawn(Arc::clone(&pipeline).reaper(stop.clone()));

    let started = Instant::now();
    let mut stored: Vec<String> = Vec::with_capacity(plan.events.len());
    let mut ids: Vec<Option<String>> = vec![None; plan.events.len()];
    let mut duplicates = 0u64;
    let mut cancelled_snapshot: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    let mut cancelled_sessions = 0u64;
    let mut cancelled_events = 0u64;
    let half = plan.events.len() / 2;
    progress.set_message("producing");
    for (i, planned) in plan.events.iter().enumerate() {
        if i == half {
            // Midway, with the pipeline idle, an operator uncordons a node by hand.
            progress.set_message("waiting for the first half");
            wait_idle(&pipeline, &processor, &stored, &stop, progress).await?;
            if let Some(node) = plan.cancel_node {
                let node = node_name(node);
                progress.set_message(format!("operator cancels {node}"));
                let n = pipeline
                    .health
                    .cancel_latest_quarantine(&node)
                    .await
                    .map_err(store_err("cancelling a quarantine session"))?;
                if n > 0 {
                    cancelled_sessions += 1;
                    cancelled_events += n;
                }
                let cancelled = pipeline
                    .health
                    .find(&Query::filter(Filter::eq(NODE, node.as_str()).and(
                        Filter::eq(QUARANTINE, QuarantineStatus::Cancelled.as_str()),
                    )))
                    .await
                    .map_err(store_err("reading cancelled events"))?;
                for record in cancelled {
                    let doc = to_document(&record).map_err(store_err("encoding an event"))?;
                    cancelled_snapshot.insert(record.id, doc);
                }
            }
            progress.set_message("producing");
        }
        let source = planned.resend_of.unwrap_or(i);
        let mut metadata = BTreeMap::new();
        if planned.transient {
            metadata.insert("demo.transient".to_owned(), "1".to_owned());
        }
        let event = HealthEvent {
            version: 1,
            agent: run.clone(),
            component_class: "GPU".into(),
            check_name: planned.check.to_owned(),
            is_fatal: planned.fatal,
            is_healthy: !planned.fatal,
            message: format!("{} on {}", planned.check, node_name(planned.node)),
            recommended_action: if planned.fatal { "RESTART_VM" } else { "NONE" }.into(),
            error_codes: if planned.poison {
                vec!["\u{fffd}\u{fffd}".into()]
            } else {
                vec![format!("{}", 40 + source % 50)]
            },
            metadata,
            node_name: node_name(planned.node),
            idempotency_key: Some(format!("{run}/event-{source}")),
            ..HealthEvent::default()
        };
        match pipeline
            .health
            .create(event)
            .await
            .map_err(store_err("writing a health event"))?
        {
            CreateOutcome::Created(record) => {
                ids[i] = Some(record.id.clone());
                stored.push(record.id);
            }
            CreateOutcome::Duplicate { .. } => duplicates += 1,
        }
        progress.set_position(pipeline.processed_count() + processor.stats().dead_lettered);
    }
    progress.set_message("draining");
    wait_idle(&pipeline, &processor, &stored, &stop, progress).await?;
    let elapsed = started.elapsed();

    stop.cancel();
    while let Some(joined) = tasks.join_next().await {
        joined.map_err(|e| CliError::runtime(format!("a demo task failed: {e}")))??;
    }
    let report = processor
        .stop()
        .await
        .map_err(|e| CliError::runtime(format!("stopping the quarantine processor: {e}")))?;
    progress.set_position(progress.length().unwrap_or(0));

    check(CheckInput {
        store,
        pipeline: &pipeline,
        config,
        backend,
        processor_name: &processor_name,
        stored: &stored,
        duplicates,
        retried: report.stats.retries,
        dead_lettered: report.stats.dead_lettered,
        cancelled_sessions,
        cancelled_events,
        cancelled_snapshot: &cancelled_snapshot,
        elapsed,
    })
    .await
}

/// Waits until the processor has finished every stored event and the workers
/// every queued job.
async fn wait_idle(
    pipeline: &Pipeline,
    processor: &opstore_app::processor::ProcessorHandle,
    stored: &[String],
    stop: &CancellationToken,
    progress: &ProgressBar,
) -> Result<(), CliError> {
    loop {
        let stats = processor.stats();
        let done = pipeline.processed_count() + stats.dead_lettered;
        progress.set_position(done);
        if done >= stored.len() as u64 && !pipeline.jobs_outstanding() {
            return Ok(());
        }
        if processor.is_finished() {
            stop.cancel();
            return Err(CliError::runtime(
                "the quarantine processor stopped unexpectedly",
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

struct CheckInput<'a> {
    store: &'a DataStore,
    pipeline: &'a Pipeline,
    config: &'a DemoConfig,
    backend: String,
    processor_name: &'a str,
    stored: &'a [String],
    duplicates: u64,
    retried: u64,
    dead_lettered: u64,
    cancelled_sessions: u64,
    cancelled_events: u64,
    cancelled_snapshot: &'a BTreeMap<String, serde_json::Value>,
    elapsed: Duration,
}

fn invariant(name: &str, holds: bool, detail: String) -> Invariant {
    Invariant {
        name: name.to_owned(),
        holds,
        detail,
    }
}

async fn check(input: CheckInput<'_>) -> Result<DemoSummary, CliError> {
    let p = input.pipeline;
    let mut invariants = Vec::new();

    // Every stored event was processed or dead-lettered, never both, never neither.
    let letters = input
        .store
        .repository::<DeadLetter>()
        .map_err(store_err("opening dead letters"))?
        .find(&Query::filter(Filter::eq(
            "processor",
            input.processor_name,
        )))
        .await
        .map_err(store_err("reading dead letters"))?;
    let dead: BTreeSet<String> = letters.iter().map(|l| l.key.clone()).collect();
    let processed = p.processed.lock().map(|s| s.clone()).unwrap_or_default();
    let stored: BTreeSet<String> = input.stored.iter().cloned().collect();
    let missing = stored
        .iter()
        .filter(|id| !processed.contains(*id) && !dead.contains(*id))
        .count();
    let both = processed.intersection(&dead).count();
    invariants.push(invariant(
        "every event processed or dead-lettered",
        missing == 0 && both == 0,
        format!(
            "{} stored, {} processed, {} dead-lettered, {missing} missing, {both} both",
            stored.len(),
            processed.len(),
            dead.len()
        ),
    ));
    let poison_only =
        letters.len() == 1 && letters.iter().all(|l| l.error.contains("do not parse"));
    invariants.push(invariant(
        "the poison event, and only it, was dead-lettered",
        poison_only,
        format!("{} dead letters", letters.len()),
    ));

    // Every drain job ran exactly once and finished.
    let created = p.jobs_created.lock().map(|j| j.clone()).unwrap_or_default();
    let executions = p.executions.lock().map(|e| e.clone()).unwrap_or_default();
    let twice = executions.values().filter(|&&n| n > 1).count();
    let never = created
        .iter()
        .filter(|id| !executions.contains_key(*id))
        .count();
    let mut unfinished = 0;
    for id in &created {
        let job = p
            .control
            .get_job(id)
            .await
            .map_err(store_err("reading a drain job"))?;
        if job.is_none_or(|j| j.status != JobStatus::Succeeded) {
            unfinished += 1;
        }
    }
    invariants.push(invariant(
        "no job run twice",
        twice == 0 && never == 0 && unfinished == 0,
        format!(
            "{} jobs, {twice} run twice, {never} never run, {unfinished} not SUCCEEDED",
            created.len()
        ),
    ));

    // The crashed worker's lease was taken over and its holder fenced out.
    let crashed = p.crashed.lock().map(|c| c.len() as u64).unwrap_or(0);
    let takeovers = p.takeovers.load(Ordering::Relaxed);
    let fenced = p.fenced.load(Ordering::Relaxed);
    invariants.push(invariant(
        "crashed workers' leases taken over and their holders fenced",
        takeovers == crashed && fenced == crashed,
        format!("{crashed} crashed, {takeovers} taken over, {fenced} fenced"),
    ));

    // Cancelled sessions are exactly as the operator left them.
    let mut changed = 0;
    for (id, before) in input.cancelled_snapshot {
        let now = p
            .health
            .get(id)
            .await
            .map_err(store_err("reading a cancelled event"))?
            .map(|r| to_document(&r))
            .transpose()
            .map_err(store_err("encoding an event"))?;
        if now.as_ref() != Some(before) {
            changed += 1;
        }
    }
    invariants.push(invariant(
        "cancelled sessions untouched afterwards",
        changed == 0,
        format!(
            "{} cancelled events, {changed} changed after cancellation",
            input.cancelled_snapshot.len()
        ),
    ));

    // Error records are deduplicated by fingerprint; counts add up.
    let fingerprints = p.fingerprints.lock().map(|f| f.clone()).unwrap_or_default();
    let mut total = 0i64;
    let mut records = 0u64;
    for fp in &fingerprints {
        if let Some(record) = p
            .errors
            .get_by_fingerprint(fp)
            .await
            .map_err(store_err("reading an error record"))?
        {
            records += 1;
            total += record.count;
        }
    }
    let occurrences = p.error_occurrences.load(Ordering::Relaxed);
    invariants.push(invariant(
        "error records deduplicated by fingerprint",
        records == fingerprints.len() as u64 && u64::try_from(total).ok() == Some(occurrences),
        format!("{occurrences} occurrences in {records} records (counts sum to {total})"),
    ));

    let mut latencies = p.latencies.lock().map(|l| l.clone()).unwrap_or_default();
    latencies.sort();
    let pct = |q: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let idx = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1;
        (latencies[idx].as_secs_f64() * 1e6).round() / 1e3
    };
    let secs = input.elapsed.as_secs_f64();
    let round = |x: f64, d: i32| {
        let f = 10f64.powi(d);
        (x * f).round() / f
    };
    Ok(DemoSummary {
        backend: input.backend,
        seed: input.config.seed,
        nodes: input.config.nodes,
        workers: input.config.workers,
        events_sent: u64::from(input.config.events),
        duplicates_skipped: input.duplicates,
        events: stored.len() as u64,
        processed: processed.len() as u64,
        retried: input.retried,
        dead_lettered: input.dead_lettered,
        quarantine_sessions: p.sessions.load(Ordering::Relaxed),
        jobs_done: p.jobs_done.load(Ordering::Relaxed),
        jobs_recovered: p.recovered.load(Ordering::Relaxed),
        lease_takeovers: takeovers,
        stale_holders_fenced: fenced,
        cancelled_sessions: input.cancelled_sessions,
        cancelled_events: input.cancelled_events,
        events_left_to_operator: p.left_to_operator.load(Ordering::Relaxed),
        error_occurrences: occurrences,
        error_records: records,
        remediation_logs: p.remediation_logs.load(Ordering::Relaxed),
        handler_p50_ms: pct(0.50),
        handler_p99_ms: pct(0.99),
        elapsed_s: round(secs, 3),
        throughput_events_per_s: if secs > 0.0 {
            round(stored.len() as f64 / secs, 1)
        } else {
            0.0
        },
        invariants,
    })
}

/// Prints the summary table, or the summary as JSON.
pub fn print(
    summary: &DemoSummary,
    format: OutputFormat,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    if format == OutputFormat::Json {
        return write_json(out, summary);
    }
    let s = summary;
    writeln!(
        out,
        "opstore demo on {}: {} nodes, {} workers, seed {}\n",
        s.backend, s.nodes, s.workers, s.seed
    )?;
    let mut table = Table::new(["", "value"]);
    let mut row = |k: &str, v: String| table.row([k.to_owned(), v]);
    row(
        "events",
        format!(
            "{} ({} sent, {} duplicates skipped)",
            s.events, s.events_sent, s.duplicates_skipped
        ),
    );
    row("processed", s.processed.to_string());
    row("retried", s.retried.to_string());
    row("dead-lettered", s.dead_lettered.to_string());
    row("quarantine sessions", s.quarantine_sessions.to_string());
    row(
        "jobs done",
        format!(
            "{} ({} recovered after a crash)",
            s.jobs_done, s.jobs_recovered
        ),
    );
    row(
        "lease takeovers",
        format!(
            "{} ({} stale holders fenced)",
            s.lease_takeovers, s.stale_holders_fenced
        ),
    );
    row(
        "cancelled sessions",
        format!(
            "{} ({} events; {} later events left to the operator)",
            s.cancelled_sessions, s.cancelled_events, s.events_left_to_operator
        ),
    );
    row(
        "error records",
        format!(
            "{} from {} occurrences",
            s.error_records, s.error_occurrences
        ),
    );
    row("remediation logs", s.remediation_logs.to_string());
    row("handler latency p50", format!("{:.3} ms", s.handler_p50_ms));
    row("handler latency p99", format!("{:.3} ms", s.handler_p99_ms));
    row("elapsed", format!("{:.2} s", s.elapsed_s));
    row(
        "throughput",
        format!("{:.0} events/s", s.throughput_events_per_s),
    );
    table.write(out)?;
    writeln!(out)?;
    for i in &s.invariants {
        writeln!(
            out,
            "{}  {} ({})",
            if i.holds { "ok  " } else { "FAIL" },
            i.name,
            i.detail
        )?;
    }
    Ok(())
}
