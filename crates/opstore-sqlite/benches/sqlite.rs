//! opstore on SQLite against hand-written sqlx-sqlite on the same tables, in one
//! run (`cargo xtask bench sqlite`): the scenarios of `opstore_sqlite::bench`,
//! printed for people and as `BENCH` lines. `OPSTORE_BENCH_QUICK=1` runs the
//! smaller sizes `cargo xtask bench` uses. The database file lives in the
//! system's temporary directory, or `OPSTORE_BENCH_DIR` when set.

use opstore_testkit::bench::{BenchError, Scale, report};

fn main() {
    let dir = std::env::var_os("OPSTORE_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let outcome = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(BenchError::from)
        .and_then(|rt| {
            rt.block_on(async {
                if let Ok(version) = opstore_sqlite::bench::server_version().await {
                    println!("BENCH_SERVER {version}");
                }
                opstore_sqlite::bench::run(&dir, Scale::from_env()).await
            })
        });
    match outcome {
        Ok(figures) => report(&figures),
        Err(e) => {
            eprintln!("sqlite bench failed: {e}");
            std::process::exit(1);
        }
    }
}
