//! Shared by the fault-injection and TLS suites: server discovery from the
//! environment `cargo xtask test` exports, throwaway PostgreSQL clusters and
//! SecantusDB servers that a test can stop and start, and test certificates.
//!
//! A test whose server is unavailable prints `SKIP <backend>: <reason>` and
//! returns; under `CI=true` it fails instead, so CI never passes silently.

#![allow(dead_code)]

use std::fs;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bounds every wait for something that must happen (a server starting, an
/// event arriving, an operation failing), so a broken backend fails the case
/// instead of hanging the run. Never an assertion about speed.
pub const HANG_GUARD: Duration = Duration::from_secs(60);

/// The shared skip reporting: a missing server fails under CI, otherwise the
/// test prints its SKIP line and `cargo xtask test` counts it as skipped.
pub use opstore_testkit::{require_server, skip};

/// A unique lower-case suffix for schema, database and processor names.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// A TCP port on the loopback interface that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral loopback port")
}

/// Runs a command to completion and panics with its output when it fails.
fn run(command: &mut Command, what: &str) -> String {
    let output = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{what} failed: {text}");
    text
}

/// A scratch directory removed on drop.
#[derive(Debug)]
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    /// A new empty directory under the system temp dir, traversable by everyone
    /// so an unprivileged server user can reach files inside.
    pub fn new(prefix: &str) -> Self {
        let dir = std::env::temp_dir().join(unique(prefix));
        fs::create_dir_all(&dir).expect("create scratch dir");
        set_mode(&dir, 0o755);
        ScratchDir(dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

fn chown_to(path: &Path, user: &str) {
    if user.is_empty() {
        return;
    }
    run(
        Command::new("chown").args(["-R", user]).arg(path),
        "chown to the server user",
    );
}

// ---------------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------------

/// Server certificate and key files for a cluster started with `ssl = on`.
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// A throwaway PostgreSQL cluster of the test's own, on a free loopback port,
/// started with the `initdb`/`pg_ctl` that `cargo xtask test` names
/// (`OPSTORE_TEST_PG_BINDIR`, run as `OPSTORE_TEST_PG_RUNAS` when non-empty).
/// Stopped and removed on drop.
#[derive(Debug)]
pub struct PgCluster {
    bindir: String,
    runas: String,
    datadir: PathBuf,
    _scratch: ScratchDir,
    port: u16,
}

impl PgCluster {
    /// `None` (after the SKIP report) when the run exports no PostgreSQL binaries.
    pub fn bindir_from_env() -> Option<(String, String)> {
        let bindir = require_server("postgres", "OPSTORE_TEST_PG_BINDIR")?;
        // Empty means "already unprivileged, run directly".
        let runas = std::env::var("OPSTORE_TEST_PG_RUNAS").unwrap_or_default();
        Some((bindir, runas))
    }

    /// Creates and starts a cluster without TLS on a blocking thread, so the
    /// test's runtime keeps serving; `None` (after the SKIP report) when the run
    /// exports no PostgreSQL binaries.
    pub async fn start_plain() -> Option<Arc<PgCluster>> {
        let (bindir, runas) = Self::bindir_from_env()?;
        let cluster = tokio::task::spawn_blocking(move || PgCluster::start(&bindir, &runas, None))
            .await
            .expect("the task starting PostgreSQL");
        Some(Arc::new(cluster))
    }

    /// Creates and starts a cluster, with TLS when `tls` is given.
    pub fn start(bindir: &str, runas: &str, tls: Option<&ServerTls>) -> PgCluster {
        let scratch = ScratchDir::new("opstore-pg");
        let datadir = scratch.path().join("data");
        fs::create_dir_all(&datadir).expect("create data dir");
        chown_to(&datadir, runas);
        set_mode(&datadir, 0o700);
        let mut cluster = PgCluster {
            bindir: bindir.to_owned(),
            runas: runas.to_owned(),
            datadir,
            _scratch: scratch,
            port: 0,
        };
        run(
            cluster
                .pg_command("initdb")
                .arg("-D")
                .arg(&cluster.datadir)
                .args([
                    "-A",
                    "trust",
                    "-U",
                    "opstore",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--no-sync",
                ]),
            "initdb",
        );
        let mut conf = String::from(
            "\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\nfsync = off\n\
             max_connections = 100\n",
        );
        if let Some(tls) = tls {
            // The server reads its key only when it is private to its user.
            for (src, name) in [(&tls.cert, "server.crt"), (&tls.key, "server.key")] {
                let dst = cluster.datadir.join(name);
                fs::copy(src, &dst).expect("copy server TLS file");
                chown_to(&dst, runas);
                set_mode(&dst, 0o600);
            }
            conf.push_str("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
        }
        let path = cluster.datadir.join("postgresql.conf");
        let mut text = fs::read_to_string(&path).expect("read postgresql.conf");
        text.push_str(&conf);
        fs::write(&path, text).expect("write postgresql.conf");
        // The chosen port may be taken before the server binds it; try a few.
        let mut last = String::new();
        for _ in 0..3 {
            cluster.port = free_port();
            match cluster.try_start() {
                Ok(()) => return cluster,
                Err(e) => last = e,
            }
        }
        panic!("PostgreSQL did not start: {last}");
    }

    fn pg_command(&self, program: &str) -> Command {
        let path = format!("{}/{program}", self.bindir);
        if self.runas.is_empty() {
            Command::new(path)
        } else {
            let mut c = Command::new("runuser");
            c.args(["-u", self.runas.as_str(), "--", path.as_str()]);
            c
        }
    }

    fn try_start(&self) -> Result<(), String> {
        let log = self.datadir.join("log");
        let port = format!("-p {}", self.port);
        let output = self
            .pg_command("pg_ctl")
            .arg("-D")
            .arg(&self.datadir)
            .arg("-l")
            .arg(&log)
            .args(["-o", port.as_str(), "-w", "-t", "60", "start"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("run pg_ctl start: {e}"))?;
        if output.status.success() {
            return Ok(());
        }
        Err(format!(
            "pg_ctl start: {}{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            fs::read_to_string(&log).unwrap_or_default()
        ))
    }

    /// Starts the stopped cluster again on the same port and data.
    pub fn restart_stopped(&self) {
        if let Err(e) = self.try_start() {
            panic!("restarting PostgreSQL on port {}: {e}", self.port);
        }
    }

    /// Stops the server (`-m fast`: sessions are terminated, in-flight
    /// statements fail) and waits until it is down.
    pub fn stop(&self) {
        run(
            self.pg_command("pg_ctl")
                .arg("-D")
                .arg(&self.datadir)
                .args(["-m", "fast", "-w", "-t", "60", "stop"]),
            "pg_ctl stop",
        );
    }

    /// Freezes the server with `SIGSTOP`: the postmaster first (so it forks no
    /// new backend), then every process it started. The kernel still accepts
    /// connections and buffers what clients send, but nothing answers, as with a
    /// hung host. The server resumes when the returned guard is dropped.
    pub fn freeze(&self) -> Frozen {
        let pid_file = self.datadir.join("postmaster.pid");
        let text = fs::read_to_string(&pid_file).expect("read postmaster.pid");
        let postmaster: u32 = text
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .expect("postmaster.pid starts with the postmaster's pid");
        signal("-STOP", &[postmaster]);
        let children = children_of(postmaster);
        signal("-STOP", &children);
        let mut pids = vec![postmaster];
        pids.extend(children);
        Frozen { pids }
    }

    /// Loopback port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://opstore@127.0.0.1:<port>/postgres` plus `params`.
    pub fn url(&self, params: &str) -> String {
        let mut url = format!("postgres://opstore@127.0.0.1:{}/postgres", self.port);
        if !params.is_empty() {
            url.push('?');
            url.push_str(params);
        }
        url
    }
}

/// A server stopped by [`PgCluster::freeze`]; dropping it lets the server go on.
#[derive(Debug)]
pub struct Frozen {
    pids: Vec<u32>,
}

impl Drop for Frozen {
    fn drop(&mut self) {
        signal("-CONT", &self.pids);
    }
}

/// Sends `signal` (`-STOP`, `-CONT`) to `pids` with kill(1).
fn signal(signal: &str, pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let status = Command::new("kill")
        .arg(signal)
        .args(pids.iter().map(u32::to_string))
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {signal} {pids:?} failed");
}

/// The processes whose parent is `parent`, read from /proc.
fn children_of(parent: u32) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc").expect("read /proc").flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // A process may end between listing and reading; it is then no child.
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // The command name in parentheses may hold spaces; the parent pid is the
        // second field after it.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(parent) {
            pids.push(pid);
        }
    }
    pids
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self
            .pg_command("pg_ctl")
            .arg("-D")
            .arg(&self.datadir)
            .args(["-m", "immediate", "-w", "stop"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

// ---------------------------------------------------------------------------------
// SecantusDB (MongoDB wire protocol)
// ---------------------------------------------------------------------------------

/// The `secantusd-py` launcher: `OPSTORE_TEST_SECANTUSD`, else the venv that
/// `cargo xtask test` creates under the target directory. `None` after the SKIP
/// report when neither exists.
pub fn secantusd_from_env() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("OPSTORE_TEST_SECANTUSD") {
        if !path.trim().is_empty() {
            return Some(PathBuf::from(path));
        }
    }
    let exe = std::env::current_exe().ok();
    let found = exe.as_deref().and_then(|exe| {
        exe.ancestors()
            .map(|dir| dir.join("pyenv/bin/secantusd-py"))
            .find(|p| p.exists())
    });
    if found.is_none() {
        skip(
            "mongo",
            "no secantusd-py found (set OPSTORE_TEST_SECANTUSD or run `cargo xtask test`, \
             which installs it under target/pyenv)",
        );
    }
    found
}

/// A SecantusDB server of the test's own that can be stopped and started on the
/// same port and storage. Killed and removed on drop.
#[derive(Debug)]
pub struct Secantus {
    launcher: PathBuf,
    scratch: ScratchDir,
    port: u16,
    tls: Option<ServerTls>,
    child: Option<Child>,
    starts: u32,
}

impl Secantus {
    /// Starts a server on a free port, with TLS when `tls` is given.
    pub fn start(launcher: &Path, tls: Option<ServerTls>) -> Secantus {
        let mut server = Secantus {
            launcher: launcher.to_owned(),
            scratch: ScratchDir::new("opstore-secantus"),
            port: 0,
            tls,
            child: None,
            starts: 0,
        };
        let mut last = String::new();
        for _ in 0..3 {
            server.port = free_port();
            match server.try_start() {
                Ok(()) => return server,
                Err(e) => last = e,
            }
        }
        panic!("SecantusDB did not start: {last}");
    }

    fn try_start(&mut self) -> Result<(), String> {
        self.starts += 1;
        let log_path = self
            .scratch
            .path()
            .join(format!("server-{}.log", self.starts));
        let log = fs::File::create(&log_path).map_err(|e| e.to_string())?;
        let mut command = Command::new(&self.launcher);
        command
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .arg("--storage-path")
            .arg(self.scratch.path().join("data"))
            .arg("--sync-on-commit")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log);
        if let Some(tls) = &self.tls {
            command
                .arg("--tls-cert-file")
                .arg(&tls.cert)
                .arg("--tls-key-file")
                .arg(&tls.key);
        }
        let mut child = command
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", self.launcher.display()))?;
        // The server prints nothing a test can wait on without parsing logs;
        // accepting TCP on its port is the readiness signal.
        let deadline = Instant::now() + HANG_GUARD;
        loop {
            if TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).is_ok() {
                self.child = Some(child);
                return Ok(());
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "SecantusDB exited with {status}: {}",
                    fs::read_to_string(&log_path).unwrap_or_default()
                ));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("SecantusDB did not listen on {}", self.port));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server gracefully (SIGTERM) and waits for it to exit.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + HANG_GUARD;
        while child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.wait();
    }

    /// Starts the stopped server on the same port and storage.
    pub fn start_again(&mut self) {
        if let Err(e) = self.try_start() {
            panic!("restarting SecantusDB on port {}: {e}", self.port);
        }
    }

    /// `mongodb://127.0.0.1:<port>/?directConnection=true` plus `params`.
    pub fn url(&self, params: &str) -> String {
        let mut url = format!("mongodb://127.0.0.1:{}/?directConnection=true", self.port);
        if !params.is_empty() {
            url.push('&');
            url.push_str(params);
        }
        url
    }
}

