//! The one error type commands return, and the exit code it maps to.

use std::fmt;
use std::process::ExitCode;

use opstore_domain::StoreError;

/// Why a command failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request was malformed: bad arguments, bad URL, unknown scheme or
    /// collection, a backend that is not compiled in. Exit code 2.
    Usage,
    /// The request was fine but doing it failed: unreachable server, lost
    /// connection, a demo invariant that did not hold. Exit code 1.
    Runtime,
    /// The reader of stdout went away (`opstore watch | head`): not an error
    /// worth a message. Exit code 0.
    Closed,
}

/// A command failure: a kind and one line of text for stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError {
    kind: ErrorKind,
    message: String,
}

impl CliError {
    /// A usage or validation error (exit code 2).
    pub fn usage(message: impl Into<String>) -> Self {
        CliError {
            kind: ErrorKind::Usage,
            message: message.into(),
        }
    }

    /// A runtime error (exit code 1).
    pub fn runtime(message: impl Into<String>) -> Self {
        CliError {
            kind: ErrorKind::Runtime,
            message: message.into(),
        }
    }

    /// A store error, prefixed with what was being done.
    pub fn store(context: &str, error: StoreError) -> Self {
        let kind = if error.is_validation() {
            ErrorKind::Usage
        } else {
            ErrorKind::Runtime
        };
        CliError {
            kind,
            message: format!("{context}: {}", chain(&error)),
        }
    }

    /// The kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The process exit code: 2 for usage errors, 1 for runtime errors.
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.code())
    }

    /// The exit code as a number.
    pub fn code(&self) -> u8 {
        match self.kind {
            ErrorKind::Usage => 2,
            ErrorKind::Runtime => 1,
            ErrorKind::Closed => 0,
        }
    }

    /// The message as one line.
    pub fn line(&self) -> String {
        one_line(&self.message)
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.line())
    }
}

impl std::error::Error for CliError {}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            return CliError {
                kind: ErrorKind::Closed,
                message: "output closed".into(),
            };
        }
        CliError::runtime(format!("writing output: {e}"))
    }
}

/// The error and its sources, joined by `: `, skipping sources whose text the
/// outer message already contains.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Collapses line breaks so an error is always one line on stderr.
pub fn one_line(text: &str) -> String {
    text.split(['\n', '\r'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_errors_exit_2_and_others_1() {
        let usage = CliError::store("open", StoreError::Validation("bad".into()));
        assert_eq!(usage.code(), 2);
        let runtime = CliError::store("open", StoreError::Connection("refused".into()));
        assert_eq!(runtime.code(), 1);
        assert_eq!(runtime.line(), "open: connection failed: refused");
    }

    #[test]
    fn messages_are_one_line() {
        assert_eq!(one_line("a\n\n  b\r\nc"), "a; b; c");
    }
}
