//! Project automation for opstore, run through the `cargo xtask` alias.
//!
//! - `cargo xtask test [--backend NAME]... [--no-lint]`: lints, the codegen staleness
//!   check, and every test suite, starting the database servers the suites need.
//! - `cargo xtask codegen [--check]`: writes (or checks) the generated schema files.
//! - `cargo xtask bench [--quick] [memory|sqlite|postgres|mongo|scylla|processors|jobs|all]`: runs
//!   benchmarks and, for a run of every group, writes docs/performance.md.
//! - `cargo xtask soak [--cases N] [--rounds N]`: the property and fault suites with
//!   many more cases.
//!
//! Only the standard library and serde_json, so the task builds in seconds.

mod bench;
mod codegen;
mod run;
mod servers;
mod soak;
mod suites;
mod workspace;

use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <command> [options]

commands:
  test [--backend NAME]... [--no-lint]
        fmt + clippy + codegen check, then the test suites; ends with one
        `backend <name>: N passed, N failed, N skipped` line per backend and a
        final `N passed, N failed` line. NAME: unit, memory, sqlite, postgres, mongo,
        scylla (unit tests and server suite), scylla-unit, app.
  codegen [--check]
        write the generated schema files; --check fails if any is stale.
  bench [--quick] [memory|sqlite|postgres|mongo|scylla|processors|jobs|all]...
        run the benchmarks (default: all), starting the servers they need;
        a run of every group writes docs/performance.md.
  soak [--cases N] [--rounds N]
        start the test servers, then run the differential and statement-structure
        suites with OPSTORE_SOAK_CASES=N (default 2000) and every fault_* suite
        N rounds (default 2) with a new OPSTORE_FAULT_SEED each; ends with a
        summary line per step and a final `N passed, N failed` line.
  with-servers [--postgres] [--mongo] [--cassandra] -- COMMAND...
        start the test servers (default: PostgreSQL and MongoDB), run COMMAND
        with their OPSTORE_* variables set, then stop them; for running single
        tests.

environment:
  OPSTORE_POSTGRES_URL, OPSTORE_MONGODB_URL  use these servers instead of starting one
  OPSTORE_SCYLLA_URL                         run the CQL suite against this cluster
                                             instead of a Cassandra node xtask starts
  CI=true                                    a server that cannot start is a failure";

/// `with-servers`: runs one command with the test servers' environment.
fn with_servers(args: &[String]) -> Result<bool, String> {
    let split = args
        .iter()
        .position(|a| a == "--")
        .ok_or("with-servers needs `-- COMMAND...`")?;
    let (options, command) = (&args[..split], &args[split + 1..]);
    let program = command
        .first()
        .ok_or("with-servers needs a command after `--`")?;
    let mut postgres = options.iter().any(|o| o == "--postgres");
    let mut mongo = options.iter().any(|o| o == "--mongo");
    let cassandra = options.iter().any(|o| o == "--cassandra");
    if let Some(other) = options
        .iter()
        .find(|o| !["--postgres", "--mongo", "--cassandra"].contains(&o.as_str()))
    {
        return Err(format!("unknown option `{other}` for `with-servers`"));
    }
    if !postgres && !mongo && !cassandra {
        (postgres, mongo) = (true, true);
    }
    let ws = workspace::Workspace::load()?;
    let run_dir = servers::RunDir::create(&ws)?;
    let pg = postgres.then(|| servers::postgres(&run_dir)).transpose()?;
    let mongo = mongo.then(|| servers::mongo(&ws, &run_dir)).transpose()?;
    let cql = cassandra
        .then(|| servers::cassandra(&ws, &run_dir))
        .transpose()?;
    let mut child = std::process::Command::new(program);
    child.args(&command[1..]);
    for server in pg.iter().chain(mongo.iter()).chain(cql.iter()) {
        child.envs(server.env.iter().map(|(k, v)| (k, v)));
    }
    let status = child
        .status()
        .map_err(|e| format!("running `{program}`: {e}"))?;
    Ok(status.success())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rest = args.get(1..).unwrap_or_default();
    let outcome = match args.first().map(String::as_str) {
        Some("test") => suites::main(rest),
        Some("codegen") => codegen::main(rest),
        Some("bench") => bench::main(rest),
        Some("soak") => soak::main(rest),
        Some("with-servers") => with_servers(rest),
        Some("help" | "-h" | "--help") | None => {
            println!("{USAGE}");
            Ok(true)
        }
        Some(other) => Err(format!("unknown command `{other}`")),
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(message) => {
            eprintln!("xtask: {message}\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}
