//! Audit trail, usage samples, cluster outputs, RBAC mappings and idempotent
//! request handling.

use std::future::Future;
use std::time::Duration;

use opstore_domain::entities::control_plane::{
    AuditEvent, ClusterOutputs, RbacMapping, UsageSample,
};
use opstore_domain::{
    Begin, Filter, Page, Query, Result, StoreError, Timestamp, Update, Value, to_document,
};

use super::ControlPlaneService;
use crate::services::{new_id, not_found};

/// Result of [`ControlPlaneService::idempotent`].
#[derive(Debug, Clone, PartialEq)]
pub enum Idempotent {
    /// The request ran now; this is its response.
    Fresh(Value),
    /// The same request ran before; this is its stored response.
    Replayed(Value),
}

impl Idempotent {
    /// The response, fresh or replayed.
    pub fn into_response(self) -> Value {
        match self {
            Idempotent::Fresh(v) | Idempotent::Replayed(v) => v,
        }
    }
}

impl ControlPlaneService {
    /// Appends an audit event (an empty id is generated; `created_at` is now).
    pub async fn record_audit(&self, mut event: AuditEvent) -> Result<AuditEvent> {
        if event.id.is_empty() {
            event.id = new_id();
        }
        event.created_at = self.now();
        self.p.audit.insert(&event).await?;
        Ok(event)
    }

    /// Audit events about a cluster, newest first, with the total.
    pub async fn audit_for_cluster(
        &self,
        cluster_id: &str,
        offset: u64,
        limit: u64,
    ) -> Result<Page<AuditEvent>> {
        let filter = Filter::eq("target_cluster_id", cluster_id);
        self.p
            .audit
            .find_page(
                &Query::filter(filter)
                    .sort_desc("created_at")
                    .skip(offset)
                    .limit(limit),
            )
            .await
    }

    /// Audit events by an actor, newest first, with the total.
    pub async fn audit_by_actor(
        &self,
        actor: &str,
        offset: u64,
        limit: u64,
    ) -> Result<Page<AuditEvent>> {
        let filter = Filter::eq("actor", actor);
        self.p
            .audit
            .find_page(
                &Query::filter(filter)
                    .sort_desc("created_at")
                    .skip(offset)
                    .limit(limit),
            )
            .await
    }

    /// Records a usage sample. The key derives from the cluster and sample time,
    /// so recording the same instant again updates that sample.
    pub async fn record_usage(&self, mut sample: UsageSample) -> Result<UsageSample> {
        sample.id = UsageSample::key_for(&sample.cluster_id, sample.sample_time);
        let doc = to_document(&sample)?;
        let mut update = Update::new();
        for path in [
            "cluster_id",
            "sample_time",
            "state",
            "control_plane_replicas",
            "worker_replicas",
            "estimated_hourly_cost",
            "metadata",
        ] {
            update = match doc.get(path) {
                Some(v) if !v.is_null() => update.set(path, v.clone()),
                _ => update.unset(path),
            };
        }
        Ok(self.p.usage.upsert(&sample.id, &update).await?.document)
    }

    /// Usage samples of a cluster at or after `since`, in time order.
    pub async fn usage_for_cluster(
        &self,
        cluster_id: &str,
        since: Option<Timestamp>,
    ) -> Result<Vec<UsageSample>> {
        let mut filter = Filter::eq("cluster_id", cluster_id);
        if let Some(since) = since {
            filter = filter.and(Filter::gte("sample_time", since));
        }
        self.p
            .usage
            .find(&Query::filter(filter).sort_asc("sample_time"))
            .await
    }

    /// Creates or updates a cluster's outputs. Fields absent (`None`) in `outputs`
    /// keep their stored values; timestamps are maintained by the store.
    pub async fn upsert_outputs(&self, outputs: &ClusterOutputs) -> Result<ClusterOutputs> {
        let now = self.now();
        let fields = [
            ("api_url", &outputs.api_url),
            ("console_url", &outputs.console_url),
            ("kubeconfig_uri", &outputs.kubeconfig_uri),
            ("kubeadmin_secret_ref", &outputs.kubeadmin_secret_ref),
            ("metadata_uri", &outputs.metadata_uri),
        ];
        let update = fields
            .into_iter()
            .filter_map(|(path, v)| v.as_deref().map(|v| (path, v)))
            .fold(Update::new(), |u, (path, v)| u.set(path, v))
            .set("updated_at", now)
            .set_on_insert("created_at", now);
        Ok(self
            .p
            .outputs
            .upsert(&outputs.cluster_id, &update)
            .await?
            .document)
    }

