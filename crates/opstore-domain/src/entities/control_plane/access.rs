//! Who may do what on the control plane, and the record of what they did.

use std::sync::LazyLock;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::text_enum;
use crate::entities::automation::entity;
use crate::query::SortDir;
use crate::schema::{Field, FieldType, Schema};
use crate::time::Timestamp;

text_enum! {
    /// Outcome of an audited action.
    AuditStatus {
        /// Done.
        Success => "SUCCESS",
        /// Attempted and failed.
        Failure => "FAILURE",
        /// Refused by authorization.
        Denied => "DENIED",
    }
}

/// An immutable record of an action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Key.
    pub id: String,
    /// Principal that acted.
    pub actor: String,
    /// What was done, e.g. `cluster.create`.
    pub action: String,
    /// Cluster acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_cluster_id: Option<String>,
    /// Job acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_job_id: Option<String>,
    /// Outcome.
    pub status: AuditStatus,
    /// Free-form details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// Client address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<String>,
    /// Client software.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// When it happened.
    pub created_at: Timestamp,
}

static AUDIT_EVENT: LazyLock<Schema> = LazyLock::new(|| {
    Schema::builder("audit_events", "id")
        .field(Field::new("actor", FieldType::String).indexed())
        .field(Field::new("action", FieldType::String).indexed())
        .field(
            Field::new("target_cluster_id", FieldType::String)
                .indexed()
                .optional(),
        )
        .field(Field::new("target_job_id", FieldType::String).optional())
        .field(Field::new("status", FieldType::String))
        .field(Field::new("metadata", FieldType::Json).optional())
        .field(Field::new("ip_address", FieldType::String).optional())
        .field(Field::new("user_agent", FieldType::String).optional())
        .field(Field::new("created_at", FieldType::Timestamp).indexed())
        .default_sort("created_at", SortDir::Desc)
        .build()
});
entity!(AuditEvent, AUDIT_EVENT, id);

text_enum! {
    /// Kind of IAM principal.
    PrincipalType {
        /// A user.
        User => "user",
        /// An assumable role.
        Role => "role",
        /// A group.
        Group => "group",
    }
}

text_enum! {
    /// Role granted on the control plane.
    RbacRole {
        /// May request and manage the team's clusters.
        Requester => "requester",
        /// May manage every cluster.
        PlatformAdmin => "platform_admin",
        /// May read everything, change nothing.
        Auditor => "auditor",
    }
}

/// Maps an IAM principal to a team and role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RbacMapping {
    /// Key.
    pub id: String,
    /// Principal ARN.
    pub iam_principal_arn: String,
    /// Kind of principal.
    pub iam_principal_type: PrincipalType,
    /// Team granted.
    pub team: String,
    /// Role granted.
    pub role: RbacRole,
    /// In force.
    pub enabled: bool,
    /// Created.
    pub created_at: Timestamp,
    /// Last changed.
    pub updated_at: Timestamp,
    /// Who created it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// Operator notes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
}

static RBAC_MAPPING: LazyLock<Schema> = LazyLock::new(|| {
    Schema::builder("rbac_mappings", "id")
        .field(Field::new("iam_principal_arn", FieldType::String).indexed())
        .field(Field::new("iam_principal_type", FieldType::String))
        .field(Field::new("team", FieldType::String).indexed())
        .field(Field::new("role", FieldType::String))
        .field(Field::new("enabled", FieldType::Bool).indexed())
        .field(Field::new("created_at", FieldType::Timestamp))
        .field(Field::new("updated_at", FieldType::Timestamp))
        .field(Field::new("created_by", FieldType::String).optional())
        .field(Field::new("notes", FieldType::String).optional())
        .default_sort("created_at", SortDir::Asc)
        .build()
});
entity!(RbacMapping, RBAC_MAPPING, id);
