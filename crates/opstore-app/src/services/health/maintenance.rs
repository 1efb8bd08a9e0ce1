//! Maintenance events, stored beside the health events of the same nodes.

use opstore_domain::entities::health::MaintenanceEvent;
use opstore_domain::{Filter, Query, Result};

use super::HealthEventService;
use crate::services::put;

impl HealthEventService {
    /// Stores a maintenance event whole (insert or replace by id).
    pub async fn save_maintenance(&self, event: &MaintenanceEvent) -> Result<()> {
        put(self.maintenance.as_ref(), event).await
    }

    /// The maintenance event with this id.
    pub async fn get_maintenance(&self, id: &str) -> Result<Option<MaintenanceEvent>> {
        self.maintenance.get(id).await
    }

    /// Maintenance events of a node, in the order received.
    pub async fn maintenance_for_node(&self, node: &str) -> Result<Vec<MaintenanceEvent>> {
        let query = Query::filter(Filter::eq("nodeName", node)).sort_asc("eventReceivedTimestamp");
        self.maintenance.find(&query).await
    }

    /// Maintenance events in a processing status, by scheduled start.
    pub async fn maintenance_by_status(&self, status: &str) -> Result<Vec<MaintenanceEvent>> {
        let query = Query::filter(Filter::eq("status", status)).sort_asc("scheduledStartTime");
        self.maintenance.find(&query).await
    }
}
