//! `cargo xtask test`: lints, the codegen check, and every suite with the servers it needs.

use std::process::Command;

use crate::run::{Counts, OutputParser, read_skip_records, stream};
use crate::servers::{self, RunDir, Server};
use crate::workspace::{Workspace, cargo, is_ci};

/// Packages whose tests belong to a backend line rather than to `unit`.
const BACKEND_PACKAGES: [&str; 9] = [
    "opstore",
    "opstore-memory",
    "opstore-sqlite",
    "opstore-postgres",
    "opstore-mongo",
    "opstore-scylla",
    "opstore-app",
    "opstore-e2e",
    "opstore-cli",
];

/// Packages that run against every server the run starts.
const APP_PACKAGES: [&str; 4] = ["opstore", "opstore-app", "opstore-e2e", "opstore-cli"];

/// The suites, in the order they run and are reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Unit,
    Memory,
    Sqlite,
    Postgres,
    Mongo,
    ScyllaUnit,
    Scylla,
    App,
}

const ALL: [Backend; 8] = [
    Backend::Unit,
    Backend::Memory,
    Backend::Sqlite,
    Backend::Postgres,
    Backend::Mongo,
    Backend::ScyllaUnit,
    Backend::Scylla,
    Backend::App,
];

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Unit => "unit",
            Backend::Memory => "memory",
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
            Backend::Mongo => "mongo",
            Backend::ScyllaUnit => "scylla-unit",
            Backend::Scylla => "scylla",
            Backend::App => "app",
        }
    }
}

#[derive(Debug)]
struct Options {
    backends: Vec<Backend>,
    lint: bool,
}

fn parse_options(args: &[String]) -> Result<Options, String> {
    let mut backends = Vec::new();
    let mut lint = true;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let name = match arg.as_str() {
            "--no-lint" => {
                lint = false;
                continue;
            }
            "--backend" => args.next().ok_or("--backend needs a name")?.as_str(),
            other => match other.strip_prefix("--backend=") {
                Some(name) => name,
                None => return Err(format!("unknown option `{other}` for `test`")),
            },
        };
        match name {
            "all" => backends.extend(ALL),
            // The Scylla server suite and its server-free unit tests go together.
            "scylla" => backends.extend([Backend::ScyllaUnit, Backend::Scylla]),
            _ => backends.push(
                ALL.into_iter()
                    .find(|b| b.name() == name)
                    .ok_or_else(|| format!("unknown backend `{name}`"))?,
            ),
        }
    }
    if backends.is_empty() {
        backends.extend(ALL);
    }
    Ok(Options { backends, lint })
}

/// What the summary reports besides the backend lines.
#[derive(Debug, Default)]
struct Report {
    backends: Vec<(Backend, Counts)>,
    check_failures: Vec<String>,
    skips: Vec<String>,
}

impl Report {
    fn fail_check(&mut self, message: String) {
        println!("FAIL {message}");
        self.check_failures.push(message);
    }

    fn skip(&mut self, backend: &str, reason: &str) {
        let first_line = reason.lines().next().unwrap_or_default();
        let line = format!("SKIP {backend}: {first_line}");
        if reason.lines().nth(1).is_some() {
            println!("{reason}");
        }
        println!("{line}");
        self.skips.push(line);
    }

    fn total(&self) -> Counts {
        let mut total = Counts {
            failed: self.check_failures.len() as u64,
            ..Counts::default()
        };
        for (_, counts) in &self.backends {
            total += *counts;
        }
        total
    }

    fn print(&self) {
        println!("\n== summary");
        for failure in &self.check_failures {
            println!("FAIL {failure}");
        }
        for skip in &self.skips {
            println!("{skip}");
        }
        for (backend, c) in &self.backends {
            println!(
                "backend {}: {} passed, {} failed, {} skipped",
                backend.name(),
                c.passed,
                c.failed,
                c.skipped
            );
        }
        let total = self.total();
        println!("{} passed, {} failed", total.passed, total.failed);
    }
}

/// A server slot, started on first need and shared by the suites after it.
#[derive(Debug, Default)]
struct Slot {
    server: Option<Result<Server, String>>,
    /// Whether a start failure was already counted as a failure (under CI).
    failure_counted: bool,
}

