//! Errors seen in a Kubernetes cluster and the remediations taken for them.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use serde::{Deserialize, Serialize};

use crate::query::SortDir;
use crate::schema::{Entity, Field, FieldType, ScalarType, Schema};
use crate::time::Timestamp;

/// Severity assigned by the rule that matched an error; `P1` is the most severe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Priority {
    /// Critical.
    P1,
    /// High.
    P2,
    /// Medium.
    P3,
    /// Low.
    P4,
}

impl Priority {
    /// Every priority, most severe first.
    pub const ALL: [Priority; 4] = [Priority::P1, Priority::P2, Priority::P3, Priority::P4];

    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::P1 => "P1",
            Priority::P2 => "P2",
            Priority::P3 => "P3",
            Priority::P4 => "P4",
        }
    }

    /// Parses the stored text.
    pub fn parse(text: &str) -> Option<Priority> {
        Priority::ALL.into_iter().find(|p| p.as_str() == text)
    }

    /// This priority and every more severe one (the set a "minimum priority" admits).
    pub fn at_least(self) -> impl Iterator<Item = Priority> {
        Priority::ALL.into_iter().filter(move |p| *p <= self)
    }
}

/// A detected error, deduplicated by fingerprint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorRecord {
    /// Key: URL-safe, generated when empty.
    pub id: String,
    /// Hash identifying duplicates.
    pub fingerprint: String,
    /// When the record was created.
    pub timestamp: Timestamp,
    /// Namespace of the pod.
    pub namespace: String,
    /// Pod that logged it.
    pub pod: String,
    /// Container within the pod.
    pub container: String,
    /// The error text.
    pub message: String,
    /// Severity.
    pub priority: Priority,
    /// Occurrences of this fingerprint.
    pub count: i64,
    /// Earliest occurrence.
    pub first_seen: Timestamp,
    /// Latest occurrence.
    pub last_seen: Timestamp,
    /// Name of the matching rule.
    pub rule_matched: String,
    /// Whether remediation was attempted.
    pub remediated: bool,
    /// When remediation happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remediated_at: Option<Timestamp>,
    /// Extra labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl ErrorRecord {
    /// A first occurrence at `at` (count 1, first and last seen `at`); the id is
    /// generated on save.
    pub fn new(
        fingerprint: &str,
        namespace: &str,
        pod: &str,
        message: &str,
        priority: Priority,
        at: Timestamp,
    ) -> Self {
        ErrorRecord {
            id: String::new(),
            fingerprint: fingerprint.to_owned(),
            timestamp: at,
            namespace: namespace.to_owned(),
            pod: pod.to_owned(),
            container: String::new(),
            message: message.to_owned(),
            priority,
            count: 1,
            first_seen: at,
            last_seen: at,
            rule_matched: String::new(),
            remediated: false,
            remediated_at: None,
            labels: BTreeMap::new(),
        }
    }
}

static ERROR_RECORD: LazyLock<Schema> = LazyLock::new(|| {
    Schema::builder("error_records", "id")
        .field(Field::new("fingerprint", FieldType::String).unique())
        .field(Field::new("timestamp", FieldType::Timestamp))
        .field(Field::new("namespace", FieldType::String).indexed())
        .field(Field::new("pod", FieldType::String).indexed())
        .field(Field::new("container", FieldType::String))
        .field(Field::new("message", FieldType::String))
        .field(Field::new("priority", FieldType::String).indexed())
        .field(Field::new("count", FieldType::Int))
        .field(Field::new("first_seen", FieldType::Timestamp))
        .field(Field::new("last_seen", FieldType::Timestamp).indexed())
        .field(Field::new("rule_matched", FieldType::String))
        .field(Field::new("remediated", FieldType::Bool).indexed())
        .field(Field::new("remediated_at", FieldType::Timestamp).optional())
        .field(Field::new("labels", FieldType::Map(ScalarType::String)))
        .default_sort("last_seen", SortDir::Desc)
        .build()
});

impl ErrorRecord {
    /// The schema as a `'static` reference.
    pub fn schema_ref() -> &'static Schema {
        &ERROR_RECORD
    }
}

impl Entity for ErrorRecord {
    fn schema() -> &'static Schema {
        &ERROR_RECORD
    }
    fn key(&self) -> String {
        self.id.clone()
    }
}

/// Outcome of a remediation action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RemediationOutcome {
    /// The action worked.
    Success,
    /// The action failed.
    Failed,
    /// The action was not taken.
    Skipped,
}

impl RemediationOutcome {
    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            RemediationOutcome::Success => "success",
            RemediationOutcome::Failed => "failed",
            RemediationOutcome::Skipped => "skipped",
        }
    }
}

/// One remediation action taken for an error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemediationLog {
    /// Key: URL-safe, generated when empty.
    pub id: String,
    /// The error it responds to.
    pub error_id: String,
    /// Action, e.g. `restart`.
    pub action: String,
    /// Target as `namespace/resource`.
    pub target: String,
    /// Outcome.
    pub status: RemediationOutcome,
    /// Detail.
    pub message: String,
    /// When it ran.
    pub timestamp: Timestamp,
    /// Whether it was simulated.
    pub dry_run: bool,
}

static REMEDIATION_LOG: LazyLock<Schema> = LazyLock::new(|| {
    Schema::builder("remediation_logs", "id")
        .field(Field::new("error_id", FieldType::String).indexed())
        .field(Field::new("action", FieldType::String))
        .field(Field::new("target", FieldType::String))
        .field(Field::new("status", FieldType::String).indexed())
        .field(Field::new("message", FieldType::String))
        .field(Field::new("timestamp", FieldType::Timestamp).indexed())
        .field(Field::new("dry_run", FieldType::Bool))
        .default_sort("timestamp", SortDir::Desc)
        .build()
});

impl RemediationLog {
    /// The schema as a `'static` reference.
    pub fn schema_ref() -> &'static Schema {
        &REMEDIATION_LOG
    }
}

impl Entity for RemediationLog {
    fn schema() -> &'static Schema {
        &REMEDIATION_LOG
    }
    fn key(&self) -> String {
        self.id.clone()
    }
}
