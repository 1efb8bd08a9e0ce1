//! `cargo xtask soak`: the property and fault-injection suites with many more cases
//! than the bounded `test` run, against the same throwaway servers.
//!
//! Steps: the differential suite (memory against PostgreSQL and MongoDB), the
//! statement-structure suites of the three SQL/CQL/BSON translators, and every
//! `fault_*` suite of the end-to-end package, repeated `--rounds` times with a
//! different `OPSTORE_FAULT_SEED` each round (their cycle counts are fixed, so
//! more rounds means more faults at new random points).

use std::time::Instant;

use crate::run::Counts;
use crate::servers::{self, RunDir, Server};
use crate::suites::cargo_test;
use crate::workspace::Workspace;

/// Property cases per suite and backend unless `--cases` says otherwise.
const DEFAULT_CASES: u32 = 2000;
/// Rounds of the fault-injection suites unless `--rounds` says otherwise.
const DEFAULT_ROUNDS: u32 = 2;
/// The end-to-end package, run with every backend compiled in like `test` does.
const E2E: &str = "opstore-e2e";

struct Options {
    cases: u32,
    rounds: u32,
}

fn parse_options(args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        cases: DEFAULT_CASES,
        rounds: DEFAULT_ROUNDS,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let slot = match arg.as_str() {
            "--cases" => &mut options.cases,
            "--rounds" => &mut options.rounds,
            other => return Err(format!("unknown option `{other}` for `soak`")),
        };
        *slot = args
            .next()
            .and_then(|n| n.parse().ok())
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("`{arg}` needs a positive number"))?;
    }
    Ok(options)
}

/// One step's outcome, for the summary.
struct Step {
    name: String,
    counts: Counts,
    seconds: u64,
}

pub fn main(args: &[String]) -> Result<bool, String> {
    let options = parse_options(args)?;
    let ws = Workspace::load()?;
    let run_dir = RunDir::create(&ws)?;
    let mut steps = Vec::new();
    let mut env = vec![("OPSTORE_SOAK_CASES".to_owned(), options.cases.to_string())];
    // A soak run is asked for explicitly: a server that cannot start is a failure.
    let mut servers: Vec<Server> = Vec::new();
    let started = [
        ("postgres", servers::postgres(&run_dir)),
        ("mongo", servers::mongo(&ws, &run_dir)),
    ];
    for (name, server) in started {
        match server {
            Ok(server) => {
                env.extend(server.env.iter().cloned());
                servers.push(server);
            }
            Err(reason) => {
                println!("soak: the {name} server did not start: {reason}");
                steps.push(Step {
                    name: format!("{name} server"),
                    counts: Counts {
                        failed: 1,
                        ..Counts::default()
                    },
                    seconds: 0,
                });
            }
        }
    }

    let mut step = |name: String, package: &str, args: &[&str], env: &[(String, String)]| {
        let start = Instant::now();
        let counts = cargo_test(&[package], args, env);
        steps.push(Step {
            name,
            counts,
            seconds: start.elapsed().as_secs(),
        });
    };
    let nocapture = ["--", "--nocapture"];
    if ws.has_package(E2E) {
        let mut args = vec!["--all-features", "--test", "differential"];
        args.extend(nocapture);
        step("differential".into(), E2E, &args, &env);
    }
    let structure: [(&str, &[&str]); 3] = [
        ("opstore-postgres", &["--lib", "statement_structure"]),
        ("opstore-mongo", &["--test", "statement_structure"]),
        ("opstore-scylla", &["--test", "statement_structure"]),
    ];
    for (package, target) in structure {
        if !ws.has_package(package) {
            continue;
        }
        let mut args = target.to_vec();
        args.extend(nocapture);
        step(
            format!("statement structure ({package})"),
            package,
            &args,
            &env,
        );
    }
    let faults: Vec<&str> = ws
        .package(E2E)
        .map(|p| p.targets_of_kind("test"))
        .unwrap_or_default()
        .into_iter()
        .filter(|t| t.starts_with("fault_"))
        .collect();
    if !faults.is_empty() {
        for round in 1..=options.rounds {
            let mut args = vec!["--all-features"];
            for target in &faults {
                args.extend(["--test", target]);
            }
            args.extend(nocapture);
            let seed = 0x50a6_0000_u64 + u64::from(round);
            let mut round_env = env.clone();
            round_env.push(("OPSTORE_FAULT_SEED".to_owned(), seed.to_string()));
            step(
                format!("fault injection round {round} (seed {seed})"),
                E2E,
                &args,
                &round_env,
            );
        }
    }

    // Stop the servers before the summary, so that it is the last thing printed.
    drop(servers);
    drop(run_dir);
    let mut total = Counts::default();
    println!(
        "\nsoak summary: OPSTORE_SOAK_CASES={}, {} fault round(s)",
        options.cases, options.rounds
    );
    for s in &steps {
        println!(
            "soak {}: {} passed, {} failed ({} s)",
            s.name, s.counts.passed, s.counts.failed, s.seconds
        );
        total += s.counts;
    }
    println!("{} passed, {} failed", total.passed, total.failed);
    Ok(total.failed == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn options_default_and_override() {
        let o = parse_options(&[]).unwrap();
        assert_eq!((o.cases, o.rounds), (DEFAULT_CASES, DEFAULT_ROUNDS));
        let o = parse_options(&args(&["--cases", "50", "--rounds", "1"])).unwrap();
        assert_eq!((o.cases, o.rounds), (50, 1));
    }

    #[test]
    fn bad_options_are_refused() {
        for bad in [
            &["--cases"][..],
            &["--cases", "0"],
            &["--cases", "x"],
            &["--fast"],
        ] {
            assert!(parse_options(&args(bad)).is_err(), "{bad:?}");
        }
    }
}
