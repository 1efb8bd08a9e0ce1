//! Mapping of driver failures to `StoreError`, with the operation, table and key.

use opstore_domain::StoreError;

use crate::session::DriverError;

/// What was being done, for error messages.
#[derive(Debug, Clone, Copy)]
pub struct Op<'a> {
    /// Operation name (`insert`, `get`, `try_acquire`, ...).
    pub name: &'a str,
    /// Table (or lease/processor table) involved.
    pub table: &'a str,
    /// Key involved, when one is.
    pub key: Option<&'a str>,
}

impl<'a> Op<'a> {
    /// An operation on a whole table.
    pub fn new(name: &'a str, table: &'a str) -> Self {
        Op {
            name,
            table,
            key: None,
        }
    }

    /// The same operation on one key.
    pub fn key(mut self, key: &'a str) -> Self {
        self.key = Some(key);
        self
    }

    /// `insert of `k` in `items``, for messages.
    pub fn describe(&self) -> String {
        match self.key {
            Some(k) => format!("{} of `{k}` in `{}`", self.name, self.table),
            None => format!("{} on `{}`", self.name, self.table),
        }
    }
}

/// Maps a driver failure. Connection and timeout classes stay distinct so callers
/// can retry them (`StoreError::is_transient`); a timed-out conditional write is
/// a `Timeout` whose outcome is unknown.
pub fn map_driver_error(op: Op<'_>, err: DriverError) -> StoreError {
    let what = op.describe();
    match err {
        DriverError::Connection(m) => StoreError::Connection(format!("{what}: {m}")),
        DriverError::Closed => StoreError::Connection(format!("{what}: the store is closed")),
        DriverError::Timeout(m) => StoreError::Timeout(format!("{what}: {m}")),
        DriverError::Unavailable(m) => {
            StoreError::Connection(format!("{what}: cluster cannot serve the request: {m}"))
        }
        DriverError::Invalid(m) => {
            let hint = if m.contains("unconfigured table") || m.contains("Undefined column") {
                " (run migrate for this schema)"
            } else {
                ""
            };
            StoreError::backend(
                format!("{what}: statement rejected{hint}"),
                DriverError::Invalid(m),
            )
        }
        other @ (DriverError::Unauthorized(_) | DriverError::Other(_)) => {
            StoreError::backend(what, other)
        }
    }
}

/// The error for a failed lightweight transaction that means another writer won.
pub fn lwt_conflict(op: Op<'_>, detail: &str) -> StoreError {
    StoreError::Conflict(format!("{}: {detail}", op.describe()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_errors_map_to_store_errors_with_context() {
        let op = Op::new("get", "items").key("a1");
        let e = map_driver_error(op, DriverError::Connection("refused".into()));
        assert!(e.is_connection());
        assert_eq!(
            e.to_string(),
            "connection failed: get of `a1` in `items`: refused"
        );
        assert!(map_driver_error(op, DriverError::Timeout("slow".into())).is_timeout());
        assert!(map_driver_error(op, DriverError::Unavailable("1 of 2".into())).is_connection());
        assert!(map_driver_error(op, DriverError::Closed).is_connection());
        let e = map_driver_error(op, DriverError::Invalid("unconfigured table items".into()));
        assert!(e.is_backend());
        assert!(e.to_string().contains("run migrate"), "{e}");
        assert!(map_driver_error(op, DriverError::Unauthorized("no".into())).is_backend());
        assert!(
            map_driver_error(Op::new("find", "items"), DriverError::Other("x".into()))
                .to_string()
                .contains("find on `items`")
        );
    }

    #[test]
    fn failed_lwt_is_a_conflict() {
        let e = lwt_conflict(Op::new("insert", "items").key("k"), "key exists");
        assert!(e.is_conflict());
        assert!(
            e.to_string()
                .contains("insert of `k` in `items`: key exists")
        );
    }
}
