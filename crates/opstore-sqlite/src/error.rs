//! Mapping of driver errors to [`StoreError`].
//!
//! Messages name the operation, the collection and the key; they are built from
//! our own arguments and SQLite's result codes, never from the connection URL.

use opstore_domain::{Schema, StoreError};

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

/// Converts a driver error.
pub(crate) fn map(ctx: Ctx<'_>, e: sqlx::Error) -> StoreError {
    let what = ctx.describe();
    match &e {
        sqlx::Error::PoolTimedOut => StoreError::Timeout(format!(
            "{what}: no free connection in the pool within the acquire timeout"
        )),
        sqlx::Error::PoolClosed => StoreError::Connection(format!("{what}: the store is closed")),
        sqlx::Error::Io(io) => StoreError::Connection(format!("{what}: {io}")),
        sqlx::Error::WorkerCrashed => {
            StoreError::Connection(format!("{what}: the connection's worker stopped"))
        }
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            let text = db.message().to_owned();
            if matches!(db.kind(), sqlx::error::ErrorKind::UniqueViolation) {
                return match unique_field(ctx, &text) {
                    Some(f) if ctx.schema.is_some_and(|s| s.key() != f) => StoreError::Conflict(
                        format!("{what}: duplicate value of unique field `{f}`"),
                    ),
                    _ => StoreError::Conflict(format!("{what}: duplicate key")),
                };
            }
            // The primary result code is the low byte of the extended one.
            let primary = code.parse::<i32>().map(|c| c & 0xff).unwrap_or(-1);
            match primary {
                // SQLITE_BUSY, SQLITE_LOCKED: another writer held the lock past busy_timeout.
                5 | 6 => StoreError::Timeout(format!(
                    "{what}: the database stayed locked by another writer past the busy timeout ({code})"
                )),
                // SQLITE_CANTOPEN, SQLITE_NOTADB, SQLITE_READONLY, SQLITE_IOERR, SQLITE_FULL.
                14 | 26 | 8 | 10 | 13 => StoreError::Connection(format!("{what}: {text} ({code})")),
                // SQLITE_TOOBIG, SQLITE_CONSTRAINT, SQLITE_MISMATCH, SQLITE_RANGE.
                18 | 19 | 20 | 25 => StoreError::Validation(format!("{what}: {text} ({code})")),
                _ => StoreError::backend(format!("{what}: {text} ({code})"), e),
            }
        }
        _ => StoreError::backend(what, e),
    }
}

/// The declared field a unique violation names: SQLite reports
/// `UNIQUE constraint failed: table.column`, and columns are field paths.
fn unique_field(ctx: Ctx<'_>, message: &str) -> Option<String> {
    let schema = ctx.schema?;
    let (_, cols) = message.split_once("failed: ")?;
    let first = cols.split(',').next()?.trim();
    let column = first.split_once('.').map_or(first, |(_, c)| c);
    let column = column.trim_matches('"');
    schema
        .fields()
        .iter()
        .map(|f| f.path())
        .chain([schema.key()])
        .find(|p| *p == column)
        .map(str::to_owned)
}

/// Decoding a column failed: a stored value is not what the adapter wrote.
pub(crate) fn decode(what: &str, e: sqlx::Error) -> StoreError {
    StoreError::backend(format!("decoding {what}"), e)
}
