//! `quire run` end to end over inputs crafted to fail in one way each (with the tiny random-weight
//! Gemma 4): the failed document's record names the error kind, it is written like any result
//! (its JSON and its line of `results.jsonl`), the run exits 3, and the good document beside it
//! is unaffected. Failures of ONNX Runtime at run time are injected with the model stages' test
//! hook, `QUIRE_TEST_FAIL_STAGE` (see `pipeline/src/run/fault.rs`).

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `quire run <input> --out <out>` on the tiny model (budget 70, `ocr` unless `extra` says
/// otherwise) with extra environment variables.
fn quire_run(input: &Path, out: &Path, extra: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_quire"));
    cmd.arg("run")
        .arg(input)
        .arg("--out")
        .arg(out)
        .arg("--model")
        .arg(root().join("samples/models/tiny-gemma4"))
        .args(["--budget", "70", "--workers", "1"])
        .args(extra)
        .env_remove("QUIRE_TEST_FAIL_STAGE")
        .env_remove("QUIRE_TEST_CRASH_ON")
        .env_remove("QUIRE_TEST_HANG_ON");
    if !extra.contains(&"--schema") {
        cmd.args(["--task", "ocr"]);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let output = cmd.output().expect("run quire");
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("{stderr}");
    assert!(!stderr.contains("panicked"), "quire panicked");
    output
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| panic!("{path:?}: {e}")))
        .unwrap()
}

/// The records of `results.jsonl`, by source.
fn results(out: &Path) -> Vec<(String, Value)> {
    std::fs::read_to_string(out.join("results.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let r: Value = serde_json::from_str(l).unwrap();
            (r["source"].as_str().unwrap().to_string(), r)
        })
        .collect()
}

/// A folder holding the good sample image `good.png`.
fn input_with_a_good_document() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::copy(root().join("samples/square.png"), input.join("good.png")).unwrap();
    (tmp, input)
}

/// Asserts the run reported `name` as failed with `kind` (in its JSON and in `results.jsonl`),
/// exited 3, and processed `good.png` (when there is one) without an error. Returns the error.
fn assert_failed(result: &Output, out: &Path, name: &str, kind: &str) -> Value {
    assert_eq!(
        result.status.code(),
        Some(3),
        "some documents failed: exit 3"
    );
    let record = read_json(&out.join(format!("{name}.json")));
    assert_eq!(record["source"], name);
    let error = record["error"].clone();
    assert_eq!(error["kind"], kind, "{name}: {record}");
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert!(record["data"].is_null() && record["text"].is_null());
    assert!(!out.join(format!("{name}.md")).exists(), "no transcript");
    let listed = results(out);
    let line = listed.iter().find(|(s, _)| s == name).expect("listed");
    assert_eq!(line.1["error"], error);
    if let Some((_, good)) = listed.iter().find(|(s, _)| s == "good.png") {
        assert!(good["error"].is_null(), "good.png: {}", good["error"]);
        assert!(out.join("good.png.md").is_file() || out.join("good.png.json").is_file());
    }
    assert!(
        String::from_utf8_lossy(&result.stderr).contains(name),
        "the summary names {name}"
    );
    error
}

/// A PDF of the given objects (object 1 the catalog), with a correct cross-reference table; as
/// `samples/generate.py` writes the malformed samples.
fn build_pdf(objects: &[String]) -> Vec<u8> {
    let mut out = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n".to_vec();
    let mut offsets = Vec::new();
    for (i, body) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend(format!("{} 0 obj\n{body}\nendobj\n", i + 1).bytes());
    }
    let xref = out.len();
    out.extend(format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).bytes());
    for offset in offsets {
        out.extend(format!("{offset:010} 00000 n \n").bytes());
    }
    out.extend(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .bytes(),
    );
    out
}

