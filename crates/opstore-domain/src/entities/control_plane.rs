//! Entities of a cluster-provisioning control plane: clusters, their jobs and job
//! locks, audit events, usage samples, outputs and RBAC mappings.
//!
//! Idempotency keys of the control plane's API use the
//! [`IdempotencyStore`](crate::IdempotencyStore) port, not an entity.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::query::SortDir;
use crate::schema::{Field, FieldType, ScalarType, Schema};
use crate::time::Timestamp;

mod access;

pub use access::{AuditEvent, AuditStatus, PrincipalType, RbacMapping, RbacRole};

use super::automation::entity;

macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ::serde::Serialize, ::serde::Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant),*
        }
        impl $name {
            /// The stored text.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),* }
            }
        }
        impl From<$name> for $crate::Value {
            fn from(v: $name) -> $crate::Value {
                $crate::Value::String(v.as_str().to_owned())
            }
        }
    };
}

pub(crate) use text_enum;

text_enum! {
    /// Lifecycle of a cluster.
    ClusterStatus {
        /// Requested, not yet being built.
        Pending => "PENDING",
        /// Being built.
        Creating => "CREATING",
        /// Usable.
        Ready => "READY",
        /// Being torn down.
        Destroying => "DESTROYING",
        /// Gone.
        Destroyed => "DESTROYED",
        /// Creation failed; nothing is left running.
        Failed => "FAILED",
        /// Teardown failed; resources may remain.
        DestroyFailed => "DESTROY_FAILED",
    }
}

impl ClusterStatus {
    /// Whether the cluster counts against the one-active-cluster-per-name rule.
    pub fn is_active(self) -> bool {
        !matches!(self, ClusterStatus::Destroyed | ClusterStatus::Failed)
    }
}

/// A provisioned (or requested) cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cluster {
    /// Key.
    pub id: String,
    /// Name, unique among active clusters of a platform and base domain.
    pub name: String,
    /// Cloud platform, e.g. `aws`.
    pub platform: String,
    /// Product version.
    pub version: String,
    /// Size profile.
    pub profile: String,
    /// Region.
    pub region: String,
    /// DNS base domain.
    pub base_domain: String,
    /// Owner.
    pub owner: String,
    /// Team.
    pub team: String,
    /// Cost center billed.
    pub cost_center: String,
    /// Lifecycle status.
    pub status: ClusterStatus,
    /// Principal that requested it.
    pub requested_by: String,
    /// Lifetime in hours.
    pub ttl_hours: i64,
    /// When the janitor destroys it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destroy_at: Option<Timestamp>,
    /// Tags applied to cloud resources.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Created.
    pub created_at: Timestamp,
    /// Last changed.
    pub updated_at: Timestamp,
    /// When it was destroyed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destroyed_at: Option<Timestamp>,
    /// Present only while the cluster is active: the (name, platform, base domain)
    /// triple under a unique index, which is how every backend enforces the rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_key: Option<String>,
}

impl Cluster {
    /// The `active_key` value for a name, platform and base domain (JSON text, so
    /// no separator can be forged by a name).
    pub fn active_key_for(name: &str, platform: &str, base_domain: &str) -> String {
        Value::from(vec![name, platform, base_domain]).to_string()
    }
}

static CLUSTER: LazyLock<Schema> = LazyLock::new(|| {
    let s = |p: &str| Field::new(p, FieldType::String);
    Schema::builder("clusters", "id")
        .field(s("name").indexed())
        .field(s("platform").indexed())
        .field(s("version"))
        .field(s("profile"))
        .field(s("region"))
        .field(s("base_domain"))
        .field(s("owner").indexed())
        .field(s("team").indexed())
        .field(s("cost_center"))
        .field(s("status").indexed())
        .field(s("requested_by"))
        .field(Field::new("ttl_hours", FieldType::Int))
        .field(
            Field::new("destroy_at", FieldType::Timestamp)
                .indexed()
                .optional(),
        )
        .field(Field::new("tags", FieldType::Map(ScalarType::String)))
        .field(Field::new("created_at", FieldType::Timestamp).indexed())
        .field(Field::new("updated_at", FieldType::Timestamp))
        .field(Field::new("destroyed_at", FieldType::Timestamp).optional())
        .field(s("active_key").unique().optional())
        .default_sort("created_at", SortDir::Asc)
        .build()
});
entity!(Cluster, CLUSTER, id);

text_enum! {
    /// What a job does to its cluster.
    JobType {
        /// Build the cluster.
        Create => "CREATE",
        /// Tear it down on request.
        Destroy => "DESTROY",
        /// Change the worker count.
        ScaleWorkers => "SCALE_WORKERS",
        /// Tear it down because its TTL passed.
        JanitorDestroy => "JANITOR_DESTROY",
        /// Remove leaked cloud resources.
        OrphanSweep => "ORPHAN_SWEEP",
    }
}

text_enum! {
    /// Lifecycle of a job.
    JobStatus {
        /// Waiting for a worker.
        Pending => "PENDING",
        /// A worker holds it.
        Running => "RUNNING",
        /// Done.
        Succeeded => "SUCCEEDED",
        /// Given up.
        Failed => "FAILED",
        /// Waiting for a worker after a failed attempt.
        Retrying => "RETRYING",
    }
}

/// Attempts a job gets unless told otherwise.
pub const DEFAULT_MAX_ATTEMPTS: i64 = 3;

fn default_max_attempts() -> i64 {
    DEFAULT_MAX_ATTEMPTS
}

