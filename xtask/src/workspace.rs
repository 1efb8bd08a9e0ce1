//! The workspace as `cargo metadata` describes it: packages, their targets, the target dir.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

/// A workspace package and the names of its targets by kind.
#[derive(Debug)]
pub struct Package {
    pub name: String,
    pub targets: Vec<Target>,
}

#[derive(Debug)]
pub struct Target {
    pub name: String,
    pub kinds: Vec<String>,
}

#[derive(Debug)]
pub struct Workspace {
    pub target_dir: PathBuf,
    pub packages: Vec<Package>,
}

impl Workspace {
    /// Reads the workspace members with `cargo metadata --no-deps`.
    pub fn load() -> Result<Workspace, String> {
        let root = root();
        let output = cargo()
            .args(["metadata", "--no-deps", "--format-version", "1"])
            .current_dir(&root)
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("cargo metadata: {e}"))?;
        if !output.status.success() {
            return Err(format!("cargo metadata exited with {}", output.status));
        }
        let meta: Value = serde_json::from_slice(&output.stdout)
            .map_err(|e| format!("cargo metadata: unreadable output: {e}"))?;
        let target_dir = meta["target_directory"]
            .as_str()
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        let members: Vec<&str> = meta["workspace_members"]
            .as_array()
            .map(|ids| ids.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let packages = meta["packages"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter(|p| p["id"].as_str().is_some_and(|id| members.contains(&id)))
            .map(|p| Package {
                name: p["name"].as_str().unwrap_or_default().to_owned(),
                targets: p["targets"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                    .iter()
                    .map(|t| Target {
                        name: t["name"].as_str().unwrap_or_default().to_owned(),
                        kinds: t["kind"]
                            .as_array()
                            .map(Vec::as_slice)
                            .unwrap_or_default()
                            .iter()
                            .filter_map(Value::as_str)
                            .map(str::to_owned)
                            .collect(),
                    })
                    .collect(),
            })
            .collect();
        Ok(Workspace {
            target_dir,
            packages,
        })
    }

    pub fn package(&self, name: &str) -> Option<&Package> {
        self.packages.iter().find(|p| p.name == name)
    }

    pub fn has_package(&self, name: &str) -> bool {
        self.package(name).is_some()
    }
}

impl Package {
    /// Names of the targets of one kind (`test`, `bench`, ...).
    pub fn targets_of_kind(&self, kind: &str) -> Vec<&str> {
        self.targets
            .iter()
            .filter(|t| t.kinds.iter().any(|k| k == kind))
            .map(|t| t.name.as_str())
            .collect()
    }
}

/// The workspace root: the parent of this crate's manifest directory.
///
/// `cargo xtask` runs under `cargo run`, which names the manifest directory at
/// run time; that wins over the one compiled in, since a binary built for
/// another checkout sharing the target directory may be reused unchanged.
pub fn root() -> PathBuf {
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest_dir
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or(manifest_dir)
}

/// A `cargo` command: the cargo that runs this task when there is one.
pub fn cargo() -> Command {
    let program = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(program);
    command.current_dir(root());
    command
}

/// Whether this run is CI (`CI=true`), where a server that cannot start is a failure.
pub fn is_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// A non-empty environment variable.
pub fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}
