//! `quire run`: the staged pipeline of ARCHITECTURE.md.
//!
//! ```text
//! render (worker processes) ─► preprocess (rayon) ─► vision encode ─► generate ─► export
//! ```
//! Stages are threads joined by bounded channels (see [`crate::stage`]); the unit that flows is
//! a document with its pages. The model stages batch across documents by budget: the vision
//! stage encodes pages in runs of at most `vision_patches` patches, the generate stage keeps one
//! decoder batch that sequences join and leave under `batch_tokens` (so documents can leave it
//! in another order than they came). A document that fails at any stage carries its error record to
//! the export stage, which writes it like any result: nothing is lost.

pub mod documents;
mod generate_stage;
pub mod loop_guard;
pub mod processor;
pub mod task;
mod vision_stage;

use crate::sources::Source;
use crate::stage::{self, StageReport};
use crossbeam_channel::bounded;
use loop_guard::LoopGuardConfig;
use quire_constrained::{BoundOptions, ConstraintTokenizer, JsonConstraint};
use quire_exporters::formats::Exporter;
use quire_exporters::record::{
    DocumentRecord, ErrorRecord, PageRecord, RunInfo, Settings, TokenCounts,
};
use quire_onnx::gemma4::Budget;
use quire_onnx::gemma4::{Gemma4, ImageProcessor, Message, ProcessedImage, Rgb8, Sampling};
use rayon::prelude::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use task::Task;

/// Below this many rendered pixels per inch of page, small print is lost.
pub const MIN_PIXELS_PER_INCH: f32 = 100.0;
/// An image shrunk by more than this factor (per side) loses detail.
pub const MAX_SHRINK: f32 = 2.0;

/// Default [`RunSettings::batch_tokens`].
pub const DEFAULT_BATCH_TOKENS: usize = 16384;
/// Default [`RunSettings::vision_patches`]: 4 pages at the default budget of 560 soft tokens
/// (9 patches each).
pub const DEFAULT_VISION_PATCHES: usize = 4 * 560 * 9;

/// Everything a run needs besides the model sessions.
#[derive(Debug, Clone)]
pub struct RunSettings {
    pub task: Task,
    pub budget: Budget,
    pub max_new_tokens: usize,
    pub sampling: Sampling,
    /// Give the PDF text layer to the model as an anchor.
    pub text_anchor: bool,
    /// Most sequences decoded together.
    pub batch_size: usize,
    /// Token budget of the decoder batch: sequences join while `rows × (cache length + new
    /// tokens to come)` stays within it (a sequence alone always runs). Bounds the KV cache.
    pub batch_tokens: usize,
    /// Patch budget of one vision encoder run (pages of one or more documents; a page larger
    /// than the budget runs alone).
    pub vision_patches: usize,
    /// Most page images in one extraction prompt; longer documents are extracted per page
    /// and merged ([`task::merge_pages`]).
    pub max_pages_per_prompt: usize,
    /// Model id, dtype and provider as recorded in outputs.
    pub model_id: String,
    pub dtype: String,
    pub execution_provider: String,
    pub schema_name: Option<String>,
    pub loop_guard: LoopGuardConfig,
    /// The job's settings fingerprint, recorded in every output ([`crate::job`] sets it).
    pub fingerprint: String,
}

/// A page as loaded (rendered PDF page or decoded image).
#[derive(Debug, Clone)]
pub struct LoadedPage {
    pub image: Rgb8,
    /// Page size in points (PDF pages).
    pub points: Option<(f32, f32)>,
    /// Size before any resize (images), to warn when the model sees it much smaller.
    pub original_px: Option<(u32, u32)>,
    pub text_layer: Option<String>,
}

/// The render stage's output for one document.
#[derive(Debug)]
pub struct LoadedDocument {
    /// Index into the run's source list.
    pub index: usize,
    pub content_sha256: String,
    pub pages: Result<Vec<LoadedPage>, ErrorRecord>,
    pub render_ms: f64,
}

