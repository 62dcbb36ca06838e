//! Document records, built in one place: from a document that went through the stages, or for
//! an input that failed before any stage (unreadable, out of retries). `quire run` and
//! `quire watch` write both kinds the same way.

use crate::run::document::Document;
use crate::run::settings::RunSettings;
use crate::sources::Source;
use quire_exporters::layout::display_relative;
use quire_exporters::record::{DocumentRecord, ErrorRecord, RunInfo, Settings};

/// The record of a document that went through the stages (a result or an error record).
pub fn from_document(settings: &RunSettings, source: &Source, doc: Document) -> DocumentRecord {
    DocumentRecord {
        source: display_relative(&source.relative),
        content_sha256: doc.content_sha256,
        page_count: doc.pages.len() as u32,
        task: settings.task.name().to_string(),
        settings: Settings {
            model: settings.model_id.clone(),
            dtype: settings.dtype.clone(),
            budget: settings.budget.soft_tokens(),
            execution_provider: settings.execution_provider.clone(),
            schema: settings.schema_name.clone(),
            fingerprint: settings.fingerprint.clone(),
        },
        data: doc.data,
        fields: doc.fields,
        text: doc.text,
        pages: doc.pages.into_iter().map(|p| p.record).collect(),
        tokens: doc.tokens,
        warnings: doc.warnings,
        error: doc.error,
        run: RunInfo {
            timings_ms: doc.timings_ms,
        },
    }
}

/// The record of an input that failed before any stage ran on it: `source` as it is to be
/// shown, its hash when it could be read.
pub fn failed_before_run(
    settings: &RunSettings,
    source: String,
    content_sha256: String,
    error: ErrorRecord,
) -> DocumentRecord {
    DocumentRecord {
        source,
        content_sha256,
        page_count: 0,
        task: settings.task.name().into(),
        settings: Settings {
            model: settings.model_id.clone(),
            dtype: settings.dtype.clone(),
            budget: settings.budget.soft_tokens(),
            execution_provider: String::new(),
            schema: None,
            fingerprint: settings.fingerprint.clone(),
        },
        data: None,
        fields: Default::default(),
        text: None,
        pages: Vec::new(),
        tokens: Default::default(),
        warnings: Vec::new(),
        error: Some(error),
        run: Default::default(),
    }
}
