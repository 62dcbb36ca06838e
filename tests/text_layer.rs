//! The text layer's character boxes through the real PDF worker (`quire pdf-worker` in the
//! render pool): on a born-digital PDF written here with Helvetica text at known positions,
//! `TextLayer::locate` finds values verbatim, with boxes within 1 pt of the ones computed from
//! Helvetica's metrics (AFM advance widths × size / 1000 from the text's origin; baseline +
//! descender and ascender × size / 1000, the font descriptor's values).

mod render_support;

use quire_onnx::gemma4::Budget;
use quire_pipeline::text_layer::{locate_in_pages, PdfBox, TextLayer};
use quire_pipeline::{collect, PoolOptions, RenderEvent, WorkerCommand};
use render_support::helvetica_pdf;
use std::path::PathBuf;

/// Helvetica's advance widths (AFM, 1/1000 em) of the characters used here.
fn width(c: char) -> f32 {
    match c {
        ' ' => 278.0,
        ',' | '.' | ':' => 278.0,
        '-' => 333.0,
        '0'..='9' => 556.0,
        'E' => 667.0,
        'I' => 278.0,
        'N' | 'U' | 'R' => 722.0,
        'O' => 778.0,
        'P' | 'V' => 667.0,
        'T' => 611.0,
        'a' | 'd' | 'e' | 'o' | 'u' => 556.0,
        'l' => 222.0,
        't' => 278.0,
        _ => panic!("no width for {c:?}"),
    }
}

fn advance(text: &str, size: f32) -> f32 {
    text.chars().map(width).sum::<f32>() * size / 1000.0
}

/// The box of `text` drawn at (x, y) in Helvetica at `size`, skipping its first `skip`
/// characters (drawn before it on the same line).
fn expected(x: f32, y: f32, size: f32, line: &str, skip: usize) -> PdfBox {
    let before: String = line.chars().take(skip).collect();
    let text: String = line.chars().skip(skip).collect();
    let x0 = x + advance(&before, size);
    [
        x0,
        y - 207.0 * size / 1000.0,
        x0 + advance(&text, size),
        y + 718.0 * size / 1000.0,
    ]
}

fn union(a: PdfBox, b: PdfBox) -> PdfBox {
    [
        a[0].min(b[0]),
        a[1].min(b[1]),
        a[2].max(b[2]),
        a[3].max(b[3]),
    ]
}

#[track_caller]
fn assert_near(got: Option<PdfBox>, want: PdfBox) {
    let got = got.unwrap_or_else(|| panic!("not found; wanted {want:?}"));
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() <= 1.0, "box {got:?}, wanted {want:?}");
    }
}

/// The text layers of `pdf`'s pages, rendered by the real worker through the pool.
fn text_layers(pdf: &[u8]) -> Vec<TextLayer> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("born-digital.pdf");
    std::fs::write(&path, pdf).unwrap();
    let pdfium = quire_onnx::provision::Provisioner::from_env(false)
        .ensure(&quire_pipeline::pdfium::PDFIUM)
        .expect("PDFium");
    let worker = WorkerCommand::quire(PathBuf::from(env!("CARGO_BIN_EXE_quire")), &pdfium.library);
    let mut opts = PoolOptions::new(Budget::try_from(70).unwrap(), Some(worker));
    opts.workers = 1;
    let mut pages = Vec::new();
    for event in quire_pipeline::render::render(collect(&[path]).sources, opts) {
        match event {
            RenderEvent::Page(page) => pages.push((page.page_index, page.text_layer.unwrap())),
            RenderEvent::Error(e) => panic!("{e:?}"),
            RenderEvent::Finished(_) => {}
        }
    }
    pages.sort_by_key(|(i, _)| *i);
    pages.into_iter().map(|(_, layer)| layer).collect()
}

#[test]
fn values_are_located_where_the_pdf_draws_them() {
    let page1 = "BT /F1 12 Tf 72 700 Td (INV-2024-0042) Tj ET\n\
                 BT /F1 10 Tf 300 400 Td (Total due:) Tj 0 -14 Td (EUR 1,234.50) Tj ET";
    let page2 = "BT /F1 12 Tf 72 500 Td (PO-7731) Tj ET\n\
                 BT /F1 12 Tf 200 100 Td (INV-2024-0042) Tj ET";
    let layers = text_layers(&helvetica_pdf(&[(page1, 0), (page2, 0), (page1, 90)]));
    assert_eq!(layers.len(), 3);
    let page = &layers[0];

    // The text is PDFium's, one box per char; the line breaks PDFium generates have none.
    assert_eq!(page.text(), "INV-2024-0042\r\nTotal due:\r\nEUR 1,234.50");
    assert_eq!(page.box_count(), page.text().chars().count());
    assert_eq!(page.char_box(13), None);
    assert_eq!(page.char_box(14), None);

    // Verbatim values: x0 = 72, x1 = 72 + Σ widths × 12 / 1000 = 153.372.
    let invoice = expected(72.0, 700.0, 12.0, "INV-2024-0042", 0);
    assert!((invoice[2] - 153.372).abs() < 1e-3);
    assert_near(page.locate("INV-2024-0042"), invoice);
    assert_near(
        page.locate("EUR 1,234.50"),
        expected(300.0, 386.0, 10.0, "EUR 1,234.50", 0),
    );
    assert_near(
        page.locate("1,234.50"),
        expected(300.0, 386.0, 10.0, "EUR 1,234.50", 4),
    );
    // Split across the line break: the union of both lines' parts.
    let split = union(
        expected(300.0, 400.0, 10.0, "Total due:", 6),
        expected(300.0, 386.0, 10.0, "EUR", 0),
    );
    assert_near(page.locate("due: EUR"), split);
    assert_near(page.locate("due:\nEUR"), split);

    // Not on the page, a different case, or only part of a longer number: not found.
    assert_eq!(page.locate("INV-2024-0043"), None);
    assert_eq!(page.locate("total due:"), None);
    assert_eq!(page.locate("INV-2024-004"), None);
    assert_eq!(page.locate("PO-7731"), None);

    // Several pages: the first page where the value appears.
    let pages = || layers.iter().map(Some);
    let (at, b) = locate_in_pages(pages(), "PO-7731").unwrap();
    assert_eq!(at, 1);
    assert_near(Some(b), expected(72.0, 500.0, 12.0, "PO-7731", 0));
    let (at, b) = locate_in_pages(pages(), "INV-2024-0042").unwrap();
    assert_eq!(at, 0);
    assert_near(Some(b), invoice);
    assert_eq!(locate_in_pages(pages(), "Subtotal"), None);

    // A rotated page: the boxes stay in PDF user space, /Rotate not applied.
    assert_eq!(
        layers[2].locate("INV-2024-0042"),
        page.locate("INV-2024-0042")
    );
}
