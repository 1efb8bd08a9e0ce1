//! Adapter vs raw driver on the CQL server named by `OPSTORE_SCYLLA_URL`
//! (`cargo xtask bench scylla` starts a Cassandra node when it is unset): the
//! scenarios of `opstore_scylla::bench`, printed for people and as `BENCH` lines.
//! `OPSTORE_BENCH_QUICK=1` runs the smaller sizes `cargo xtask bench` uses.

use opstore_testkit::bench::{BenchError, Scale, report};

fn main() {
    let Ok(url) = std::env::var("OPSTORE_SCYLLA_URL") else {
        println!("SKIP scylla bench: no server (OPSTORE_SCYLLA_URL is not set)");
        return;
    };
    let outcome = tokio::runtime::Runtime::new()
        .map_err(BenchError::from)
        .and_then(|rt| {
            rt.block_on(async {
                if let Ok(version) = opstore_scylla::bench::server_version(&url).await {
                    println!("BENCH_SERVER {version}");
                }
                opstore_scylla::bench::run(&url, Scale::from_env()).await
            })
        });
    match outcome {
        Ok(figures) => report(&figures),
        Err(e) => {
            eprintln!("scylla bench failed: {e}");
            std::process::exit(1);
        }
    }
}
