//! Trigger kinds of a job: schedule, contract event, or watched condition.

use std::sync::LazyLock;

use serde::{Deserialize, Serialize};

use super::{entity, f, ts_opt};
use crate::query::SortDir;
use crate::schema::{FieldType, ScalarType, Schema, SchemaBuilder};
use crate::time::Timestamp;

/// The call a job makes on its target chain; shared by every trigger kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TargetCall {
    /// Target chain.
    pub target_chain_id: String,
    /// Target contract address.
    pub target_contract_address: String,
    /// Function to call.
    pub target_function: String,
    /// Contract ABI (JSON text).
    pub abi: String,
    /// Static (0) or dynamic (1) arguments.
    pub arg_type: i64,
    /// Static arguments, in order.
    #[serde(default)]
    pub arguments: Vec<String>,
    /// Script producing dynamic arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dynamic_arguments_script_url: Option<String>,
}

fn target_fields(b: SchemaBuilder) -> SchemaBuilder {
    b.field(f("target_chain_id", FieldType::String))
        .field(f("target_contract_address", FieldType::String))
        .field(f("target_function", FieldType::String))
        .field(f("abi", FieldType::String))
        .field(f("arg_type", FieldType::Int))
        .field(f("arguments", FieldType::List(ScalarType::String)))
        .field(f("dynamic_arguments_script_url", FieldType::String).optional())
        .field(f("is_completed", FieldType::Bool).indexed())
        .field(ts_opt("last_executed_at"))
        .field(ts_opt("expiration_time"))
}

/// A job triggered on a schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimeJob {
    /// Key (the job's id).
    pub job_id: String,
    /// Task definition.
    pub task_definition_id: i64,
    /// `interval`, `cron` or `specific`.
    pub schedule_type: String,
    /// Interval in seconds.
    pub time_interval: i64,
    /// Cron expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron_expression: Option<String>,
    /// One specific time (text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub specific_schedule: Option<String>,
    /// When it runs next.
    pub next_execution_timestamp: Timestamp,
    /// What it calls.
    #[serde(flatten)]
    pub target: TargetCall,
    /// Finished for good.
    pub is_completed: bool,
    /// Last run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_executed_at: Option<Timestamp>,
    /// When it stops.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration_time: Option<Timestamp>,
}

static TIME_JOB: LazyLock<Schema> = LazyLock::new(|| {
    target_fields(Schema::builder("time_job_data", "job_id"))
        .field(f("task_definition_id", FieldType::Int))
        .field(f("schedule_type", FieldType::String))
        .field(f("time_interval", FieldType::Int))
        .field(f("cron_expression", FieldType::String).optional())
        .field(f("specific_schedule", FieldType::String).optional())
        .field(f("next_execution_timestamp", FieldType::Timestamp).indexed())
        .default_sort("next_execution_timestamp", SortDir::Asc)
        .build()
});
entity!(TimeJob, TIME_JOB, job_id);

/// A job triggered by a contract event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventJob {
    /// Key (the job's id).
    pub job_id: String,
    /// Task definition.
    pub task_definition_id: i64,
    /// Runs on every matching event, not just the first.
    pub recurring: bool,
    /// Chain watched.
    pub trigger_chain_id: String,
    /// Contract watched.
    pub trigger_contract_address: String,
    /// Event signature.
    pub trigger_event: String,
    /// Event parameter to filter on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger_event_filter_para_name: Option<String>,
    /// Value that parameter must have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger_event_filter_value: Option<String>,
    /// What it calls.
    #[serde(flatten)]
    pub target: TargetCall,
    /// Finished for good.
    pub is_completed: bool,
    /// Last run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_executed_at: Option<Timestamp>,
    /// When it stops.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration_time: Option<Timestamp>,
}

static EVENT_JOB: LazyLock<Schema> = LazyLock::new(|| {
    target_fields(Schema::builder("event_job_data", "job_id"))
        .field(f("task_definition_id", FieldType::Int))
        .field(f("recurring", FieldType::Bool))
        .field(f("trigger_chain_id", FieldType::String).indexed())
        .field(f("trigger_contract_address", FieldType::String).indexed())
        .field(f("trigger_event", FieldType::String))
        .field(f("trigger_event_filter_para_name", FieldType::String).optional())
        .field(f("trigger_event_filter_value", FieldType::String).optional())
        .build()
});
entity!(EventJob, EVENT_JOB, job_id);

/// A job triggered when a watched value crosses limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConditionJob {
    /// Key (the job's id).
    pub job_id: String,
    /// Task definition.
    pub task_definition_id: i64,
    /// Runs every time the condition holds, not just the first.
    pub recurring: bool,
    /// e.g. `greater_than`, `between`.
    pub condition_type: String,
    /// Upper limit.
    pub upper_limit: f64,
    /// Lower limit.
    pub lower_limit: f64,
    /// `api`, `oracle`, ...
    pub value_source_type: String,
    /// Where the value is read.
    pub value_source_url: String,
    /// JSON route to the value in the response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selected_key_route: Option<String>,
    /// What it calls.
    #[serde(flatten)]
    pub target: TargetCall,
    /// Finished for good.
    pub is_completed: bool,
    /// Last run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_executed_at: Option<Timestamp>,
    /// When it stops.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration_time: Option<Timestamp>,
}

static CONDITION_JOB: LazyLock<Schema> = LazyLock::new(|| {
    target_fields(Schema::builder("condition_job_data", "job_id"))
        .field(f("task_definition_id", FieldType::Int))
        .field(f("recurring", FieldType::Bool))
        .field(f("condition_type", FieldType::String))
        .field(f("upper_limit", FieldType::Float))
        .field(f("lower_limit", FieldType::Float))
        .field(f("value_source_type", FieldType::String))
        .field(f("value_source_url", FieldType::String))
        .field(f("selected_key_route", FieldType::String).optional())
        .build()
});
entity!(ConditionJob, CONDITION_JOB, job_id);
