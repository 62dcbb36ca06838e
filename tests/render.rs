//! `quire render`: output sizes follow the Gemma 4 resize rule at every budget, images are
//! written exactly as the model sees them, the text layer matches the ground truth, folders are
//! mirrored and one bad file does not stop the others.

mod render_support;

use quire_onnx::gemma4::image_processor::{resize_bicubic, Budget, ResizeRule, Rgb8};
use render_support::*;
use serde_json::Value;

/// The pixel size (width, height) the rule gives for a page of `w`×`h` (points or pixels).
fn expected(w: f64, h: f64, budget: Budget) -> (u64, u64) {
    let (th, tw) = ResizeRule::default().target_size(h, w, budget).unwrap();
    (tw as u64, th as u64)
}

fn size_of(line: &Value) -> (u64, u64) {
    (
        line["width"].as_u64().unwrap(),
        line["height"].as_u64().unwrap(),
    )
}

#[test]
fn page_sizes_follow_the_resize_rule_at_every_budget() {
    let rule = ResizeRule::default();
    for budget in Budget::all() {
        let dir = tempfile::tempdir().unwrap();
        let b = budget.to_string();
        let r = render(
            dir.path(),
            &[
                "samples/invoice.pdf",   // portrait A4, 3 pages
                "samples/landscape.pdf", // landscape A4
                "samples/square.png",    // 300x300 with alpha
                "samples/strip.png",     // 2400x30, 80:1
                "samples/delivery.tiff", // 3 pages: 850x1100, 850x1100, 1100x850
                "samples/receipt.jpg",   // 640x480
                "--budget",
                &b,
                "--workers",
                "2",
            ],
            &[],
        );
        assert_eq!(r.code, 0, "budget {budget}: {}", r.stderr);
        assert!(r.errors().is_empty());
        assert_eq!(r.pages().len(), 3 + 1 + 1 + 1 + 3 + 1, "budget {budget}");
        let a4 = (595.2756, 841.8898);
        let cases: Vec<(&str, Vec<(f64, f64)>)> = vec![
            ("invoice.pdf", vec![a4; 3]),
            ("landscape.pdf", vec![(a4.1, a4.0)]),
            ("square.png", vec![(300.0, 300.0)]),
            ("strip.png", vec![(2400.0, 30.0)]),
            (
                "delivery.tiff",
                vec![(850.0, 1100.0), (850.0, 1100.0), (1100.0, 850.0)],
            ),
            ("receipt.jpg", vec![(640.0, 480.0)]),
        ];
        for (name, sizes) in cases {
            let mut pages = r.pages_of(name);
            pages.sort_by_key(|p| p["page_index"].as_u64());
            assert_eq!(pages.len(), sizes.len(), "{name}");
            for (page, (w, h)) in pages.iter().zip(sizes) {
                let want = expected(w, h, budget);
                assert_eq!(
                    size_of(page),
                    want,
                    "{name} page {} at {budget}",
                    page["page_index"]
                );
                // The PNG on disk has that size: no further resize is needed.
                let png = image::open(r.out.join(page["png"].as_str().unwrap())).unwrap();
                assert_eq!(
                    (png.width() as u64, png.height() as u64),
                    want,
                    "{name} PNG"
                );
                let tokens = page["soft_tokens"].as_u64().unwrap();
                assert_eq!(
                    tokens,
                    rule.soft_tokens(want.1 as u32, want.0 as u32) as u64
                );
                assert!(tokens <= budget.soft_tokens() as u64);
                if name.ends_with(".pdf") {
                    let points = page["points"].as_array().unwrap();
                    assert!((points[0].as_f64().unwrap() - w).abs() < 0.01);
                    assert!((points[1].as_f64().unwrap() - h).abs() < 0.01);
                } else {
                    assert!(page["points"].is_null());
                    assert_eq!(page["original_px"], serde_json::json!([w as u64, h as u64]));
                }
            }
        }
        assert_no_temp_files(dir.path());
    }
}

