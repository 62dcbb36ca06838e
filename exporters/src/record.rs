//! The result record of one document: what was produced, from what, with which settings.
//! Everything but `run` is a pure function of the inputs and settings, so a rerun writes the
//! same bytes; `run` holds what differs between runs (timings).

pub use crate::error_kind::ErrorKind;
use indexmap::IndexMap;
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
    /// What is known of each value of `data` (`extract`), by JSON Pointer, in `data`'s order:
    /// kept apart from `data` so that `data` still validates against the schema.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub fields: IndexMap<String, FieldRecord>,
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

impl DocumentRecord {
    /// The values whose confidence is below `threshold` (the review queue), in `data`'s order.
    pub fn fields_below(&self, threshold: f64) -> impl Iterator<Item = (&str, &FieldRecord)> {
        self.fields
            .iter()
            .filter(move |(_, f)| f.confidence < threshold)
            .map(|(ptr, f)| (ptr.as_str(), f))
    }
}

/// One extracted value (a leaf of `data`): how sure the model was and where it came from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FieldRecord {
    /// The lowest probability the model gave a token of this value where the schema left it
    /// a choice (probabilities under the constraint); 1 when the schema left none.
    pub confidence: f64,
    /// The mean of those probabilities.
    pub mean_probability: f64,
    /// The 0-based page the value came from, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<u32>,
    /// Where the value is printed in that page's text layer (born-digital PDFs): `[x0, y0, x1,
    /// y1]` in PDF points, origin at the bottom left of the page.
    #[serde(rename = "box", default, skip_serializing_if = "Option::is_none")]
    pub bbox: Option<[f32; 4]>,
    /// Values other pages gave for this field (a multi-page merge kept the surest one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alternatives: Vec<Alternative>,
}

/// A value a page gave for a field that the merge did not keep.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Alternative {
    pub value: serde_json::Value,
    pub confidence: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<u32>,
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
