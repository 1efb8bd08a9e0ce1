//! opstore-mongo against the raw `mongodb` driver with typed collections, on the
//! server named by `OPSTORE_MONGODB_URL` (`cargo xtask bench mongo` starts one):
//! the scenarios of `opstore_mongo::bench`, printed for people and as `BENCH`
//! lines. `OPSTORE_BENCH_QUICK=1` runs the smaller sizes `cargo xtask bench` uses.

use opstore_testkit::bench::{Scale, report};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let Ok(url) = std::env::var("OPSTORE_MONGODB_URL") else {
        println!(
            "SKIP mongo bench: OPSTORE_MONGODB_URL is not set (run `cargo xtask bench mongo`)"
        );
        return;
    };
    if let Ok(version) = opstore_mongo::bench::server_version(&url).await {
        println!("BENCH_SERVER {version}");
    }
    match opstore_mongo::bench::run(&url, Scale::from_env()).await {
        Ok(figures) => report(&figures),
        Err(e) => {
            eprintln!("mongo bench failed: {e}");
            std::process::exit(1);
        }
    }
}
