//! Memory adapter against a plain `RwLock<HashMap>` + clone baseline, in one run:
//! the scenarios of `opstore_memory::bench`, printed for people and as `BENCH`
//! lines. `OPSTORE_BENCH_QUICK=1` runs the smaller sizes `cargo xtask bench` uses.

fn main() {
    let outcome = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(opstore_testkit::bench::BenchError::from)
        .and_then(|rt| {
            rt.block_on(opstore_memory::bench::run(
                opstore_testkit::bench::Scale::from_env(),
            ))
        });
    match outcome {
        Ok(figures) => opstore_testkit::bench::report(&figures),
        Err(e) => {
            eprintln!("memory bench failed: {e}");
            std::process::exit(1);
        }
    }
}
