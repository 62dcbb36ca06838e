//! `quire render` under faults: a PDFium worker that crashes or hangs is replaced and the batch
//! goes on; malformed and encrypted inputs give clear error records naming the file, never a
//! panic.

mod render_support;

use render_support::*;
use std::time::{Duration, Instant};

/// Three copies of the invoice plus the landscape page, one named to trigger a test hook.
fn batch(bad_name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for name in ["a-invoice.pdf", bad_name, "c-invoice.pdf"] {
        std::fs::copy(sample("invoice.pdf"), dir.path().join(name)).unwrap();
    }
    std::fs::copy(sample("landscape.pdf"), dir.path().join("d-landscape.pdf")).unwrap();
    dir
}

fn assert_others_rendered(r: &Rendered) {
    assert_eq!(r.pages_of("a-invoice.pdf").len(), 3, "{}", r.stderr);
    assert_eq!(r.pages_of("c-invoice.pdf").len(), 3, "{}", r.stderr);
    assert_eq!(r.pages_of("d-landscape.pdf").len(), 1, "{}", r.stderr);
}

#[test]
fn a_crashing_worker_is_replaced_and_the_batch_goes_on() {
    let input = batch("b-crashme.pdf");
    let out = tempfile::tempdir().unwrap();
    // One worker: the documents after the crash must be rendered by its replacement.
    let r = render(
        out.path(),
        &[input.path().to_str().unwrap(), "--workers", "1"],
        &[("QUIRE_TEST_CRASH_ON", "crashme")],
    );
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert_others_rendered(&r);
    assert!(r.pages_of("b-crashme.pdf").is_empty());
    let errors = r.errors_of("b-crashme.pdf");
    assert!(!errors.is_empty());
    assert_eq!(
        r.errors().len(),
        errors.len(),
        "only the bad document fails"
    );
    for e in &errors {
        assert_eq!(e["kind"], "worker_crashed", "{e}");
    }
    // The first failure names the page and how the worker died.
    assert_eq!(errors[0]["page"], 0);
    assert!(
        errors[0]["message"].as_str().unwrap().contains("SIGABRT"),
        "{}",
        errors[0]
    );
    // After two crashes the rest of the document is skipped with a record saying so.
    assert!(errors.last().unwrap()["message"]
        .as_str()
        .unwrap()
        .contains("skipped"));
    assert!(r.stderr.contains("b-crashme.pdf"));
}

#[test]
fn a_hanging_worker_is_killed_after_the_page_timeout() {
    let input = batch("b-hangme.pdf");
    let out = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let r = render(
        out.path(),
        &[
            input.path().to_str().unwrap(),
            "--workers",
            "2",
            "--page-timeout",
            "2",
        ],
        &[("QUIRE_TEST_HANG_ON", "hangme")],
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert_others_rendered(&r);
    let errors = r.errors_of("b-hangme.pdf");
    assert!(!errors.is_empty());
    assert_eq!(
        r.errors().len(),
        errors.len(),
        "only the bad document fails"
    );
    assert_eq!(errors[0]["kind"], "worker_timeout");
    assert_eq!(errors[0]["page"], 0);
    assert!(errors[0]["message"]
        .as_str()
        .unwrap()
        .contains("longer than 2 s"));
}

/// What really happens to each file of samples/malformed (see samples/ground_truth.json).
#[test]
fn malformed_inputs_give_clear_errors_naming_the_file() {
    let out = tempfile::tempdir().unwrap();
    let r = render(out.path(), &["samples/malformed"], &[]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    let expect_error = [
        ("empty.pdf", "empty_file", "empty file"),
        ("garbage.pdf", "pdf_corrupt", "not a PDF"),
        ("truncated.pdf", "pdf_corrupt", "not a readable PDF"),
        ("no_trailer.pdf", "pdf_corrupt", "not a readable PDF"),
        ("zero_pages.pdf", "pdf_no_pages", "no pages"),
        ("encrypted.pdf", "pdf_encrypted", "--password"),
        ("bomb.png", "image_too_large", "60000x60000"),
        ("not_an_image.jpg", "unsupported_format", "not a JPEG"),
    ];
    for (name, kind, words) in expect_error {
        let errors = r.errors_of(name);
        assert_eq!(errors.len(), 1, "{name}: {errors:?}");
        assert_eq!(errors[0]["kind"], kind, "{name}");
        let message = errors[0]["message"].as_str().unwrap();
        assert!(message.contains(words), "{name}: {message}");
        assert!(!message.contains('\n'), "one-line message: {message:?}");
        assert!(r.pages_of(name).is_empty());
        assert!(
            r.stderr
                .lines()
                .any(|l| l.starts_with("error: ") && l.contains(name)),
            "stderr names {name}"
        );
    }
    // PDFium silently rebuilds a missing xref table: the document renders.
    assert_eq!(r.pages_of("no_xref.pdf").len(), 3);
    assert!(r.errors_of("no_xref.pdf").is_empty());
    // A garbage content stream renders a blank page, without an error.
    let bad = r.pages_of("bad_stream.pdf");
    assert_eq!(bad.len(), 1);
    assert!(r.errors_of("bad_stream.pdf").is_empty());
    let png = image::open(out.path().join(bad[0]["png"].as_str().unwrap()))
        .unwrap()
        .into_rgb8();
    assert!(png.pixels().all(|p| p.0 == [255, 255, 255]), "blank page");
    assert_eq!(r.errors().len(), expect_error.len());
    assert_no_temp_files(out.path());
}

#[test]
fn encrypted_pdf_with_and_without_the_right_password() {
    let truth: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sample("ground_truth.json")).unwrap())
            .unwrap();
    let password = truth["password"].as_str().unwrap();
    let file = "samples/malformed/encrypted.pdf";

    let out = tempfile::tempdir().unwrap();
    let r = render(out.path(), &[file, "--password", password], &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.pages_of("encrypted.pdf").len(), 1);
    // It is the landscape statement, text layer included.
    assert!(r.pages()[0]["text_layer_chars"].as_u64().unwrap() > 100);

    let out = tempfile::tempdir().unwrap();
    let pw = out.path().join("pw.txt");
    std::fs::write(&pw, format!("{password}\n")).unwrap();
    let r = render(
        out.path(),
        &[file, "--password-file", pw.to_str().unwrap()],
        &[],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.pages().len(), 1);

    let out = tempfile::tempdir().unwrap();
    let r = render(out.path(), &[file, "--password", "wrong"], &[]);
    assert_eq!(r.code, 3);
    let errors = r.errors_of("encrypted.pdf");
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0]["kind"], "pdf_wrong_password");

    let out = tempfile::tempdir().unwrap();
    let r = render(out.path(), &[file], &[]);
    assert_eq!(r.code, 3);
    assert_eq!(r.errors_of("encrypted.pdf")[0]["kind"], "pdf_encrypted");
}