#[test]
fn images_are_written_as_the_model_sees_them() {
    let dir = tempfile::tempdir().unwrap();
    let r = render(dir.path(), &["samples/square.png", "--budget", "140"], &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let budget = Budget::try_from(140).unwrap();
    // What the model's image processor does with the original file.
    let original = Rgb8::from_image(&image::open(sample("square.png")).unwrap());
    let (th, tw) = ResizeRule::default()
        .target_size(original.height as f64, original.width as f64, budget)
        .unwrap();
    let want = resize_bicubic(&original, tw, th);
    let got = image::open(dir.path().join("square.png.p0001.png"))
        .unwrap()
        .into_rgb8();
    assert_eq!(got.dimensions(), (want.width, want.height));
    assert!(
        got.as_raw() == &want.data,
        "PNG differs from the image processor's resize"
    );
    // Transparent corners were composited onto white.
    assert_eq!(got.get_pixel(0, 0), &image::Rgb([255, 255, 255]));
}

fn normalize(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn text_layer_matches_the_ground_truth() {
    let truth: Value =
        serde_json::from_str(&std::fs::read_to_string(sample("ground_truth.json")).unwrap())
            .unwrap();
    let doc = |file: &str| {
        truth["documents"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["file"] == file)
            .unwrap()
            .clone()
    };
    let dir = tempfile::tempdir().unwrap();
    let r = render(
        dir.path(),
        &[
            "samples/invoice.pdf",
            "samples/landscape.pdf",
            "samples/scanned.pdf",
        ],
        &[],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);

    // Born-digital invoice: every page's text is exactly the ground-truth lines in order.
    let invoice = doc("invoice.pdf");
    for (i, lines) in invoice["text_lines"].as_array().unwrap().iter().enumerate() {
        let want: Vec<&str> = lines
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap())
            .collect();
        let page = r
            .pages_of("invoice.pdf")
            .into_iter()
            .find(|p| p["page_index"] == i)
            .unwrap();
        let text =
            std::fs::read_to_string(dir.path().join(page["text"].as_str().unwrap())).unwrap();
        assert_eq!(
            normalize(&text),
            normalize(&want.join(" ")),
            "invoice page {}",
            i + 1
        );
        assert_eq!(
            page["text_layer_chars"].as_u64().unwrap(),
            text.chars().count() as u64
        );
    }
    // The fields a later extraction must find are in the text layer.
    let all_text: String = (1..=3)
        .map(|p| {
            std::fs::read_to_string(dir.path().join(format!("invoice.pdf.p{p:04}.txt"))).unwrap()
        })
        .collect();
    let fields = &invoice["fields"];
    for key in ["invoice_number", "invoice_date", "total", "subtotal", "tax"] {
        assert!(all_text.contains(fields[key].as_str().unwrap()), "{key}");
    }
    assert!(all_text.contains(fields["vendor"]["name"].as_str().unwrap()));
    for item in fields["line_items"].as_array().unwrap() {
        assert!(all_text.contains(item["description"].as_str().unwrap()));
        assert!(all_text.contains(item["amount"].as_str().unwrap()));
    }

    // Landscape statement: same, one page.
    let statement = doc("landscape.pdf");
    let want: Vec<&str> = statement["text_lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    let text = std::fs::read_to_string(dir.path().join("landscape.pdf.p0001.txt")).unwrap();
    for line in want {
        assert!(
            normalize(&text).contains(&normalize(line)),
            "{line:?} in landscape text"
        );
    }

    // The scanned invoice has no text layer at all.
    let scanned = &r.pages_of("scanned.pdf")[0];
    assert_eq!(scanned["text_layer_chars"], 0);
    assert!(scanned["text"].is_null());
}

#[test]
fn folders_are_mirrored_and_a_bad_file_does_not_stop_the_others() {
    let input = tempfile::tempdir().unwrap();
    let root = input.path().join("inbox");
    std::fs::create_dir_all(root.join("2026/march")).unwrap();
    std::fs::copy(sample("invoice.pdf"), root.join("2026/march/invoice.pdf")).unwrap();
    std::fs::copy(sample("receipt.webp"), root.join("2026/receipt.webp")).unwrap();
    // Content-sniffed: a PNG without an extension is still an image.
    std::fs::copy(sample("square.png"), root.join("scan-0001")).unwrap();
    std::fs::write(
        root.join("2026/broken.pdf"),
        b"%PDF-1.7\nthis is not really a PDF",
    )
    .unwrap();
    std::fs::write(root.join("notes.txt"), b"skipped quietly").unwrap();

    let out = tempfile::tempdir().unwrap();
    let r = render(out.path(), &[root.to_str().unwrap(), "--workers", "2"], &[]);
    assert_eq!(r.code, 3, "some inputs failed: exit code 3\n{}", r.stderr);
    let errors = r.errors();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(file_name(&errors[0]["path"]), "broken.pdf");
    assert_eq!(errors[0]["kind"], "pdf_corrupt");
    assert!(r.stderr.contains("broken.pdf"));
    for file in [
        "2026/march/invoice.pdf.p0001.png",
        "2026/march/invoice.pdf.p0003.png",
        "2026/march/invoice.pdf.p0001.txt",
        "2026/receipt.webp.p0001.png",
        "scan-0001.p0001.png",
        "pages.jsonl",
    ] {
        assert!(out.path().join(file).is_file(), "{file}");
    }
    assert_eq!(r.pages().len(), 5);
    assert!(
        r.stderr.contains("rendered 4 documents, 5 pages"),
        "{}",
        r.stderr
    );
    assert_no_temp_files(out.path());
}

#[test]
fn a_long_pdf_is_split_across_workers_and_every_page_comes_once() {
    let dir = tempfile::tempdir().unwrap();
    let r = render(
        dir.path(),
        &["samples/mixed50.pdf", "--workers", "2", "--budget", "280"],
        &[],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let mut indices: Vec<u64> = r
        .pages()
        .iter()
        .map(|p| p["page_index"].as_u64().unwrap())
        .collect();
    indices.sort();
    assert_eq!(indices, (0..50).collect::<Vec<_>>());
    assert!(r.pages().iter().all(|p| p["page_count"] == 50));
    assert!(r.pages().iter().all(|p| size_of(p) == (672, 912)));
    assert!(
        r.stderr.contains("rendered 1 documents, 50 pages"),
        "{}",
        r.stderr
    );
}

#[test]
fn an_output_folder_inside_the_input_folder_is_not_taken_as_input() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(sample("landscape.pdf"), dir.path().join("landscape.pdf")).unwrap();
    let out = dir.path().join("out");
    for _ in 0..2 {
        let r = render(&out, &[dir.path().to_str().unwrap()], &[]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert_eq!(r.pages().len(), 1, "{:?}", r.lines);
    }
}
