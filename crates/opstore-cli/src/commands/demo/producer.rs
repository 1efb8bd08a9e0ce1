//! The fleet and its producer: registers one cluster per node, then writes
//! health events, re-sending some with an earlier idempotency key.

use std::collections::{BTreeMap, HashMap};

use opstore_app::services::control_plane::ControlPlaneService;
use opstore_app::services::health::CreateOutcome;
use opstore_domain::Timestamp;
use opstore_domain::entities::control_plane::{Cluster, ClusterStatus};
use opstore_domain::entities::health::HealthEvent;

use super::config::{Planned, node_name};
use super::state::{Pipeline, store_err};
use crate::error::CliError;

/// Registers the fleet; returns each node's cluster id by node name.
pub(super) async fn register_nodes(
    control: &ControlPlaneService,
    run: &str,
    nodes: u32,
) -> Result<HashMap<String, String>, CliError> {
    let mut clusters = HashMap::with_capacity(nodes as usize);
    for i in 0..nodes as usize {
        let now = Timestamp::now();
        let name = node_name(run, i);
        let cluster = control
            .create_cluster(Cluster {
                id: String::new(),
                name: name.clone(),
                platform: "gpu-fleet".into(),
                version: "1".into(),
                profile: "h100x8".into(),
                region: "demo".into(),
                base_domain: format!("{run}.opstore.test"),
                owner: "fleet-ops".into(),
                team: "fleet".into(),
                cost_center: "demo".into(),
                status: ClusterStatus::Ready,
                requested_by: "opstore demo".into(),
                ttl_hours: 0,
                destroy_at: None,
                tags: BTreeMap::new(),
                created_at: now,
                updated_at: now,
                destroyed_at: None,
                active_key: None,
            })
            .await
            .map_err(store_err("registering a node"))?;
        clusters.insert(name, cluster.id);
    }
    Ok(clusters)
}

/// Writes the planned events and remembers what was stored.
#[derive(Debug, Default)]
pub(super) struct Producer {
    /// Ids of the stored events, in write order.
    pub stored: Vec<String>,
    /// Re-sent events skipped by their idempotency key.
    pub duplicates: u64,
}

impl Producer {
    /// Sends planned event `i`.
    pub(super) async fn send(
        &mut self,
        pipeline: &Pipeline,
        i: usize,
        planned: &Planned,
    ) -> Result<(), CliError> {
        let event = health_event(&pipeline.run, i, planned);
        match pipeline
            .health
            .create(event)
            .await
            .map_err(store_err("writing a health event"))?
        {
            CreateOutcome::Created(record) => self.stored.push(record.id),
            CreateOutcome::Duplicate { .. } => self.duplicates += 1,
        }
        Ok(())
    }
}

/// The health event of planned event `i`; a re-send repeats its source's
/// content and idempotency key.
fn health_event(run: &str, i: usize, planned: &Planned) -> HealthEvent {
    let source = planned.resend_of.unwrap_or(i);
    let node = node_name(run, planned.node);
    let mut metadata = BTreeMap::new();
    if planned.transient {
        metadata.insert("demo.transient".to_owned(), "1".to_owned());
    }
    HealthEvent {
        version: 1,
        agent: run.to_owned(),
        component_class: "GPU".into(),
        check_name: planned.check.to_owned(),
        is_fatal: planned.fatal,
        is_healthy: !planned.fatal,
        message: format!("{} on {node}", planned.check),
        recommended_action: if planned.fatal { "RESTART_VM" } else { "NONE" }.into(),
        error_codes: if planned.poison {
            vec!["\u{fffd}\u{fffd}".into()]
        } else {
            vec![format!("{}", 40 + source % 50)]
        },
        metadata,
        node_name: node,
        idempotency_key: Some(format!("{run}/event-{source}")),
        ..HealthEvent::default()
    }
}
