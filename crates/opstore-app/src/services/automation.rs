//! The job-automation backend's generic repositories (one per entity) and its
//! health check behind a circuit breaker.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use opstore_domain::breaker::{Admission, BreakerConfig, CircuitBreaker};
use opstore_domain::entities::automation::{
    ApiKey, ConditionJob, EventJob, Job, Keeper, Task, TimeJob, User,
};
use opstore_domain::{
    Clock, Entity, Filter, HealthReport, Query, Repository, Result, Schema, Store, StoreError,
    Update, Value, from_document,
};

use super::repository;

/// Backend-native query text, the escape hatch for what the portable query model
/// cannot say.
///
/// The default method returns `Unsupported`: portable code never depends on it.
/// The wiring may provide a backend-specific implementation (CQL, SQL, a Mongo
/// pipeline) for a backend that has one; values are always bound parameters.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait RawQuery: Send + Sync {
    /// Name of the backend the query text is written for.
    fn backend(&self) -> &'static str;

    /// Runs `query` with bound `params` against the collection of `schema` and
    /// returns the matching documents.
    async fn execute(
        &self,
        schema: &'static Schema,
        query: &str,
        params: &[Value],
    ) -> Result<Vec<Value>> {
        let _ = (query, params);
        Err(StoreError::Unsupported(format!(
            "raw query on `{}`: the `{}` backend has no raw-query executor wired; use the portable \
             query model (Filter / Query) or wire a backend-specific executor",
            schema.name(),
            self.backend()
        )))
    }
}

/// The [`RawQuery`] of a backend without one: every call is `Unsupported`.
#[derive(Debug, Clone, Copy)]
pub struct NoRawQuery(pub &'static str);

impl RawQuery for NoRawQuery {
    fn backend(&self) -> &'static str {
        self.0
    }
}

/// The generic repository of one automation entity.
pub struct EntityRepository<T: Entity> {
    repo: Arc<dyn Repository<T>>,
    raw: Arc<dyn RawQuery>,
}

impl<T: Entity> Clone for EntityRepository<T> {
    fn clone(&self) -> Self {
        EntityRepository {
            repo: Arc::clone(&self.repo),
            raw: Arc::clone(&self.raw),
        }
    }
}

impl<T: Entity> fmt::Debug for EntityRepository<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EntityRepository")
            .field("collection", &T::schema().name())
            .finish()
    }
}

impl<T: Entity> EntityRepository<T> {
    /// A repository over `repo`, with `raw` for raw queries.
    pub fn new(repo: Arc<dyn Repository<T>>, raw: Arc<dyn RawQuery>) -> Self {
        EntityRepository { repo, raw }
    }

    /// Inserts a new entity; `Conflict` when its key or a unique field exists.
    pub async fn create(&self, doc: &T) -> Result<()> {
        self.repo.insert(doc).await
    }

    /// Applies a partial update by key and returns the result; `NotFound` when missing.
    pub async fn update(&self, key: &str, update: &Update) -> Result<T> {
        self.repo.update_one(key, update).await
    }

    /// Sets the given top-level fields by key (the others keep their values).
    pub async fn update_fields(
        &self,
        key: &str,
        fields: serde_json::Map<String, Value>,
    ) -> Result<T> {
        let update = fields
            .into_iter()
            .fold(Update::new(), |u, (path, value)| u.set(&path, value));
        self.update(key, &update).await
    }

    /// By key.
    pub async fn get(&self, key: &str) -> Result<Option<T>> {
        self.repo.get(key).await
    }

    /// The first entity (in default order) whose non-key `field` equals `value`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::sync::Arc;
    /// use opstore_app::services::automation::{EntityRepository, NoRawQuery};
    /// use opstore_app::services::repository;
    /// use opstore_app::{DataStore, StoreConfig};
    /// use opstore_domain::entities::automation::User;
    /// use opstore_domain::{Timestamp, json};
    ///
    /// let store = DataStore::open(&StoreConfig::from_url("memory://")?).await?;
    /// let users = EntityRepository::<User>::new(repository(store.store().as_ref())?, Arc::new(NoRawQuery("memory")));
    /// let now = Timestamp::now();
    /// users.create(&User {
    ///     user_id: "u1".into(), user_address: "0xabc".into(), email_id: None,
    ///     job_ids: Default::default(), opx_consumed: "0".into(), total_jobs: 0, total_tasks: 0,
    ///     created_at: now, last_updated_at: now,
    /// }).await?;
    ///
    /// let found = users.get_by_non_id("user_address", json!("0xabc")).await?;
    /// assert_eq!(found.map(|u| u.user_id).as_deref(), Some("u1"));
    /// // Native query text is an explicit escape hatch: unsupported unless one is wired.
    /// let raw = users.execute_query("SELECT * FROM user_data", &[]).await.unwrap_err();
    /// assert!(raw.is_unsupported());
    /// # Ok(()) }
    /// ```
    pub async fn get_by_non_id(&self, field: &str, value: Value) -> Result<Option<T>> {
        self.repo.get_by_field(field, value).await
    }

    /// Every entity whose `field` equals `value`.
    pub async fn get_by_field(&self, field: &str, value: Value) -> Result<Vec<T>> {
        self.get_by_fields(&[(field, value)]).await
    }

    /// Every entity matching all `(field, value)` pairs.
    pub async fn get_by_fields(&self, fields: &[(&str, Value)]) -> Result<Vec<T>> {
        let filter = Filter::all_of(fields.iter().map(|(f, v)| Filter::eq(f, v.clone())));
        self.repo.find(&Query::filter(filter)).await
    }

    /// Every entity.
    pub async fn list(&self) -> Result<Vec<T>> {
        self.repo.find(&Query::new()).await
    }

