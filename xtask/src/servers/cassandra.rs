//! A throwaway single-node Apache Cassandra for the CQL adapter's suite: the
//! `cassandra-all` jars and their dependencies come from Maven Central through
//! `mvn dependency:copy-dependencies` into the target directory (once per version),
//! and the node runs `CassandraDaemon` in the foreground on free loopback ports with
//! a generated `cassandra.yaml`.

use std::fs;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{Guard, RunDir, Server, free_port, log_tail};
use crate::workspace::{Workspace, env_nonempty};

/// The Cassandra release the CQL suite runs against.
pub const CASSANDRA_VERSION: &str = "5.0.9";

/// How long a node may take to open its native port.
const STARTUP_LIMIT: Duration = Duration::from_secs(240);

/// The JDK 17 module flags of Cassandra's `conf/jvm17-server.options`.
const JVM17_FLAGS: &[&str] = &[
    "--add-exports=java.base/jdk.internal.misc=ALL-UNNAMED",
    "--add-exports=java.base/jdk.internal.ref=ALL-UNNAMED",
    "--add-exports=java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-exports=java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED",
    "--add-exports=java.rmi/sun.rmi.registry=ALL-UNNAMED",
    "--add-exports=java.rmi/sun.rmi.server=ALL-UNNAMED",
    "--add-exports=java.sql/java.sql=ALL-UNNAMED",
    "--add-exports=java.base/java.lang.ref=ALL-UNNAMED",
    "--add-exports=jdk.unsupported/sun.misc=ALL-UNNAMED",
    "--add-opens=java.base/java.lang.module=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.loader=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.ref=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.reflect=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.math=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.module=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.util.jar=ALL-UNNAMED",
    "--add-opens=jdk.management/com.sun.management.internal=ALL-UNNAMED",
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens=java.base/java.io=ALL-UNNAMED",
    "--add-opens=java.base/java.nio=ALL-UNNAMED",
    "--add-opens=java.base/java.util.concurrent=ALL-UNNAMED",
    "--add-opens=java.base/java.util=ALL-UNNAMED",
    "--add-opens=java.base/java.util.concurrent.atomic=ALL-UNNAMED",
    "--add-opens=java.base/java.lang=ALL-UNNAMED",
    "--add-opens=java.base/java.math=ALL-UNNAMED",
    "--add-opens=java.base/java.lang.reflect=ALL-UNNAMED",
    "--add-opens=java.base/java.net=ALL-UNNAMED",
];

/// Uses `OPSTORE_SCYLLA_URL` when set, else starts a Cassandra node in `run_dir`.
pub fn cassandra(ws: &Workspace, run_dir: &RunDir) -> Result<Server, String> {
    if let Some(url) = env_nonempty("OPSTORE_SCYLLA_URL") {
        println!("using the CQL cluster from OPSTORE_SCYLLA_URL");
        return Ok(Server::external("OPSTORE_SCYLLA_URL", url));
    }
    let lib = ensure_jars(&ws.target_dir.join("cassandra").join(CASSANDRA_VERSION))?;
    let node = CassandraNode::start(&lib, run_dir.path())?;
    println!(
        "started Apache Cassandra {CASSANDRA_VERSION} at {} (data dir {})",
        node.url(),
        node.dir.display()
    );
    Ok(Server {
        env: vec![("OPSTORE_SCYLLA_URL".to_owned(), node.url())],
        _guard: Some(Guard::Cassandra(node)),
    })
}

