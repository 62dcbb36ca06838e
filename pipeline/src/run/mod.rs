//! `quire run`: the staged pipeline of `docs/ARCHITECTURE.md`, one module per stage.
//!
//! ```text
//! render (worker processes) ─► preprocess (rayon) ─► vision encode ─► generate ─► export
//! ```
//! Stages are threads joined by bounded channels (see [`crate::stage`]); the unit that flows is
//! a [`Document`] with its pages, or a part of a long one ([`document::Part`], put back together
//! by the generate stage). The model stages batch across documents by budget: the vision
//! stage encodes pages in runs of at most `vision_patches` patches, the generate stage keeps one
//! decoder batch that sequences join and leave under `batch_tokens` (so documents can leave it
//! in another order than they came). A document that fails at any stage carries its error
//! record to the export stage, which writes it like any result: nothing is lost.

mod blank;
pub mod document;
mod export;
pub mod extraction;
pub mod fault;
pub mod generate;
mod preprocess;
pub mod render;
pub mod settings;
pub mod task;
mod vision;

pub use document::{Document, DocumentPage};
pub use generate::{compile_constraint, CompileError};
pub use preprocess::{BLANK_PAGE_WARNING, MAX_SHRINK, MIN_PIXELS_PER_INCH};
pub use settings::{
    RunSettings, DEFAULT_BATCH_SIZE, DEFAULT_BATCH_TOKENS, DEFAULT_VISION_PATCHES,
    DEFAULT_VISION_PATCHES_CPU,
};

use crate::sources::Source;
use crate::stage::{StageReport, Working};
use crossbeam_channel::bounded;
use quire_constrained::JsonConstraint;
use quire_exporters::formats::Exporter;
use quire_exporters::record::DocumentRecord;
use quire_onnx::gemma4::Gemma4;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A document that went through every stage, its outputs written: what progress bars and
/// the state store hear of.
#[derive(Debug, Clone)]
pub struct DocumentDone {
    /// Index into the run's source list.
    pub index: usize,
    pub source: String,
    pub pages: u32,
    pub generated_tokens: u64,
    /// Values below --review-below.
    pub review: u32,
    /// `kind: message` of the error record of a failed document.
    pub error: Option<String>,
}

/// What a run did.
#[derive(Debug)]
pub struct RunSummary {
    /// One per document that went through, in input order.
    pub records: Vec<DocumentRecord>,
    /// The source index of each record.
    pub indices: Vec<usize>,
    pub stages: Vec<StageReport>,
    pub wall: Duration,
}

impl RunSummary {
    pub fn failed(&self) -> usize {
        self.records.iter().filter(|r| r.error.is_some()).count()
    }
    pub fn pages(&self) -> u64 {
        self.records.iter().map(|r| r.page_count as u64).sum()
    }
    pub fn generated_tokens(&self) -> u64 {
        self.records.iter().map(|r| r.tokens.generated).sum()
    }
    /// Time in model calls (ONNX Runtime sessions) over the wall time. Model stages run
    /// concurrently, so this can exceed 1.
    pub fn inference_share(&self) -> f64 {
        let inference: Duration = self.stages.iter().map(|s| s.inference).sum();
        inference.as_secs_f64() / self.wall.as_secs_f64().max(1e-9)
    }
}

/// Runs the pipeline over `documents` (the render stage's stream, see [`render::Documents`])
/// and writes every result with `exporter`. `sources[i]` is the source of the document with
/// index `i`. The model comes back for the next batch (folder watch keeps one model for its
/// whole life).
pub fn run(
    mut model: Gemma4,
    constraint: Option<Arc<JsonConstraint>>,
    settings: RunSettings,
    sources: Arc<Vec<Source>>,
    documents: impl Iterator<Item = Document> + Send + 'static,
    exporter: Exporter,
    mut observer: impl FnMut(DocumentDone),
) -> (RunSummary, Gemma4) {
    let started = Instant::now();
    let settings = Arc::new(settings);
    let (rendered_tx, rendered) = bounded::<Document>(2);
    let (preprocessed_tx, preprocessed) = bounded::<Document>(2);
    let (encoded_tx, encoded) = bounded::<Document>(2);
    let (generated_tx, generated) = bounded::<Document>(2);
    let (written_tx, written) = bounded::<(usize, DocumentRecord)>(16);

    let render = render::spawn(documents, rendered_tx);
    let preprocess = preprocess::spawn(
        rendered,
        preprocessed_tx,
        model.processor.clone(),
        settings.budget,
        settings.skip_blank_pages && matches!(settings.task, task::Task::Ocr),
    );
    let encoding = Working::default();
    let vision = vision::spawn(
        preprocessed,
        encoded_tx,
        model.vision.take(),
        settings.vision_patches,
        encoding.clone(),
    );
    let generate = generate::spawn(
        encoded,
        generated_tx,
        encoding,
        model,
        constraint,
        settings.clone(),
    );
    let export = export::spawn(
        generated,
        written_tx,
        settings.clone(),
        sources.clone(),
        exporter,
    );

    let mut records = Vec::with_capacity(sources.len());
    for (index, record) in written.iter() {
        observer(DocumentDone {
            index,
            source: record.source.clone(),
            pages: record.page_count,
            generated_tokens: record.tokens.generated,
            review: settings
                .review_below
                .map_or(0, |t| record.fields_below(t).count() as u32),
            error: record
                .error
                .as_ref()
                .map(|e| format!("{}: {}", e.kind, e.message)),
        });
        records.push((index, record));
    }
    let (vision_report, vision) = vision.join().expect("vision stage");
    let (generate_report, model) = generate.join().expect("generate stage");
    let mut model = model.expect("the generate stage keeps the model");
    model.vision = vision;
    let stages = vec![
        render.join().expect("render stage"),
        preprocess.join().expect("preprocess stage"),
        vision_report,
        generate_report,
        export.join().expect("export stage"),
    ];
    // Present records in input order, whatever order the stages finished them in.
    records.sort_by_key(|(index, _)| *index);
    let (indices, records) = records.into_iter().unzip();
    let summary = RunSummary {
        records,
        indices,
        stages,
        wall: started.elapsed(),
    };
    (summary, model)
}
