//! The store: connection, capabilities, health, migrations and the port factory.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use mongodb::bson::{Document, doc};
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::{Client, Database, IndexModel};
use opstore_domain::redact::redact_url;
use opstore_domain::{
    Capabilities, ChangeFeed, CheckpointStore, Collection, HealthReport, IdempotencyStore,
    LockManager, MigrationReport, Result, Schema, Store, StoreError, TxOptions, TxWork,
};

use crate::codegen::{IndexSpec, index_specs};
use crate::collection::MongoCollection;
use crate::config::MongoConfig;
use crate::coord::{
    CHECKPOINTS, IDEMPOTENCY, LEASES, MongoCheckpoints, MongoIdempotency, MongoLocks,
};
use crate::ctx::Ctx;
use crate::error;
use crate::feed::MongoFeed;

/// A MongoDB-backed [`Store`].
///
/// Transactions and change streams need a replica set (or sharded cluster);
/// `connect` asks the server (`hello`) and [`Store::capabilities`] reports them
/// as unavailable on a standalone server, with a note saying so.
#[derive(Clone)]
pub struct MongoStore {
    ctx: Arc<Ctx>,
}

impl fmt::Debug for MongoStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MongoStore")
            .field("url", &self.ctx.config.redacted_url())
            .field("database", &self.ctx.config.database)
            .field("replica_set", &self.ctx.replica_set)
            .finish()
    }
}

/// Removes the password from a driver message about the URL.
fn scrub(message: String, url: &str) -> String {
    let redacted = redact_url(url);
    let mut out = message.replace(url, &redacted);
    if let Some(rest) = url.split("://").nth(1) {
        if let Some((userinfo, _)) = rest.split_once('@') {
            if let Some((_, password)) = userinfo.split_once(':') {
                if !password.is_empty() {
                    out = out.replace(password, "***");
                }
            }
        }
    }
    out
}

impl MongoStore {
    /// Connects, checks that the server answers, and learns its topology.
    pub async fn connect(config: MongoConfig) -> Result<Self> {
        let shown = config.redacted_url();
        let mut options = ClientOptions::parse(&config.url).await.map_err(|e| {
            StoreError::Validation(format!(
                "invalid MongoDB URL {shown}: {}",
                scrub(e.to_string(), &config.url)
            ))
        })?;
        options.connect_timeout = Some(config.connect_timeout);
        options.server_selection_timeout = Some(config.server_selection_timeout);
        options.app_name.get_or_insert_with(|| "opstore".to_owned());
        let client = Client::with_options(options).map_err(|e| {
            StoreError::Connection(format!(
                "connect to {shown}: {}",
                scrub(e.to_string(), &config.url)
            ))
        })?;
        let db = client.database(&config.database);
        let hello = db.run_command(doc! { "hello": 1 }).await.map_err(|e| {
            StoreError::Connection(format!(
                "connect to {shown}: {}",
                scrub(e.to_string(), &config.url)
            ))
        })?;
        let set_name = hello.get_str("setName").ok().map(str::to_owned);
        let mongos = hello.get_str("msg").ok() == Some("isdbgrid");
        let version = db
            .run_command(doc! { "buildInfo": 1 })
            .await
            .ok()
            .and_then(|b| b.get_str("version").ok().map(str::to_owned))
            .unwrap_or_else(|| "unknown version".to_owned());
        let topology = match (&set_name, mongos) {
            (Some(name), _) => format!("replica set `{name}`"),
            (None, true) => "sharded cluster".to_owned(),
            (None, false) => "standalone".to_owned(),
        };
        let server = format!("MongoDB {version} ({topology})");
        let replica_set = set_name.is_some() || mongos;
        Ok(MongoStore {
            ctx: Arc::new(Ctx {
                client,
                db,
                config,
                replica_set,
                server,
            }),
        })
    }

    /// The database this store uses.
    pub fn database(&self) -> &Database {
        &self.ctx.db
    }

    async fn ensure_collection(
        &self,
        name: &str,
        existing: &[String],
        report: &mut MigrationReport,
    ) -> Result<()> {
        if existing.iter().any(|n| n == name) {
            report.unchanged.push(format!("collection {name}"));
            return Ok(());
        }
        match self.ctx.db.create_collection(name).await {
            Ok(()) => report.applied.push(format!("collection {name}")),
            // Created concurrently.
            Err(e) if error::code(&e) == Some(48) => {
                report.unchanged.push(format!("collection {name}"))
            }
            Err(e) => {
                return Err(error::map(
                    &format!("migrate: create collection `{name}`"),
                    e,
                ));
            }
        }
        Ok(())
    }

