//! The shape of a run, its timings, and everything random about it, drawn up
//! front from the seed.

use std::collections::BTreeSet;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::cli::DemoArgs;

pub(super) const NODE: &str = "healthevent.nodename";
pub(super) const QUARANTINE: &str = "healtheventstatus.nodequarantined";
pub(super) const CREATED_AT: &str = "createdAt";
pub(super) const POISON_CHECK: &str = "XidCorruptPayload";
const CHECKS: [&str; 6] = [
    "GpuXidError",
    "GpuThermalWatch",
    "NvlinkDown",
    "EccUncorrectable",
    "PcieReplayRate",
    "GpuFallenOffBus",
];

/// How often the waits look at the pipeline's counters (in process, no store calls).
pub(super) const POLL: Duration = Duration::from_millis(5);

/// The shape of a demo run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemoConfig {
    /// Nodes in the fleet.
    pub nodes: u32,
    /// Health events the producer sends (re-sent duplicates included).
    pub events: u32,
    /// Drain workers.
    pub workers: u32,
    /// Seed of every random choice.
    pub seed: u64,
    /// A wait gives up, naming what did not complete, when the pipeline makes
    /// no progress for this long.
    pub stall_timeout: Duration,
}

impl From<&DemoArgs> for DemoConfig {
    fn from(args: &DemoArgs) -> Self {
        DemoConfig {
            nodes: args.nodes,
            events: args.events,
            workers: args.workers,
            seed: args.seed,
            stall_timeout: Duration::from_secs(args.stall_timeout),
        }
    }
}

/// Lease and recovery timings of the drain jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Timing {
    /// Lease TTL of a drain job's lock; the keeper renews at a third of it.
    pub lease_ttl: Duration,
    /// A job running longer than this without finishing is recovered. Drains
    /// take milliseconds, so only a crashed worker's job gets here.
    pub stuck_after: Duration,
    /// How often the reaper looks for stuck jobs.
    pub reap_every: Duration,
    /// How long an idle worker waits for a wake-up before listing jobs again.
    pub idle_poll: Duration,
}

impl Timing {
    /// In process a renewal takes microseconds. A server round trip can stall
    /// for a second on a loaded machine: a live lease that expires abandons
    /// its drain, and a few of those exhaust the job's attempts, so servers get
    /// a TTL with seconds of slack and recovery waits well past it.
    pub(super) fn for_backend(backend: &str) -> Timing {
        if backend == "memory" {
            Timing {
                lease_ttl: Duration::from_millis(1_000),
                stuck_after: Duration::from_millis(1_500),
                reap_every: Duration::from_millis(150),
                idle_poll: Duration::from_millis(50),
            }
        } else {
            Timing {
                lease_ttl: Duration::from_secs(3),
                stuck_after: Duration::from_secs(5),
                reap_every: Duration::from_millis(500),
                idle_poll: Duration::from_millis(100),
            }
        }
    }
}

/// One event the producer will send.
#[derive(Debug, Clone)]
pub(super) struct Planned {
    pub node: usize,
    pub check: &'static str,
    pub fatal: bool,
    pub transient: bool,
    pub poison: bool,
    /// Re-sends the idempotency key of this earlier event.
    pub resend_of: Option<usize>,
}

/// Everything random about a run, drawn up front from the seed.
#[derive(Debug)]
pub(super) struct Plan {
    pub events: Vec<Planned>,
    /// The operator cancels this node's session after the first half.
    pub cancel_node: Option<usize>,
    /// The drain job of this session (by start order) crashes on its first run.
    pub crash_session: u64,
}

impl Plan {
    pub(super) fn draw(config: &DemoConfig) -> Plan {
        let mut rng = StdRng::seed_from_u64(config.seed);
        let n = config.events as usize;
        let half = n / 2;
        let poison = rng.random_range(half..n);
        let mut events: Vec<Planned> = Vec::with_capacity(n);
        for i in 0..n {
            let resend_of = (i > 0 && i != poison && rng.random_bool(0.02))
                .then(|| rng.random_range(0..i))
                .filter(|&j| events[j].resend_of.is_none() && !events[j].poison);
            let planned = match resend_of {
                Some(j) => Planned {
                    resend_of: Some(j),
                    ..events[j].clone()
                },
                None => Planned {
                    node: rng.random_range(0..config.nodes as usize),
                    check: CHECKS[rng.random_range(0..CHECKS.len())],
                    fatal: rng.random_bool(0.3),
                    transient: i != poison && rng.random_bool(0.03),
                    poison: i == poison,
                    resend_of: None,
                },
            };
            let planned = if i == poison {
                Planned {
                    check: POISON_CHECK,
                    ..planned
                }
            } else {
                planned
            };
            events.push(planned);
        }
        let candidates: BTreeSet<usize> = events[..half]
            .iter()
            .filter(|e| e.fatal && !e.poison && e.resend_of.is_none())
            .map(|e| e.node)
            .collect();
        let candidates: Vec<usize> = candidates.into_iter().collect();
        let cancel_node =
            (!candidates.is_empty()).then(|| candidates[rng.random_range(0..candidates.len())]);
        let sessions = candidates.len().max(1) as u64;
        let crash_session = rng.random_range(0..sessions.min(3));
        Plan {
            events,
            cancel_node,
            crash_session,
        }
    }
}

/// The run's name: on the embedded store the seed is enough; on a shared
/// server the start time and a random tag keep runs apart from each other's
/// data, even runs started in the same millisecond.
pub(super) fn run_name(backend: &str, seed: u64) -> String {
    if backend == "memory" {
        return format!("demo-{seed}");
    }
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!("demo-{seed}-{millis}-{:04x}", rand::random::<u16>())
}

/// A node's name, scoped to the run: sessions are found by node name, so two
/// runs on one server must never share a node.
pub(super) fn node_name(run: &str, i: usize) -> String {
    format!("{run}-node-{i:03}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(seed: u64) -> DemoConfig {
        DemoConfig {
            nodes: 20,
            events: 400,
            workers: 3,
            seed,
            stall_timeout: Duration::from_secs(30),
        }
    }

    #[test]
    fn plans_are_the_same_for_the_same_seed() {
        let (a, b) = (Plan::draw(&config(42)), Plan::draw(&config(42)));
        assert_eq!(a.cancel_node, b.cancel_node);
        assert_eq!(a.crash_session, b.crash_session);
        let nodes = |p: &Plan| p.events.iter().map(|e| e.node).collect::<Vec<_>>();
        assert_eq!(nodes(&a), nodes(&b));
        assert_eq!(a.events.iter().filter(|e| e.poison).count(), 1);
    }

    #[test]
    fn runs_on_a_server_get_their_own_names() {
        assert_eq!(run_name("memory", 7), "demo-7");
        let names: BTreeSet<String> = (0..8).map(|_| run_name("postgres", 7)).collect();
        assert!(names.len() > 1, "{names:?}");
        assert!(names.iter().all(|n| n.starts_with("demo-7-")));
    }

    #[test]
    fn node_names_carry_the_run() {
        assert_eq!(node_name("demo-7", 3), "demo-7-node-003");
        assert_ne!(
            node_name("demo-7-1", 3),
            node_name("demo-7-2", 3),
            "two runs on one server share no node"
        );
    }

    #[test]
    fn servers_get_slack_on_the_lease() {
        let server = Timing::for_backend("postgres");
        assert!(server.stuck_after > server.lease_ttl);
        let memory = Timing::for_backend("memory");
        assert!(memory.stuck_after > memory.lease_ttl);
    }
}
