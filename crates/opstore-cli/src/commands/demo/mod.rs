//! `opstore demo`: a complete remediation pipeline built only from the public
//! API, checking its own invariants.
//!
//! A producer (`producer.rs`) writes health events for a fleet of nodes. An
//! [`EventProcessor`](opstore_app::processor::EventProcessor) (see
//! `processors.rs`) quarantines nodes on fatal events, deduplicates error records
//! and queues one drain job per quarantine session. Drain workers (`workers.rs`) start jobs
//! with the worker pattern of the control plane (job lock lease, heartbeats,
//! fenced writes) and write remediation logs. Along the way some handler calls
//! fail once and are retried, one poison event exhausts its retries and lands
//! in the dead letters, one worker crashes holding a lease (another worker
//! takes the lease over and the stale holder is fenced out), and an
//! operator (`operator.rs`) cancels a node's quarantine session midway. The invariants
//! (`invariants.rs`) are checked against the store at the end.
//!
//! Every random choice comes from a seeded generator, and the operator acts at
//! a point where the pipeline is idle, so the counts in the summary are the
//! same for the same seed; only timings vary. Every wait is bounded by the
//! stall timeout (see `wait.rs`): a run that stops making progress ends with exit
//! code 1 and names the phase and invariant that did not complete.

mod config;
mod invariants;
mod operator;
mod processors;
mod producer;
mod state;
mod summary;
mod wait;
mod workers;

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use opstore_app::services::control_plane::ControlPlaneService;
use opstore_app::{DataStore, StoreConfig};
use tokio_util::sync::CancellationToken;

pub use config::DemoConfig;
pub use summary::{DemoSummary, Invariant, print};

use crate::cli::DemoArgs;
use crate::error::CliError;
use crate::output::OutputFormat;
use config::{Plan, Timing, node_name, run_name};
use invariants::CheckInput;
use operator::OperatorReport;
use producer::Producer;
use state::{Pipeline, store_err};
use wait::{Phase, Supervisor, Tasks};

/// Opens the store, runs the demo, prints the summary; a failed invariant is a
/// runtime error after the summary.
pub async fn run(
    config: &StoreConfig,
    args: &DemoArgs,
    format: OutputFormat,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let demo = DemoConfig::from(args);
    let store = wait::bounded(Phase::Opening, demo.stall_timeout, async {
        Box::pin(DataStore::open(config))
            .await
            .map_err(|e| crate::connect_error(config, e))
    })
    .await?;
    let progress = if format == OutputFormat::Table && std::io::stdout().is_terminal() {
        ProgressBar::with_draw_target(Some(u64::from(args.events)), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    // Boxed, like the store's opening above: these futures are deep enough
    // to overflow the compiler's layout query limit when nested inline.
    let summary = Box::pin(run_demo(&store, &demo, &progress)).await;
    progress.finish_and_clear();
    // Closing waits for connections in use; a server that stopped answering
    // must not keep the run from reporting.
    if tokio::time::timeout(demo.stall_timeout, store.close())
        .await
        .is_err()
    {
        tracing::warn!("closing the store did not finish; leaving it to the exit");
    }
    let summary = summary?;
    print(&summary, format, out)?;
    let failed = summary.failed();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(CliError::runtime(format!(
            "demo invariant failed: {}",
            failed.join("; ")
        )))
    }
}

/// Runs the pipeline on `store` and checks its invariants.
pub async fn run_demo(
    store: &DataStore,
    config: &DemoConfig,
    progress: &ProgressBar,
) -> Result<DemoSummary, CliError> {
    if config.events < 2 || config.nodes < 1 || config.workers < 1 {
        return Err(CliError::usage(
            "demo needs at least 2 events, 1 node and 1 worker",
        ));
    }
    if config.stall_timeout.is_zero() {
        return Err(CliError::usage(
            "demo needs a stall timeout of at least 1 s",
        ));
    }
    progress.set_style(
        ProgressStyle::with_template("{spinner} [{bar:40}] {pos}/{len} events  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let plan = Plan::draw(config);
    let backend = store.store().backend().to_owned();
    let run = run_name(&backend, config.seed);
    let timing = Timing::for_backend(&backend);
    tracing::info!(%run, %backend, ?timing, "demo starting");
    progress.set_message("registering nodes");
    let control = ControlPlaneService::new(store.store().clone())
        .map_err(store_err("opening the control plane"))?;
    let clusters = wait::bounded(
        Phase::RegisteringNodes,
        config.stall_timeout,
        producer::register_nodes(&control, &run, config.nodes),
    )
    .await?;
    let pipeline = Arc::new(Pipeline::open(
        store,
        run,
        timing,
        clusters,
        plan.crash_session,
    )?);
    let (processor, processor_name) = processors::spawn(&pipeline, store)?;
    let stop = CancellationToken::new();
    let mut tasks = Tasks::new();
    for w in 0..config.workers {
        tasks.spawn(Arc::clone(&pipeline).worker(w as usize, stop.clone()));
    }
    tasks.spawn(Arc::clone(&pipeline).reaper(stop.clone()));
    let mut supervisor = Supervisor {
        pipeline: &pipeline,
        processor: &processor,
        tasks,
        progress,
        stall_timeout: config.stall_timeout,
    };

    let started = Instant::now();
    let outcome = Box::pin(drive(&pipeline, &plan, &mut supervisor, progress)).await;
    let elapsed = started.elapsed();
    // On failure too, nothing of the run is left running: the workers stop,
    // and the processor is told to stop.
    let stopped = supervisor.stop_tasks(&stop).await;
    let report = wait::stop_processor(processor, config.stall_timeout).await;
    let (producer, operator) = outcome?;
    stopped?;
    let report = report?;
    progress.set_position(progress.length().unwrap_or(0));

    let check = invariants::check(CheckInput {
        store,
        pipeline: &pipeline,
        config,
        backend,
        processor_name: &processor_name,
        stored: &producer.stored,
        duplicates: producer.duplicates,
        retried: report.stats.retries,
        dead_lettered: report.stats.dead_lettered,
        operator: &operator,
        elapsed,
    });
    wait::bounded(Phase::Checking, config.stall_timeout, check).await
}

/// Produces every event; midway, once the pipeline is idle, the operator
/// cancels a node's session; at the end, waits until the pipeline is idle.
async fn drive(
    pipeline: &Pipeline,
    plan: &Plan,
    supervisor: &mut Supervisor<'_>,
    progress: &ProgressBar,
) -> Result<(Producer, OperatorReport), CliError> {
    let mut producer = Producer::default();
    let mut operator = OperatorReport::default();
    let half = plan.events.len() / 2;
    let limit = supervisor.stall_timeout;
    progress.set_message("producing");
    for (i, planned) in plan.events.iter().enumerate() {
        if i == half {
            progress.set_message("waiting for the first half");
            supervisor
                .wait_idle(Phase::FirstHalf, producer.stored.len())
                .await?;
            if let Some(node) = plan.cancel_node {
                let node = node_name(&pipeline.run, node);
                progress.set_message(format!("operator cancels {node}"));
                let cancel = operator::cancel_session(pipeline, &node);
                operator = wait::bounded(Phase::Cancelling, limit, cancel).await?;
            }
            progress.set_message("producing");
        }
        let send = producer.send(pipeline, i, planned);
        wait::bounded(Phase::Producing, limit, send).await?;
        progress
            .set_position(pipeline.processed_count() + supervisor.processor.stats().dead_lettered);
    }
    progress.set_message("draining");
    supervisor
        .wait_idle(Phase::Draining, producer.stored.len())
        .await?;
    Ok((producer, operator))
}
