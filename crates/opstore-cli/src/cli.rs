//! The command line, as clap parses it.

use clap::{Args, Parser, Subcommand};

use crate::output::OutputFormat;

/// opstore: one storage API for operations-automation services, on memory,
/// SQLite, PostgreSQL, MongoDB or ScyllaDB.
#[derive(Debug, Parser)]
#[command(name = "opstore", version, propagate_version = true)]
pub struct Cli {
    /// Store URL: memory://, sqlite://path/to/file.db, postgres://…, mongodb://…, scylla://host:9042/keyspace.
    #[arg(
        long,
        global = true,
        env = "OPSTORE_URL",
        hide_env_values = true,
        default_value = "memory://"
    )]
    pub url: String,

    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or update the storage of every domain entity (idempotent).
    Migrate,
    /// Check connectivity and report the backend's capabilities.
    Health,
    /// Tail a collection's change feed as JSON lines with resume tokens.
    Watch(WatchArgs),
    /// Inspect and release leases.
    Locks {
        /// What to do with leases.
        #[command(subcommand)]
        command: LocksCommand,
    },
    /// Inspect and replay events processors gave up on.
    Deadletters {
        /// What to do with dead letters.
        #[command(subcommand)]
        command: DeadLettersCommand,
    },
    /// Run the remediation pipeline demo and check its invariants.
    Demo(DemoArgs),
    /// Run the backend's benchmark scenarios against its raw driver and print
    /// the ratios.
    Bench(BenchArgs),
}

/// Arguments of `opstore bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Sizes and rounds: `full` (the goals' sizes), `quick` (fewer rounds, every
    /// scenario kept) or `smoke` (one tiny round; checks the output, the figures
    /// mean nothing). Default: `full`, or `OPSTORE_BENCH_QUICK` when set.
    #[arg(long, value_enum)]
    pub scale: Option<BenchScale>,
}

/// The sizes `opstore bench` runs at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchScale {
    /// The sizes the goals were set with.
    Full,
    /// Fewer rounds and smaller sizes, every scenario kept.
    Quick,
    /// One tiny round of every scenario.
    Smoke,
}

/// Arguments of `opstore watch`.
#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    /// Collection name (see `opstore migrate` for the list).
    pub collection: String,
    /// Resume right after the change that printed this token.
    #[arg(long, value_name = "TOKEN", conflicts_with = "from_beginning")]
    pub from_token: Option<String>,
    /// Start at the oldest retained change instead of now.
    #[arg(long)]
    pub from_beginning: bool,
    /// Only changes whose document matches this filter, e.g.
    /// '{"eq":["healthevent.nodename","node-1"]}'.
    #[arg(long, value_name = "JSON")]
    pub filter: Option<String>,
    /// Stop after this many changes.
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
}

/// `opstore locks …`.
#[derive(Debug, Clone, Subcommand)]
pub enum LocksCommand {
    /// List every live lease.
    List,
    /// Drop a lease whoever holds it (its holder's fenced writes then fail).
    Release {
        /// Lease name.
        name: String,
    },
}

/// `opstore deadletters …`.
#[derive(Debug, Clone, Subcommand)]
pub enum DeadLettersCommand {
    /// List dead letters, oldest first.
    List {
        /// Only those of this processor.
        #[arg(long)]
        processor: Option<String>,
        /// Include dead letters already replayed.
        #[arg(long)]
        all: bool,
        /// At most this many (0 = all).
        #[arg(long, default_value_t = 100)]
        limit: u64,
    },
    /// Deliver dead letters again: each source document is written back
    /// unchanged, so the processor watching it handles it once more.
    Replay {
        /// Dead letter ids to replay.
        #[arg(long = "id", value_name = "ID", required_unless_present_any = ["processor", "all"])]
        ids: Vec<String>,
        /// Every not yet replayed dead letter of this processor.
        #[arg(long)]
        processor: Option<String>,
        /// Every not yet replayed dead letter.
        #[arg(long)]
        all: bool,
    },
}
/// Arguments of `opstore demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Nodes in the simulated fleet.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(2..=100_000))]
    pub nodes: u32,
    /// Health events the producer writes.
    #[arg(long, default_value_t = 2_000, value_parser = clap::value_parser!(u32).range(10..=10_000_000))]
    pub events: u32,
    /// Drain workers claiming jobs.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub workers: u32,
    /// Seed of every random choice; the same seed gives the same run.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Give up after this many seconds without progress (on top of the planned
    /// wait for a crashed worker's job to be recovered), name the phase and
    /// invariant that did not complete, and exit 1.
    #[arg(long, value_name = "SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub stall_timeout: u64,
}
