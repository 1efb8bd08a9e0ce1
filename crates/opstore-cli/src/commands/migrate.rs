//! `opstore migrate`: creates or updates the storage of every domain entity.

use std::io::Write;

use opstore_app::DataStore;
use opstore_domain::MigrationReport;

use crate::error::CliError;
use crate::output::{OutputFormat, Table, write_json};

/// Applies the schema of every domain entity. Idempotent: a second run reports
/// every step as unchanged.
pub async fn migrate(store: &DataStore) -> Result<MigrationReport, CliError> {
    store
        .migrate()
        .await
        .map_err(|e| CliError::store("migrating", e))
}

/// Prints what the migration did.
pub fn print(
    report: &MigrationReport,
    format: OutputFormat,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    match format {
        OutputFormat::Json => write_json(out, report),
        OutputFormat::Table => {
            let mut table = Table::new(["status", "step"]);
            for step in &report.applied {
                table.row(["applied", step.as_str()]);
            }
            for step in &report.unchanged {
                table.row(["unchanged", step.as_str()]);
            }
            if !table.is_empty() {
                table.write(out)?;
            }
            if report.applied.is_empty() {
                writeln!(
                    out,
                    "schema is up to date: nothing applied, {} steps unchanged",
                    report.unchanged.len()
                )?;
            } else {
                writeln!(
                    out,
                    "{} steps applied, {} unchanged",
                    report.applied.len(),
                    report.unchanged.len()
                )?;
            }
            Ok(())
        }
    }
}
