//! A long document's parts (see [`Part`]), put back together once all are generated: page
//! records in page order, the text joined, the parts' extractions merged (schema-aware and
//! always valid: [`extraction::merge_valid`]), tokens and timings summed, the first error in
//! page order kept.

use super::super::document::{Document, Part};
use super::super::extraction::{self, Extraction};
use quire_constrained::JsonConstraint;
use std::collections::HashMap;

/// Generated parts of documents not complete yet, by document index.
#[derive(Default)]
pub(super) struct Parts {
    waiting: HashMap<usize, Vec<Document>>,
}

impl Parts {
    /// Takes a generated part; returns the whole document when this was its last one missing.
    pub fn add(&mut self, part: Document, constraint: Option<&JsonConstraint>) -> Option<Document> {
        let index = part.index;
        let parts = self.waiting.entry(index).or_default();
        parts.push(part);
        let count = parts
            .iter()
            .filter_map(|d| d.part)
            .find(|p| p.last)
            .map(|p| p.number as usize + 1)?;
        if parts.len() < count {
            return None;
        }
        let parts = self.waiting.remove(&index).expect("just added");
        Some(assemble(parts, constraint))
    }
}

/// One document from all its parts.
fn assemble(mut parts: Vec<Document>, constraint: Option<&JsonConstraint>) -> Document {
    parts.sort_by_key(|d| d.part.map(|p: Part| p.number));
    // A last part with an error and no pages is the document's render failure: as for a
    // document that flows whole, that error is the document's, and it has no pages.
    let last = parts.last().expect("at least the last part");
    if last.error.is_some() && last.pages.is_empty() {
        let mut failed = parts.pop().expect("the last part");
        failed.part = None;
        for part in parts {
            for (stage, ms) in part.timings_ms {
                *failed.timings_ms.entry(stage).or_default() += ms;
            }
        }
        return failed;
    }
    let mut parts = parts.into_iter();
    let mut whole = parts.next().expect("at least the last part");
    whole.part = None;
    let mut texts: Vec<String> = whole.text.take().into_iter().collect();
    let mut extractions: Vec<Extraction> = Vec::new();
    let mut take = |doc: &mut Document| {
        if let Some(data) = doc.data.take() {
            let fields = std::mem::take(&mut doc.fields);
            extractions.push(Extraction { data, fields });
        }
    };
    take(&mut whole);
    for mut part in parts {
        take(&mut part);
        whole.pages.extend(part.pages);
        whole.warnings.extend(part.warnings);
        whole.tokens.prompt += part.tokens.prompt;
        whole.tokens.generated += part.tokens.generated;
        for (stage, ms) in part.timings_ms {
            *whole.timings_ms.entry(stage).or_default() += ms;
        }
        if whole.error.is_none() {
            whole.error = part.error;
        }
        texts.extend(part.text);
    }
    if whole.error.is_some() {
        return whole;
    }
    if !texts.is_empty() {
        whole.text = Some(texts.join("\n\n"));
    }
    if let (false, Some(constraint)) = (extractions.is_empty(), constraint) {
        let merged = extraction::merge_valid(extractions, constraint, &mut whole.warnings);
        whole.data = Some(merged.data);
        whole.fields = merged.fields;
    }
    whole
}
