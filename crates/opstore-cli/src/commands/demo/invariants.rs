//! The invariants a run checks against the store once it is idle, and the
//! summary built from them.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use opstore_app::DataStore;
use opstore_domain::entities::control_plane::JobStatus;
use opstore_domain::entities::dead_letter::DeadLetter;
use opstore_domain::{Filter, Query, Repository, to_document};

use super::config::DemoConfig;
use super::operator::OperatorReport;
use super::state::{Pipeline, lock, store_err};
use super::summary::{DemoSummary, Invariant};
use crate::error::CliError;

pub(super) struct CheckInput<'a> {
    pub store: &'a DataStore,
    pub pipeline: &'a Pipeline,
    pub config: &'a DemoConfig,
    pub backend: String,
    pub processor_name: &'a str,
    pub stored: &'a [String],
    pub duplicates: u64,
    pub retried: u64,
    pub dead_lettered: u64,
    pub operator: &'a OperatorReport,
    pub elapsed: Duration,
}

pub(super) async fn check(input: CheckInput<'_>) -> Result<DemoSummary, CliError> {
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
    let processed = lock(&p.processed).clone();
    let stored: BTreeSet<String> = input.stored.iter().cloned().collect();
    let missing = stored
        .iter()
        .filter(|id| !processed.contains(*id) && !dead.contains(*id))
        .count();
    let both = processed.intersection(&dead).count();
    invariants.push(Invariant::new(
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
    invariants.push(Invariant::new(
        "the poison event, and only it, was dead-lettered",
        poison_only,
        format!("{} dead letters", letters.len()),
    ));

    // Every drain job ran exactly once and finished.
    let created = lock(&p.jobs_created).clone();
    let executions = lock(&p.executions).clone();
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
    invariants.push(Invariant::new(
        "no job run twice",
        twice == 0 && never == 0 && unfinished == 0,
        format!(
            "{} jobs, {twice} run twice, {never} never run, {unfinished} not SUCCEEDED",
            created.len()
        ),
    ));

    // The crashed worker's lease was taken over and its holder fenced out.
    let crashed = lock(&p.crashed).len() as u64;
    let takeovers = p.takeovers.load(Ordering::Relaxed);
    let fenced = p.fenced.load(Ordering::Relaxed);
    invariants.push(Invariant::new(
        "crashed workers' leases taken over and their holders fenced",
        takeovers == crashed && fenced == crashed,
        format!("{crashed} crashed, {takeovers} taken over, {fenced} fenced"),
    ));

    // Cancelled sessions are exactly as the operator left them.
    let mut changed = 0;
    for (id, before) in &input.operator.snapshot {
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
    invariants.push(Invariant::new(
        "cancelled sessions untouched afterwards",
        changed == 0,
        format!(
            "{} cancelled events, {changed} changed after cancellation",
            input.operator.snapshot.len()
        ),
    ));

    // Error records are deduplicated by fingerprint; counts add up.
    let fingerprints = lock(&p.fingerprints).clone();
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
    invariants.push(Invariant::new(
        "error records deduplicated by fingerprint",
        records == fingerprints.len() as u64 && u64::try_from(total).ok() == Some(occurrences),
        format!("{occurrences} occurrences in {records} records (counts sum to {total})"),
    ));

    let mut latencies = lock(&p.latencies).clone();
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
        jobs_recovered: lock(&p.recovered).len() as u64,
        lease_takeovers: takeovers,
        stale_holders_fenced: fenced,
        cancelled_sessions: input.operator.cancelled_sessions,
        cancelled_events: input.operator.cancelled_events,
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
