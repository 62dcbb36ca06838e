//! The render API without PDFium: images go through the pool in-process; a PDF with no worker
//! available is an error record, and every document gets exactly one `Finished` after its pages.

use quire_onnx::gemma4::image_processor::{Budget, ResizeRule};
use quire_pipeline::render::render;
use quire_pipeline::{collect, ErrorKind, PoolOptions, RenderEvent};
use std::path::PathBuf;

fn samples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../samples")
}

#[test]
fn images_and_a_pdf_without_pdfium() {
    let inputs = [
        samples().join("square.png"),
        samples().join("delivery.tiff"),
        samples().join("receipt.webp"),
        samples().join("invoice.pdf"),
    ];
    let collected = collect(&inputs);
    assert!(collected.errors.is_empty());
    assert_eq!(collected.sources.len(), 4);
    let budget = Budget::try_from(70).unwrap();
    let mut opts = PoolOptions::new(budget, None);
    opts.workers = 2;
    let rule = ResizeRule::default();
    let mut finished = vec![];
    let mut pages = vec![];
    let mut errors = vec![];
    for event in render(collected.sources, opts) {
        match event {
            RenderEvent::Page(page) => {
                assert!(
                    !finished.contains(&page.source),
                    "page after Finished: {:?}",
                    page.source
                );
                let (w, h) = page.original_px.unwrap();
                let (th, tw) = rule.target_size(h as f64, w as f64, budget).unwrap();
                assert_eq!(page.image.dimensions(), (tw, th));
                pages.push((page.relative.clone(), page.page_index));
            }
            RenderEvent::Error(e) => errors.push(e),
            RenderEvent::Finished(f) => finished.push(f.source),
        }
    }
    assert_eq!(finished.len(), 4);
    pages.sort();
    assert_eq!(
        pages,
        [
            ("delivery.tiff".into(), 0),
            ("delivery.tiff".into(), 1),
            ("delivery.tiff".into(), 2),
            ("receipt.webp".into(), 0),
            ("square.png".into(), 0),
        ]
        .map(|(p, i): (PathBuf, u32)| (p, i))
    );
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].kind, ErrorKind::WorkerFailed);
    assert!(errors[0].path.ends_with("invoice.pdf"));
}

#[test]
fn dropping_the_iterator_early_stops_the_pool() {
    let collected = collect(&[samples().join("square.png"), samples().join("strip.png")]);
    let mut opts = PoolOptions::new(Budget::try_from(280).unwrap(), None);
    opts.workers = 1;
    let mut events = render(collected.sources, opts);
    assert!(matches!(events.next(), Some(RenderEvent::Page(_))));
    drop(events); // must not hang
}
