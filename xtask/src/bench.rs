//! `cargo xtask bench [GROUP]...`: runs the benchmarks that exist, with the servers
//! they need.

use crate::servers::{self, RunDir, Server};
use crate::workspace::{Workspace, cargo};

/// A benchmark group: its package and the servers its benchmarks need.
struct Group {
    name: &'static str,
    package: &'static str,
    postgres: bool,
    mongo: bool,
}

const GROUPS: [Group; 5] = [
    Group {
        name: "memory",
        package: "opstore-memory",
        postgres: false,
        mongo: false,
    },
    Group {
        name: "postgres",
        package: "opstore-postgres",
        postgres: true,
        mongo: false,
    },
    Group {
        name: "mongo",
        package: "opstore-mongo",
        postgres: false,
        mongo: true,
    },
    // The Scylla benchmarks find their server through OPSTORE_SCYLLA_URL themselves.
    Group {
        name: "scylla",
        package: "opstore-scylla",
        postgres: false,
        mongo: false,
    },
    Group {
        name: "processors",
        package: "opstore-app",
        postgres: true,
        mongo: false,
    },
];

pub fn main(args: &[String]) -> Result<bool, String> {
    let mut selected: Vec<&Group> = Vec::new();
    for arg in args {
        if arg == "all" {
            selected.extend(GROUPS.iter());
            continue;
        }
        let group = GROUPS
            .iter()
            .find(|g| g.name == arg)
            .ok_or_else(|| format!("unknown benchmark group `{arg}`"))?;
        selected.push(group);
    }
    if selected.is_empty() {
        selected.extend(GROUPS.iter());
    }
    let ws = Workspace::load()?;
    let run_dir = RunDir::create(&ws)?;
    let mut pg: Option<Result<Server, String>> = None;
    let mut mongo: Option<Result<Server, String>> = None;
    let mut ok = true;
    for group in GROUPS
        .iter()
        .filter(|g| selected.iter().any(|s| s.name == g.name))
    {
        let benches = ws
            .package(group.package)
            .map(|p| p.targets_of_kind("bench"))
            .unwrap_or_default();
        if benches.is_empty() {
            println!(
                "bench {}: {} has no benchmarks yet",
                group.name, group.package
            );
            continue;
        }
        let mut env = Vec::new();
        let mut missing = None;
        if group.postgres {
            match pg.get_or_insert_with(|| servers::postgres(&run_dir)) {
                Ok(server) => env.extend(server.env.iter().cloned()),
                Err(reason) => missing = Some(format!("PostgreSQL: {reason}")),
            }
        }
        if group.mongo {
            match mongo.get_or_insert_with(|| servers::mongo(&ws, &run_dir)) {
                Ok(server) => env.extend(server.env.iter().cloned()),
                Err(reason) => missing = Some(format!("MongoDB: {reason}")),
            }
        }
        if let Some(reason) = missing {
            println!("SKIP bench {}: no server ({reason})", group.name);
            continue;
        }
        for bench in benches {
            let mut command = cargo();
            command
                .args(["bench", "-p", group.package, "--bench", bench])
                .envs(env.iter().map(|(k, v)| (k, v)));
            crate::run::announce(&command);
            let status = command
                .status()
                .map_err(|e| format!("running cargo bench: {e}"))?;
            if !status.success() {
                println!("bench {} ({bench}) failed: {status}", group.name);
                ok = false;
            }
        }
    }
    drop(pg);
    drop(mongo);
    drop(run_dir);
    Ok(ok)
}
