//! Errors seen in a Kubernetes cluster, deduplicated by fingerprint, and the
//! remediation actions taken for them.

use std::collections::BTreeMap;
use std::sync::Arc;

use opstore_domain::entities::errors::{ErrorRecord, Priority, RemediationLog, RemediationOutcome};
use opstore_domain::{
    Agg, Filter, Page, Query, Repository, Result, Store, StoreError, Timestamp, Update, Value,
};

use super::{new_id, repository};

/// Which errors to list. Unset fields match everything; set fields combine with AND.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ErrorFilter {
    /// Exact namespace.
    pub namespace: Option<String>,
    /// Exact pod.
    pub pod: Option<String>,
    /// This priority or a more severe one.
    pub min_priority: Option<Priority>,
    /// Remediated or not.
    pub remediated: Option<bool>,
    /// Last seen at or after this instant.
    pub since: Option<Timestamp>,
    /// Case-insensitive text the message contains.
    pub search: Option<String>,
}

impl ErrorFilter {
    /// The portable filter.
    pub fn to_filter(&self) -> Filter {
        let mut terms = Vec::new();
        if let Some(ns) = non_empty(&self.namespace) {
            terms.push(Filter::eq("namespace", ns));
        }
        if let Some(pod) = non_empty(&self.pod) {
            terms.push(Filter::eq("pod", pod));
        }
        if let Some(min) = self.min_priority {
            terms.push(Filter::is_in(
                "priority",
                min.at_least().map(Priority::as_str),
            ));
        }
        if let Some(remediated) = self.remediated {
            terms.push(Filter::eq("remediated", remediated));
        }
        if let Some(since) = self.since {
            terms.push(Filter::gte("last_seen", since));
        }
        if let Some(search) = non_empty(&self.search) {
            terms.push(Filter::contains_ci("message", search));
        }
        Filter::all_of(terms)
    }
}

fn non_empty(v: &Option<String>) -> Option<&str> {
    v.as_deref().filter(|s| !s.is_empty())
}

/// Offset and limit; a limit of 0 returns everything after the offset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pagination {
    /// Records to skip.
    pub offset: u64,
    /// At most this many records (0 = all).
    pub limit: u64,
}

/// Aggregate statistics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ErrorStats {
    /// Stored error records.
    pub total_errors: u64,
    /// Records per priority.
    pub errors_by_priority: BTreeMap<Priority, u64>,
    /// Records per namespace.
    pub errors_by_namespace: BTreeMap<String, u64>,
    /// Remediation log entries.
    pub remediation_count: u64,
    /// Entries with status `success`.
    pub successful_actions: u64,
    /// Entries with status `failed`.
    pub failed_actions: u64,
    /// Latest `last_seen` of any error.
    pub last_error: Option<Timestamp>,
    /// Latest remediation.
    pub last_remediation: Option<Timestamp>,
}

/// Settings of an [`ErrorService`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorServiceConfig {
    /// Keep at most this many error records: saving a new one beyond the cap deletes
    /// the least recently seen. `None` keeps everything.
    pub max_errors: Option<u64>,
}

/// Error records and remediation logs.
pub struct ErrorService {
    errors: Arc<dyn Repository<ErrorRecord>>,
    logs: Arc<dyn Repository<RemediationLog>>,
    config: ErrorServiceConfig,
}

impl std::fmt::Debug for ErrorService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ErrorService")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Attempts of the find-or-insert loop before a persistent conflict is returned.
const SAVE_ATTEMPTS: usize = 3;

impl ErrorService {
    /// The service over `store`.
    pub fn new(store: &dyn Store, config: ErrorServiceConfig) -> Result<Self> {
        Ok(Self::from_parts(
            repository(store)?,
            repository(store)?,
            config,
        ))
    }

    /// The service over explicit repositories.
    pub fn from_parts(
        errors: Arc<dyn Repository<ErrorRecord>>,
        logs: Arc<dyn Repository<RemediationLog>>,
        config: ErrorServiceConfig,
    ) -> Self {
        ErrorService {
            errors,
            logs,
            config,
        }
    }

