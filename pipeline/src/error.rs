//! Per-document (and per-page) error records: a bad input is a record, never a crashed batch.

pub use quire_exporters::error_kind::ErrorKind;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;

/// A failed document, or one failed page of it (`page` set). Serializes as
/// `{"path": ..., "kind": ..., "message": ..., "page": ...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
pub struct DocError {
    /// The input file as it was found (the path given or walked).
    pub path: PathBuf,
    pub kind: ErrorKind,
    /// A one-line human message; never contains document content.
    pub message: String,
    /// The 0-based page index when only that page failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<u32>,
}

impl DocError {
    pub fn new(path: impl Into<PathBuf>, kind: ErrorKind, message: impl Into<String>) -> Self {
        DocError {
            path: path.into(),
            kind,
            message: message.into(),
            page: None,
        }
    }

    pub fn on_page(mut self, page: Option<u32>) -> Self {
        self.page = page;
        self
    }

    /// The record the exporters write into a document's JSON.
    pub fn to_record(&self) -> quire_exporters::record::ErrorRecord {
        quire_exporters::record::ErrorRecord {
            kind: self.kind,
            message: self.message.clone(),
            page: self.page,
        }
    }
}

impl fmt::Display for DocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(page) = self.page {
            write!(f, " (page {})", page + 1)?;
        }
        write!(f, ": {} [{}]", self.message, self.kind)
    }
}

/// Turns an I/O error on `path` into a record.
pub fn io_error(path: &std::path::Path, err: &std::io::Error) -> DocError {
    let kind = match err.kind() {
        std::io::ErrorKind::NotFound => ErrorKind::NotFound,
        _ => ErrorKind::Io,
    };
    let message = match err.kind() {
        std::io::ErrorKind::NotFound => "no such file or folder".to_string(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        // Ours (`sniff::open_regular`: "not a regular file (a FIFO)") or the OS's, already clear.
        std::io::ErrorKind::InvalidInput => err.to_string(),
        _ => format!("cannot read: {err}"),
    };
    DocError::new(path, kind, message)
}

/// [`io_error`] for an input that was listed (walked or given, and found) and is read later: gone
/// by then, it was deleted or moved during the run, and the record says so.
pub fn vanished_or_io_error(path: &std::path::Path, err: &std::io::Error) -> DocError {
    let mut error = io_error(path, err);
    if error.kind == ErrorKind::NotFound {
        error.message =
            "no such file: it was there when the inputs were listed, and was deleted or moved \
             during the run"
                .into();
    }
    error
}
