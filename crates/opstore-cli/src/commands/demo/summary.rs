//! What a run reports: the summary, its invariants, and how they are printed.

use std::io::Write;

use serde::Serialize;

use crate::error::CliError;
use crate::output::{OutputFormat, Table, write_json};

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

impl Invariant {
    pub(super) fn new(name: &str, holds: bool, detail: String) -> Self {
        Invariant {
            name: name.to_owned(),
            holds,
            detail,
        }
    }
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

    /// The names of the invariants that did not hold.
    pub fn failed(&self) -> Vec<&str> {
        self.invariants
            .iter()
            .filter(|i| !i.holds)
            .map(|i| i.name.as_str())
            .collect()
    }
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