/// Returns the directory of the Cassandra jars, fetching them with Maven when the
/// pinned version is not there yet.
fn ensure_jars(dir: &Path) -> Result<PathBuf, String> {
    let lib = dir.join("lib");
    let done = dir.join("complete");
    if done.exists() {
        return Ok(lib);
    }
    for tool in ["java", "mvn"] {
        let found = Command::new(tool)
            .arg("-version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return Err(format!(
                "no `{tool}` on PATH: the Cassandra node needs a JDK 17 and Maven"
            ));
        }
    }
    fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let pom = dir.join("pom.xml");
    let text = format!(
        "<project xmlns=\"http://maven.apache.org/POM/4.0.0\">\n  <modelVersion>4.0.0</modelVersion>\n  \
         <groupId>opstore.test</groupId>\n  <artifactId>cassandra-node</artifactId>\n  <version>1</version>\n  \
         <packaging>pom</packaging>\n  <dependencies>\n    <dependency>\n      \
         <groupId>org.apache.cassandra</groupId>\n      <artifactId>cassandra-all</artifactId>\n      \
         <version>{CASSANDRA_VERSION}</version>\n    </dependency>\n  </dependencies>\n</project>\n"
    );
    fs::write(&pom, text).map_err(|e| format!("writing {}: {e}", pom.display()))?;
    println!("fetching cassandra-all {CASSANDRA_VERSION} and its dependencies with Maven");
    let output = Command::new("mvn")
        .args(["-q", "-B", "-f"])
        .arg(&pom)
        .arg("dependency:copy-dependencies")
        .arg(format!("-DoutputDirectory={}", lib.display()))
        .output()
        .map_err(|e| format!("running mvn: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "mvn dependency:copy-dependencies for cassandra-all {CASSANDRA_VERSION} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    fs::write(&done, CASSANDRA_VERSION).map_err(|e| format!("writing {}: {e}", done.display()))?;
    Ok(lib)
}

/// A node owned by this run; killed and its directory removed on drop.
#[derive(Debug)]
pub(super) struct CassandraNode {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl CassandraNode {
    fn start(lib: &Path, run_dir: &Path) -> Result<CassandraNode, String> {
        let dir = run_dir.join("cassandra");
        fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let port = free_port()?;
        let storage_port = free_port()?;
        let yaml = dir.join("cassandra.yaml");
        fs::write(&yaml, node_yaml(&dir, port, storage_port))
            .map_err(|e| format!("writing {}: {e}", yaml.display()))?;
        let logback = dir.join("logback.xml");
        fs::write(&logback, LOGBACK).map_err(|e| format!("writing {}: {e}", logback.display()))?;
        let jamm = fs::read_dir(lib)
            .map_err(|e| format!("reading {}: {e}", lib.display()))?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("jamm-"))
            })
            .ok_or_else(|| format!("no jamm agent jar in {}", lib.display()))?;
        let log_path = dir.join("system.log");
        let log = fs::File::create(&log_path)
            .map_err(|e| format!("creating {}: {e}", log_path.display()))?;
        let log_err = log
            .try_clone()
            .map_err(|e| format!("opening {}: {e}", log_path.display()))?;
        let child = Command::new("java")
            .args(["-Xms1536m", "-Xmx1536m", "-XX:+UseG1GC", "-Xss256k"])
            .arg("-Djdk.attach.allowAttachSelf=true")
            .args(JVM17_FLAGS)
            .arg(format!("-javaagent:{}", jamm.display()))
            .arg(format!("-Dcassandra.config=file://{}", yaml.display()))
            .arg(format!("-Dlogback.configurationFile={}", logback.display()))
            .arg(format!("-Dcassandra.storagedir={}", dir.display()))
            .args([
                "-Dcassandra-foreground=yes",
                "-Dcassandra.skip_wait_for_gossip_to_settle=0",
            ])
            .arg("-cp")
            .arg(format!("{}/*", lib.display()))
            .arg("org.apache.cassandra.service.CassandraDaemon")
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| format!("starting java for Cassandra: {e}"))?;
        // A run killed before its cleanup leaves the pid for the next run to stop.
        let pid_path = dir.join("pid");
        fs::write(&pid_path, child.id().to_string())
            .map_err(|e| format!("writing {}: {e}", pid_path.display()))?;
        let mut node = CassandraNode { child, dir, port };
        node.wait_ready(&log_path)?;
        Ok(node)
    }

    /// Waits until the native port accepts connections, which Cassandra opens last.
    fn wait_ready(&mut self, log_path: &Path) -> Result<(), String> {
        let deadline = Instant::now() + STARTUP_LIMIT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "Cassandra exited with {status}:\n{}",
                    log_tail(log_path, 30)
                ));
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        Err(format!(
            "Cassandra did not open its native port {} within {STARTUP_LIMIT:?}:\n{}",
            self.port,
            log_tail(log_path, 30)
        ))
    }

    fn url(&self) -> String {
        format!("scylla://127.0.0.1:{}/opstore", self.port)
    }
}

impl Drop for CassandraNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
        println!("stopped Cassandra on port {}", self.port);
    }
}

/// Kills the node a killed run left running in `dir`, if it is still that node.
pub(super) fn stop_stale(dir: &Path) {
    let Some(pid) = fs::read_to_string(dir.join("pid"))
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok())
    else {
        return;
    };
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    if !String::from_utf8_lossy(&cmdline).contains("CassandraDaemon") {
        return;
    }
    let _ = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// A single-node configuration: loopback only, no snapshots on drop or truncate (the
/// suite drops a keyspace per test), no authentication.
///
/// The node shares two cores with the build and the other suites, so Paxos rounds
/// under contention get the server-side time a loaded machine needs; the
/// defaults (1 s for contention) turn a slow round into an "outcome unknown".
fn node_yaml(dir: &Path, port: u16, storage_port: u16) -> String {
    let d = dir.display();
    format!(
        "cluster_name: opstore-test\n\
         num_tokens: 1\n\
         partitioner: org.apache.cassandra.dht.Murmur3Partitioner\n\
         commitlog_sync: periodic\n\
         commitlog_sync_period: 10000ms\n\
         data_file_directories: [{d}/data]\n\
         commitlog_directory: {d}/commitlog\n\
         saved_caches_directory: {d}/saved_caches\n\
         hints_directory: {d}/hints\n\
         cdc_raw_directory: {d}/cdc_raw\n\
         seed_provider:\n  - class_name: org.apache.cassandra.locator.SimpleSeedProvider\n    \
         parameters:\n      - seeds: \"127.0.0.1:{storage_port}\"\n\
         listen_address: 127.0.0.1\n\
         rpc_address: 127.0.0.1\n\
         storage_port: {storage_port}\n\
         native_transport_port: {port}\n\
         start_native_transport: true\n\
         endpoint_snitch: SimpleSnitch\n\
         auto_snapshot: false\n\
         authenticator: AllowAllAuthenticator\n\
         authorizer: AllowAllAuthorizer\n\
         cas_contention_timeout: 15000ms\n\
         write_request_timeout: 15000ms\n\
         read_request_timeout: 15000ms\n"
    )
}

/// Warnings and errors only, to the node's log file.
const LOGBACK: &str = "<configuration>\n  <appender name=\"OUT\" class=\"ch.qos.logback.core.ConsoleAppender\">\n    \
<encoder><pattern>%level %date{HH:mm:ss.SSS} %logger{20} %msg%n</pattern></encoder>\n  </appender>\n  \
<root level=\"WARN\"><appender-ref ref=\"OUT\"/></root>\n</configuration>\n";
