//! The export stage: a document's record (result or error record) written in every output
//! format, atomically. A write that fails (a full disk) becomes the document's error record,
//! `output_failed`, naming the file and the cause.

use super::document::Document;
use super::settings::RunSettings;
use crate::record;
use crate::sources::Source;
use crate::stage::{self, StageReport};
use crossbeam_channel::{Receiver, Sender};
use quire_exporters::formats::Exporter;
use quire_exporters::record::{DocumentRecord, ErrorKind, ErrorRecord};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

pub(super) fn spawn(
    input: Receiver<Document>,
    output: Sender<(usize, DocumentRecord)>,
    settings: Arc<RunSettings>,
    sources: Arc<Vec<Source>>,
    exporter: Exporter,
) -> JoinHandle<StageReport> {
    stage::spawn("export", input, output, move |doc, emit| {
        let t = Instant::now();
        let index = doc.index;
        let source = &sources[index];
        let mut record = record::from_document(&settings, source, doc);
        if let Err(e) = exporter.write_document(&source.relative, &record) {
            // None of its outputs were put in place: the document failed. Its error record
            // goes in their place if it still can (a full disk may have room for the small
            // JSON alone); results.jsonl and the summary carry it in any case.
            if record.error.is_none() {
                record.error = Some(ErrorRecord {
                    kind: ErrorKind::OutputFailed,
                    message: e.to_string(),
                    page: None,
                });
                record.data = None;
                record.text = None;
                let _ = exporter.write_document(&source.relative, &record);
            }
        }
        record
            .run
            .timings_ms
            .insert("export".into(), t.elapsed().as_secs_f64() * 1e3);
        emit((index, record))
    })
}
