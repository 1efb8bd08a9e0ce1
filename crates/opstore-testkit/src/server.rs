//! The one place tests decide whether a server they need is there, and report
//! when it is not.
//!
//! A test that cannot reach its server calls [`skip`] (or gets `None` from
//! [`require_server`]) and returns. Under CI that is a failure instead. Otherwise
//! the test prints `SKIP <backend>: <reason>` and, when the runner exported
//! [`SKIP_DIR_VAR`], leaves a record there naming the test binary and the test.
//! libtest reports such a test as passed; `cargo xtask test` reads the records and
//! counts it as skipped. The record does not depend on libtest showing the test's
//! output, which it captures unless asked not to.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// The variable naming the directory skip records go to (set by `cargo xtask test`).
pub const SKIP_DIR_VAR: &str = "OPSTORE_SKIP_DIR";

/// Whether this run is CI (`CI=true` or `CI=1`), where a missing server fails.
pub fn is_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// The URL in `var` when it is set and not blank; otherwise reports the test as
/// skipped for `backend` (see [`skip`]) and returns `None`.
///
/// # Panics
/// Under CI when `var` is unset: a CI run must not pass without its server.
pub fn require_server(backend: &str, var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            skip(
                backend,
                &format!("{var} is not set (`cargo xtask test` sets it)"),
            );
            None
        }
    }
}

/// Reports that the calling test cannot run on `backend`: prints the SKIP line and
/// records it for the runner. Call it from the test's own thread (the test body, not
/// a spawned task), whose name is the test's name, and return right after.
///
/// # Panics
/// Under CI, naming the backend and the reason.
pub fn skip(backend: &str, reason: &str) {
    assert!(!is_ci(), "{backend} is required under CI=true: {reason}");
    println!("SKIP {backend}: {reason}");
    if let Some(dir) = std::env::var_os(SKIP_DIR_VAR).filter(|d| !d.is_empty()) {
        // A record that cannot be written leaves the test counted as passed, as it
        // would be without the runner; the SKIP line above still says why.
        if let Err(e) = record(Path::new(&dir), backend, reason) {
            println!("SKIP record for {backend} not written: {e}");
        }
    }
}

/// Writes one record: `binary<TAB>test<TAB>backend: reason`, in a file of its own
/// so that parallel tests and test binaries never share a write.
fn record(dir: &Path, backend: &str, reason: &str) -> std::io::Result<()> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let binary = std::env::current_exe()?
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let thread = std::thread::current();
    let test = thread.name().unwrap_or_default();
    let name = format!(
        "{}-{}.skip",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let reason = reason.replace(['\t', '\n'], " ");
    let mut file = std::fs::File::create(dir.join(name))?;
    writeln!(file, "{binary}\t{test}\t{backend}: {reason}")
}
