//! Mapping of driver errors to [`StoreError`].
//!
//! Messages name the operation, the collection and the key; they are built from
//! our own arguments and the server's SQLSTATE, never from the connection URL.

use opstore_domain::{Schema, StoreError};

/// SQLSTATE of a unique violation.
const UNIQUE_VIOLATION: &str = "23505";
/// SQLSTATEs the transaction runner retries.
const RETRYABLE: [&str; 2] = ["40001", "40P01"];

/// Where an error happened, for its message.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ctx<'a> {
    pub op: &'a str,
    pub target: &'a str,
    pub key: Option<&'a str>,
    pub schema: Option<&'static Schema>,
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(op: &'a str, target: &'a str) -> Self {
        Ctx {
            op,
            target,
            key: None,
            schema: None,
        }
    }
    pub(crate) fn key(mut self, key: &'a str) -> Self {
        self.key = Some(key);
        self
    }
    pub(crate) fn schema(mut self, schema: &'static Schema) -> Self {
        self.schema = Some(schema);
        self
    }
    pub(crate) fn describe(&self) -> String {
        match self.key {
            Some(key) => format!("{} `{key}` in `{}`", self.op, self.target),
            None => format!("{} on `{}`", self.op, self.target),
        }
    }
}

/// The SQLSTATE of a database error.
pub(crate) fn sqlstate(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    }
}

/// Whether the transaction runner should retry after this error.
pub(crate) fn is_retryable(e: &sqlx::Error) -> bool {
    sqlstate(e).is_some_and(|c| RETRYABLE.contains(&c.as_str()))
}

/// Longest the check behind [`pool_timeout`] waits for a direct connection.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Converts a pool timeout. sqlx retries a refused or failing connection until
/// the acquire timeout and then reports only the timeout, so one direct
/// connection attempt with the pool's options tells an exhausted pool (still
/// `Timeout`) from a server that cannot be reached (`Connection`, naming the
/// cause, such as a refused connection).
pub(crate) async fn pool_timeout(
    ctx: Ctx<'_>,
    options: &sqlx::postgres::PgConnectOptions,
) -> StoreError {
    use sqlx::Connection;
    let probe =
        tokio::time::timeout(PROBE_TIMEOUT, sqlx::PgConnection::connect_with(options)).await;
    match probe {
        Ok(Ok(conn)) => {
            // The server answers: the pool was busy. The probe's close result
            // changes nothing about that.
            let _ = conn.close().await;
            map(ctx, sqlx::Error::PoolTimedOut)
        }
        Ok(Err(e)) => match map(ctx, e) {
            StoreError::Backend { message, source } => StoreError::Connection(match source {
                Some(s) => format!("{message}: {s}"),
                None => message,
            }),
            other => other,
        },
        Err(_) => StoreError::Timeout(format!(
            "{}: the server accepted no connection within the acquire timeout",
            ctx.describe()
        )),
    }
}

/// Converts a driver error.
pub(crate) fn map(ctx: Ctx<'_>, e: sqlx::Error) -> StoreError {
    let what = ctx.describe();
    match &e {
        sqlx::Error::PoolTimedOut => StoreError::Timeout(format!(
            "{what}: no free connection in the pool within the acquire timeout"
        )),
        sqlx::Error::PoolClosed => StoreError::Connection(format!("{what}: the store is closed")),
        sqlx::Error::Io(io) => StoreError::Connection(format!("{what}: {io}")),
        sqlx::Error::Tls(_) => StoreError::Connection(format!("{what}: TLS failure")),
        sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed => {
            StoreError::Connection(format!("{what}: connection broke"))
        }
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            let text = db.message().to_owned();
            match code.as_str() {
                UNIQUE_VIOLATION => {
                    let field = db.constraint().and_then(|c| constraint_field(ctx, c));
                    match field {
                        Some(f) => StoreError::Conflict(format!(
                            "{what}: duplicate value of unique field `{f}`"
                        )),
                        None => StoreError::Conflict(format!("{what}: duplicate key")),
                    }
                }
                c if RETRYABLE.contains(&c) => StoreError::Conflict(format!(
                    "{what}: concurrent transaction conflict ({code})"
                )),
                "57014" => {
                    StoreError::Timeout(format!("{what}: statement timeout or cancellation"))
                }
                "55P03" => StoreError::Timeout(format!("{what}: lock not available")),
                c if c.starts_with("08") || matches!(c, "57P01" | "57P02" | "57P03" | "53300") => {
                    StoreError::Connection(format!("{what}: {text} ({code})"))
                }
                c if c.starts_with("22") || c.starts_with("23") || c == "54000" => {
                    StoreError::Validation(format!("{what}: {text} ({code})"))
                }
                _ => StoreError::backend(format!("{what}: {text} ({code})"), e),
            }
        }
        _ => StoreError::backend(what, e),
    }
}

/// The field a unique constraint guards, from the index names the schema module
/// generates (`<table>_pkey`, `<table>__<column>__key`).
fn constraint_field(ctx: Ctx<'_>, constraint: &str) -> Option<String> {
    let schema = ctx.schema?;
    if constraint.ends_with("_pkey") {
        return Some(schema.key().to_owned());
    }
    schema
        .fields()
        .iter()
        .filter(|f| f.is_unique())
        .find(|f| crate::schema::unique_index_name(schema, f.path()) == constraint)
        .map(|f| f.path().to_owned())
}
