//! The `opstore` command end to end: exit codes, one-line errors, migrate,
//! watch with resume tokens, and the demo.
//!
//! Tests that need PostgreSQL read `OPSTORE_POSTGRES_URL`; without it they
//! print a SKIP line, and under `CI=true` they fail naming the variable.

use std::io::{BufRead, BufReader};
use std::process::{Command as StdCommand, Stdio};

use assert_cmd::Command;
use opstore_cli::commands::deadletters::{self, ReplayAction, ReplaySelection};
use opstore_cli::commands::{migrate, watch};
use opstore_cli::output::OutputFormat;
use opstore_domain::entities::dead_letter::DeadLetter;
use opstore_domain::{Repository, StartAt, Timestamp, Value, json};

fn opstore() -> Command {
    let mut cmd = Command::cargo_bin("opstore").unwrap();
    cmd.env_remove("OPSTORE_URL").env_remove("RUST_LOG");
    cmd
}

/// The PostgreSQL URL, or `None` after reporting the test as skipped. Under CI a
/// missing URL is a failure.
fn postgres_url() -> Option<String> {
    opstore_testkit::require_server("postgres", "OPSTORE_POSTGRES_URL")
}

struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(cmd: &mut Command) -> Outcome {
    let out = cmd.output().unwrap();
    Outcome {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// One line on stderr, prefixed `error:`, no backtrace, no panic.
fn assert_one_clear_line(outcome: &Outcome, code: i32, needle: &str) {
    assert_eq!(outcome.code, code, "stderr: {}", outcome.stderr);
    let lines: Vec<&str> = outcome.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {}", outcome.stderr);
    assert!(lines[0].starts_with("error: "), "{}", lines[0]);
    assert!(
        lines[0].contains(needle),
        "`{needle}` missing in: {}",
        lines[0]
    );
    for bad in ["panicked", "backtrace", "RUST_BACKTRACE", "stack backtrace"] {
        assert!(!outcome.stderr.contains(bad), "{}", outcome.stderr);
    }
}

fn dead_letter(id: &str, processor: &str) -> DeadLetter {
    DeadLetter {
        id: id.to_owned(),
        processor: processor.to_owned(),
        collection: "health_events".to_owned(),
        key: format!("gone-{id}"),
        event: json!({ "op": "delete", "key": format!("gone-{id}") }),
        error: "handler failed".to_owned(),
        attempts: 3,
        created_at: Timestamp::now(),
        replayed_at: None,
    }
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

#[test]
fn help_is_available_for_every_command() {
    for args in [
        vec!["--help"],
        vec!["migrate", "--help"],
        vec!["health", "--help"],
        vec!["watch", "--help"],
        vec!["locks", "--help"],
        vec!["locks", "list", "--help"],
        vec!["locks", "release", "--help"],
        vec!["deadletters", "--help"],
        vec!["deadletters", "list", "--help"],
        vec!["deadletters", "replay", "--help"],
        vec!["bench", "--help"],
    ] {
        let out = run(opstore().args(&args));
        assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
        assert!(
            out.stdout.contains("Usage: opstore"),
            "{args:?}: {}",
            out.stdout
        );
    }
}

#[test]
fn unknown_scheme_is_one_line_and_exit_2() {
    let out = run(opstore().args(["--url", "redis://cache:6379", "health"]));
    assert_one_clear_line(&out, 2, "unknown store URL scheme `redis`");
}

#[test]
fn url_without_scheme_is_one_line_and_exit_2() {
    let out = run(opstore().env("OPSTORE_URL", "not a url").arg("migrate"));
    assert_one_clear_line(&out, 2, "has no scheme");
}

#[test]
fn url_without_host_is_one_line_and_exit_2_without_the_password() {
    let out = run(opstore().args(["--url", "postgres://app:hunter2@/ops", "health"]));
    assert_one_clear_line(&out, 2, "names no host");
    assert!(!out.stderr.contains("hunter2"), "{}", out.stderr);
}

#[test]
fn unreachable_server_is_one_line_and_never_prints_the_password() {
    // Port 1 on the loopback refuses connections at once.
    let out = run(opstore().args(["--url", "postgres://app:hunter2@127.0.0.1:1/ops", "health"]));
    assert!(!out.stderr.contains("hunter2"), "{}", out.stderr);
    assert!(!out.stdout.contains("hunter2"), "{}", out.stdout);
    if cfg!(feature = "postgres") {
        assert_one_clear_line(&out, 1, "postgres://app:***@127.0.0.1:1/ops");
    } else {
        // Without the feature the backend is a usage error naming the feature.
        assert_one_clear_line(&out, 2, "enable the `postgres` feature");
    }
}

#[test]
fn bad_arguments_are_one_line_and_exit_2() {
    let out = run(opstore().args(["watch"]));
    assert_one_clear_line(&out, 2, "<COLLECTION>");
    let out = run(opstore().args(["--bogus", "health"]));
    assert_one_clear_line(&out, 2, "--bogus");
    let out = run(opstore().args(["--output", "yaml", "health"]));
    assert_one_clear_line(&out, 2, "yaml");
}

#[test]
fn watch_rejects_unknown_collections_bad_tokens_and_bad_filters() {
    let out = run(opstore().args(["watch", "no_such_thing"]));
    assert_one_clear_line(&out, 2, "unknown collection `no_such_thing`");
    let out = run(opstore().args(["watch", "dead_letters", "--from-token", "zz"]));
    assert_one_clear_line(&out, 2, "not hex");
    let out = run(opstore().args(["watch", "dead_letters", "--filter", "{\"eq\":1}"]));
    assert_one_clear_line(&out, 2, "--filter is not a filter");
    let out = run(opstore().args([
        "watch",
        "dead_letters",
        "--limit",
        "1",
        "--filter",
        "{\"eq\":[\"no.such.field\",1]}",
    ]));
    assert_one_clear_line(&out, 2, "no.such.field");
}

#[test]
fn health_reports_the_memory_backend_as_json() {
    let out = run(opstore().args(["health", "--output", "json"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let report: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(report["backend"], "memory");
    assert_eq!(report["capabilities"]["change_feed"], true);
}

#[test]
fn a_sqlite_file_keeps_the_demo_data_for_the_next_command() {
    let file = std::env::temp_dir().join(format!("opstore-cli-{}.db", unique("sqlite")));
    let url = format!("sqlite://{}", file.display());
    let out = run(opstore().args(["demo", "--url", &url, "--output", "json", "--events", "20"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let summary: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(summary["backend"], "sqlite");
    // A second process finds every table already there.
    let out = run(opstore().args(["migrate", "--url", &url, "--output", "json"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let report: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(report["applied"], json!([]), "{report}");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
    }
}

#[test]
fn migrate_prints_every_step_as_json() {
    let out = run(opstore().args(["migrate", "--output", "json"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let report: Value = serde_json::from_str(&out.stdout).unwrap();
    let applied = report["applied"].as_array().unwrap();
    assert!(
        applied
            .iter()
            .any(|s| s.as_str().unwrap().contains("dead_letters")),
        "{applied:?}"
    );
}

#[tokio::test]
async fn migrate_twice_in_process_second_run_is_a_no_op() {
    let store = opstore_cli::connect("memory://").await.unwrap();
    let first = migrate::migrate(&store).await.unwrap();
    assert!(!first.applied.is_empty());
    let second = migrate::migrate(&store).await.unwrap();
    assert!(second.applied.is_empty(), "{second:?}");
    assert_eq!(
        second.unchanged.len(),
        first.applied.len() + first.unchanged.len()
    );
    let mut out = Vec::new();
    migrate::print(&second, OutputFormat::Table, &mut out).unwrap();
    assert!(String::from_utf8(out).unwrap().contains("nothing applied"));
}

#[test]
fn migrate_twice_on_postgres_second_run_is_a_no_op() {
    let Some(url) = postgres_url() else {
        return;
    };
    let first = run(opstore().args(["--url", &url, "migrate", "--output", "json"]));
    assert_eq!(first.code, 0, "{}", first.stderr);
    let second = run(opstore().args(["--url", &url, "migrate", "--output", "json"]));
    assert_eq!(second.code, 0, "{}", second.stderr);
    let report: Value = serde_json::from_str(&second.stdout).unwrap();
    assert_eq!(report["applied"].as_array().unwrap().len(), 0, "{report}");
    assert!(!report["unchanged"].as_array().unwrap().is_empty());
}

/// Watches `dead_letters` in process and returns the printed JSON lines.
async fn watch_lines(store: &opstore_app::DataStore, args: &[&str]) -> Vec<Value> {
    let mut argv = vec!["opstore", "watch", "dead_letters"];
    argv.extend_from_slice(args);
    let cli = <opstore_cli::Cli as clap::Parser>::try_parse_from(argv).unwrap();
    let opstore_cli::Command::Watch(args) = cli.command else {
        unreachable!("parsed a watch command");
    };
    let options = watch::WatchOptions::from_args(&args).unwrap();
    let mut out = Vec::new();
    let mut ready = Vec::new();
    watch::watch(store, &options, OutputFormat::Json, &mut out, &mut |l| {
        ready.push(l.to_owned())
    })
    .await
    .unwrap();
    assert_eq!(ready.len(), 1, "{ready:?}");
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn watch_prints_a_change_made_by_another_command_and_a_token_that_resumes() {
    let store = opstore_cli::open("memory://").await.unwrap();
    let repo = store.repository::<DeadLetter>().unwrap();
    repo.insert(&dead_letter("dl-1", "quarantine"))
        .await
        .unwrap();

    // Another command changes the dead letter: `deadletters replay --id dl-1`.
    let replayed = deadletters::replay(&store, &ReplaySelection::Ids(vec!["dl-1".into()]))
        .await
        .unwrap();
    assert_eq!(replayed.len(), 1);
    assert_eq!(replayed[0].action, ReplayAction::SourceMissing);

    let lines = watch_lines(&store, &["--from-beginning", "--limit", "2"]).await;
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["op"], "insert");
    assert_eq!(lines[1]["op"], "update");
    assert_eq!(lines[1]["key"], "dl-1");
    assert!(
        lines[1]["document"]["replayed_at"].is_string(),
        "{}",
        lines[1]
    );
    let token = lines[1]["token"].as_str().unwrap().to_owned();
    assert!(!token.is_empty());

    // A later change; resuming from the token prints it and nothing before it.
    repo.insert(&dead_letter("dl-2", "quarantine"))
        .await
        .unwrap();
    let resumed = watch_lines(&store, &["--from-token", &token, "--limit", "1"]).await;
    assert_eq!(resumed.len(), 1);
    assert_eq!(resumed[0]["key"], "dl-2");
    assert_eq!(resumed[0]["op"], "insert");

    // A filter in the serde form of `Filter` selects documents.
    let filtered = watch_lines(
        &store,
        &[
            "--from-beginning",
            "--limit",
            "1",
            "--filter",
            r#"{"eq":["id","dl-2"]}"#,
        ],
    )
    .await;
    assert_eq!(filtered[0]["key"], "dl-2");
}

#[tokio::test]
async fn watch_from_now_is_the_default_start() {
    let args = opstore_cli::cli::WatchArgs {
        collection: "health_events".into(),
        from_token: None,
        from_beginning: false,
        filter: None,
        limit: None,
    };
    let options = watch::WatchOptions::from_args(&args).unwrap();
    assert_eq!(options.start, StartAt::Now);
}

#[tokio::test]
async fn deadletters_replay_rewrites_a_source_that_still_exists() {
    let store = opstore_cli::open("memory://").await.unwrap();
    let repo = store.repository::<DeadLetter>().unwrap();
    // The source of this dead letter is another dead letter: any collection works.
    let mut source = dead_letter("source", "other");
    source.replayed_at = Some(Timestamp::now());
    repo.insert(&source).await.unwrap();
    let mut letter = dead_letter("dl-x", "quarantine");
    letter.collection = "dead_letters".into();
    letter.key = "source".into();
    repo.insert(&letter).await.unwrap();

    let pending = deadletters::list(&store, Some("quarantine"), false, 0)
        .await
        .unwrap();
    assert_eq!(pending.len(), 1);
    let replayed = deadletters::replay(
        &store,
        &ReplaySelection::Pending {
            processor: Some("quarantine".into()),
        },
    )
    .await
    .unwrap();
    assert_eq!(replayed.len(), 1);
    assert_eq!(replayed[0].action, ReplayAction::Rewritten);
    assert!(
        deadletters::list(&store, Some("quarantine"), false, 0)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        deadletters::list(&store, Some("quarantine"), true, 0)
            .await
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn watch_on_postgres_prints_a_change_made_by_another_command_and_a_token_that_resumes() {
    let Some(url) = postgres_url() else {
        return;
    };
    let id = unique("dl");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = rt.block_on(opstore_cli::open(&url)).unwrap();
    let repo = store.repository::<DeadLetter>().unwrap();
    rt.block_on(repo.insert(&dead_letter(&id, "cli-test")))
        .unwrap();

    let filter = format!(r#"{{"eq":["id","{id}"]}}"#);
    let bin = assert_cmd::cargo::cargo_bin("opstore");
    let mut watcher = StdCommand::new(&bin)
        .args(["--url", &url, "--output", "json", "watch", "dead_letters"])
        .args(["--limit", "1", "--filter", &filter])
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The watcher says on stderr when its feed is open; changes after that are seen.
    let mut stderr = BufReader::new(watcher.stderr.take().unwrap());
    let mut ready = String::new();
    stderr.read_line(&mut ready).unwrap();
    assert!(
        ready.contains("watching `dead_letters` from now"),
        "{ready}"
    );

    let replay = run(opstore().args(["--url", &url, "deadletters", "replay", "--id", &id]));
    assert_eq!(replay.code, 0, "{}", replay.stderr);

    let out = watcher.wait_with_output().unwrap();
    assert!(out.status.success());
    let line: Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    assert_eq!(line["op"], "update");
    assert_eq!(line["key"], id.as_str());
    let token = line["token"].as_str().unwrap().to_owned();

    // A later change; a new watch resumes right after the printed token.
    rt.block_on(repo.update_one(
        &id,
        &opstore_domain::Update::new().set("error", "changed after the token"),
    ))
    .unwrap();
    let resumed = run(opstore()
        .args(["--url", &url, "--output", "json", "watch", "dead_letters"])
        .args(["--limit", "1", "--filter", &filter, "--from-token", &token]));
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    let line: Value = serde_json::from_str(resumed.stdout.trim()).unwrap();
    assert_eq!(line["document"]["error"], "changed after the token");
    rt.block_on(repo.delete(&id)).unwrap();
}

/// Runs `opstore demo` with a fixed shape and returns the parsed summary.
fn demo_summary(url: Option<&str>, seed: &str) -> Value {
    let mut cmd = opstore();
    if let Some(url) = url {
        cmd.args(["--url", url]);
    }
    cmd.args(["demo", "--nodes", "20", "--events", "400", "--workers", "3"])
        .args(["--seed", seed, "--output", "json"]);
    let out = run(&mut cmd);
    assert_eq!(
        out.code, 0,
        "stderr: {}\nstdout: {}",
        out.stderr, out.stdout
    );
    serde_json::from_str(&out.stdout).unwrap()
}

fn assert_invariants_hold(summary: &Value) {
    let invariants = summary["invariants"].as_array().unwrap();
    assert!(invariants.len() >= 5, "{summary}");
    for invariant in invariants {
        assert_eq!(invariant["holds"], true, "{invariant}");
    }
    let events = summary["events"].as_u64().unwrap();
    let processed = summary["processed"].as_u64().unwrap();
    let dead = summary["dead_lettered"].as_u64().unwrap();
    assert_eq!(processed + dead, events, "{summary}");
    assert_eq!(dead, 1, "{summary}");
    assert!(summary["retried"].as_u64().unwrap() >= 3, "{summary}");
    assert_eq!(summary["lease_takeovers"], 1, "{summary}");
    assert_eq!(summary["cancelled_sessions"], 1, "{summary}");
    assert_eq!(
        summary["jobs_done"], summary["quarantine_sessions"],
        "{summary}"
    );
}

/// The counts of a summary, without the measured timings.
fn counts(summary: &Value) -> Value {
    let mut summary = summary.clone();
    let map = summary.as_object_mut().unwrap();
    for timing in [
        "handler_p50_ms",
        "handler_p99_ms",
        "elapsed_s",
        "throughput_events_per_s",
    ] {
        assert!(map.remove(timing).is_some(), "{timing} missing");
    }
    summary
}

#[test]
fn demo_on_memory_holds_its_invariants_and_is_deterministic_per_seed() {
    let first = demo_summary(None, "42");
    assert_eq!(first["backend"], "memory");
    assert_invariants_hold(&first);
    let second = demo_summary(None, "42");
    assert_eq!(counts(&first), counts(&second));
    let other = demo_summary(None, "43");
    assert_invariants_hold(&other);
}

#[test]
fn demo_prints_a_summary_table_by_default() {
    let out = run(opstore().args(["demo", "--nodes", "5", "--events", "60", "--seed", "1"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    for needle in [
        "events",
        "processed",
        "retried",
        "dead-lettered",
        "jobs done",
        "lease takeovers",
        "cancelled sessions",
        "p50",
        "p99",
        "throughput",
    ] {
        assert!(
            out.stdout.contains(needle),
            "`{needle}` missing:\n{}",
            out.stdout
        );
    }
    assert!(!out.stdout.contains("FAIL"), "{}", out.stdout);
}

#[test]
fn demo_rejects_an_empty_fleet() {
    let out = run(opstore().args(["demo", "--nodes", "0"]));
    assert_one_clear_line(&out, 2, "--nodes");
}

#[test]
fn demo_on_postgres_holds_its_invariants() {
    let Some(url) = postgres_url() else {
        return;
    };
    let summary = demo_summary(Some(&url), "42");
    assert_eq!(summary["backend"], "postgres");
    assert_invariants_hold(&summary);
}

#[test]
fn demos_side_by_side_on_one_postgres_server_keep_to_their_own_data() {
    let Some(url) = postgres_url() else {
        return;
    };
    // Each run drains only its own jobs: one run finishing the other's jobs
    // once left the other waiting for them forever.
    let (first, second) = std::thread::scope(|s| {
        let first = s.spawn(|| demo_summary(Some(&url), "42"));
        let second = s.spawn(|| demo_summary(Some(&url), "42"));
        (first.join().unwrap(), second.join().unwrap())
    });
    assert_invariants_hold(&first);
    assert_invariants_hold(&second);
    assert_eq!(counts(&first), counts(&second));
}

#[test]
fn demo_rejects_a_zero_stall_timeout() {
    let out = run(opstore().args(["demo", "--stall-timeout", "0"]));
    assert_one_clear_line(&out, 2, "--stall-timeout");
}