/// A PDF whose page tree says `count` pages and holds one blank page per `media_boxes` entry.
fn pdf(count: usize, media_boxes: &[&str]) -> Vec<u8> {
    let kids: Vec<String> = (0..media_boxes.len())
        .map(|i| format!("{} 0 R", i + 3))
        .collect();
    let mut objects = vec![
        "<< /Type /Catalog /Pages 2 0 R >>".to_string(),
        format!(
            "<< /Type /Pages /Kids [{}] /Count {count} >>",
            kids.join(" ")
        ),
    ];
    objects.extend(
        media_boxes
            .iter()
            .map(|b| format!("<< /Type /Page /Parent 2 0 R /MediaBox [{b}] >>")),
    );
    build_pdf(&objects)
}

#[test]
fn a_page_pdfium_cannot_load_is_page_failed() {
    let (tmp, input) = input_with_a_good_document();
    // The page tree claims 3 pages but holds 1: PDFium trusts /Count and cannot load page 2.
    std::fs::write(input.join("missing-pages.pdf"), pdf(3, &["0 0 612 792"])).unwrap();
    let out = tmp.path().join("out");
    let result = quire_run(&input, &out, &["--max-new-tokens", "4"], &[]);
    let error = assert_failed(&result, &out, "missing-pages.pdf", "page_failed");
    assert_eq!(error["page"], 1, "the first page that failed");
    assert!(error["message"]
        .as_str()
        .unwrap()
        .contains("could not load the page"));
}

#[test]
fn a_page_of_infinite_size_is_bad_page_size() {
    let (tmp, input) = input_with_a_good_document();
    // PDF numbers have no exponent, but a long one overflows PDFium's float: the page is
    // infinitely wide, which the resize rule cannot handle. (A zero or inverted MediaBox is not
    // enough: PDFium replaces an empty one by US Letter.)
    let huge = format!("1{}.0", "0".repeat(45));
    std::fs::write(
        input.join("huge.pdf"),
        pdf(1, &[format!("0 0 {huge} 792").as_str()]),
    )
    .unwrap();
    let out = tmp.path().join("out");
    let result = quire_run(&input, &out, &["--max-new-tokens", "4"], &[]);
    let error = assert_failed(&result, &out, "huge.pdf", "bad_page_size");
    assert_eq!(error["page"], 0);
    assert!(error["message"].as_str().unwrap().contains("inf"));
}

#[cfg(unix)]
#[test]
fn a_symlink_loop_in_an_input_folder_is_an_io_record() {
    let (tmp, input) = input_with_a_good_document();
    std::fs::create_dir_all(input.join("sub")).unwrap();
    // The folder sub/loop links back to the input folder.
    std::os::unix::fs::symlink(&input, input.join("sub/loop")).unwrap();
    let out = tmp.path().join("out");
    let result = quire_run(&input, &out, &["--max-new-tokens", "4"], &[]);
    let error = assert_failed(&result, &out, "sub/loop", "io");
    assert!(error["message"].as_str().unwrap().contains("symlink loop"));
    assert_eq!(results(&out).len(), 2, "good.png and the loop");
}

#[test]
fn a_document_failed_more_often_than_retries_allow_is_retries_exhausted() {
    let (tmp, input) = input_with_a_good_document();
    // A PDF by its content that PDFium cannot open: it reaches the pipeline and fails there.
    std::fs::copy(
        root().join("samples/malformed/truncated.pdf"),
        input.join("truncated.pdf"),
    )
    .unwrap();
    let out = tmp.path().join("out");
    let args = ["--max-new-tokens", "4", "--retries", "0"];
    let first = quire_run(&input, &out, &args, &[]);
    assert_failed(&first, &out, "truncated.pdf", "pdf_corrupt");
    // Run again: no attempt left, so it is not tried again and says why.
    let again = quire_run(&input, &out, &args, &[]);
    assert_eq!(again.status.code(), Some(3));
    let listed = results(&out);
    let (_, record) = listed
        .iter()
        .find(|(s, _)| s == "truncated.pdf")
        .expect("still reported");
    assert_eq!(record["error"]["kind"], "retries_exhausted", "{record}");
    let message = record["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("failed 1 times") && message.contains("pdf_corrupt"),
        "{message}"
    );
    assert!(String::from_utf8_lossy(&again.stderr).contains("1 documents were already done"));
}