    /// Saves an occurrence and returns the stored record.
    ///
    /// A new fingerprint is inserted (with a generated URL-safe id when the id is
    /// empty, and a count of at least 1). A known fingerprint is merged into the
    /// stored record: count + 1, first seen = the earlier, last seen = the later.
    /// Each merge step is a single conditional write, so concurrent saves of one
    /// fingerprint converge to the same result in any order.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use opstore_app::services::errors::{ErrorService, ErrorServiceConfig};
    /// use opstore_app::{DataStore, StoreConfig};
    /// use opstore_domain::entities::errors::{ErrorRecord, Priority};
    /// use opstore_domain::Timestamp;
    ///
    /// let store = DataStore::open(&StoreConfig::from_url("memory://")?).await?;
    /// let errors = ErrorService::new(store.store().as_ref(), ErrorServiceConfig { max_errors: None })?;
    /// let at = |s: &str| s.parse::<Timestamp>();
    /// let seen = |t| ErrorRecord::new("crashloop/api", "prod", "api-0", "CrashLoopBackOff", Priority::P1, t);
    ///
    /// let first = errors.save(seen(at("2026-01-01T10:00:00Z")?)).await?;
    /// let again = errors.save(seen(at("2026-01-01T10:05:00Z")?)).await?;
    /// // The same fingerprint is one record, counted twice.
    /// assert_eq!(again.id, first.id);
    /// assert_eq!(again.count, 2);
    /// assert_eq!(again.last_seen, at("2026-01-01T10:05:00Z")?);
    /// # Ok(()) }
    /// ```
    pub async fn save(&self, mut err: ErrorRecord) -> Result<ErrorRecord> {
        for _ in 0..SAVE_ATTEMPTS {
            if let Some(existing) = self.get_by_fingerprint(&err.fingerprint).await? {
                return self.merge(existing, &err).await;
            }
            if err.id.is_empty() {
                err.id = new_id();
            }
            err.count = err.count.max(1);
            match self.errors.insert(&err).await {
                Ok(()) => {
                    self.enforce_cap().await?;
                    return Ok(err);
                }
                // Another writer stored the fingerprint first: merge into theirs.
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Conflict(format!(
            "save error: fingerprint `{}` in `error_records` kept conflicting",
            err.fingerprint
        )))
    }

    async fn merge(&self, existing: ErrorRecord, seen: &ErrorRecord) -> Result<ErrorRecord> {
        let id = existing.id.as_str();
        let mut stored = self
            .errors
            .update_one(id, &Update::new().inc("count", 1))
            .await?;
        let mut moved = false;
        if seen.last_seen > stored.last_seen {
            let later = Filter::eq("id", id).and(Filter::lt("last_seen", seen.last_seen));
            let update = Update::new().set("last_seen", seen.last_seen);
            moved |= self.errors.update_many(&later, &update).await?.modified > 0;
        }
        if seen.first_seen < stored.first_seen {
            let earlier = Filter::eq("id", id).and(Filter::gt("first_seen", seen.first_seen));
            let update = Update::new().set("first_seen", seen.first_seen);
            moved |= self.errors.update_many(&earlier, &update).await?.modified > 0;
        }
        if moved {
            stored = self
                .errors
                .get(id)
                .await?
                .ok_or_else(|| super::not_found::<ErrorRecord>("save error", id))?;
        }
        Ok(stored)
    }

    async fn enforce_cap(&self) -> Result<()> {
        let Some(cap) = self.config.max_errors else {
            return Ok(());
        };
        let total = self.errors.count(&Filter::All).await?;
        if total <= cap {
            return Ok(());
        }
        let oldest = Query::new().sort_asc("last_seen").limit(total - cap);
        let ids: Vec<Value> = self
            .errors
            .find(&oldest)
            .await?
            .into_iter()
            .map(|e| Value::from(e.id))
            .collect();
        let deleted = self
            .errors
            .delete_many(&Filter::In("id".into(), ids))
            .await?;
        tracing::debug!(deleted, cap, "error retention cap applied");
        Ok(())
    }

    /// The record with this id.
    pub async fn get(&self, id: &str) -> Result<Option<ErrorRecord>> {
        self.errors.get(id).await
    }

    /// The record with this fingerprint.
    pub async fn get_by_fingerprint(&self, fingerprint: &str) -> Result<Option<ErrorRecord>> {
        self.errors
            .get_by_field("fingerprint", Value::from(fingerprint))
            .await
    }

    /// Matching records, most recently seen first, with the total before paging.
    pub async fn list(&self, filter: &ErrorFilter, page: Pagination) -> Result<Page<ErrorRecord>> {
        let query = Query::filter(filter.to_filter())
            .sort_desc("last_seen")
            .skip(page.offset)
            .limit(page.limit);
        self.errors.find_page(&query).await
    }

    /// Replaces a stored record; `NotFound` when missing.
    pub async fn update(&self, err: &ErrorRecord) -> Result<()> {
        self.errors.replace(err).await
    }

    /// Deletes a record; returns whether it existed.
    pub async fn delete(&self, id: &str) -> Result<bool> {
        self.errors.delete(id).await
    }

    /// Deletes records last seen before `before`; returns how many.
    pub async fn delete_older_than(&self, before: Timestamp) -> Result<u64> {
        self.errors
            .delete_many(&Filter::lt("last_seen", before))
            .await
    }

    /// Saves a remediation log entry (an empty id is generated) and returns it.
    pub async fn save_remediation_log(&self, mut log: RemediationLog) -> Result<RemediationLog> {
        if log.id.is_empty() {
            log.id = new_id();
        }
        self.logs.insert(&log).await?;
        Ok(log)
    }

    /// The log entry with this id.
    pub async fn get_remediation_log(&self, id: &str) -> Result<Option<RemediationLog>> {
        self.logs.get(id).await
    }

    /// All log entries, newest first, with the total.
    pub async fn list_remediation_logs(&self, page: Pagination) -> Result<Page<RemediationLog>> {
        let query = Query::new()
            .sort_desc("timestamp")
            .skip(page.offset)
            .limit(page.limit);
        self.logs.find_page(&query).await
    }

    /// Log entries of one error, newest first (empty for an unknown error).
    pub async fn remediation_logs_for_error(&self, error_id: &str) -> Result<Vec<RemediationLog>> {
        let query = Query::filter(Filter::eq("error_id", error_id)).sort_desc("timestamp");
        self.logs.find(&query).await
    }

    /// Deletes log entries older than `before`; returns how many.
    pub async fn delete_old_remediation_logs(&self, before: Timestamp) -> Result<u64> {
        self.logs
            .delete_many(&Filter::lt("timestamp", before))
            .await
    }

    /// Totals, breakdowns and latest instants.
    pub async fn stats(&self) -> Result<ErrorStats> {
        let all = Filter::All;
        let mut by_priority = BTreeMap::new();
        for (value, n) in self.errors.count_by(&all, "priority").await? {
            if let Some(p) = value.as_str().and_then(Priority::parse) {
                by_priority.insert(p, n);
            }
        }
        let by_namespace = self
            .errors
            .count_by(&all, "namespace")
            .await?
            .into_iter()
            .filter_map(|(v, n)| Some((v.as_str()?.to_owned(), n)))
            .collect();
        let status = |o: RemediationOutcome| Filter::eq("status", o.as_str());
        Ok(ErrorStats {
            total_errors: self.errors.count(&all).await?,
            errors_by_priority: by_priority,
            errors_by_namespace: by_namespace,
            remediation_count: self.logs.count(&all).await?,
            successful_actions: self
                .logs
                .count(&status(RemediationOutcome::Success))
                .await?,
            failed_actions: self.logs.count(&status(RemediationOutcome::Failed)).await?,
            last_error: timestamp(self.errors.aggregate(&all, "last_seen", Agg::Max).await?),
            last_remediation: timestamp(self.logs.aggregate(&all, "timestamp", Agg::Max).await?),
        })
    }
}

fn timestamp(v: Value) -> Option<Timestamp> {
    v.as_str().and_then(|s| s.parse().ok())
}

#[cfg(test)]
mod tests;
