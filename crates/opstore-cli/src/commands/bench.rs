//! `opstore bench`: the backend's benchmark scenarios against its raw driver, in
//! one run, printed as a ratio table.

use std::io::Write;

use opstore_app::StoreConfig;

use crate::cli::BenchArgs;
use crate::error::CliError;
use crate::output::OutputFormat;

/// Runs the scenarios of the backend `config` selects and prints every figure:
/// a table, or a JSON array of figures with `--output json`.
#[cfg(feature = "bench")]
pub async fn run(
    config: &StoreConfig,
    args: &BenchArgs,
    format: OutputFormat,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    use opstore_app::wiring::{self, Scale};

    use crate::cli::BenchScale;
    use crate::output::{Table, write_json};

    let scale = match args.scale {
        Some(BenchScale::Full) => Scale::Full,
        Some(BenchScale::Quick) => Scale::Quick,
        Some(BenchScale::Smoke) => Scale::Smoke,
        None => Scale::from_env(),
    };
    let figures = wiring::bench(config, scale)
        .await
        .map_err(|e| CliError::runtime(format!("bench on {}: {e}", config.url.redacted())))?;
    if format == OutputFormat::Json {
        return write_json(out, &figures);
    }
    let mut table = Table::new(["scenario", "opstore", "baseline", "ratio", "goal", "met"]);
    for f in &figures {
        let better = match f.better {
            wiring::Better::Lower => "lower",
            wiring::Better::Higher => "higher",
        };
        table.row([
            f.scenario.clone(),
            format!("{:.3} {}", f.value, f.unit),
            format!("{}: {:.3}", f.baseline, f.baseline_value),
            format!("{:.3} ({better} is better)", f.ratio),
            f.goal
                .as_ref()
                .map_or_else(|| "(reference)".to_owned(), |g| g.text.clone()),
            match (&f.goal, f.met) {
                (None, _) => "-".to_owned(),
                (Some(_), true) => "yes".to_owned(),
                (Some(_), false) => "no".to_owned(),
            },
        ]);
    }
    table.write(out)
}

/// Without the `bench` feature the scenarios are not compiled in.
#[cfg(not(feature = "bench"))]
pub async fn run(
    _config: &StoreConfig,
    _args: &BenchArgs,
    _format: OutputFormat,
    _out: &mut dyn Write,
) -> Result<(), CliError> {
    Err(CliError::usage(
        "the benchmark scenarios are not compiled in: enable the `bench` feature of opstore-cli",
    ))
}