pub fn main(args: &[String]) -> Result<bool, String> {
    let options = parse_options(args)?;
    let ws = Workspace::load()?;
    let ci = is_ci();
    let mut report = Report::default();

    if options.lint {
        lint(&mut report);
    }

    // Declared before the servers so that it is removed after they stop.
    let run_dir = RunDir::create(&ws)?;
    let mut pg = Slot::default();
    let mut mongo = Slot::default();

    for backend in ALL {
        if !options.backends.contains(&backend) {
            continue;
        }
        let counts = match backend {
            Backend::Unit => {
                let packages: Vec<&str> = ws
                    .packages
                    .iter()
                    .map(|p| p.name.as_str())
                    .filter(|name| !BACKEND_PACKAGES.contains(name))
                    .collect();
                cargo_test(&packages, &[], &[])
            }
            Backend::Memory => cargo_test(&existing(&ws, &["opstore-memory"]), &[], &[]),
            // Embedded: the suite runs on database files of its own, no server.
            Backend::Sqlite => cargo_test(&existing(&ws, &["opstore-sqlite"]), &[], &[]),
            Backend::Postgres => server_suite(
                &ws,
                "postgres",
                "opstore-postgres",
                &mut pg,
                || servers::postgres(&run_dir),
                ci,
                &mut report,
            ),
            Backend::Mongo => server_suite(
                &ws,
                "mongo",
                "opstore-mongo",
                &mut mongo,
                || servers::mongo(&ws, &run_dir),
                ci,
                &mut report,
            ),
            Backend::ScyllaUnit => scylla_unit(&ws),
            Backend::Scylla => scylla_server_suite(&ws, &run_dir, ci, &mut report),
            Backend::App => app_suite(&ws, &mut pg, &mut mongo, &run_dir, ci),
        };
        report.backends.push((backend, counts));
    }

    // Stop the servers and remove their directories before the summary, so that it
    // is the last thing printed.
    drop(pg);
    drop(mongo);
    drop(run_dir);
    report.print();
    Ok(report.total().failed == 0)
}

/// fmt, clippy and the codegen staleness check; each failure counts as one failed.
fn lint(report: &mut Report) {
    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--", "--check"]);
    if !run_ok(fmt) {
        report.fail_check(
            "fmt: `cargo fmt --all -- --check` found unformatted code; run `cargo fmt --all`"
                .into(),
        );
    }
    let mut clippy = cargo();
    clippy.args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);
    if !run_ok(clippy) {
        report.fail_check(
            "clippy: `cargo clippy --workspace --all-targets -- -D warnings` failed".into(),
        );
    }
    // The adapter generators are compiled into xtask only with this feature; lint that
    // code too (only xtask: the workspace run above already linted its dependencies).
    let mut clippy_codegen = cargo();
    clippy_codegen.args([
        "clippy",
        "-p",
        "xtask",
        "--all-targets",
        "--features",
        "adapters",
        "--no-deps",
        "--",
        "-D",
        "warnings",
    ]);
    if !run_ok(clippy_codegen) {
        report.fail_check(
            "clippy: `cargo clippy -p xtask --features adapters --no-deps` failed".into(),
        );
    }
    if !run_ok(crate::codegen::check_command()) {
        report.fail_check(
            "codegen: generated files are stale or could not be generated; run `cargo xtask codegen`"
                .into(),
        );
    }
}

fn run_ok(command: Command) -> bool {
    let mut parser = OutputParser::default();
    match stream(command, &mut parser) {
        Ok(status) => status.success(),
        Err(e) => {
            println!("{e}");
            false
        }
    }
}

/// The names in `names` that are workspace packages.
fn existing<'a>(ws: &Workspace, names: &[&'a str]) -> Vec<&'a str> {
    names
        .iter()
        .copied()
        .filter(|name| ws.has_package(name))
        .collect()
}

