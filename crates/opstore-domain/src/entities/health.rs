//! Health and maintenance events of a GPU-fleet health monitor.
//!
//! Stored field names follow the monitor's existing documents (`healthevent.nodename`,
//! `healtheventstatus.nodequarantined`, `createdAt`), so its queries, change-stream
//! filters and dashboards keep working unchanged.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use serde::{Deserialize, Serialize};

use crate::query::SortDir;
use crate::schema::{Entity, Field, FieldType, ScalarType, Schema};
use crate::time::Timestamp;

/// Where a node stands in its quarantine lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum QuarantineStatus {
    /// The node was quarantined because of this event.
    Quarantined,
    /// Another issue arrived while the node was already quarantined.
    AlreadyQuarantined,
    /// The node was released after its health recovered.
    UnQuarantined,
    /// An operator intervened (e.g. a manual uncordon); automation must stop.
    Cancelled,
}

impl QuarantineStatus {
    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            QuarantineStatus::Quarantined => "Quarantined",
            QuarantineStatus::AlreadyQuarantined => "AlreadyQuarantined",
            QuarantineStatus::UnQuarantined => "UnQuarantined",
            QuarantineStatus::Cancelled => "Cancelled",
        }
    }
}

/// Progress of an eviction or remediation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OperationState {
    /// Not begun.
    #[default]
    NotStarted,
    /// Running.
    InProgress,
    /// Finished successfully.
    Succeeded,
    /// Finished with an error.
    Failed,
    /// The node was drained before this operation began.
    AlreadyDrained,
}

impl OperationState {
    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            OperationState::NotStarted => "NotStarted",
            OperationState::InProgress => "InProgress",
            OperationState::Succeeded => "Succeeded",
            OperationState::Failed => "Failed",
            OperationState::AlreadyDrained => "AlreadyDrained",
        }
    }
}

/// An operation's state with an optional explanation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationStatus {
    /// State.
    pub status: OperationState,
    /// Human-readable detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A component the event is about (a GPU, an NVLink, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImpactedEntity {
    /// Kind of entity, e.g. `GPU`.
    #[serde(rename = "entitytype")]
    pub entity_type: String,
    /// Its identifier, e.g. a GPU index or UUID.
    #[serde(rename = "entityvalue")]
    pub entity_value: String,
}

/// Operator overrides of automated quarantine or drain.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BehaviourOverrides {
    /// Act even where the rules say not to.
    pub force: bool,
    /// Do not act.
    pub skip: bool,
}

/// The health event as reported by a monitoring agent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HealthEvent {
    /// Event format version.
    pub version: i64,
    /// Agent that reported it.
    pub agent: String,
    /// Component class, e.g. `GPU`.
    #[serde(rename = "componentclass")]
    pub component_class: String,
    /// Check that produced it.
    #[serde(rename = "checkname")]
    pub check_name: String,
    /// Whether the fault is fatal.
    #[serde(rename = "isfatal")]
    pub is_fatal: bool,
    /// Whether this event reports recovered health.
    #[serde(rename = "ishealthy")]
    pub is_healthy: bool,
    /// Description.
    pub message: String,
    /// Action the agent recommends.
    #[serde(rename = "recommendedaction")]
    pub recommended_action: String,
    /// Error codes (e.g. XID numbers).
    #[serde(rename = "errorcode", default)]
    pub error_codes: Vec<String>,
    /// Components affected.
    #[serde(rename = "entitiesimpacted", default)]
    pub entities_impacted: Vec<ImpactedEntity>,
    /// Free-form metadata.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// When the agent generated it.
    #[serde(
        rename = "generatedtimestamp",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub generated_at: Option<Timestamp>,
    /// Node it concerns.
    #[serde(rename = "nodename")]
    pub node_name: String,
    /// Quarantine override.
    #[serde(
        rename = "quarantineoverrides",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub quarantine_overrides: Option<BehaviourOverrides>,
    /// Drain override.
    #[serde(
        rename = "drainoverrides",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub drain_overrides: Option<BehaviourOverrides>,
    /// How downstream modules should process it.
    #[serde(
        rename = "processingstrategy",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub processing_strategy: Option<String>,
    /// The agent's own event id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Recommended action when it is not one of the standard ones.
    #[serde(
        rename = "customrecommendedaction",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub custom_recommended_action: Option<String>,
    /// Deduplication key: an event with a key already stored is not stored again.
    #[serde(
        rename = "idempotencykey",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub idempotency_key: Option<String>,
}