    /// Number of entities.
    pub async fn count(&self) -> Result<u64> {
        self.repo.count(&Filter::All).await
    }

    /// Whether an entity with this key exists.
    pub async fn exists(&self, key: &str) -> Result<bool> {
        self.repo.exists(&Filter::eq(T::schema().key(), key)).await
    }

    /// Whether any entity's `field` equals `value`.
    pub async fn exists_by_field(&self, field: &str, value: Value) -> Result<bool> {
        self.repo.exists(&Filter::eq(field, value)).await
    }

    /// Inserts all or none in one round trip; an empty batch does no I/O.
    pub async fn batch_create(&self, docs: &[T]) -> Result<u64> {
        if docs.is_empty() {
            return Ok(0);
        }
        self.repo.insert_many(docs).await
    }

    /// Runs backend-native query text, see [`RawQuery`].
    pub async fn execute_query(&self, query: &str, params: &[Value]) -> Result<Vec<T>> {
        let docs = self.raw.execute(T::schema(), query, params).await?;
        docs.into_iter().map(from_document).collect()
    }
}

/// Repositories for every automation entity, and the guarded health check.
pub struct AutomationService {
    store: Arc<dyn Store>,
    breaker: CircuitBreaker,
    users: EntityRepository<User>,
    jobs: EntityRepository<Job>,
    time_jobs: EntityRepository<TimeJob>,
    event_jobs: EntityRepository<EventJob>,
    condition_jobs: EntityRepository<ConditionJob>,
    tasks: EntityRepository<Task>,
    keepers: EntityRepository<Keeper>,
    api_keys: EntityRepository<ApiKey>,
}

impl fmt::Debug for AutomationService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AutomationService")
            .field("backend", &self.store.backend())
            .field("breaker", &self.breaker.state())
            .finish_non_exhaustive()
    }
}

impl AutomationService {
    /// The service over `store`; raw queries go to `raw` (use [`NoRawQuery`] when
    /// the backend has none).
    pub fn new(
        store: Arc<dyn Store>,
        raw: Arc<dyn RawQuery>,
        breaker: BreakerConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        let s = store.as_ref();
        let r = |raw: &Arc<dyn RawQuery>| Arc::clone(raw);
        Ok(AutomationService {
            users: EntityRepository::new(repository(s)?, r(&raw)),
            jobs: EntityRepository::new(repository(s)?, r(&raw)),
            time_jobs: EntityRepository::new(repository(s)?, r(&raw)),
            event_jobs: EntityRepository::new(repository(s)?, r(&raw)),
            condition_jobs: EntityRepository::new(repository(s)?, r(&raw)),
            tasks: EntityRepository::new(repository(s)?, r(&raw)),
            keepers: EntityRepository::new(repository(s)?, r(&raw)),
            api_keys: EntityRepository::new(repository(s)?, raw),
            breaker: CircuitBreaker::new(breaker, clock),
            store,
        })
    }

    /// The service over unused mock repositories, for tests of the health check.
    #[cfg(test)]
    fn with_parts(
        store: Arc<dyn Store>,
        raw: Arc<dyn RawQuery>,
        breaker: BreakerConfig,
        clock: Arc<dyn Clock>,
    ) -> Self {
        fn unused<T: Entity>(raw: &Arc<dyn RawQuery>) -> EntityRepository<T> {
            EntityRepository::new(
                Arc::new(opstore_domain::ports::collection::MockRepository::new()),
                Arc::clone(raw),
            )
        }
        AutomationService {
            users: unused(&raw),
            jobs: unused(&raw),
            time_jobs: unused(&raw),
            event_jobs: unused(&raw),
            condition_jobs: unused(&raw),
            tasks: unused(&raw),
            keepers: unused(&raw),
            api_keys: unused(&raw),
            breaker: CircuitBreaker::new(breaker, clock),
            store,
        }
    }

    /// Users.
    pub fn users(&self) -> &EntityRepository<User> {
        &self.users
    }
    /// Jobs.
    pub fn jobs(&self) -> &EntityRepository<Job> {
        &self.jobs
    }
    /// Scheduled jobs.
    pub fn time_jobs(&self) -> &EntityRepository<TimeJob> {
        &self.time_jobs
    }
    /// Event-triggered jobs.
    pub fn event_jobs(&self) -> &EntityRepository<EventJob> {
        &self.event_jobs
    }
    /// Condition-triggered jobs.
    pub fn condition_jobs(&self) -> &EntityRepository<ConditionJob> {
        &self.condition_jobs
    }
    /// Tasks.
    pub fn tasks(&self) -> &EntityRepository<Task> {
        &self.tasks
    }
    /// Keepers.
    pub fn keepers(&self) -> &EntityRepository<Keeper> {
        &self.keepers
    }
    /// API keys.
    pub fn api_keys(&self) -> &EntityRepository<ApiKey> {
        &self.api_keys
    }

    /// The circuit breaker guarding [`health_check`](Self::health_check).
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    /// Probes the backend unless the circuit is open. An open circuit fails fast
    /// with `Connection` without touching the backend.
    pub async fn health_check(&self) -> Result<HealthReport> {
        if let Admission::Rejected { retry_at, .. } = self.breaker.admit() {
            let when = retry_at.map_or_else(
                || "after the probe in flight".to_owned(),
                |t| format!("at {t}"),
            );
            return Err(StoreError::Connection(format!(
                "health check of `{}`: circuit open after repeated failures; next probe {when}",
                self.store.backend()
            )));
        }
        match self.store.health().await {
            Ok(report) => {
                self.breaker.record_success();
                Ok(report)
            }
            Err(e) => {
                self.breaker.record_failure();
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests;