/// `cargo test --no-fail-fast -p <each package> <args>` with `env`, counted.
pub(crate) fn cargo_test(packages: &[&str], args: &[&str], env: &[(String, String)]) -> Counts {
    if packages.is_empty() {
        return Counts::default();
    }
    let mut command = cargo();
    command.args(["test", "--no-fail-fast"]);
    for package in packages {
        command.args(["-p", package]);
    }
    command.args(args);
    command.envs(env.iter().map(|(k, v)| (k, v)));
    // Tests that cannot reach their server leave records here (see
    // `opstore_testkit::skip`); they count as skipped, not passed.
    let skip_dir = SkipDir::create();
    if let Some(dir) = &skip_dir {
        command.env("OPSTORE_SKIP_DIR", &dir.0);
    }
    let mut parser = OutputParser::default();
    let result = stream(command, &mut parser);
    if let Some(dir) = &skip_dir {
        let records = read_skip_records(&dir.0);
        parser.recount_skips(records.iter().map(String::as_str));
    }
    match result {
        Ok(status) if !status.success() && parser.counts.failed == 0 => {
            println!(
                "cargo test exited with {status} without a failing test result; counted as one failure"
            );
            parser.counts.failed += 1;
        }
        Ok(_) => {}
        Err(e) => {
            println!("{e}");
            parser.counts.failed += 1;
        }
    }
    parser.counts
}

/// A fresh directory for one `cargo test` run's skip records, removed on drop.
struct SkipDir(std::path::PathBuf);

impl SkipDir {
    /// `None` when no directory can be made; skips then count as passed, as libtest
    /// reports them, and their SKIP lines still show in the output.
    fn create() -> Option<SkipDir> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("opstore-skips-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        match std::fs::create_dir_all(&dir) {
            Ok(()) => Some(SkipDir(dir)),
            Err(e) => {
                println!("no directory for skip records ({e}); skipped tests count as passed");
                None
            }
        }
    }
}

impl Drop for SkipDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Counts the tests `cargo test` would run without running them: all skipped. A
/// target that does not compile is a failure.
fn listed_as_skipped(packages: &[&str], args: &[&str]) -> Counts {
    if packages.is_empty() {
        return Counts::default();
    }
    let mut command = cargo();
    command.args(["test", "--no-fail-fast"]);
    for package in packages {
        command.args(["-p", package]);
    }
    command.args(args).args(["--", "--list"]);
    let mut parser = OutputParser::default();
    let mut counts = Counts::default();
    match stream(command, &mut parser) {
        Ok(status) => {
            counts.failed = parser.counts.failed;
            if !status.success() && counts.failed == 0 {
                counts.failed = 1;
            }
        }
        Err(e) => {
            println!("{e}");
            counts.failed = 1;
        }
    }
    counts.skipped = parser.listed;
    counts
}

/// An adapter suite that needs its server: started on first need, or SKIP with its
/// tests counted as skipped (a failure under CI).
fn server_suite(
    ws: &Workspace,
    backend: &str,
    package: &str,
    slot: &mut Slot,
    start: impl FnOnce() -> Result<Server, String>,
    ci: bool,
    report: &mut Report,
) -> Counts {
    if !ws.has_package(package) {
        return Counts::default();
    }
    match slot.server.get_or_insert_with(start) {
        Ok(server) => cargo_test(&[package], &[], &server.env),
        Err(reason) => {
            report.skip(backend, reason);
            let mut counts = listed_as_skipped(&[package], &[]);
            if ci && !slot.failure_counted {
                println!("CI=true: a server that cannot start is a failure");
                slot.failure_counted = true;
                counts.failed += 1;
            }
            counts
        }
    }
}

/// The application, end-to-end and CLI tests, with all their features (every backend)
/// and every server the run can start.
fn app_suite(
    ws: &Workspace,
    pg: &mut Slot,
    mongo: &mut Slot,
    run_dir: &RunDir,
    ci: bool,
) -> Counts {
    let packages = existing(ws, &APP_PACKAGES);
    if packages.is_empty() {
        return Counts::default();
    }
    pg.server.get_or_insert_with(|| servers::postgres(run_dir));
    mongo
        .server
        .get_or_insert_with(|| servers::mongo(ws, run_dir));
    let mut env = Vec::new();
    let mut counts = Counts::default();
    for (slot, name) in [(pg, "PostgreSQL"), (mongo, "MongoDB")] {
        match &slot.server {
            Some(Ok(server)) => env.extend(server.env.iter().cloned()),
            Some(Err(reason)) => {
                let first = reason.lines().next().unwrap_or_default();
                println!("app tests run without {name}: {first}");
                if ci && !slot.failure_counted {
                    slot.failure_counted = true;
                    counts.failed += 1;
                }
            }
            None => {}
        }
    }
    // Every backend compiled in, so that the tests can reach the servers started above.
    counts += cargo_test(&packages, &["--all-features"], &env);
    counts += run_examples(ws, "opstore");
    counts
}

