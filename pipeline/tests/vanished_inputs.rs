//! Inputs deleted after the walk listed them and before they were read, at both places where
//! that can happen: before the job hashes them (while the model loads, say) and while the batch
//! renders. Each gets a `not_found` record naming it and saying it vanished, the other documents
//! are processed, and a run after the file is back processes it. Library-level, because the two
//! moments cannot be hit from outside the process without a race.

use clap::Parser;
use quire_exporters::record::DocumentRecord;
use quire_onnx::gemma4::image_processor::Budget;
use quire_onnx::provision::Provisioner;
use quire_pipeline::render::render;
use quire_pipeline::settings::{self, RunArgs};
use quire_pipeline::{collect, ErrorKind, PoolOptions, RenderEvent};
use std::path::{Path, PathBuf};

const VANISHED: &str =
    "no such file: it was there when the inputs were listed, and was deleted or moved during the run";

fn samples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../samples")
}

#[derive(Parser)]
struct Run {
    #[command(flatten)]
    args: RunArgs,
}

/// A folder with `kept.png` and `gone.jpg` (distinct contents).
fn inputs(dir: &Path) -> PathBuf {
    let input = dir.join("in");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::copy(samples().join("square.png"), input.join("kept.png")).unwrap();
    std::fs::copy(samples().join("receipt.jpg"), input.join("gone.jpg")).unwrap();
    input
}

fn records(batch: &quire_pipeline::job::BatchOutcome) -> Vec<(String, DocumentRecord)> {
    let mut all: Vec<_> = batch
        .processed
        .iter()
        .chain(&batch.kept)
        .map(|(s, r)| (s.relative.display().to_string(), r.clone()))
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}

#[test]
fn a_file_deleted_before_the_job_reads_it_is_a_not_found_record() {
    let tmp = tempfile::tempdir().unwrap();
    let input = inputs(tmp.path());
    let out = tmp.path().join("out");
    let args = Run::parse_from([
        "quire".as_ref(),
        input.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
        "--model".as_ref(),
        samples().join("models/tiny-gemma4").as_os_str(),
        "--budget".as_ref(),
        "70".as_ref(),
        "--task".as_ref(),
        "ocr".as_ref(),
        "--max-new-tokens".as_ref(),
        "1".as_ref(),
        "--workers".as_ref(),
        "1".as_ref(),
    ])
    .args;
    let resolved = settings::resolve(args.settings).unwrap();
    let collected = collect(std::slice::from_ref(&input));
    assert_eq!(collected.sources.len(), 2);
    // Listed, then gone before the job hashes it (`quire run` loads the model in between).
    let saved = std::fs::read(input.join("gone.jpg")).unwrap();
    std::fs::remove_file(input.join("gone.jpg")).unwrap();
    let mut job = settings::open_job(&resolved, &Provisioner::from_env(false))
        .unwrap()
        .job;
    let batch = job.process(collected.sources, |_| {}).unwrap();
    let all = records(&batch);
    assert_eq!(all.len(), 2);
    let (name, gone) = &all[0];
    assert_eq!(name, "gone.jpg");
    assert_eq!(gone.source, "gone.jpg", "the record names it");
    let error = gone.error.as_ref().expect("an error record");
    assert_eq!(
        (error.kind, error.message.as_str()),
        (ErrorKind::NotFound, VANISHED)
    );
    // Written where its output would have gone, like any failed document.
    let written: DocumentRecord =
        serde_json::from_slice(&std::fs::read(out.join("gone.jpg.json")).unwrap()).unwrap();
    assert_eq!(written.error.unwrap().kind, ErrorKind::NotFound);
    let (_, kept) = &all[1];
    assert!(kept.error.is_none(), "{:?}", kept.error);
    assert!(out.join("kept.png.md").is_file());

    // Back again: the next run processes it (and skips the other, done).
    std::fs::write(input.join("gone.jpg"), saved).unwrap();
    let batch = job
        .process(collect(std::slice::from_ref(&input)).sources, |_| {})
        .unwrap();
    assert_eq!(batch.skipped_done, 1);
    let all = records(&batch);
    assert!(all.iter().all(|(_, r)| r.error.is_none()), "{all:?}");
    assert!(out.join("gone.jpg.md").is_file());
}

#[test]
fn a_file_deleted_before_it_is_rendered_is_a_not_found_record() {
    let tmp = tempfile::tempdir().unwrap();
    let input = inputs(tmp.path());
    let collected = collect(std::slice::from_ref(&input));
    assert_eq!(collected.sources.len(), 2);
    // Listed and hashed, then gone before the render pool opens it.
    std::fs::remove_file(input.join("gone.jpg")).unwrap();
    let mut opts = PoolOptions::new(Budget::try_from(70).unwrap(), None);
    opts.workers = 1;
    let (mut pages, mut errors, mut finished) = (vec![], vec![], 0);
    for event in render(collected.sources, opts) {
        match event {
            RenderEvent::Page(p) => pages.push(p.relative),
            RenderEvent::Error(e) => errors.push((e.path, e.kind, e.message)),
            RenderEvent::Finished(_) => finished += 1,
        }
    }
    assert_eq!(finished, 2, "every document is finished");
    assert_eq!(pages, [PathBuf::from("kept.png")]);
    assert_eq!(
        errors,
        [(
            input.join("gone.jpg"),
            ErrorKind::NotFound,
            VANISHED.to_string()
        )]
    );
}
