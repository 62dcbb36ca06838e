//! Error kinds of the stages of `quire run` that no input file can bring about end to end (the
//! render stage never hands on a document without pages or error, nor a page the image processor
//! cannot resize, and `quire run` always loads the vision graph), produced by running the stages
//! (`quire_pipeline::run::run`, the tiny Gemma 4) over documents built as the render stage
//! would. Each failed document is still written and reported, and the others are unaffected.

use quire_exporters::formats::{Exporter, Format};
use quire_exporters::record::DocumentRecord;
use quire_onnx::gemma4::{Budget, Gemma4, LoadOptions, Sampling};
use quire_onnx::provision::Provisioner;
use quire_pipeline::run::task::Task;
use quire_pipeline::run::{run, Document, RunSettings};
use quire_pipeline::sniff::InputFormat;
use quire_pipeline::{ErrorKind, Page, Source};
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn model(text_only: bool) -> Gemma4 {
    let provisioner = Provisioner::from_env(false);
    let (env, _) = quire_onnx::runtime::environment(&provisioner, false).expect("ONNX Runtime");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/models/tiny-gemma4");
    let opts = LoadOptions {
        text_only,
        ..Default::default()
    };
    Gemma4::load(env, dir, &opts).expect("tiny model")
}

fn name(i: usize) -> PathBuf {
    PathBuf::from(format!("doc{i}.png"))
}

/// A page of `width`×`height` white pixels of document `i`.
fn page(i: usize, width: u32, height: u32) -> Page {
    page_at(i, 0, width, height)
}

/// Page `index` of document `i`.
fn page_at(i: usize, index: u32, width: u32, height: u32) -> Page {
    Page {
        source: name(i),
        relative: name(i),
        page_index: index,
        page_count: Some(1),
        image: image::RgbImage::from_pixel(width, height, image::Rgb([255, 255, 255])),
        original_px: None,
        points: None,
        text_layer: None,
        render_ms: 0.0,
    }
}

/// Runs `ocr` over documents `i` with pages `pages[i]`; returns their records, in order, after
/// checking each was written to its JSON file.
fn run_ocr(model: Gemma4, pages: Vec<Vec<Page>>) -> Vec<DocumentRecord> {
    let out = tempfile::tempdir().unwrap();
    let exporter = Exporter::new(out.path(), &[Format::Json], 0o600, None).unwrap();
    let n = pages.len();
    let sources = Arc::new(
        (0..n)
            .map(|i| Source {
                path: name(i),
                relative: name(i),
                format: InputFormat::Png,
            })
            .collect::<Vec<_>>(),
    );
    let documents = pages
        .into_iter()
        .enumerate()
        .map(|(i, pages)| Document::rendered(i, format!("{i:064}"), Ok(pages), 0.0));
    let settings = RunSettings {
        task: Task::Ocr,
        budget: Budget::try_from(70).unwrap(),
        max_new_tokens: 4,
        sampling: Sampling::Greedy,
        text_anchor: false,
        // The white test pages stand for real ones: the model stages must see them.
        skip_blank_pages: false,
        batch_size: 4,
        batch_tokens: 16384,
        vision_patches: 20160,
        max_pages_per_prompt: 8,
        null_below: None,
        review_below: None,
        thinking: false,
        ignore_eos: false,
        model_id: "tiny-gemma4".into(),
        dtype: "fp32".into(),
        execution_provider: "cpu".into(),
        schema_name: None,
        loop_guard: Default::default(),
        fingerprint: String::new(),
    };
    let (summary, _model) = run(
        model,
        None,
        settings,
        sources,
        documents.collect::<Vec<_>>().into_iter(),
        exporter,
        |_| {},
    );
    assert_eq!(summary.records.len(), n, "every document is reported");
    for record in &summary.records {
        let written: DocumentRecord = serde_json::from_slice(
            &std::fs::read(out.path().join(format!("{}.json", record.source))).unwrap(),
        )
        .unwrap();
        assert_eq!(written.error, record.error, "{}", record.source);
    }
    summary.records
}

#[test]
fn a_document_without_pages_is_empty_document() {
    let records = run_ocr(model(false), vec![vec![], vec![page(1, 96, 96)]]);
    let error = records[0].error.as_ref().expect("failed");
    assert_eq!(error.kind, ErrorKind::EmptyDocument, "{error:?}");
    assert_eq!(records[0].source, "doc0.png");
    assert!(records[1].error.is_none(), "{:?}", records[1].error);
    assert!(records[1].text.is_some());
}

#[test]
fn a_page_the_image_processor_cannot_resize_is_image_too_thin() {
    // A page without width (the render stage never makes one; a decoder bug could).
    let records = run_ocr(
        model(false),
        vec![
            vec![page(0, 96, 96), page_at(0, 1, 0, 96)],
            vec![page(1, 96, 96)],
        ],
    );
    let error = records[0].error.as_ref().expect("failed");
    assert_eq!(error.kind, ErrorKind::ImageTooThin, "{error:?}");
    assert_eq!(error.page, Some(1), "the page is named");
    assert!(error.message.contains("too thin"), "{}", error.message);
    assert!(records[1].error.is_none(), "{:?}", records[1].error);
}

#[test]
fn a_model_without_its_vision_graph_is_model_incomplete() {
    // Loaded text-only: no vision encoder, so no page can be encoded.
    let records = run_ocr(
        model(true),
        vec![vec![page(0, 96, 96)], vec![page(1, 48, 480)], vec![]],
    );
    for record in &records[..2] {
        let error = record.error.as_ref().expect("failed");
        assert_eq!(error.kind, ErrorKind::ModelIncomplete, "{error:?}");
        assert!(error.message.contains("no vision graph"));
    }
    // A document that failed before keeps its own error.
    assert_eq!(
        records[2].error.as_ref().map(|e| e.kind),
        Some(ErrorKind::EmptyDocument)
    );
}
