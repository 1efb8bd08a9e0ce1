//! `opstore locks list|release`: leases held by workers and processors.

use std::io::Write;

use opstore_app::DataStore;
use opstore_domain::Lease;
use serde::Serialize;

use crate::cli::LocksCommand;
use crate::error::CliError;
use crate::output::{OutputFormat, Table, write_json};

/// Every live lease, by name.
pub async fn list(store: &DataStore) -> Result<Vec<Lease>, CliError> {
    let mut leases = store
        .locks()
        .list()
        .await
        .map_err(|e| CliError::store("listing leases", e))?;
    leases.sort_by(|a, b| a.name().cmp(b.name()));
    Ok(leases)
}

/// The outcome of `locks release`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Released {
    /// Lease name.
    pub name: String,
    /// Whether a live lease was dropped.
    pub released: bool,
}

/// Drops the lease on `name` whoever holds it.
pub async fn release(store: &DataStore, name: &str) -> Result<Released, CliError> {
    let released = store
        .locks()
        .force_release(name)
        .await
        .map_err(|e| CliError::store(&format!("releasing lease `{name}`"), e))?;
    Ok(Released {
        name: name.to_owned(),
        released,
    })
}

/// Runs a `locks` subcommand and prints its result.
pub async fn run(
    store: &DataStore,
    command: &LocksCommand,
    format: OutputFormat,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    match command {
        LocksCommand::List => {
            let leases = list(store).await?;
            if format == OutputFormat::Json {
                return write_json(out, &leases);
            }
            if leases.is_empty() {
                writeln!(out, "no live leases")?;
                return Ok(());
            }
            let mut table = Table::new(["name", "owner", "fencing token", "expires at"]);
            for lease in &leases {
                table.row([
                    lease.name().to_owned(),
                    lease.owner().to_owned(),
                    lease.token().to_string(),
                    lease.expires_at().to_string(),
                ]);
            }
            table.write(out)
        }
        LocksCommand::Release { name } => {
            let released = release(store, name).await?;
            match format {
                OutputFormat::Json => write_json(out, &released),
                OutputFormat::Table if released.released => {
                    writeln!(out, "released lease `{name}`")?;
                    Ok(())
                }
                OutputFormat::Table => {
                    writeln!(out, "no live lease `{name}`: nothing to release")?;
                    Ok(())
                }
            }
        }
    }
}
