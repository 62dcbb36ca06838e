//! `quire run --task ocr` skips blank pages (`--skip-blank-pages`, on by default): no prompt,
//! a page warning, an empty page in the Markdown that keeps its `<!-- page N -->` marker.

mod render_support;

use render_support::helvetica_pdf;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn run(input: &Path, out: &Path, extra: &[&str]) -> Vec<Value> {
    let model = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("samples/models/tiny-gemma4");
    let output = Command::new(env!("CARGO_BIN_EXE_quire"))
        .arg("run")
        .arg(input)
        .arg("--out")
        .arg(out)
        .arg("--model")
        .arg(model)
        .args(["--task", "ocr", "--budget", "70", "--max-new-tokens", "6"])
        .args(["--workers", "1"])
        .args(extra)
        .output()
        .expect("run quire");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    ["middle.pdf", "all-blank.pdf"]
        .iter()
        .map(|name| {
            let path = out.join(format!("{name}.json"));
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
        })
        .collect()
}

fn warnings(record: &Value, page: usize) -> Vec<&str> {
    record["pages"][page]["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect()
}

const BLANK: &str = "blank page: skipped";

#[test]
fn blank_pages_are_skipped_for_ocr_and_keep_their_place() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir(&input).unwrap();
    let text = |s: &str| format!("BT /F1 12 Tf 72 700 Td ({s}) Tj ET");
    let (first, last) = (text("First page"), text("Third page"));
    std::fs::write(
        input.join("middle.pdf"),
        helvetica_pdf(&[(&first, 0), ("", 0), (&last, 0)]),
    )
    .unwrap();
    std::fs::write(
        input.join("all-blank.pdf"),
        helvetica_pdf(&[("", 0), ("", 0)]),
    )
    .unwrap();

    let skipped = run(&input, &dir.path().join("skip"), &[]);
    let kept = run(
        &input,
        &dir.path().join("keep"),
        &["--skip-blank-pages", "false"],
    );

    // The middle page: warned, not generated; its marker stays between the other two.
    let (doc, all_doc) = (&skipped[0], &kept[0]);
    assert!(doc.get("error").is_none(), "{doc}");
    assert_eq!(doc["page_count"], 3);
    assert!(!warnings(doc, 0).contains(&BLANK));
    assert_eq!(warnings(doc, 1), [BLANK]);
    assert!(!warnings(doc, 2).contains(&BLANK));
    let text = doc["text"].as_str().unwrap();
    let markers: Vec<usize> = (1..=3)
        .map(|n| text.find(&format!("<!-- page {n} -->")).expect("marker"))
        .collect();
    assert!(markers[0] < markers[1] && markers[1] < markers[2], "{text}");
    // Nothing between the second marker and the third.
    assert!(
        text.contains("<!-- page 2 -->\n\n<!-- page 3 -->"),
        "{text:?}"
    );

    // With --skip-blank-pages false the page is transcribed like the others.
    for page in 0..3 {
        assert!(!warnings(all_doc, page).contains(&BLANK));
    }
    let generated = |r: &Value| r["tokens"]["generated"].as_u64().unwrap();
    let prompt = |r: &Value| r["tokens"]["prompt"].as_u64().unwrap();
    assert!(generated(doc) > 0);
    assert!(generated(doc) < generated(all_doc), "{doc}\n{all_doc}");
    // Exactly one blank page's prompt fewer (as long as each of the two in all-blank.pdf).
    assert_eq!(prompt(all_doc) - prompt(doc), prompt(&kept[1]) / 2);

    // A document of blank pages only: a record (not an error) with nothing generated.
    let blank = &skipped[1];
    assert!(blank.get("error").is_none(), "{blank}");
    assert_eq!(warnings(blank, 0), [BLANK]);
    assert_eq!(warnings(blank, 1), [BLANK]);
    assert_eq!(generated(blank), 0);
    assert_eq!(blank["text"], "<!-- page 1 -->\n\n<!-- page 2 -->");
    assert!(generated(&kept[1]) > 0);
}
