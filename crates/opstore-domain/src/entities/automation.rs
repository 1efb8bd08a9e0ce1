//! Entities of a job-automation backend: users, jobs and their trigger kinds,
//! tasks, keepers and API keys.
//!
//! Identifiers and 256-bit amounts are decimal strings (portable and exact on every
//! backend); id collections are sets; contract arguments are ordered lists.

use std::collections::BTreeSet;
use std::sync::LazyLock;

use serde::{Deserialize, Serialize};

use crate::schema::{Field, FieldType, ScalarType, Schema};
use crate::time::Timestamp;

mod triggers;

pub use triggers::{ConditionJob, EventJob, TargetCall, TimeJob};

macro_rules! entity {
    ($ty:ty, $schema:ident, $key:ident) => {
        impl $ty {
            /// The schema as a `'static` reference.
            pub fn schema_ref() -> &'static $crate::schema::Schema {
                &$schema
            }
        }
        impl $crate::schema::Entity for $ty {
            fn schema() -> &'static $crate::schema::Schema {
                &$schema
            }
            fn key(&self) -> String {
                self.$key.clone()
            }
        }
    };
}

pub(crate) use entity;

fn f(path: &str, ty: FieldType) -> Field {
    Field::new(path, ty)
}

fn ts_opt(path: &str) -> Field {
    Field::new(path, FieldType::Timestamp).optional()
}

/// A user who owns jobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// Key.
    pub user_id: String,
    /// Wallet address (lowercase hex).
    pub user_address: String,
    /// Contact email.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_id: Option<String>,
    /// Jobs owned.
    #[serde(default)]
    pub job_ids: BTreeSet<String>,
    /// Fees consumed (decimal).
    pub opx_consumed: String,
    /// Jobs created.
    pub total_jobs: i64,
    /// Tasks executed.
    pub total_tasks: i64,
    /// Created.
    pub created_at: Timestamp,
    /// Last changed.
    pub last_updated_at: Timestamp,
}

static USER: LazyLock<Schema> = LazyLock::new(|| {
    Schema::builder("user_data", "user_id")
        .field(f("user_address", FieldType::String).unique())
        .field(f("email_id", FieldType::String).indexed().optional())
        .field(f("job_ids", FieldType::Set(ScalarType::String)))
        .field(f("opx_consumed", FieldType::String))
        .field(f("total_jobs", FieldType::Int))
        .field(f("total_tasks", FieldType::Int))
        .field(f("created_at", FieldType::Timestamp).indexed())
        .field(f("last_updated_at", FieldType::Timestamp))
        .build()
});
entity!(User, USER, user_id);

/// A job: what to run, for whom, how often.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Key.
    pub job_id: String,
    /// Title.
    pub job_title: String,
    /// Task definition (time, event or condition kind).
    pub task_definition_id: i64,
    /// Chain the job was created on.
    pub created_chain_id: String,
    /// Owner.
    pub user_id: String,
    /// Job to run after this one (chained jobs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_job_id: Option<String>,
    /// Position in a chain.
    pub chain_status: i64,
    /// Timezone of schedules.
    pub timezone: String,
    /// Runs on the Imua network.
    pub is_imua: bool,
    /// Kind: `time`, `event` or `condition`.
    pub job_type: String,
    /// Lifetime in seconds.
    pub time_frame: i64,
    /// Runs repeatedly.
    pub recurring: bool,
    /// Lifecycle status.
    pub status: String,
    /// Predicted cost (decimal).
    pub job_cost_prediction: String,
    /// Actual cost so far (decimal).
    pub job_cost_actual: String,
    /// Tasks run for the job.
    #[serde(default)]
    pub task_ids: BTreeSet<String>,
    /// Created.
    pub created_at: Timestamp,
    /// Last changed.
    pub updated_at: Timestamp,
    /// Last run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_executed_at: Option<Timestamp>,
}

static JOB: LazyLock<Schema> = LazyLock::new(|| {
    Schema::builder("job_data", "job_id")
        .field(f("job_title", FieldType::String))
        .field(f("task_definition_id", FieldType::Int).indexed())
        .field(f("created_chain_id", FieldType::String))
        .field(f("user_id", FieldType::String).indexed())
        .field(f("link_job_id", FieldType::String).optional())
        .field(f("chain_status", FieldType::Int))
        .field(f("timezone", FieldType::String))
        .field(f("is_imua", FieldType::Bool))
        .field(f("job_type", FieldType::String).indexed())
        .field(f("time_frame", FieldType::Int))
        .field(f("recurring", FieldType::Bool))
        .field(f("status", FieldType::String).indexed())
        .field(f("job_cost_prediction", FieldType::String))
        .field(f("job_cost_actual", FieldType::String))
        .field(f("task_ids", FieldType::Set(ScalarType::String)))
        .field(f("created_at", FieldType::Timestamp).indexed())
        .field(f("updated_at", FieldType::Timestamp))
        .field(ts_opt("last_executed_at"))
        .build()
});
entity!(Job, JOB, job_id);

