//! `cargo xtask codegen [--check]`: the files generated from the entity definitions.
//!
//! The domain's schemas are written as JSON; each adapter that has a
//! `codegen::generate(&[&Schema]) -> Vec<(String, String)>` contributes its files (paths
//! relative to the adapter crate). The adapters are linked only with the `adapters`
//! feature, so this command runs itself again with that feature when built without it.

use std::fs;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use crate::workspace::{cargo, root};

/// The command that checks the generated files, built with the adapters linked in.
pub fn check_command() -> Command {
    let mut command = cargo();
    command.args([
        "run",
        "--quiet",
        "-p",
        "xtask",
        "--features",
        "adapters",
        "--",
        "codegen",
        "--check",
    ]);
    command
}

pub fn main(args: &[String]) -> Result<bool, String> {
    let mut check = false;
    for arg in args {
        match arg.as_str() {
            "--check" => check = true,
            other => return Err(format!("unknown option `{other}` for `codegen`")),
        }
    }
    if !cfg!(feature = "adapters") {
        let mut command = cargo();
        command.args([
            "run",
            "--quiet",
            "-p",
            "xtask",
            "--features",
            "adapters",
            "--",
            "codegen",
        ]);
        if check {
            command.arg("--check");
        }
        let status = command
            .status()
            .map_err(|e| format!("running codegen with the adapters feature: {e}"))?;
        return Ok(status.success());
    }
    let files = generate()?;
    let root = root();
    if check {
        let stale: Vec<&PathBuf> = files
            .iter()
            .filter(|(path, contents)| {
                fs::read_to_string(root.join(path)).ok().as_deref() != Some(contents.as_str())
            })
            .map(|(path, _)| path)
            .collect();
        if stale.is_empty() {
            println!("codegen: {} generated files are up to date", files.len());
            return Ok(true);
        }
        for path in &stale {
            println!("codegen: stale: {}", path.display());
        }
        println!("codegen: run `cargo xtask codegen` and commit the result");
        return Ok(false);
    }
    for (path, contents) in &files {
        let full = root.join(path);
        if fs::read_to_string(&full).ok().as_deref() == Some(contents.as_str()) {
            println!("codegen: unchanged {}", path.display());
            continue;
        }
        if let Some(dir) = full.parent() {
            fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        }
        fs::write(&full, contents).map_err(|e| format!("writing {}: {e}", full.display()))?;
        println!("codegen: wrote {}", path.display());
    }
    Ok(true)
}

/// Every generated file as (path relative to the workspace root, contents).
fn generate() -> Result<Vec<(PathBuf, String)>, String> {
    let schemas = opstore_domain::entities::all_schemas();
    let json = serde_json::to_string_pretty(&schemas)
        .map_err(|e| format!("serializing the entity schemas: {e}"))?;
    let mut files = vec![(
        PathBuf::from("crates/opstore-domain/schema/entities.json"),
        json + "\n",
    )];
    for (crate_dir, generated) in adapters::generate(&schemas) {
        for (path, contents) in generated {
            files.push((adapter_path(crate_dir, &path)?, contents));
        }
    }
    let mut paths: Vec<&PathBuf> = files.iter().map(|(p, _)| p).collect();
    paths.sort();
    if let Some(pair) = paths.windows(2).find(|pair| pair[0] == pair[1]) {
        return Err(format!("two generators write {}", pair[0].display()));
    }
    Ok(files)
}

/// A generated path inside an adapter crate; it must stay inside that crate.
fn adapter_path(crate_dir: &str, path: &str) -> Result<PathBuf, String> {
    let relative = Path::new(path);
    if !relative
        .components()
        .all(|c| matches!(c, Component::Normal(_)))
    {
        return Err(format!(
            "{crate_dir} generates `{path}`, which is not a plain relative path"
        ));
    }
    Ok(Path::new(crate_dir).join(relative))
}

/// The adapters' generators, by crate directory; none without the `adapters` feature.
mod adapters {
    use opstore_domain::Schema;

    #[cfg(feature = "adapters")]
    pub fn generate(schemas: &[&'static Schema]) -> Vec<(&'static str, Vec<(String, String)>)> {
        vec![
            (
                "crates/opstore-sqlite",
                opstore_sqlite::codegen::generate(schemas),
            ),
            (
                "crates/opstore-postgres",
                opstore_postgres::codegen::generate(schemas),
            ),
            (
                "crates/opstore-mongo",
                opstore_mongo::codegen::generate(schemas),
            ),
            (
                "crates/opstore-scylla",
                opstore_scylla::codegen::generate(schemas),
            ),
        ]
    }

    #[cfg(not(feature = "adapters"))]
    pub fn generate(_schemas: &[&'static Schema]) -> Vec<(&'static str, Vec<(String, String)>)> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adapter_paths_stay_inside_the_crate() {
        assert_eq!(
            adapter_path("crates/opstore-postgres", "migrations/0001.sql").unwrap(),
            PathBuf::from("crates/opstore-postgres/migrations/0001.sql")
        );
        assert!(adapter_path("crates/opstore-postgres", "../opstore-domain/x").is_err());
        assert!(adapter_path("crates/opstore-postgres", "/etc/passwd").is_err());
    }

    #[test]
    fn generated_schema_json_is_valid_and_names_every_entity() {
        let files = generate().unwrap();
        let (_, json) = &files[0];
        let value: serde_json::Value = serde_json::from_str(json).unwrap();
        let count = value.as_array().map(Vec::len).unwrap_or_default();
        assert_eq!(count, opstore_domain::entities::all_schemas().len());
    }
}