#[test]
fn a_prompt_that_leaves_no_room_for_new_tokens_is_prompt_too_long() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::copy(root().join("samples/square.png"), input.join("square.png")).unwrap();
    let out = tmp.path().join("out");
    // The tiny model's context is 4096 tokens: no prompt fits with 4096 new ones.
    let result = quire_run(&input, &out, &["--max-new-tokens", "4096"], &[]);
    let error = assert_failed(&result, &out, "square.png", "prompt_too_long");
    assert!(error["message"]
        .as_str()
        .unwrap()
        .contains("exceeds the model's context of 4096"));
}

/// A valid document never fails because of the merge (it used to: `invalid_output`, "merged
/// pages: ... more than 1 item"): the merged list is cut to the schema's `maxItems`.
#[test]
fn a_merged_extraction_respects_the_schemas_max_items() {
    let (tmp, input) = input_with_a_good_document();
    // Nine pages: more than one prompt takes, so each page is extracted on its own (one item,
    // valid) and the pages merged (up to two distinct items, more than maxItems allows).
    std::fs::write(input.join("nine.pdf"), pdf(9, &["0 0 612 792"; 9])).unwrap();
    let schema = tmp.path().join("one.schema.json");
    std::fs::write(
        &schema,
        r#"{"type": "object", "properties": {"seen": {"type": "array", "items": {"type": "boolean"},
            "minItems": 1, "maxItems": 1}}, "required": ["seen"]}"#,
    )
    .unwrap();
    let out = tmp.path().join("out");
    let result = quire_run(
        &input,
        &out,
        &[
            "--schema",
            schema.to_str().unwrap(),
            "--max-new-tokens",
            "64",
        ],
        &[],
    );
    assert_eq!(
        result.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let nine = read_json(&out.join("nine.pdf.json"));
    assert!(nine["error"].is_null(), "{nine}");
    assert_eq!(
        nine["data"]["seen"].as_array().map(Vec::len),
        Some(1),
        "{nine}"
    );
    // Each page's value names its page; a cut says so.
    let page = nine["fields"]["/seen/0"]["page"].as_u64().unwrap();
    assert!(page < 9);
    let good = read_json(&out.join("good.png.json"));
    assert_eq!(good["data"]["seen"].as_array().map(Vec::len), Some(1));
}

/// Runs `ocr` over two images with `QUIRE_TEST_FAIL_STAGE=stage`: both fail with `kind`, each
/// with its record, and nothing else is written.
fn injected_fault(stage: &str, kind: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    for name in ["square.png", "receipt.jpg"] {
        std::fs::copy(root().join("samples").join(name), input.join(name)).unwrap();
    }
    let out = tmp.path().join("out");
    let result = quire_run(
        &input,
        &out,
        &["--max-new-tokens", "4"],
        &[("QUIRE_TEST_FAIL_STAGE", stage)],
    );
    for name in ["receipt.jpg", "square.png"] {
        let error = assert_failed(&result, &out, name, kind);
        assert!(
            error["message"]
                .as_str()
                .unwrap()
                .contains("injected test fault"),
            "{error}"
        );
    }
    assert_eq!(results(&out).len(), 2);
}

#[test]
fn a_failing_vision_encoder_is_vision_failed() {
    injected_fault("vision", "vision_failed");
}

#[test]
fn a_failing_decoder_is_generation_failed() {
    injected_fault("generate", "generation_failed");
}

#[test]
fn tokens_that_cannot_be_decoded_are_decode_failed() {
    injected_fault("decode", "decode_failed");
}
