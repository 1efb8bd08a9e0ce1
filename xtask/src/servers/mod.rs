//! Throwaway database servers for the test and bench runs: a PostgreSQL cluster from the
//! machine's `initdb`/`pg_ctl`, a SecantusDB (MongoDB wire protocol) server from a
//! Python venv under the target dir, and an Apache Cassandra node from Maven Central
//! jars (for the CQL adapter). Each is stopped and its directory removed on drop, also
//! when the tests fail.

mod cassandra;
mod mongo;
mod postgres;

pub use cassandra::cassandra;
pub use mongo::mongo;
pub use postgres::postgres;

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::workspace::Workspace;

/// The directory of one run's servers, `target/opstore-test/run-<pid>-<millis>`.
/// Removed on drop; servers living in it must be dropped first.
#[derive(Debug)]
pub struct RunDir {
    path: PathBuf,
}

impl RunDir {
    pub fn create(ws: &Workspace) -> Result<RunDir, String> {
        let base = ws.target_dir.join("opstore-test");
        clean_stale(&base);
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        let path = base.join(format!("run-{}-{millis}", std::process::id()));
        fs::create_dir_all(&path).map_err(|e| format!("creating {}: {e}", path.display()))?;
        Ok(RunDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Removes run directories left by runs whose process no longer exists (a run killed
/// before it could clean up), stopping a PostgreSQL cluster or Cassandra node still
/// running in one.
fn clean_stale(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("run-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let datadir = entry.path().join("pg");
        postgres::stop_stale(&datadir);
        cassandra::stop_stale(&entry.path().join("cassandra"));
        println!("removing stale test directory {}", entry.path().display());
        let _ = fs::remove_dir_all(entry.path());
    }
}

/// A started (or externally provided) server: the environment the tests get, and
/// the process guard that stops it.
#[derive(Debug)]
pub struct Server {
    pub env: Vec<(String, String)>,
    _guard: Option<Guard>,
}

/// The process a [`Server`] stops when dropped.
#[derive(Debug)]
#[expect(dead_code, reason = "each variant is held only for its Drop")]
enum Guard {
    Postgres(postgres::PgCluster),
    Mongo(mongo::MongoServer),
    Cassandra(cassandra::CassandraNode),
}

impl Server {
    /// A server someone else runs: only its environment.
    fn external(name: &str, value: String) -> Server {
        Server {
            env: vec![(name.to_owned(), value)],
            _guard: None,
        }
    }
}

/// A loopback port that was free a moment ago.
fn free_port() -> Result<u16, String> {
    let listener =
        TcpListener::bind(("127.0.0.1", 0)).map_err(|e| format!("finding a free port: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("finding a free port: {e}"))
}

fn is_root() -> bool {
    command_stdout(Command::new("id").arg("-u")).is_some_and(|uid| uid == "0")
}

fn command_stdout(command: &mut Command) -> Option<String> {
    let output = command.stderr(Stdio::null()).output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

fn user_name_of(uid: u32) -> Option<String> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut parts = line.split(':');
        let name = parts.next()?;
        let id: u32 = parts.nth(1)?.parse().ok()?;
        (id == uid).then(|| name.to_owned())
    })
}

/// The last lines of a log file, for error messages.
fn log_tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
