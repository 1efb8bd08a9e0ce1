//! `opstore health`: connectivity and capability report.

use std::io::Write;

use opstore_app::{StoreConfig, wiring};
use opstore_domain::Capabilities;
use serde::Serialize;

use crate::error::CliError;
use crate::output::{OutputFormat, Table, write_json};

/// What `opstore health` found.
#[derive(Debug, Clone, Serialize)]
pub struct HealthOutput {
    /// Backend name.
    pub backend: &'static str,
    /// The URL with any password redacted.
    pub url: String,
    /// Server version or description.
    pub server: String,
    /// Round trip of the probe, in milliseconds.
    pub latency_ms: f64,
    /// What the backend supports natively.
    pub capabilities: Capabilities,
}

/// Connects, probes the server and reads its capabilities.
pub async fn health(config: &StoreConfig) -> Result<HealthOutput, CliError> {
    let store = wiring::connect(config)
        .await
        .map_err(|e| crate::connect_error(config, e))?;
    let report = store
        .health()
        .await
        .map_err(|e| crate::connect_error(config, e))?;
    let capabilities = store.capabilities();
    store.close().await;
    Ok(HealthOutput {
        backend: report.backend,
        url: config.url.redacted(),
        server: report.server,
        latency_ms: report.latency.as_secs_f64() * 1_000.0,
        capabilities,
    })
}

/// Prints the report.
pub fn print(
    report: &HealthOutput,
    format: OutputFormat,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    if format == OutputFormat::Json {
        return write_json(out, report);
    }
    let caps = &report.capabilities;
    let yes = |b: bool| if b { "yes" } else { "no" }.to_owned();
    let mut table = Table::new(["check", "result"]);
    table.row(["status".to_owned(), "ok".to_owned()]);
    table.row(["backend".to_owned(), report.backend.to_owned()]);
    table.row(["url".to_owned(), report.url.clone()]);
    table.row(["server".to_owned(), report.server.clone()]);
    table.row(["latency".to_owned(), format!("{:.2} ms", report.latency_ms)]);
    table.row(["transactions".to_owned(), yes(caps.transactions)]);
    table.row(["row locks".to_owned(), yes(caps.row_locks)]);
    table.row([
        "change feed".to_owned(),
        if caps.change_feed {
            format!("yes (ordered per {})", caps.change_feed_order)
        } else {
            "no".to_owned()
        },
    ]);
    table.row(["sort on any field".to_owned(), yes(caps.sort_any_field)]);
    table.row(["filter on any field".to_owned(), yes(caps.filter_any_field)]);
    table.row(["server-side aggregates".to_owned(), yes(caps.aggregates)]);
    table.row(["atomic claim".to_owned(), yes(caps.claim)]);
    for note in &caps.notes {
        table.row(["note".to_owned(), note.clone()]);
    }
    table.write(out)
}