/// What the fleet's modules did about an event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HealthEventStatus {
    /// Quarantine state of the node for this event.
    #[serde(
        rename = "nodequarantined",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub node_quarantined: Option<QuarantineStatus>,
    /// When quarantine finished.
    #[serde(
        rename = "quarantinefinishtimestamp",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub quarantine_finished_at: Option<Timestamp>,
    /// Eviction of user pods.
    #[serde(rename = "userpodsevictionstatus", default)]
    pub user_pods_eviction: OperationStatus,
    /// Remediation of the fault.
    #[serde(rename = "remediationstatus", default)]
    pub remediation: OperationStatus,
    /// When the drain finished.
    #[serde(
        rename = "drainfinishtimestamp",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub drain_finished_at: Option<Timestamp>,
    /// Whether the fault was remediated.
    #[serde(
        rename = "faultremediated",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub fault_remediated: Option<bool>,
    /// When remediation last ran.
    #[serde(
        rename = "lastremediationtimestamp",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub last_remediation_at: Option<Timestamp>,
    /// Tracing span ids per module.
    #[serde(rename = "spanids", default)]
    pub span_ids: BTreeMap<String, String>,
}

/// A stored health event with its status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthEventRecord {
    /// Key.
    pub id: String,
    /// When it was stored.
    #[serde(rename = "createdAt")]
    pub created_at: Timestamp,
    /// The event.
    #[serde(rename = "healthevent")]
    pub event: HealthEvent,
    /// Its status.
    #[serde(rename = "healtheventstatus", default)]
    pub status: HealthEventStatus,
}

static HEALTH_EVENT: LazyLock<Schema> = LazyLock::new(|| {
    let op = |p: &str| Field::new(p, FieldType::Object);
    Schema::builder("health_events", "id")
        .field(Field::new("createdAt", FieldType::Timestamp).indexed())
        .field(op("healthevent"))
        .field(Field::new("healthevent.version", FieldType::Int))
        .field(Field::new("healthevent.agent", FieldType::String))
        .field(Field::new("healthevent.componentclass", FieldType::String).indexed())
        .field(Field::new("healthevent.checkname", FieldType::String).indexed())
        .field(Field::new("healthevent.isfatal", FieldType::Bool))
        .field(Field::new("healthevent.ishealthy", FieldType::Bool))
        .field(Field::new("healthevent.message", FieldType::String))
        .field(Field::new(
            "healthevent.recommendedaction",
            FieldType::String,
        ))
        .field(Field::new(
            "healthevent.errorcode",
            FieldType::List(ScalarType::String),
        ))
        .field(Field::new("healthevent.entitiesimpacted", FieldType::Json))
        .field(Field::new(
            "healthevent.metadata",
            FieldType::Map(ScalarType::String),
        ))
        .field(Field::new("healthevent.generatedtimestamp", FieldType::Timestamp).optional())
        .field(Field::new("healthevent.nodename", FieldType::String).indexed())
        .field(op("healthevent.quarantineoverrides").optional())
        .field(Field::new(
            "healthevent.quarantineoverrides.force",
            FieldType::Bool,
        ))
        .field(Field::new(
            "healthevent.quarantineoverrides.skip",
            FieldType::Bool,
        ))
        .field(op("healthevent.drainoverrides").optional())
        .field(Field::new(
            "healthevent.drainoverrides.force",
            FieldType::Bool,
        ))
        .field(Field::new(
            "healthevent.drainoverrides.skip",
            FieldType::Bool,
        ))
        .field(Field::new("healthevent.processingstrategy", FieldType::String).optional())
        .field(Field::new("healthevent.id", FieldType::String).optional())
        .field(Field::new("healthevent.customrecommendedaction", FieldType::String).optional())
        .field(
            Field::new("healthevent.idempotencykey", FieldType::String)
                .unique()
                .optional(),
        )
        .field(op("healtheventstatus"))
        .field(
            Field::new("healtheventstatus.nodequarantined", FieldType::String)
                .indexed()
                .optional(),
        )
        .field(
            Field::new(
                "healtheventstatus.quarantinefinishtimestamp",
                FieldType::Timestamp,
            )
            .optional(),
        )
        .field(op("healtheventstatus.userpodsevictionstatus"))
        .field(
            Field::new(
                "healtheventstatus.userpodsevictionstatus.status",
                FieldType::String,
            )
            .indexed(),
        )
        .field(
            Field::new(
                "healtheventstatus.userpodsevictionstatus.message",
                FieldType::String,
            )
            .optional(),
        )
        .field(op("healtheventstatus.remediationstatus"))
        .field(
            Field::new(
                "healtheventstatus.remediationstatus.status",
                FieldType::String,
            )
            .indexed(),
        )
        .field(
            Field::new(
                "healtheventstatus.remediationstatus.message",
                FieldType::String,
            )
            .optional(),
        )
        .field(
            Field::new(
                "healtheventstatus.drainfinishtimestamp",
                FieldType::Timestamp,
            )
            .optional(),
        )
        .field(Field::new("healtheventstatus.faultremediated", FieldType::Bool).optional())
        .field(
            Field::new(
                "healtheventstatus.lastremediationtimestamp",
                FieldType::Timestamp,
            )
            .optional(),
        )
        .field(Field::new(
            "healtheventstatus.spanids",
            FieldType::Map(ScalarType::String),
        ))
        .default_sort("createdAt", SortDir::Asc)
        .build()
});

