//! Throwaway database servers for the test and bench runs: a PostgreSQL cluster from the
//! machine's `initdb`/`pg_ctl` and a SecantusDB (MongoDB wire protocol) server from a
//! Python venv under the target dir. Each is stopped and its directory removed on drop,
//! also when the tests fail.

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::workspace::{Workspace, env_nonempty};

/// The SecantusDB release the MongoDB suite runs against.
const SECANTUS_REQUIREMENT: &str = "secantusdb==0.7.0b3";
const SECANTUS_VERSION: &str = "0.7.0b3";

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
/// before it could clean up), stopping a PostgreSQL cluster still running in one.
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
        if datadir.join("postmaster.pid").exists()
            && let Ok(bindir) = pg_bindir()
        {
            let runas = fs::metadata(&datadir)
                .ok()
                .filter(|_| is_root())
                .and_then(|m| user_name_of(std::os::unix::fs::MetadataExt::uid(&m)));
            let _ = pg_command(&bindir, "pg_ctl", runas.as_deref())
                .arg("-D")
                .arg(&datadir)
                .args(["-m", "immediate", "-w", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        println!("removing stale test directory {}", entry.path().display());
        let _ = fs::remove_dir_all(entry.path());
    }
}

/// A started (or externally provided) server: the environment the tests get, and
/// the process guard that stops it.
#[derive(Debug)]
pub struct Server {
    pub env: Vec<(String, String)>,
    _postgres: Option<PgCluster>,
    _mongo: Option<MongoServer>,
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

// ---------------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------------

/// Uses `OPSTORE_POSTGRES_URL` when set, else starts a throwaway cluster in `run_dir`.
pub fn postgres(run_dir: &RunDir) -> Result<Server, String> {
    if let Some(url) = env_nonempty("OPSTORE_POSTGRES_URL") {
        println!("using PostgreSQL from OPSTORE_POSTGRES_URL");
        return Ok(Server {
            env: vec![("OPSTORE_POSTGRES_URL".to_owned(), url)],
            _postgres: None,
            _mongo: None,
        });
    }
    let cluster = PgCluster::start(run_dir.path())?;
    println!(
        "started PostgreSQL at {} (data dir {})",
        cluster.url(),
        cluster.datadir.display()
    );
    let env = vec![
        ("OPSTORE_POSTGRES_URL".to_owned(), cluster.url()),
        (
            "OPSTORE_TEST_PG_DATADIR".to_owned(),
            cluster.datadir.display().to_string(),
        ),
        (
            "OPSTORE_TEST_PG_BINDIR".to_owned(),
            cluster.bindir.display().to_string(),
        ),
        (
            "OPSTORE_TEST_PG_RUNAS".to_owned(),
            cluster.runas.clone().unwrap_or_default(),
        ),
        ("OPSTORE_TEST_PG_PORT".to_owned(), cluster.port.to_string()),
    ];
    Ok(Server {
        env,
        _postgres: Some(cluster),
        _mongo: None,
    })
}

/// A cluster owned by this run. Its settings (port included) live in the data dir's
/// `opstore.conf`, so a test can stop it and start it again with a plain
/// `pg_ctl -D <datadir> -l <datadir>/log -w start` (as `OPSTORE_TEST_PG_RUNAS` when set).
#[derive(Debug)]
struct PgCluster {
    bindir: PathBuf,
    datadir: PathBuf,
    runas: Option<String>,
    port: u16,
}

/// The PostgreSQL program directory: `pg_config --bindir`, else the newest
/// `/usr/lib/postgresql/<version>/bin` that has `initdb`.
fn pg_bindir() -> Result<PathBuf, String> {
    if let Some(dir) = command_stdout(Command::new("pg_config").arg("--bindir")) {
        let dir = PathBuf::from(dir);
        if dir.join("initdb").exists() {
            return Ok(dir);
        }
    }
    let mut candidates: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_string_lossy().parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    candidates.sort();
    candidates
        .pop()
        .map(|(_, bin)| bin)
        .ok_or_else(|| "no PostgreSQL server programs (initdb) found: `pg_config --bindir` failed and /usr/lib/postgresql/*/bin has none".to_owned())
}

/// A PostgreSQL program, run as `runas` through `runuser` when given.
fn pg_command(bindir: &Path, program: &str, runas: Option<&str>) -> Command {
    let mut command = match runas {
        Some(user) => {
            let mut c = Command::new("runuser");
            c.args(["-u", user, "--"]).arg(bindir.join(program));
            c
        }
        None => Command::new(bindir.join(program)),
    };
    // The unprivileged user may not be able to enter the caller's directory.
    command.current_dir("/");
    command
}

/// Ensures an unprivileged account exists for running PostgreSQL as root refuses to.
fn ensure_pg_user() -> Result<(String, u32, u32), String> {
    let user = "postgres";
    if command_stdout(Command::new("id").args(["-u", user])).is_none() {
        println!("creating system user `{user}` to run PostgreSQL");
        let status = Command::new("useradd")
            .args(["--system", "--user-group", "--no-create-home", user])
            .status()
            .map_err(|e| format!("useradd {user}: {e}"))?;
        if !status.success() {
            return Err(format!("useradd {user} exited with {status}"));
        }
    }
    let id = |flag: &str| {
        command_stdout(Command::new("id").args([flag, user]))
            .and_then(|v| v.parse::<u32>().ok())
            .ok_or_else(|| format!("reading the ids of user `{user}`"))
    };
    Ok((user.to_owned(), id("-u")?, id("-g")?))
}

/// Lets other users traverse every ancestor of `dir`, so the PostgreSQL user reaches it.
fn make_ancestors_traversable(dir: &Path) -> Result<(), String> {
    for ancestor in dir.ancestors().skip(1) {
        let Ok(meta) = fs::metadata(ancestor) else {
            continue;
        };
        let mode = meta.permissions().mode();
        if mode & 0o001 == 0 {
            println!(
                "making {} traversable (o+x) for the PostgreSQL user",
                ancestor.display()
            );
            fs::set_permissions(ancestor, fs::Permissions::from_mode(mode | 0o001))
                .map_err(|e| format!("chmod o+x {}: {e}", ancestor.display()))?;
        }
    }
    Ok(())
}

impl PgCluster {
    fn start(run_dir: &Path) -> Result<PgCluster, String> {
        let bindir = pg_bindir()?;
        let datadir = run_dir.join("pg");
        fs::create_dir_all(&datadir).map_err(|e| format!("creating {}: {e}", datadir.display()))?;
        let mut owner = None;
        let runas = if is_root() {
            let (user, uid, gid) = ensure_pg_user()?;
            make_ancestors_traversable(&datadir)?;
            std::os::unix::fs::chown(&datadir, Some(uid), Some(gid))
                .map_err(|e| format!("chown {}: {e}", datadir.display()))?;
            owner = Some((uid, gid));
            Some(user)
        } else {
            None
        };
        fs::set_permissions(&datadir, fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("chmod {}: {e}", datadir.display()))?;

        let output = pg_command(&bindir, "initdb", runas.as_deref())
            .arg("-D")
            .arg(&datadir)
            .args([
                "-A",
                "trust",
                "-U",
                "opstore",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .output()
            .map_err(|e| match &runas {
                Some(user) => format!("running initdb as `{user}` through runuser: {e}"),
                None => format!("running initdb: {e}"),
            })?;
        if !output.status.success() {
            return Err(format!(
                "initdb failed ({}): {}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        let conf = datadir.join("postgresql.conf");
        let mut text =
            fs::read_to_string(&conf).map_err(|e| format!("reading {}: {e}", conf.display()))?;
        text.push_str("\n# Settings of the opstore test run.\ninclude 'opstore.conf'\n");
        fs::write(&conf, text).map_err(|e| format!("writing {}: {e}", conf.display()))?;

        let mut cluster = PgCluster {
            bindir,
            datadir,
            runas,
            port: 0,
        };
        // The port was free when chosen but another process may take it before the
        // server binds it; try a few.
        let mut last_error = String::new();
        for _ in 0..3 {
            cluster.port = free_port()?;
            cluster.write_settings(owner)?;
            match cluster.pg_ctl_start() {
                Ok(()) => return Ok(cluster),
                Err(e) => last_error = e,
            }
        }
        Err(last_error)
    }

    fn write_settings(&self, owner: Option<(u32, u32)>) -> Result<(), String> {
        let path = self.datadir.join("opstore.conf");
        let datadir = self.datadir.display().to_string();
        // A Unix socket path is limited to about 100 bytes; without one, TCP still works.
        let socket_dir = if datadir.len() + 20 < 100 {
            datadir.replace('\'', "''")
        } else {
            String::new()
        };
        let text = format!(
            "port = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{socket_dir}'\n\
             max_connections = 300\nfsync = off\n",
            self.port
        );
        fs::write(&path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                .map_err(|e| format!("chown {}: {e}", path.display()))?;
        }
        Ok(())
    }

    fn pg_ctl_start(&self) -> Result<(), String> {
        let log = self.datadir.join("log");
        let output = pg_command(&self.bindir, "pg_ctl", self.runas.as_deref())
            .arg("-D")
            .arg(&self.datadir)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60", "start"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running pg_ctl start: {e}"))?;
        if output.status.success() {
            return Ok(());
        }
        Err(format!(
            "pg_ctl start failed ({}): {}{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            log_tail(&log, 20)
        ))
    }

    fn url(&self) -> String {
        format!("postgres://opstore@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let stopped = pg_command(&self.bindir, "pg_ctl", self.runas.as_deref())
            .arg("-D")
            .arg(&self.datadir)
            .args(["-m", "fast", "-w", "stop"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !stopped && self.datadir.join("postmaster.pid").exists() {
            let _ = pg_command(&self.bindir, "pg_ctl", self.runas.as_deref())
                .arg("-D")
                .arg(&self.datadir)
                .args(["-m", "immediate", "-w", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = fs::remove_dir_all(&self.datadir);
        if stopped {
            println!("stopped PostgreSQL on port {}", self.port);
        }
    }
}

// ---------------------------------------------------------------------------------
// MongoDB wire protocol: SecantusDB
// ---------------------------------------------------------------------------------

/// Starts SecantusDB with a fast TTL sweep. Binding port 0 lets the server pick a free
/// port atomically; it prints the port once it listens. It stops when its stdin
/// closes, so it does not outlive this process even if this process is killed.
const SECANTUS_LAUNCHER: &str = r#"
import sys
from secantus.server import SecantusDBServer
storage = sys.argv[1]
try:
    server = SecantusDBServer(host="127.0.0.1", port=0, storage_path=storage, ttl_sweep_seconds=1.0)
except TypeError:
    server = SecantusDBServer(host="127.0.0.1", port=0, storage_path=storage)
server.start()
print(server.address[1], flush=True)
sys.stdin.read()
server.stop()
"#;

/// Exits 0 once the server answers `hello`, 3 when pymongo is not installed.
const HELLO_PROBE: &str = r#"
import sys
try:
    import pymongo
except ImportError:
    sys.exit(3)
client = pymongo.MongoClient(sys.argv[1], serverSelectionTimeoutMS=30000)
client.admin.command("hello")
"#;

/// Uses `OPSTORE_MONGODB_URL` when set, else starts SecantusDB in `run_dir`.
pub fn mongo(ws: &Workspace, run_dir: &RunDir) -> Result<Server, String> {
    if let Some(url) = env_nonempty("OPSTORE_MONGODB_URL") {
        println!("using MongoDB from OPSTORE_MONGODB_URL");
        return Ok(Server {
            env: vec![("OPSTORE_MONGODB_URL".to_owned(), url)],
            _postgres: None,
            _mongo: None,
        });
    }
    let python = ensure_venv(&ws.target_dir.join("pyenv"))?;
    let server = MongoServer::start(&python, run_dir.path())?;
    println!(
        "started SecantusDB at {} (storage {})",
        server.url(),
        server.dir.display()
    );
    Ok(Server {
        env: vec![("OPSTORE_MONGODB_URL".to_owned(), server.url())],
        _postgres: None,
        _mongo: Some(server),
    })
}

/// Returns the venv's python, creating the venv and installing SecantusDB when the
/// pinned version is not there yet.
fn ensure_venv(venv: &Path) -> Result<PathBuf, String> {
    let python = venv.join("bin").join("python");
    let has_package = || {
        Command::new(&python)
            .args([
                "-c",
                &format!(
                    "import importlib.metadata as m, sys; \
                     sys.exit(m.version('secantusdb') != '{SECANTUS_VERSION}')"
                ),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if python.exists() && has_package() {
        return Ok(python);
    }
    if !python.exists() {
        let system_python = [
            "python3",
            "python3.13",
            "python3.12",
            "python3.11",
            "python3.10",
        ]
        .into_iter()
        .find(|p| {
            Command::new(p)
                .args([
                    "-c",
                    "import sys, venv; sys.exit(sys.version_info < (3, 10))",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .ok_or("no Python 3.10+ with the venv module found to run SecantusDB")?;
        println!("creating Python venv {}", venv.display());
        let status = Command::new(system_python)
            .args(["-m", "venv"])
            .arg(venv)
            .status()
            .map_err(|e| format!("{system_python} -m venv: {e}"))?;
        if !status.success() {
            return Err(format!(
                "{system_python} -m venv {} exited with {status}",
                venv.display()
            ));
        }
    }
    println!("installing {SECANTUS_REQUIREMENT} into {}", venv.display());
    let status = Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--quiet",
            SECANTUS_REQUIREMENT,
        ])
        .status()
        .map_err(|e| format!("pip install {SECANTUS_REQUIREMENT}: {e}"))?;
    if !status.success() || !has_package() {
        return Err(format!(
            "pip install {SECANTUS_REQUIREMENT} failed ({status})"
        ));
    }
    Ok(python)
}

#[derive(Debug)]
struct MongoServer {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl MongoServer {
    fn start(python: &Path, run_dir: &Path) -> Result<MongoServer, String> {
        let dir = run_dir.join("mongo");
        let storage = dir.join("data");
        fs::create_dir_all(&storage).map_err(|e| format!("creating {}: {e}", storage.display()))?;
        let log_path = dir.join("server.log");
        let log = fs::File::create(&log_path)
            .map_err(|e| format!("creating {}: {e}", log_path.display()))?;
        let mut child = Command::new(python)
            .args(["-c", SECANTUS_LAUNCHER])
            .arg(&storage)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting SecantusDB: {e}"))?;
        let stdout = child.stdout.take();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let Some(stdout) = stdout else { return };
            let mut reader = BufReader::new(stdout);
            let mut first = String::new();
            let _ = reader.read_line(&mut first);
            let _ = tx.send(first);
            // Keep draining so a chatty server never blocks on a full pipe.
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        let mut server = MongoServer {
            child,
            dir,
            port: 0,
        };
        let first = rx
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_default();
        server.port = match first.trim().parse() {
            Ok(port) => port,
            Err(_) => {
                return Err(format!(
                    "SecantusDB did not start: {}",
                    log_tail(&log_path, 20)
                ));
            }
        };
        server.wait_ready(python, &log_path)?;
        Ok(server)
    }

    /// Waits until the server answers `hello` (or, without pymongo, accepts TCP).
    fn wait_ready(&mut self, python: &Path, log_path: &Path) -> Result<(), String> {
        let probe = Command::new(python)
            .args(["-c", HELLO_PROBE, &self.url()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| format!("probing SecantusDB: {e}"))?;
        match probe.status.code() {
            Some(0) => return Ok(()),
            Some(3) => {}
            _ => {
                return Err(format!(
                    "SecantusDB does not answer hello: {}\n{}",
                    String::from_utf8_lossy(&probe.stderr).trim(),
                    log_tail(log_path, 20)
                ));
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "SecantusDB exited with {status}: {}",
                    log_tail(log_path, 20)
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!(
            "SecantusDB does not accept connections on port {}",
            self.port
        ))
    }

    fn url(&self) -> String {
        format!("mongodb://127.0.0.1:{}/?directConnection=true", self.port)
    }
}

impl Drop for MongoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
        println!("stopped SecantusDB on port {}", self.port);
    }
}
