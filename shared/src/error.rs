//! The crate's error types. Every error says whether retrying can help, because that
//! decides what the store client, the collector and the Lambda runtime do with it.

use crate::store::StoreError;

// Kept here too: most callers that clip a value are building an error.
pub(crate) use crate::text::clip;

/// Errors of the cellmatrix library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A blob store operation failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An input file (or request) is malformed; `source_name` says which one.
    #[error("{source_name}: {message}")]
    Input {
        /// The file, or the part of a request, that is wrong.
        source_name: String,
        /// What is wrong with it.
        message: String,
    },
    /// Stored data does not decode: a corrupt chunk, a bad manifest.
    #[error("corrupt {what}: {message}")]
    Corrupt {
        /// The object (bundle, key) that is corrupt.
        what: String,
        /// What is wrong with it.
        message: String,
    },
    /// A write would replace different content (an existing bundle, say).
    #[error("conflict: {0}")]
    Conflict(String),
    /// Something asked for does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// A bad identifier or key built from user input.
    #[error("invalid {kind} {value:?}: {reason}")]
    InvalidId {
        /// What kind of identifier (fqid, key, ...).
        kind: &'static str,
        /// The offending value (truncated when very long).
        value: String,
        /// Why it is refused.
        reason: String,
    },
    /// A local I/O error outside the blob store (reading an input file, say).
    #[error("{path}: {source}")]
    Io {
        /// The path being read or written.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Zarr encoding or decoding failed.
    #[error("zarr {what}: {message}")]
    Zarr {
        /// The array or group.
        what: String,
        /// zarrs' message.
        message: String,
    },
    /// The request was cancelled; work stops without an error to retry.
    #[error("request {0} was cancelled")]
    Cancelled(String),
    /// Writing an output format failed.
    #[error("writing the {format} output: {message}")]
    Output {
        /// The format.
        format: &'static str,
        /// What went wrong.
        message: String,
    },
    /// A bug: a task panicked or an invariant broke.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Whether the same call may succeed if tried again.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Store(e) => e.is_retryable(),
            Error::Input { .. }
            | Error::Corrupt { .. }
            | Error::Conflict(_)
            | Error::NotFound(_)
            | Error::InvalidId { .. }
            | Error::Io { .. }
            | Error::Zarr { .. }
            | Error::Cancelled(_)
            | Error::Output { .. }
            | Error::Internal(_) => false,
        }
    }

    /// The error's class as Lambda reports it (`errorType`), so that the response, and
    /// `cargo lambda watch`'s error body, say whether a retry can help.
    pub fn error_type(&self) -> &'static str {
        if self.is_retryable() {
            Self::RETRYABLE
        } else {
            Self::NON_RETRYABLE
        }
    }

    /// [`Error::error_type`] of an error a retry may fix.
    pub const RETRYABLE: &'static str = "Retryable";
    /// [`Error::error_type`] of an error a retry cannot fix.
    pub const NON_RETRYABLE: &'static str = "NonRetryable";

    /// An input error about `source_name`.
    pub fn input(source_name: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Input {
            source_name: source_name.into(),
            message: message.into(),
        }
    }

    /// A local I/O error about `path`.
    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }

    /// A zarr error about `what`.
    pub fn zarr(what: impl Into<String>, e: impl std::fmt::Display) -> Self {
        Error::Zarr {
            what: what.into(),
            message: e.to_string(),
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