    async fn ensure_indexes(
        &self,
        collection: &str,
        specs: &[IndexSpec],
        report: &mut MigrationReport,
    ) -> Result<()> {
        let coll = self.ctx.db.collection::<Document>(collection);
        let what = format!("migrate: indexes of `{collection}`");
        let names: Vec<String> = coll
            .list_index_names()
            .await
            .map_err(|e| error::map(&what, e))?;
        for spec in specs {
            let line = format!("index {collection}.{}", spec.name);
            if names.contains(&spec.name) {
                report.unchanged.push(line);
                continue;
            }
            let mut options = IndexOptions::default();
            options.name = Some(spec.name.clone());
            if spec.unique {
                options.unique = Some(true);
            }
            if !spec.partial_types.is_empty() {
                options.partial_filter_expression =
                    Some(doc! { &spec.path: { "$type": spec.partial_types.clone() } });
            }
            options.expire_after = spec.expire_after_seconds.map(Duration::from_secs);
            let model = IndexModel::builder()
                .keys(doc! { &spec.path: 1 })
                .options(options)
                .build();
            coll.create_index(model)
                .await
                .map_err(|e| error::map(&format!("{what}: {}", spec.name), e))?;
            report.applied.push(line);
        }
        Ok(())
    }
}

fn internal_specs() -> Vec<IndexSpec> {
    vec![IndexSpec {
        collection: IDEMPOTENCY.to_owned(),
        name: "opstore_ttl_expires_at".to_owned(),
        path: "expires_at".to_owned(),
        unique: false,
        partial_types: Vec::new(),
        expire_after_seconds: Some(0),
    }]
}

#[async_trait]
impl Store for MongoStore {
    fn backend(&self) -> &'static str {
        "mongo"
    }

    fn capabilities(&self) -> Capabilities {
        let rs = self.ctx.replica_set;
        let mut notes = vec![
            "row locks: get_for_update writes a hidden lock field inside the transaction; a concurrent \
             transaction touching the document gets a write conflict and is retried"
                .to_owned(),
        ];
        if !rs {
            notes.push(
                "standalone server: transactions and change streams need a replica set (mongod --replSet, then \
                 rs.initiate()); insert_many undoes a partial batch with a compensating delete"
                    .to_owned(),
            );
        }
        Capabilities {
            transactions: rs,
            row_locks: rs,
            change_feed: rs,
            change_feed_order: "collection",
            sort_any_field: true,
            filter_any_field: true,
            aggregates: true,
            claim: true,
            notes,
        }
    }

    async fn health(&self) -> Result<HealthReport> {
        let start = Instant::now();
        self.ctx
            .db
            .run_command(doc! { "ping": 1 })
            .await
            .map_err(|e| error::map("health: ping", e))?;
        Ok(HealthReport {
            backend: "mongo",
            server: self.ctx.server.clone(),
            latency: start.elapsed(),
        })
    }

    async fn migrate(&self, schemas: &[&'static Schema]) -> Result<MigrationReport> {
        let mut report = MigrationReport::default();
        let existing: Vec<String> = self
            .ctx
            .db
            .list_collection_names()
            .await
            .map_err(|e| error::map("migrate: list collections", e))?;
        for name in [LEASES, IDEMPOTENCY, CHECKPOINTS] {
            self.ensure_collection(name, &existing, &mut report).await?;
        }
        self.ensure_indexes(IDEMPOTENCY, &internal_specs(), &mut report)
            .await?;
        for schema in schemas {
            self.ensure_collection(schema.name(), &existing, &mut report)
                .await?;
            self.ensure_indexes(schema.name(), &index_specs(schema), &mut report)
                .await?;
        }
        Ok(report)
    }

    fn collection(&self, schema: &'static Schema) -> Result<Arc<dyn Collection>> {
        Ok(Arc::new(MongoCollection::new(
            Arc::clone(&self.ctx),
            schema,
            None,
        )))
    }

    fn change_feed(&self) -> Arc<dyn ChangeFeed> {
        Arc::new(MongoFeed::new(Arc::clone(&self.ctx)))
    }

    fn locks(&self) -> Arc<dyn LockManager> {
        Arc::new(MongoLocks::new(Arc::clone(&self.ctx)))
    }

    fn idempotency(&self) -> Arc<dyn IdempotencyStore> {
        Arc::new(MongoIdempotency::new(Arc::clone(&self.ctx)))
    }

    fn checkpoints(&self) -> Arc<dyn CheckpointStore> {
        Arc::new(MongoCheckpoints::new(&self.ctx))
    }

    async fn transaction<'a>(&self, options: TxOptions, work: &TxWork<'a>) -> Result<()> {
        crate::tx::run(&self.ctx, options, work).await
    }

    async fn close(&self) {
        self.ctx.client.clone().shutdown().await;
    }
}