/// One execution of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// Key.
    pub task_id: String,
    /// Sequence number within the job.
    pub task_number: i64,
    /// Job executed.
    pub job_id: String,
    /// Task definition.
    pub task_definition_id: i64,
    /// Created.
    pub created_at: Timestamp,
    /// Predicted cost (decimal).
    pub task_opx_predicted_cost: String,
    /// Actual cost (decimal).
    pub task_opx_actual_cost: String,
    /// When it executed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_timestamp: Option<Timestamp>,
    /// Execution transaction hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_tx_hash: Option<String>,
    /// Keeper that performed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_performer_id: Option<String>,
    /// Keepers that attested it.
    #[serde(default)]
    pub task_attester_ids: BTreeSet<String>,
    /// Arguments after conversion (JSON text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub converted_arguments: Option<String>,
    /// Proof of execution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof_of_task: Option<String>,
    /// Submission transaction hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submission_tx_hash: Option<String>,
    /// Execution succeeded.
    pub is_successful: bool,
    /// Attestation accepted.
    pub is_accepted: bool,
    /// Runs on the Imua network.
    pub is_imua: bool,
}

static TASK: LazyLock<Schema> = LazyLock::new(|| {
    Schema::builder("task_data", "task_id")
        .field(f("task_number", FieldType::Int))
        .field(f("job_id", FieldType::String).indexed())
        .field(f("task_definition_id", FieldType::Int))
        .field(f("created_at", FieldType::Timestamp).indexed())
        .field(f("task_opx_predicted_cost", FieldType::String))
        .field(f("task_opx_actual_cost", FieldType::String))
        .field(ts_opt("execution_timestamp"))
        .field(f("execution_tx_hash", FieldType::String).optional())
        .field(
            f("task_performer_id", FieldType::String)
                .indexed()
                .optional(),
        )
        .field(f("task_attester_ids", FieldType::Set(ScalarType::String)))
        .field(f("converted_arguments", FieldType::String).optional())
        .field(f("proof_of_task", FieldType::String).optional())
        .field(f("submission_tx_hash", FieldType::String).optional())
        .field(f("is_successful", FieldType::Bool))
        .field(f("is_accepted", FieldType::Bool))
        .field(f("is_imua", FieldType::Bool))
        .build()
});
entity!(Task, TASK, task_id);

/// A node operator that executes and attests tasks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Keeper {
    /// Key.
    pub keeper_id: String,
    /// Display name.
    pub keeper_name: String,
    /// Operator address.
    pub keeper_address: String,
    /// Where rewards go.
    pub rewards_address: String,
    /// Consensus key address.
    pub consensus_address: String,
    /// Registration transaction.
    pub registered_tx: String,
    /// Operator id.
    pub operator_id: String,
    /// Voting power (decimal).
    pub voting_power: String,
    /// Allowed to join.
    pub whitelisted: bool,
    /// Registered on chain.
    pub registered: bool,
    /// Currently online.
    pub online: bool,
    /// Software version.
    pub version: String,
    /// Runs on the Imua network.
    pub on_imua: bool,
    /// Public address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_ip: Option<String>,
    /// Peer id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_id: Option<String>,
    /// Notification chat id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_id: Option<i64>,
    /// Contact email.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_id: Option<String>,
    /// Reward multiplier (decimal).
    pub rewards_booster: String,
    /// Tasks executed.
    pub no_executed_tasks: i64,
    /// Tasks attested.
    pub no_attested_tasks: i64,
    /// Uptime in seconds.
    pub uptime: i64,
    /// Points earned (decimal).
    pub keeper_points: String,
    /// Last check-in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checked_in: Option<Timestamp>,
}

static KEEPER: LazyLock<Schema> = LazyLock::new(|| {
    Schema::builder("keeper_data", "keeper_id")
        .field(f("keeper_name", FieldType::String))
        .field(f("keeper_address", FieldType::String).unique())
        .field(f("rewards_address", FieldType::String))
        .field(f("consensus_address", FieldType::String).indexed())
        .field(f("registered_tx", FieldType::String))
        .field(f("operator_id", FieldType::String).indexed())
        .field(f("voting_power", FieldType::String))
        .field(f("whitelisted", FieldType::Bool))
        .field(f("registered", FieldType::Bool))
        .field(f("online", FieldType::Bool).indexed())
        .field(f("version", FieldType::String))
        .field(f("on_imua", FieldType::Bool))
        .field(f("public_ip", FieldType::String).optional())
        .field(f("peer_id", FieldType::String).optional())
        .field(f("chat_id", FieldType::Int).optional())
        .field(f("email_id", FieldType::String).optional())
        .field(f("rewards_booster", FieldType::String))
        .field(f("no_executed_tasks", FieldType::Int))
        .field(f("no_attested_tasks", FieldType::Int))
        .field(f("uptime", FieldType::Int))
        .field(f("keeper_points", FieldType::String))
        .field(ts_opt("last_checked_in"))
        .build()
});
entity!(Keeper, KEEPER, keeper_id);

/// An API key with its usage counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKey {
    /// Key: the API key itself.
    pub key: String,
    /// Who it belongs to.
    pub owner: String,
    /// Usable.
    pub is_active: bool,
    /// Requests per minute allowed.
    pub rate_limit: i64,
    /// Successful requests.
    pub success_count: i64,
    /// Failed requests.
    pub failed_count: i64,
    /// Last use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used: Option<Timestamp>,
    /// Created.
    pub created_at: Timestamp,
}

static API_KEY: LazyLock<Schema> = LazyLock::new(|| {
    Schema::builder("apikeys", "key")
        .field(f("owner", FieldType::String).indexed())
        .field(f("is_active", FieldType::Bool).indexed())
        .field(f("rate_limit", FieldType::Int))
        .field(f("success_count", FieldType::Int))
        .field(f("failed_count", FieldType::Int))
        .field(ts_opt("last_used"))
        .field(f("created_at", FieldType::Timestamp))
        .build()
});
entity!(ApiKey, API_KEY, key);
