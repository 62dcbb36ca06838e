//! A long document flows through the stages in parts (`run::render::Split`) so memory follows
//! the pages in flight. The parts change nothing in the outputs: the records of long documents
//! run in parts are exactly those of the same documents run whole, for `ocr` and for `extract`
//! (whose per-page results are merged across parts and validated again), and a render failure
//! part-way through a long document fails it as it fails a whole one.

use quire_exporters::formats::{Exporter, Format};
use quire_exporters::record::DocumentRecord;
use quire_onnx::gemma4::{Budget, Gemma4, LoadOptions, Sampling};
use quire_onnx::provision::Provisioner;
use quire_pipeline::run::render::{Documents, Split};
use quire_pipeline::run::task::Task;
use quire_pipeline::run::{compile_constraint, run, RunSettings};
use quire_pipeline::sniff::InputFormat;
use quire_pipeline::{DocError, ErrorKind, Page, RenderEvent, RenderedDocument, Source};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn model() -> Gemma4 {
    let provisioner = Provisioner::from_env(false);
    let (env, _) = quire_onnx::runtime::environment(&provisioner, false).expect("ONNX Runtime");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/models/tiny-gemma4");
    Gemma4::load(env, dir, &LoadOptions::default()).expect("tiny model")
}

fn name(i: usize) -> PathBuf {
    PathBuf::from(format!("doc{i}.pdf"))
}

/// Page `index` of document `doc`: a distinct picture per page, so outputs differ by page.
fn page(doc: usize, index: u32, count: u32) -> RenderEvent {
    let shade = |k: u32| ((doc as u32 * 37 + index * 53 + k * 11) % 256) as u8;
    let image = image::RgbImage::from_fn(64 + 8 * (index % 3), 80, |x, y| {
        image::Rgb([shade(x / 8), shade(y / 8), shade((x + y) / 16)])
    });
    RenderEvent::Page(Page {
        source: name(doc),
        relative: name(doc),
        page_index: index,
        page_count: Some(count),
        image,
        original_px: None,
        points: None,
        text_layer: None,
        render_ms: 0.0,
    })
}

fn finished(doc: usize) -> RenderEvent {
    RenderEvent::Finished(RenderedDocument {
        source: name(doc),
        relative: name(doc),
        pages: 0,
        errors: 0,
    })
}

/// Documents of 11, 2, 9 and 13 pages, the long ones interleaved as several render workers
/// would send them; document 3 fails at its page 7 (`fail_long`).
fn events(fail_long: bool) -> Vec<RenderEvent> {
    let mut events = Vec::new();
    for i in 0..13 {
        if i < 11 {
            events.push(page(0, i, 11));
        }
        if i < 2 {
            events.push(page(1, i, 2));
        }
        if i == 2 {
            events.push(finished(1));
        }
        if i < 9 {
            events.push(page(2, i, 9));
        }
        if fail_long && i == 7 {
            events.push(RenderEvent::Error(DocError {
                page: Some(7),
                ..DocError::new(name(3), ErrorKind::WorkerCrashed, "worker died on page 8")
            }));
        } else if !(fail_long && i > 7) {
            events.push(page(3, i, 13));
        }
    }
    events.extend([finished(2), finished(0), finished(3)]);
    events
}

fn settings(task: Task) -> RunSettings {
    RunSettings {
        max_new_tokens: match task {
            Task::Extract { .. } => 96,
            _ => 24,
        },
        task,
        budget: Budget::try_from(70).unwrap(),
        sampling: Sampling::Greedy,
        text_anchor: false,
        skip_blank_pages: true,
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
    }
}

/// The records of the documents of `events` run with `split`, without their timings.
fn records(model: Gemma4, task: Task, split: Split, events: Vec<RenderEvent>) -> Vec<Value> {
    let out = tempfile::tempdir().unwrap();
    let exporter = Exporter::new(out.path(), &[Format::Json], 0o600, None).unwrap();
    let sources: Vec<Source> = (0..4)
        .map(|i| Source {
            path: name(i),
            relative: name(i),
            format: InputFormat::Pdf,
        })
        .collect();
    let hashes = (0..4).map(|i| format!("{i:064}")).collect();
    let documents = Documents::new(events.into_iter(), &sources, hashes, split);
    let settings = settings(task);
    let constraint = match &settings.task {
        Task::Extract { schema } => Some(Arc::new(
            compile_constraint(&model, schema, settings.max_new_tokens).unwrap(),
        )),
        _ => None,
    };
    let (summary, _model) = run(
        model,
        constraint,
        settings,
        Arc::new(sources),
        documents.collect::<Vec<_>>().into_iter(),
        exporter,
        |_| {},
    );
    summary
        .records
        .iter()
        .map(|r: &DocumentRecord| {
            let mut value = serde_json::to_value(r).unwrap();
            value.as_object_mut().unwrap().remove("run");
            value
        })
        .collect()
}

const WHOLE: Split = Split {
    above: usize::MAX,
    part_pages: usize::MAX,
};

fn parts() -> Split {
    Split::for_pages_per_prompt(8)
}

#[test]
fn ocr_of_long_documents_in_parts_equals_ocr_of_whole_documents() {
    let whole = records(model(), Task::Ocr, WHOLE, events(false));
    let in_parts = records(model(), Task::Ocr, parts(), events(false));
    assert_eq!(whole.len(), 4);
    assert_eq!(in_parts, whole);
    // Every page is there, numbered in the whole document.
    assert_eq!(whole[3]["page_count"], 13);
    let text = whole[3]["text"].as_str().unwrap();
    for n in 1..=13 {
        assert!(text.contains(&format!("<!-- page {n} -->")), "{text}");
    }
}

#[test]
fn extraction_of_long_documents_in_parts_equals_extraction_of_whole_documents() {
    let schema = json!({
        "type": "object",
        "properties": {
            "title": {"type": "string", "maxLength": 6},
            "pages": {"type": "integer", "minimum": 0, "maximum": 99}
        },
        "required": ["title", "pages"]
    });
    let task = || Task::Extract {
        schema: schema.clone(),
    };
    let whole = records(model(), task(), WHOLE, events(false));
    let in_parts = records(model(), task(), parts(), events(false));
    assert_eq!(in_parts, whole);
    for record in &whole {
        assert!(record["error"].is_null(), "{record}");
        assert!(record["data"]["title"].is_string(), "{record}");
    }
}

#[test]
fn a_render_failure_part_way_fails_a_long_document_as_a_whole_one() {
    let whole = records(model(), Task::Ocr, WHOLE, events(true));
    let in_parts = records(model(), Task::Ocr, parts(), events(true));
    assert_eq!(in_parts, whole);
    assert_eq!(whole[3]["error"]["kind"], "worker_crashed", "{}", whole[3]);
    assert_eq!(whole[3]["page_count"], 0);
    for record in &whole[..3] {
        assert!(record["error"].is_null(), "{record}");
    }
}
