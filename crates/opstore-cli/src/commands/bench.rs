//! `opstore bench`: the benchmark scenarios run through the workspace's task runner.

use std::io::Write;

use crate::error::CliError;

/// Points at `cargo xtask bench`, which starts the servers, runs every scenario
/// against its baseline and writes docs/performance.md.
pub fn run(out: &mut dyn Write) -> Result<(), CliError> {
    writeln!(
        out,
        "The benchmark scenarios run from a checkout of the workspace:\n\n    cargo xtask bench\n\n\
         It starts the servers it can, runs every scenario against its baseline in the same run,\n\
         and writes the ratio table to docs/performance.md."
    )?;
    Ok(())
}