impl Drop for Secantus {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------
// Test certificates
// ---------------------------------------------------------------------------------

/// A CA and a server certificate it signed, for `localhost` and `127.0.0.1`.
#[derive(Debug)]
pub struct TestPki {
    dir: ScratchDir,
}

impl TestPki {
    /// `None` (after the SKIP report) when the `openssl` command is missing.
    pub fn generate(backend: &str) -> Option<TestPki> {
        let available = Command::new("openssl")
            .arg("version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !available {
            skip(backend, "the `openssl` command is not installed");
            return None;
        }
        let pki = TestPki {
            dir: ScratchDir::new("opstore-pki"),
        };
        pki.make_ca("ca");
        pki.make_ca("other-ca");
        let d = pki.dir.path();
        let ext = d.join("server.ext");
        fs::write(
            &ext,
            "basicConstraints = critical, CA:FALSE\n\
             keyUsage = critical, digitalSignature, keyEncipherment\n\
             extendedKeyUsage = serverAuth\n\
             subjectAltName = DNS:localhost, IP:127.0.0.1\n",
        )
        .expect("write extensions");
        run(
            Command::new("openssl")
                .args(["req", "-new", "-newkey", "ec", "-pkeyopt"])
                .args([
                    "ec_paramgen_curve:prime256v1",
                    "-nodes",
                    "-subj",
                    "/CN=localhost",
                ])
                .arg("-keyout")
                .arg(d.join("server.key"))
                .arg("-out")
                .arg(d.join("server.csr")),
            "openssl server request",
        );
        run(
            Command::new("openssl")
                .args(["x509", "-req", "-days", "2", "-sha256", "-set_serial", "2"])
                .arg("-in")
                .arg(d.join("server.csr"))
                .arg("-CA")
                .arg(d.join("ca.crt"))
                .arg("-CAkey")
                .arg(d.join("ca.key"))
                .arg("-extfile")
                .arg(&ext)
                .arg("-out")
                .arg(d.join("server.crt")),
            "openssl sign server certificate",
        );
        // Python's ssl module and PostgreSQL both read PKCS#8 or SEC1 keys; a
        // combined file serves servers that want one.
        let combined = format!(
            "{}{}",
            fs::read_to_string(d.join("server.crt")).expect("read cert"),
            fs::read_to_string(d.join("server.key")).expect("read key")
        );
        fs::write(d.join("server.pem"), combined).expect("write combined pem");
        for name in [
            "ca.crt",
            "other-ca.crt",
            "server.crt",
            "server.key",
            "server.pem",
        ] {
            set_mode(&d.join(name), 0o644);
        }
        Some(pki)
    }

    fn make_ca(&self, name: &str) {
        let d = self.dir.path();
        run(
            Command::new("openssl")
                .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
                .args([
                    "ec_paramgen_curve:prime256v1",
                    "-nodes",
                    "-days",
                    "2",
                    "-sha256",
                ])
                .args(["-subj", &format!("/CN=opstore test {name}")])
                .args(["-addext", "basicConstraints=critical,CA:TRUE"])
                .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
                .arg("-keyout")
                .arg(d.join(format!("{name}.key")))
                .arg("-out")
                .arg(d.join(format!("{name}.crt"))),
            "openssl CA",
        );
    }

    /// The CA that signed the server certificate.
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// A CA that signed nothing the server presents.
    pub fn wrong_ca(&self) -> PathBuf {
        self.dir.path().join("other-ca.crt")
    }

    /// The server's certificate and key.
    pub fn server(&self) -> ServerTls {
        ServerTls {
            cert: self.dir.path().join("server.crt"),
            key: self.dir.path().join("server.key"),
        }
    }
}
