//! A throwaway SecantusDB (MongoDB wire protocol, single-node replica set) from a
//! Python venv under the target directory.

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::{Guard, RunDir, Server, log_tail};
use crate::workspace::{Workspace, env_nonempty};

/// The SecantusDB release the MongoDB suite runs against.
const SECANTUS_REQUIREMENT: &str = "secantusdb==0.7.0b3";
const SECANTUS_VERSION: &str = "0.7.0b3";

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
        return Ok(Server::external("OPSTORE_MONGODB_URL", url));
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
        _guard: Some(Guard::Mongo(server)),
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
pub(super) struct MongoServer {
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