    /// A cluster's outputs.
    pub async fn get_outputs(&self, cluster_id: &str) -> Result<Option<ClusterOutputs>> {
        self.p.outputs.get(cluster_id).await
    }

    /// Stores a new RBAC mapping (an empty id is generated; timestamps are now).
    pub async fn create_rbac_mapping(&self, mut mapping: RbacMapping) -> Result<RbacMapping> {
        if mapping.id.is_empty() {
            mapping.id = new_id();
        }
        let now = self.now();
        mapping.created_at = now;
        mapping.updated_at = now;
        self.p.rbac.insert(&mapping).await?;
        Ok(mapping)
    }

    /// Enabled mappings of an IAM principal.
    pub async fn rbac_for_principal(&self, principal_arn: &str) -> Result<Vec<RbacMapping>> {
        let filter =
            Filter::eq("iam_principal_arn", principal_arn).and(Filter::eq("enabled", true));
        self.p.rbac.find(&Query::filter(filter)).await
    }

    /// Enabled mappings granting a team.
    pub async fn rbac_for_team(&self, team: &str) -> Result<Vec<RbacMapping>> {
        let filter = Filter::eq("team", team).and(Filter::eq("enabled", true));
        self.p.rbac.find(&Query::filter(filter)).await
    }

    /// Enables or disables a mapping; `NotFound` for an unknown id.
    pub async fn set_rbac_enabled(&self, id: &str, enabled: bool) -> Result<RbacMapping> {
        let update = Update::new()
            .set("enabled", enabled)
            .set("updated_at", self.now());
        self.p.rbac.update_one(id, &update).await
    }

    /// Deletes a mapping; returns whether it existed.
    pub async fn delete_rbac_mapping(&self, id: &str) -> Result<bool> {
        self.p.rbac.delete(id).await
    }

    /// Runs a request at most once per idempotency key.
    ///
    /// The first caller with `key` runs `work` and its response is stored for
    /// `ttl`; later callers with the same request `fingerprint` get the stored
    /// response. `Conflict` while the first is still running, or when the key was
    /// used for a different request. A failed `work` releases the key so the
    /// request can be retried.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use opstore_app::services::control_plane::{ControlPlaneService, Idempotent};
    /// use opstore_app::{DataStore, StoreConfig};
    /// use opstore_domain::json;
    ///
    /// let store = DataStore::open(&StoreConfig::from_url("memory://")?).await?;
    /// let plane = ControlPlaneService::new(store.store().clone())?;
    /// let ttl = Duration::from_secs(3600);
    /// let request = || async { Ok(json!({"cluster": "clu_1", "status": "PENDING"})) };
    ///
    /// let first = plane.idempotent("req-1", "create web", ttl, request).await?;
    /// assert!(matches!(first, Idempotent::Fresh(_)));
    /// // The client retries: the stored response comes back and the work does not run.
    /// let retry = plane.idempotent("req-1", "create web", ttl, || async { unreachable!() }).await?;
    /// assert_eq!(retry, Idempotent::Replayed(json!({"cluster": "clu_1", "status": "PENDING"})));
    /// // The same key for another request is a conflict.
    /// let misuse = plane.idempotent("req-1", "delete web", ttl, request).await;
    /// assert!(misuse.unwrap_err().is_conflict());
    /// # Ok(()) }
    /// ```
    pub async fn idempotent<F, Fut>(
        &self,
        key: &str,
        fingerprint: &str,
        ttl: Duration,
        work: F,
    ) -> Result<Idempotent>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Value>>,
    {
        match self.p.idempotency.begin(key, fingerprint, ttl).await? {
            Begin::Started => match work().await {
                Ok(response) => {
                    self.p.idempotency.complete(key, response.clone()).await?;
                    Ok(Idempotent::Fresh(response))
                }
                Err(e) => {
                    if let Err(abandon) = self.p.idempotency.abandon(key).await {
                        tracing::warn!(key, error = %abandon, "releasing idempotency key after a failed request");
                    }
                    Err(e)
                }
            },
            Begin::Completed(response) => Ok(Idempotent::Replayed(response)),
            Begin::InProgress => Err(StoreError::Conflict(format!(
                "idempotent request: key `{key}` is already being processed"
            ))),
            Begin::Mismatch => Err(StoreError::Conflict(format!(
                "idempotent request: key `{key}` was used for a different request"
            ))),
        }
    }

    /// The RBAC mapping with this id; `NotFound` when missing.
    pub async fn get_rbac_mapping(&self, id: &str) -> Result<RbacMapping> {
        self.p
            .rbac
            .get(id)
            .await?
            .ok_or_else(|| not_found::<RbacMapping>("get rbac mapping", id))
    }
}
