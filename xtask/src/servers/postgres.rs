//! A throwaway PostgreSQL cluster from the machine's `initdb`/`pg_ctl`, run as an
//! unprivileged user when this process is root.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{Guard, RunDir, Server, command_stdout, free_port, is_root, log_tail, user_name_of};
use crate::workspace::env_nonempty;

/// Uses `OPSTORE_POSTGRES_URL` when set, else starts a throwaway cluster in `run_dir`.
pub fn postgres(run_dir: &RunDir) -> Result<Server, String> {
    if let Some(url) = env_nonempty("OPSTORE_POSTGRES_URL") {
        println!("using PostgreSQL from OPSTORE_POSTGRES_URL");
        return Ok(Server::external("OPSTORE_POSTGRES_URL", url));
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
        _guard: Some(Guard::Postgres(cluster)),
    })
}

/// A cluster owned by this run. Its settings (port included) live in the data dir's
/// `opstore.conf`, so a test can stop it and start it again with a plain
/// `pg_ctl -D <datadir> -l <datadir>/log -w start` (as `OPSTORE_TEST_PG_RUNAS` when set).
#[derive(Debug)]
pub(super) struct PgCluster {
    bindir: PathBuf,
    datadir: PathBuf,
    runas: Option<String>,
    port: u16,
}

/// Stops a cluster a killed run left running in `datadir`.
pub(super) fn stop_stale(datadir: &Path) {
    if !datadir.join("postmaster.pid").exists() {
        return;
    }
    let Ok(bindir) = pg_bindir() else { return };
    let runas = fs::metadata(datadir)
        .ok()
        .filter(|_| is_root())
        .and_then(|m| user_name_of(std::os::unix::fs::MetadataExt::uid(&m)));
    let _ = pg_command(&bindir, "pg_ctl", runas.as_deref())
        .arg("-D")
        .arg(datadir)
        .args(["-m", "immediate", "-w", "stop"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
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
