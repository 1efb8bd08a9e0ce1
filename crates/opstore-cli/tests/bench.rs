//! `opstore bench` end to end on the memory store, at the smoke scale: the JSON
//! output parses and every figure carries a ratio against its baseline.

use assert_cmd::Command;
use serde_json::Value;

#[test]
fn bench_on_memory_prints_every_figure_with_a_ratio_as_json() {
    let output = Command::cargo_bin("opstore")
        .unwrap()
        .env_remove("OPSTORE_URL")
        .env_remove("OPSTORE_BENCH_QUICK")
        .args([
            "bench",
            "--url",
            "memory://",
            "--scale",
            "smoke",
            "--output",
            "json",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "exit {:?}\nstdout: {stdout}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let figures: Vec<Value> = serde_json::from_str(&stdout).unwrap();
    let scenarios: Vec<&str> = figures
        .iter()
        .map(|f| f["scenario"].as_str().unwrap())
        .collect();
    assert_eq!(scenarios, ["get by id", "insert", "indexed equality find"]);
    for f in &figures {
        assert_eq!(f["group"], "memory");
        let ratio = f["ratio"].as_f64().unwrap();
        let (value, baseline) = (
            f["value"].as_f64().unwrap(),
            f["baseline_value"].as_f64().unwrap(),
        );
        assert!(ratio.is_finite() && ratio > 0.0, "{f}");
        assert!(value > 0.0 && baseline > 0.0, "{f}");
        assert!(f["baseline"].as_str().is_some_and(|b| !b.is_empty()), "{f}");
        assert!(f["met"].is_boolean(), "{f}");
        assert!(f["goal"]["bound"].is_number(), "{f}");
    }
}

#[test]
fn bench_prints_a_table_with_one_row_per_figure() {
    let output = Command::cargo_bin("opstore")
        .unwrap()
        .env_remove("OPSTORE_URL")
        .args(["bench", "--scale", "smoke"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("scenario"), "{stdout}");
    assert_eq!(lines.len(), 4, "{stdout}");
    assert!(
        lines.iter().skip(1).all(|l| l.contains("is better")),
        "{stdout}"
    );
}

/// Runs only where `OPSTORE_POSTGRES_URL` names a server (`cargo xtask test`
/// starts one) and the `postgres` feature is on; under `CI=true` a missing URL
/// is a failure.
#[cfg(feature = "postgres")]
#[test]
fn bench_on_postgres_compares_every_scenario_with_hand_written_sqlx() {
    let Some(url) = opstore_testkit::require_server("postgres", "OPSTORE_POSTGRES_URL") else {
        return;
    };
    let output = Command::cargo_bin("opstore")
        .unwrap()
        .env_remove("OPSTORE_URL")
        .args([
            "bench", "--url", &url, "--scale", "smoke", "--output", "json",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let figures: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(figures.len(), 8);
    for f in &figures {
        assert_eq!(f["group"], "postgres");
        assert!(f["ratio"].as_f64().is_some_and(f64::is_finite), "{f}");
        assert!(f["baseline"].as_str().is_some_and(|b| !b.is_empty()), "{f}");
    }
}
