//! Per-document (and per-page) error records: a bad input is a record, never a crashed batch.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;

/// What went wrong, as a stable machine-readable kind (`snake_case` in JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The input path does not exist.
    NotFound,
    /// The file or folder could not be read (permissions, I/O error, symlink loop).
    Io,
    /// A file of zero bytes.
    EmptyFile,
    /// Not a PDF, PNG, JPEG, TIFF or WebP by its content.
    UnsupportedFormat,
    /// PDFium could not parse the file (truncated, damaged, not really a PDF).
    PdfCorrupt,
    /// The PDF is encrypted and no password was given.
    PdfEncrypted,
    /// The PDF is encrypted and the given password is wrong.
    PdfWrongPassword,
    /// The PDF parses but has no pages.
    PdfNoPages,
    /// PDFium could not load or render one page.
    PageFailed,
    /// The page or image has a size the resize rule cannot handle (zero, negative, not finite).
    BadPageSize,
    /// The image decoder rejected the file (corrupt, truncated, unsupported variant).
    ImageCorrupt,
    /// The image is larger than the decoder limits allow (decompression bomb guard).
    ImageTooLarge,
    /// The PDFium worker process died (crash, abort, out of memory) on this document.
    WorkerCrashed,
    /// The PDFium worker took longer than the per-page timeout and was killed.
    WorkerTimeout,
    /// The PDFium worker could not be started or PDFium could not be loaded.
    WorkerFailed,
    /// Two inputs would write the same output files.
    DuplicateOutput,
    /// Writing the outputs failed.
    Output,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not_found",
            ErrorKind::Io => "io",
            ErrorKind::EmptyFile => "empty_file",
            ErrorKind::UnsupportedFormat => "unsupported_format",
            ErrorKind::PdfCorrupt => "pdf_corrupt",
            ErrorKind::PdfEncrypted => "pdf_encrypted",
            ErrorKind::PdfWrongPassword => "pdf_wrong_password",
            ErrorKind::PdfNoPages => "pdf_no_pages",
            ErrorKind::PageFailed => "page_failed",
            ErrorKind::BadPageSize => "bad_page_size",
            ErrorKind::ImageCorrupt => "image_corrupt",
            ErrorKind::ImageTooLarge => "image_too_large",
            ErrorKind::WorkerCrashed => "worker_crashed",
            ErrorKind::WorkerTimeout => "worker_timeout",
            ErrorKind::WorkerFailed => "worker_failed",
            ErrorKind::DuplicateOutput => "duplicate_output",
            ErrorKind::Output => "output",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

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
            kind: self.kind.as_str().to_string(),
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
        _ => format!("cannot read: {err}"),
    };
    DocError::new(path, kind, message)
}