/// An asynchronous operation on a cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterJob {
    /// Key.
    pub id: String,
    /// Cluster it acts on.
    pub cluster_id: String,
    /// What it does.
    pub job_type: JobType,
    /// Lifecycle status.
    pub status: JobStatus,
    /// Current attempt, from 1.
    pub attempt: i64,
    /// Attempts allowed.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: i64,
    /// Machine-readable error of the last failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// Error text of the last failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    /// When the running attempt started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Timestamp>,
    /// Not to be picked up before this instant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<Timestamp>,
    /// Created.
    pub created_at: Timestamp,
    /// Last changed.
    pub updated_at: Timestamp,
    /// Free-form details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
}

static CLUSTER_JOB: LazyLock<Schema> = LazyLock::new(|| {
    let ts = |p: &str| Field::new(p, FieldType::Timestamp);
    Schema::builder("cluster_jobs", "id")
        .field(Field::new("cluster_id", FieldType::String).indexed())
        .field(Field::new("job_type", FieldType::String).indexed())
        .field(Field::new("status", FieldType::String).indexed())
        .field(Field::new("attempt", FieldType::Int))
        .field(Field::new("max_attempts", FieldType::Int))
        .field(Field::new("error_code", FieldType::String).optional())
        .field(Field::new("error_message", FieldType::String).optional())
        .field(ts("started_at").indexed().optional())
        .field(ts("ended_at").optional())
        .field(ts("retry_after").indexed().optional())
        .field(ts("created_at").indexed())
        .field(ts("updated_at"))
        .field(Field::new("metadata", FieldType::Json).optional())
        .default_sort("created_at", SortDir::Asc)
        .build()
});
entity!(ClusterJob, CLUSTER_JOB, id);

/// Which job holds a cluster's job lock. The lease itself (expiry, renewal,
/// fencing) lives in the [`LockManager`](crate::LockManager); this row records the
/// holder for operators and plain-SQL readers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobLock {
    /// Key: the locked cluster.
    pub cluster_id: String,
    /// Job holding it.
    pub job_id: String,
    /// Worker instance holding it.
    pub locked_by: String,
    /// When it was taken.
    pub locked_at: Timestamp,
    /// Fencing token of the lease.
    pub fencing_token: i64,
}

static JOB_LOCK: LazyLock<Schema> = LazyLock::new(|| {
    Schema::builder("job_locks", "cluster_id")
        .field(Field::new("job_id", FieldType::String).indexed())
        .field(Field::new("locked_by", FieldType::String).indexed())
        .field(Field::new("locked_at", FieldType::Timestamp))
        .field(Field::new("fencing_token", FieldType::Int))
        .build()
});
entity!(JobLock, JOB_LOCK, cluster_id);

/// A point-in-time cost sample; one per cluster and sample time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageSample {
    /// Key: derived from the cluster and sample time, see [`UsageSample::key_for`].
    pub id: String,
    /// Cluster sampled.
    pub cluster_id: String,
    /// Instant sampled.
    pub sample_time: Timestamp,
    /// Cluster state at that instant.
    pub state: String,
    /// Control-plane nodes.
    pub control_plane_replicas: i64,
    /// Worker nodes.
    pub worker_replicas: i64,
    /// Estimated cost per hour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_hourly_cost: Option<f64>,
    /// Free-form details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
}

impl UsageSample {
    /// The key of the sample of `cluster_id` at `sample_time`: recording the same
    /// instant again addresses the same document.
    pub fn key_for(cluster_id: &str, sample_time: Timestamp) -> String {
        format!("{cluster_id}@{}", sample_time.to_text())
    }
}

static USAGE_SAMPLE: LazyLock<Schema> = LazyLock::new(|| {
    Schema::builder("usage_samples", "id")
        .field(Field::new("cluster_id", FieldType::String).indexed())
        .field(Field::new("sample_time", FieldType::Timestamp).indexed())
        .field(Field::new("state", FieldType::String))
        .field(Field::new("control_plane_replicas", FieldType::Int))
        .field(Field::new("worker_replicas", FieldType::Int))
        .field(Field::new("estimated_hourly_cost", FieldType::Float).optional())
        .field(Field::new("metadata", FieldType::Json).optional())
        .default_sort("sample_time", SortDir::Asc)
        .build()
});
entity!(UsageSample, USAGE_SAMPLE, id);

/// Access endpoints and artifacts of a cluster; one per cluster.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterOutputs {
    /// Key: the cluster.
    pub cluster_id: String,
    /// API server URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
    /// Web console URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console_url: Option<String>,
    /// Where the kubeconfig is stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig_uri: Option<String>,
    /// Secret holding the admin password (a reference, never the secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeadmin_secret_ref: Option<String>,
    /// Where install metadata is stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_uri: Option<String>,
    /// Created (set by the store).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<Timestamp>,
    /// Last changed (set by the store).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<Timestamp>,
}

static CLUSTER_OUTPUTS: LazyLock<Schema> = LazyLock::new(|| {
    let url = |p: &str| Field::new(p, FieldType::String).optional();
    Schema::builder("cluster_outputs", "cluster_id")
        .field(url("api_url"))
        .field(url("console_url"))
        .field(url("kubeconfig_uri"))
        .field(url("kubeadmin_secret_ref"))
        .field(url("metadata_uri"))
        .field(Field::new("created_at", FieldType::Timestamp).optional())
        .field(Field::new("updated_at", FieldType::Timestamp).optional())
        .build()
});
entity!(ClusterOutputs, CLUSTER_OUTPUTS, cluster_id);
