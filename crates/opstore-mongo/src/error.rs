//! Mapping of driver errors to [`StoreError`].

use mongodb::error::{Error, ErrorKind, TRANSIENT_TRANSACTION_ERROR, WriteFailure};
use opstore_domain::StoreError;

/// Duplicate key.
pub(crate) const DUPLICATE_KEY: i32 = 11000;
/// A concurrent write to the same document inside a transaction.
pub(crate) const WRITE_CONFLICT: i32 = 112;
/// Change-stream history is gone: capped position lost, invalid token,
/// fatal change-stream error, history lost.
pub(crate) const HISTORY_LOST: [i32; 4] = [136, 260, 280, 286];

/// The server error code of a driver error, wherever the driver put it.
pub(crate) fn code(e: &Error) -> Option<i32> {
    match e.kind.as_ref() {
        ErrorKind::Command(c) => Some(c.code),
        ErrorKind::Write(WriteFailure::WriteError(w)) => Some(w.code),
        ErrorKind::Write(WriteFailure::WriteConcernError(w)) => Some(w.code),
        ErrorKind::InsertMany(m) => m
            .write_errors
            .as_ref()
            .and_then(|ws| ws.first().map(|w| w.code))
            .or_else(|| m.write_concern_error.as_ref().map(|w| w.code)),
        _ => None,
    }
}

/// The server's message for a write error, without the driver's wrapping.
pub(crate) fn server_message(e: &Error) -> String {
    match e.kind.as_ref() {
        ErrorKind::Command(c) => c.message.clone(),
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.message.clone(),
        ErrorKind::InsertMany(m) => m
            .write_errors
            .as_ref()
            .and_then(|ws| ws.first().map(|w| w.message.clone()))
            .unwrap_or_default(),
        _ => e.to_string(),
    }
}

/// Whether a transaction that hit `e` may succeed when run again.
pub(crate) fn is_transient_tx(e: &Error) -> bool {
    e.contains_label(TRANSIENT_TRANSACTION_ERROR) || code(e) == Some(WRITE_CONFLICT)
}

/// MongoDB's `BadValue`, which an `$inc` past the 64-bit integer range fails with.
const BAD_VALUE: i32 = 2;

/// Maps the error of a native update: an `$inc` that overflows a 64-bit integer
/// is `Validation`, as in the reference (the sum, a float, does not fit the
/// integer field); the rest as [`map`].
pub(crate) fn map_update(what: &str, e: Error) -> StoreError {
    if code(&e) == Some(BAD_VALUE) && server_message(&e).contains("$inc") {
        return StoreError::Validation(format!(
            "{what}: the increment leaves the 64-bit integer range ({})",
            server_message(&e)
        ));
    }
    map(what, e)
}

/// MongoDB's "Regular expression is too long" (or otherwise invalid).
const REGEX_TOO_LONG: i32 = 51091;

/// Whether a `BadValue` message is a server's cap on the length of a pattern.
fn is_regex_cap(message: &str) -> bool {
    message.contains("regex") && message.contains("cap")
}

/// A `contains_ci` needle whose escaped pattern is longer than the server
/// allows: a limit of this server, reported as such (the portable model has none).
fn regex_too_long(what: &str, e: &Error) -> StoreError {
    StoreError::Unsupported(format!(
        "{what}: the server refuses the regular expression a case-insensitive contains \
         sends ({}); MongoDB allows patterns up to 32,764 characters, some MongoDB-wire \
         servers fewer: use a shorter needle",
        server_message(e)
    ))
}

/// Maps a driver error. `what` names the operation, collection and key
/// (`"update_one `k` in `items`"`); it never holds credentials.
pub(crate) fn map(what: &str, e: Error) -> StoreError {
    match code(&e) {
        Some(DUPLICATE_KEY) => {
            return StoreError::Conflict(format!("{what}: duplicate key ({})", server_message(&e)));
        }
        Some(WRITE_CONFLICT) => {
            return StoreError::Conflict(format!(
                "{what}: write conflict with a concurrent transaction"
            ));
        }
        Some(50) => return StoreError::Timeout(format!("{what}: server time limit exceeded")),
        Some(REGEX_TOO_LONG) => return regex_too_long(what, &e),
        Some(BAD_VALUE) if is_regex_cap(&server_message(&e)) => return regex_too_long(what, &e),
        Some(c) if HISTORY_LOST.contains(&c) => {
            return StoreError::ResumeTokenExpired(format!("{what}: {}", server_message(&e)));
        }
        _ => {}
    }
    match e.kind.as_ref() {
        ErrorKind::Io(_) | ErrorKind::ConnectionPoolCleared { .. } => {
            StoreError::Connection(format!("{what}: {e}"))
        }
        ErrorKind::ServerSelection { .. } => {
            StoreError::Connection(format!("{what}: no usable server: {e}"))
        }
        ErrorKind::Shutdown => StoreError::Connection(format!("{what}: the store is closed")),
        ErrorKind::BsonSerialization(_) | ErrorKind::InvalidArgument { .. } => {
            StoreError::Validation(format!("{what}: {e}"))
        }
        _ => StoreError::backend(what.to_owned(), e),
    }
}