/// Progress of a run, for progress bars and logs.
#[derive(Debug, Clone)]
pub enum Event {
    DocumentDone {
        /// Index into the run's source list.
        index: usize,
        source: String,
        pages: u32,
        generated_tokens: u64,
        /// `kind: message` of the error record of a failed document.
        error: Option<String>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Schema(String),
    #[error("tokenizer for constrained decoding: {0}")]
    Tokenizer(String),
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

/// A document on its way through the stages.
struct Doc {
    index: usize,
    content_sha256: String,
    pages: Vec<DocPage>,
    error: Option<ErrorRecord>,
    warnings: Vec<String>,
    timings_ms: BTreeMap<String, f64>,
    data: Option<Value>,
    text: Option<String>,
    tokens: TokenCounts,
}

struct DocPage {
    loaded: LoadedPage,
    record: PageRecord,
    image: Option<ProcessedImage>,
    features: Option<Vec<f32>>,
}

impl Doc {
    fn fail(&mut self, kind: &str, message: String, page: Option<u32>) {
        if self.error.is_none() {
            self.error = Some(ErrorRecord {
                kind: kind.to_string(),
                message,
                page,
            });
        }
    }
}

/// The schema constraint of an `extract` run, compiled before any document is touched: an
/// unsupported schema is an error here, naming the keyword.
pub fn compile_constraint(
    model: &Gemma4,
    schema: &Value,
    max_new_tokens: usize,
) -> Result<JsonConstraint, RunError> {
    let vocab = model.decoder.vocab;
    let tokenizer = ConstraintTokenizer::from_file(
        model.dir.root.join("tokenizer.json"),
        &model.stop_ids,
        Some(vocab),
    )
    .map_err(|e| RunError::Tokenizer(e.to_string()))?;
    JsonConstraint::new(&tokenizer, schema, &BoundOptions::new(max_new_tokens))
        .map_err(|e| RunError::Schema(format!("unsupported schema: {e}")))
}

/// Runs the pipeline over `documents` (the render stage's stream) and writes every result with
/// `exporter`. `sources[i]` is the source of the document with index `i`. The model comes back
/// for the next batch (folder watch keeps one model for its whole life).
pub fn run(
    mut model: Gemma4,
    constraint: Option<Arc<JsonConstraint>>,
    settings: RunSettings,
    sources: Arc<Vec<Source>>,
    documents: impl Iterator<Item = LoadedDocument> + Send + 'static,
    exporter: Exporter,
    mut observer: impl FnMut(Event),
) -> (RunSummary, Gemma4) {
    let started = Instant::now();
    let settings = Arc::new(settings);
    let (render_tx, render_rx) = bounded::<Doc>(2);
    let (pre_tx, pre_rx) = bounded::<Doc>(2);
    let (vis_tx, vis_rx) = bounded::<Doc>(2);
    let (gen_tx, gen_rx) = bounded::<Doc>(2);
    let (done_tx, done_rx) = bounded::<(usize, DocumentRecord)>(16);

    // Render: drains the loader's stream (which runs its own worker processes).
    let render = std::thread::Builder::new()
        .name("stage-render".into())
        .spawn(move || {
            let mut report = StageReport::new("render", 1);
            for loaded in documents {
                let doc = into_doc(loaded);
                let busy = doc.timings_ms.get("render").copied().unwrap_or(0.0);
                report.record(Duration::from_secs_f64(busy / 1000.0), 0);
                if render_tx.send(doc).is_err() {
                    break;
                }
            }
            report
        })
        .expect("spawn render stage");

    let processor = model.processor.clone();
    let budget = settings.budget;
    let preprocess = stage::spawn("preprocess", render_rx, pre_tx, move |mut doc, emit| {
        let t = Instant::now();
        preprocess_doc(&processor, budget, &mut doc);
        doc.timings_ms
            .insert("preprocess".into(), t.elapsed().as_secs_f64() * 1e3);
        emit(doc)
    });

    let vision = model.vision.take();
    let vision = vision_stage::spawn(pre_rx, vis_tx, vision, settings.vision_patches);

    let generate = generate_stage::spawn(vis_rx, gen_tx, model, constraint, settings.clone());

    let export_settings = settings.clone();
    let export_sources = sources.clone();
    let export = stage::spawn("export", gen_rx, done_tx, move |doc, emit| {
        let t = Instant::now();
        let index = doc.index;
        let source = &export_sources[index];
        let mut record = to_record(&export_settings, source, doc);
        if let Err(e) = exporter.write_document(&source.relative, &record) {
            record.error.get_or_insert(ErrorRecord {
                kind: "output_failed".into(),
                message: e.to_string(),
                page: None,
            });
        }
        record
            .run
            .timings_ms
            .insert("export".into(), t.elapsed().as_secs_f64() * 1e3);
        emit((index, record))
    });

    let mut records = Vec::with_capacity(sources.len());
    for (index, record) in done_rx.iter() {
        observer(Event::DocumentDone {
            index,
            source: record.source.clone(),
            pages: record.page_count,
            generated_tokens: record.tokens.generated,
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

fn into_doc(loaded: LoadedDocument) -> Doc {
    let mut doc = Doc {
        index: loaded.index,
        content_sha256: loaded.content_sha256,
        pages: Vec::new(),
        error: None,
        warnings: Vec::new(),
        timings_ms: BTreeMap::from([("render".to_string(), loaded.render_ms)]),
        data: None,
        text: None,
        tokens: TokenCounts::default(),
    };
    match loaded.pages {
        Ok(pages) if pages.is_empty() => doc.fail("empty_document", "no pages".into(), None),
        Ok(pages) => {
            doc.pages = pages
                .into_iter()
                .enumerate()
                .map(|(i, loaded)| DocPage {
                    record: PageRecord {
                        index: i as u32,
                        width_px: loaded.image.width,
                        height_px: loaded.image.height,
                        pixels_per_inch: None,
                        soft_tokens: 0,
                        warnings: Vec::new(),
                    },
                    loaded,
                    image: None,
                    features: None,
                })
                .collect()
        }
        Err(e) => doc.error = Some(e),
    }
    doc
}

/// Image processor on every page (in parallel), plus the resolution warnings.
fn preprocess_doc(processor: &ImageProcessor, budget: Budget, doc: &mut Doc) {
    if doc.error.is_some() {
        return;
    }
    let results: Vec<_> = doc
        .pages
        .par_iter()
        .map(|p| processor.preprocess(&p.loaded.image, budget))
        .collect();
    for (page, result) in doc.pages.iter_mut().zip(results) {
        match result {
            Ok(image) => {
                let record = &mut page.record;
                record.width_px = image.resized_width;
                record.height_px = image.resized_height;
                record.soft_tokens = image.num_soft_tokens as u32;
                if let Some((w_pt, _)) = page.loaded.points {
                    let ppi = image.resized_width as f32 / (w_pt / 72.0);
                    record.pixels_per_inch = Some((ppi * 10.0).round() / 10.0);
                    if ppi < MIN_PIXELS_PER_INCH {
                        record.warnings.push(format!(
                            "low resolution: {ppi:.0} pixels per inch of page (small print needs \
                             {MIN_PIXELS_PER_INCH:.0}); raise --budget"
                        ));
                    }
                }
                if let Some((w, h)) = page.loaded.original_px {
                    let shrink = (w as f32 / image.resized_width as f32)
                        .max(h as f32 / image.resized_height as f32);
                    if shrink > MAX_SHRINK {
                        record.warnings.push(format!(
                            "image shrunk {shrink:.1}x ({w}x{h} to {}x{}); raise --budget",
                            image.resized_width, image.resized_height
                        ));
                    }
                }
                page.image = Some(image);
            }
            Err(e) => {
                let index = page.record.index;
                doc.fail("image_too_thin", e.to_string(), Some(index));
                return;
            }
        }
    }
}

/// One prompt: which pages it shows, and its tokens.
struct Prompt {
    pages: Vec<usize>,
    input_ids: Vec<u32>,
}

/// The prompts of a document: `extract` shows all pages in one prompt while they fit the page
/// limit and the context, else one prompt per page (merged later); free text is per page.
fn prompts(model: &Gemma4, settings: &RunSettings, doc: &mut Doc) -> Result<Vec<Prompt>, String> {
    let n = doc.pages.len();
    if matches!(settings.task, Task::Extract { .. }) && n > 1 && n <= settings.max_pages_per_prompt
    {
        let pages: Vec<usize> = (0..n).collect();
        let input_ids = prompt_ids(
            model,
            settings,
            doc,
            &pages,
            task::MAX_ANCHOR_CHARS_PER_PAGE,
        )?;
        if fits(model, settings, &input_ids).is_ok() {
            return Ok(vec![Prompt { pages, input_ids }]);
        }
        doc.warnings.push(format!(
            "the {n} pages do not fit one prompt ({} tokens): extracted page by page and merged",
            input_ids.len()
        ));
    }
    let mut prompts = Vec::with_capacity(n);
    for i in 0..n {
        // A long text layer is cut (halved until it fits) before a page is given up.
        let mut anchor_chars = task::MAX_ANCHOR_CHARS_PER_PAGE;
        loop {
            let input_ids = prompt_ids(model, settings, doc, &[i], anchor_chars)?;
            match fits(model, settings, &input_ids) {
                Ok(()) => {
                    if anchor_chars < task::MAX_ANCHOR_CHARS_PER_PAGE {
                        doc.pages[i].record.warnings.push(format!(
                            "text layer cut to {anchor_chars} characters to fit the context"
                        ));
                    }
                    prompts.push(Prompt {
                        pages: vec![i],
                        input_ids,
                    });
                    break;
                }
                Err(_) if settings.text_anchor && anchor_chars > 0 => {
                    anchor_chars = if anchor_chars > 250 {
                        anchor_chars / 2
                    } else {
                        0
                    };
                }
                Err(e) => return Err(format!("page {}: {e}", i + 1)),
            }
        }
    }
    Ok(prompts)
}

fn prompt_ids(
    model: &Gemma4,
    settings: &RunSettings,
    doc: &Doc,
    pages: &[usize],
    anchor_chars: usize,
) -> Result<Vec<u32>, String> {
    let anchor = if settings.text_anchor {
        task::text_anchor(
            pages
                .iter()
                .map(|&i| doc.pages[i].loaded.text_layer.as_deref()),
            anchor_chars,
        )
    } else {
        None
    };
    let instruction = settings.task.instruction(pages.len(), anchor.as_deref());
    let images: Vec<&ProcessedImage> = pages
        .iter()
        .filter_map(|&i| doc.pages[i].image.as_ref())
        .collect();
    let messages = [Message::user_with_images(images.len(), &instruction)];
    model
        .prompt_ids(&messages, &images, false)
        .map_err(|e| e.to_string())
}

/// The prompt and `max_new_tokens` within the model's context.
fn fits(model: &Gemma4, settings: &RunSettings, input_ids: &[u32]) -> Result<(), String> {
    let limit = model
        .config
        .text_config
        .max_position_embeddings
        .unwrap_or(usize::MAX);
    if input_ids.len() + settings.max_new_tokens > limit {
        return Err(format!(
            "prompt of {} tokens + {} new tokens exceeds the model's context of {limit}; \
             lower --max-new-tokens or --budget",
            input_ids.len(),
            settings.max_new_tokens
        ));
    }
    Ok(())
}

/// Generated ids, the constraint's error if any, and whether the output is complete.
type Output = (Vec<u32>, Option<String>, bool);

fn finish_doc(
    model: &Gemma4,
    constraint: Option<&JsonConstraint>,
    settings: &RunSettings,
    doc: &mut Doc,
    prompts: &[Prompt],
    outputs: Vec<Output>,
) {
    match (&settings.task, constraint) {
        (Task::Extract { .. }, Some(constraint)) => {
            let mut values = Vec::with_capacity(outputs.len());
            for ((ids, error, complete), prompt) in outputs.into_iter().zip(prompts) {
                let page = (prompts.len() > 1).then_some(prompt.pages[0] as u32);
                if let Some(e) = error {
                    return doc.fail("constraint_failed", e, page);
                }
                if !complete {
                    return doc.fail(
                        "incomplete_output",
                        format!(
                            "generation ended before the JSON object was complete ({} tokens)",
                            ids.len()
                        ),
                        page,
                    );
                }
                let text =
                    String::from_utf8_lossy(&constraint.tokenizer().decode(&ids)).into_owned();
                match constraint.validate(&text) {
                    Ok(value) => values.push(value),
                    Err(e) => return doc.fail("invalid_output", e.to_string(), page),
                }
            }
            let merged = task::merge_pages(&values);
            if values.len() > 1 {
                // Merging can break bounds (e.g. maxItems): validate the merge too.
                if let Err(e) = constraint.validate(&merged.to_string()) {
                    return doc.fail("invalid_output", format!("merged pages: {e}"), None);
                }
            }
            doc.data = Some(merged);
        }
        _ => {
            let mut parts = Vec::with_capacity(outputs.len());
            for ((ids, _, _), prompt) in outputs.into_iter().zip(prompts) {
                match model.decode_text(&ids) {
                    Ok(text) => parts.push((prompt.pages[0], text.trim().to_string())),
                    Err(e) => {
                        return doc.fail(
                            "decode_failed",
                            e.to_string(),
                            Some(prompt.pages[0] as u32),
                        )
                    }
                }
            }
            let joined = parts
                .iter()
                .map(|(i, text)| format!("<!-- page {} -->\n\n{text}", i + 1))
                .collect::<Vec<_>>()
                .join("\n\n");
            doc.text = Some(joined);
        }
    }
}

fn to_record(settings: &RunSettings, source: &Source, doc: Doc) -> DocumentRecord {
    let warnings = doc.warnings;
    let timings_ms = doc.timings_ms;
    DocumentRecord {
        source: quire_exporters::layout::display_relative(&source.relative),
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
        text: doc.text,
        pages: doc.pages.into_iter().map(|p| p.record).collect(),
        tokens: doc.tokens,
        warnings,
        error: doc.error,
        run: RunInfo { timings_ms },
    }
}
