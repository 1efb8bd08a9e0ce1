//! opstore on PostgreSQL against hand-written sqlx on the same tables, in one run
//! on the server named by `OPSTORE_POSTGRES_URL` (`cargo xtask bench postgres`):
//! the scenarios of `opstore_postgres::bench`, printed for people and as `BENCH`
//! lines. `OPSTORE_BENCH_QUICK=1` runs the smaller sizes `cargo xtask bench`
//! uses; `OPSTORE_BENCH_ONLY=feed` runs only the change-feed latency.

use opstore_testkit::bench::{BenchError, Scale, report};

fn main() {
    let Ok(url) = std::env::var("OPSTORE_POSTGRES_URL") else {
        println!(
            "SKIP postgres bench: OPSTORE_POSTGRES_URL is not set (run `cargo xtask bench postgres`)"
        );
        return;
    };
    let outcome = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(BenchError::from)
        .and_then(|rt| {
            rt.block_on(async {
                if let Ok(version) = opstore_postgres::bench::server_version(&url).await {
                    println!("BENCH_SERVER {version}");
                }
                opstore_postgres::bench::run(&url, Scale::from_env()).await
            })
        });
    match outcome {
        Ok(figures) => report(&figures),
        Err(e) => {
            eprintln!("postgres bench failed: {e}");
            std::process::exit(1);
        }
    }
}
