//! The result record of one document: what was produced, from what, with which settings.
//! Everything but `run` is a pure function of the inputs and settings, so a rerun writes the
//! same bytes; `run` holds what differs between runs (timings).

pub use crate::error_kind::ErrorKind;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DocumentRecord {
    /// Path relative to the input root, `/`-separated.
    pub source: String,
    pub content_sha256: String,
    pub page_count: u32,
    pub task: String,
    pub settings: Settings,
    /// The extraction (`extract`), or `null` when the document failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
    /// The Markdown (`ocr`) or free text (`prompt`) of the whole document.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    pub pages: Vec<PageRecord>,
    pub tokens: TokenCounts,
    pub warnings: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorRecord>,
    /// Run-specific facts, excluded when outputs are compared across runs.
    pub run: RunInfo,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Settings {
    pub model: String,
    pub dtype: String,
    pub budget: u32,
    pub execution_provider: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// Hash of everything that shapes the output (model files, settings, prompts): a rerun
    /// trusts an existing output only when it has the run's fingerprint.
    #[serde(default)]
    pub fingerprint: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PageRecord {
    pub index: u32,
    pub width_px: u32,
    pub height_px: u32,
    /// Rendered pixels per inch of the page (PDF pages), or the shrink factor's inverse basis
    /// for images: see `warnings`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pixels_per_inch: Option<f32>,
    pub soft_tokens: u32,
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TokenCounts {
    pub prompt: u64,
    pub generated: u64,
}

/// Why a document (or one of its pages) failed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErrorRecord {
    /// A stable machine-readable kind: `pdf_encrypted`, `pdf_corrupt`, `worker_crashed`, ...
    pub kind: ErrorKind,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page: Option<u32>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RunInfo {
    /// Milliseconds per stage for this document.
    pub timings_ms: BTreeMap<String, f64>,
}