/// Runs each example of `package` once on the memory store (`OPSTORE_URL` unset),
/// with the features the app tests were built with; each counts as one test,
/// failed when it exits non-zero.
fn run_examples(ws: &Workspace, package: &str) -> Counts {
    let mut counts = Counts::default();
    let Some(targets) = ws.package(package).map(|p| p.targets_of_kind("example")) else {
        return counts;
    };
    for example in targets {
        let mut command = cargo();
        command
            .args([
                "run",
                "--quiet",
                "--all-features",
                "-p",
                package,
                "--example",
                example,
            ])
            .env_remove("OPSTORE_URL");
        if run_ok(command) {
            counts.passed += 1;
        } else {
            println!("FAIL example `{example}` of {package} exited with an error");
            counts.failed += 1;
        }
    }
    counts
}

/// The ScyllaDB tests that need no server: the library's unit tests, every test target
/// except `conformance`, and the doc tests.
fn scylla_unit(ws: &Workspace) -> Counts {
    let Some(package) = ws.package("opstore-scylla") else {
        return Counts::default();
    };
    let mut args = Vec::new();
    if !package.targets_of_kind("lib").is_empty() {
        args.push("--lib");
    }
    for test in package.targets_of_kind("test") {
        if test != "conformance" {
            args.extend(["--test", test]);
        }
    }
    let mut counts = Counts::default();
    if !args.is_empty() {
        counts += cargo_test(&["opstore-scylla"], &args, &[]);
    }
    if !package.targets_of_kind("lib").is_empty() {
        counts += cargo_test(&["opstore-scylla"], &["--doc"], &[]);
    }
    counts
}

/// The CQL adapter's conformance suite against `OPSTORE_SCYLLA_URL` or, without it, a
/// throwaway Apache Cassandra node started for it and stopped right after. A node
/// that cannot start is a SKIP with the tests counted as skipped (a failure under CI).
fn scylla_server_suite(ws: &Workspace, run_dir: &RunDir, ci: bool, report: &mut Report) -> Counts {
    let Some(package) = ws.package("opstore-scylla") else {
        return Counts::default();
    };
    let args = ["--test", "conformance"];
    if !package.targets_of_kind("test").contains(&"conformance") {
        report.skip(
            "scylla",
            "opstore-scylla has no `conformance` test target yet",
        );
        return Counts::default();
    }
    match servers::cassandra(ws, run_dir) {
        Ok(server) => cargo_test(&["opstore-scylla"], &args, &server.env),
        Err(reason) => {
            report.skip("scylla", &reason);
            let mut counts = listed_as_skipped(&["opstore-scylla"], &args);
            if ci {
                println!("CI=true: a server that cannot start is a failure");
                counts.failed += 1;
            }
            counts
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn no_backend_option_selects_all_with_lint() {
        let options = parse_options(&[]).unwrap();
        assert_eq!(options.backends, ALL);
        assert!(options.lint);
    }

    #[test]
    fn scylla_selects_unit_tests_and_server_suite() {
        let options = parse_options(&args(&["--backend", "scylla", "--no-lint"])).unwrap();
        assert_eq!(options.backends, [Backend::ScyllaUnit, Backend::Scylla]);
        assert!(!options.lint);
    }

    #[test]
    fn backend_option_accepts_equals_form_and_repeats() {
        let options = parse_options(&args(&["--backend=memory", "--backend", "app"])).unwrap();
        assert_eq!(options.backends, [Backend::Memory, Backend::App]);
    }

    #[test]
    fn unknown_backend_is_an_error_naming_it() {
        let err = parse_options(&args(&["--backend", "oracle"])).unwrap_err();
        assert!(err.contains("oracle"), "{err}");
    }

    #[test]
    fn check_failures_count_in_the_total() {
        let mut report = Report::default();
        report.backends.push((
            Backend::Memory,
            Counts {
                passed: 3,
                failed: 1,
                skipped: 2,
            },
        ));
        report.check_failures.push("fmt".into());
        assert_eq!(
            report.total(),
            Counts {
                passed: 3,
                failed: 2,
                skipped: 2
            }
        );
    }
}