impl HealthEventRecord {
    /// The schema as a `'static` reference.
    pub fn schema_ref() -> &'static Schema {
        &HEALTH_EVENT
    }
}

impl Entity for HealthEventRecord {
    fn schema() -> &'static Schema {
        &HEALTH_EVENT
    }
    fn key(&self) -> String {
        self.id.clone()
    }
}

/// A cloud provider's maintenance of a node, stored beside its health events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MaintenanceEvent {
    /// Key: the provider's event id.
    pub id: String,
    /// Cloud provider, e.g. `gcp`.
    pub csp: String,
    /// Cluster of the node.
    #[serde(rename = "clusterName")]
    pub cluster_name: String,
    /// Node affected.
    #[serde(rename = "nodeName")]
    pub node_name: String,
    /// Provider resource (instance) id.
    #[serde(
        rename = "resourceId",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub resource_id: Option<String>,
    /// Kind of maintenance, e.g. `SCHEDULED`.
    #[serde(rename = "maintenanceType")]
    pub maintenance_type: String,
    /// Our processing state, e.g. `DETECTED`, `QUARANTINE_TRIGGERED`.
    pub status: String,
    /// The provider's own state.
    #[serde(rename = "cspStatus", default, skip_serializing_if = "Option::is_none")]
    pub csp_status: Option<String>,
    /// Announced start.
    #[serde(
        rename = "scheduledStartTime",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub scheduled_start: Option<Timestamp>,
    /// Announced end.
    #[serde(
        rename = "scheduledEndTime",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub scheduled_end: Option<Timestamp>,
    /// Actual start.
    #[serde(
        rename = "actualStartTime",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub actual_start: Option<Timestamp>,
    /// Actual end.
    #[serde(
        rename = "actualEndTime",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub actual_end: Option<Timestamp>,
    /// Action recommended for the node.
    #[serde(
        rename = "recommendedAction",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub recommended_action: Option<String>,
    /// Free-form provider details.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// When we first received it.
    #[serde(rename = "eventReceivedTimestamp")]
    pub received_at: Timestamp,
    /// When it last changed.
    #[serde(rename = "lastUpdatedTimestamp")]
    pub updated_at: Timestamp,
}

static MAINTENANCE_EVENT: LazyLock<Schema> = LazyLock::new(|| {
    Schema::builder("maintenance_events", "id")
        .field(Field::new("csp", FieldType::String))
        .field(Field::new("clusterName", FieldType::String).indexed())
        .field(Field::new("nodeName", FieldType::String).indexed())
        .field(Field::new("resourceId", FieldType::String).optional())
        .field(Field::new("maintenanceType", FieldType::String))
        .field(Field::new("status", FieldType::String).indexed())
        .field(Field::new("cspStatus", FieldType::String).optional())
        .field(
            Field::new("scheduledStartTime", FieldType::Timestamp)
                .indexed()
                .optional(),
        )
        .field(Field::new("scheduledEndTime", FieldType::Timestamp).optional())
        .field(Field::new("actualStartTime", FieldType::Timestamp).optional())
        .field(Field::new("actualEndTime", FieldType::Timestamp).optional())
        .field(Field::new("recommendedAction", FieldType::String).optional())
        .field(Field::new("metadata", FieldType::Map(ScalarType::String)))
        .field(Field::new("eventReceivedTimestamp", FieldType::Timestamp).indexed())
        .field(Field::new("lastUpdatedTimestamp", FieldType::Timestamp))
        .default_sort("eventReceivedTimestamp", SortDir::Asc)
        .build()
});

impl MaintenanceEvent {
    /// The schema as a `'static` reference.
    pub fn schema_ref() -> &'static Schema {
        &MAINTENANCE_EVENT
    }
}

impl Entity for MaintenanceEvent {
    fn schema() -> &'static Schema {
        &MAINTENANCE_EVENT
    }
    fn key(&self) -> String {
        self.id.clone()
    }
}
