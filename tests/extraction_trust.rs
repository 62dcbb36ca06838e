//! Extraction you can trust, end to end with the tiny model: every shipped schema runs; a
//! multi-page merge always validates (`maxItems` respected); a pattern field runs at a small
//! budget, and a budget too small names the smallest that fits; every value has a field record
//! (confidence, page, and the box of a value printed in the text layer); `--review-below`
//! writes `review.jsonl` and counts it in the summary and `quire status`; `--null-below`
//! abstains.

mod render_support;

use render_support::helvetica_pdf;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn quire(args: &[&str], out: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_quire"))
        .arg("run")
        .arg("--out")
        .arg(out)
        .arg("--model")
        .arg(root().join("samples/models/tiny-gemma4"))
        .args(["--budget", "70", "--workers", "1"])
        .args(args)
        .output()
        .expect("run quire")
}

/// Exit 0, or the run's stderr.
fn assert_ok(run: &Output) {
    assert_eq!(
        run.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
}

fn record(out: &Path, name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(out.join(format!("{name}.json"))).unwrap()).unwrap()
}

fn validator(schema: &Value) -> jsonschema::Validator {
    jsonschema::validator_for(schema).unwrap()
}

/// Every value (leaf) of `data` has a field record with a confidence in [0, 1].
fn check_fields(record: &Value) {
    fn leaves(v: &Value, ptr: String, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => m.iter().for_each(|(k, v)| {
                leaves(
                    v,
                    format!("{ptr}/{}", k.replace('~', "~0").replace('/', "~1")),
                    out,
                )
            }),
            Value::Array(a) => a
                .iter()
                .enumerate()
                .for_each(|(i, v)| leaves(v, format!("{ptr}/{i}"), out)),
            _ => out.push(ptr),
        }
    }
    let mut ptrs = Vec::new();
    leaves(&record["data"], String::new(), &mut ptrs);
    let fields = record["fields"].as_object().expect("fields");
    assert_eq!(fields.keys().cloned().collect::<Vec<_>>(), ptrs, "{record}");
    for (ptr, f) in fields {
        let c = f["confidence"].as_f64().unwrap();
        let m = f["mean_probability"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&c) && c <= m + 1e-9, "{ptr}: {f}");
    }
}

#[test]
fn every_shipped_schema_runs_end_to_end() {
    let mut n = 0;
    for entry in std::fs::read_dir(root().join("samples/schemas")).unwrap() {
        let path = entry.unwrap().path();
        let dir = tempfile::tempdir().unwrap();
        let out = quire(
            &[
                "--schema",
                path.to_str().unwrap(),
                "--max-new-tokens",
                "2048",
                root().join("samples/receipt.jpg").to_str().unwrap(),
            ],
            dir.path(),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{}: {stderr}", path.display());
        let rec = record(dir.path(), "receipt.jpg");
        let schema: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert!(
            validator(&schema).is_valid(&rec["data"]),
            "{}: {rec}",
            path.display()
        );
        check_fields(&rec);
        n += 1;
    }
    assert!(n >= 2);
}

#[test]
fn a_multi_page_merge_always_validates_and_values_are_located() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir(&input).unwrap();
    let line = |s: &str| format!("BT /F1 12 Tf 72 700 Td ({s}) Tj ET");
    let pages: Vec<String> = (1..=5)
        .map(|i| line(&format!("PO-773{i} line {i}")))
        .collect();
    let pages: Vec<(&str, i32)> = pages.iter().map(|p| (p.as_str(), 0)).collect();
    std::fs::write(input.join("po.pdf"), helvetica_pdf(&pages)).unwrap();
    let schema = serde_json::json!({"type": "object", "properties": {
        "po": {"type": "string", "pattern": "^PO-[0-9]{4,8}$"},
        "kind": {"enum": ["PO-7731", "PO-7732"]},
        "lines": {"type": "array", "maxItems": 3, "items": {"type": "object",
            "properties": {"sku": {"type": "string", "maxLength": 6}}, "required": ["sku"]}}},
        "required": ["po", "kind", "lines"]});
    let schema_path = dir.path().join("po.schema.json");
    std::fs::write(&schema_path, schema.to_string()).unwrap();
    let out = dir.path().join("out");
    let run = quire(
        &[
            "--schema",
            schema_path.to_str().unwrap(),
            "--max-new-tokens",
            "400",
            "--max-pages-per-prompt",
            "1",
            "--review-below",
            "1.0",
            input.to_str().unwrap(),
        ],
        &out,
    );
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(0), "{stderr}");
    let rec = record(&out, "po.pdf");
    assert!(rec.get("error").is_none(), "{rec}");
    assert!(validator(&schema).is_valid(&rec["data"]), "{rec}");
    assert!(rec["data"]["lines"].as_array().unwrap().len() <= 3);
    check_fields(&rec);
    // `kind` is one of two values printed on pages 1 and 2: the field says where.
    let kind = rec["data"]["kind"].as_str().unwrap();
    let page = if kind == "PO-7731" { 0 } else { 1 };
    let f = &rec["fields"]["/kind"];
    // Per-page extraction: every page gave a value; the kept one names its page, and when
    // that page printed it, its box (Helvetica 12 pt at x = 72, baseline 700).
    let kept_page = f["page"].as_u64().unwrap();
    if kept_page == page {
        let b: Vec<f64> = f["box"]
            .as_array()
            .expect("box")
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert!(
            (b[0] - 72.0).abs() <= 1.0 && b[1] < 700.0 && b[3] > 700.0,
            "{f}"
        );
    }
    // Review everything below 1.0: review.jsonl lists exactly the fields below it.
    let below: Vec<&String> = rec["fields"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, f)| f["confidence"].as_f64().unwrap() < 1.0)
        .map(|(k, _)| k)
        .collect();
    let review = std::fs::read_to_string(out.join("review.jsonl")).unwrap();
    let lines: Vec<Value> = review
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines
            .iter()
            .map(|l| l["field"].as_str().unwrap())
            .collect::<Vec<_>>(),
        below.iter().map(|s| s.as_str()).collect::<Vec<_>>()
    );
    for l in &lines {
        assert_eq!(l["source"], "po.pdf");
        assert_eq!(
            l["value"],
            rec["data"]
                .pointer(l["field"].as_str().unwrap())
                .unwrap()
                .clone()
        );
    }
    assert!(
        stderr.contains(&format!(
            "review: {} values below --review-below 1",
            lines.len()
        )),
        "{stderr}"
    );
    let status = Command::new(env!("CARGO_BIN_EXE_quire"))
        .args(["status", "--json", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["counts"]["review_values"], lines.len() as u64);
}

#[test]
fn pattern_fields_run_at_a_small_budget_and_too_small_names_the_smallest() {
    let dir = tempfile::tempdir().unwrap();
    let schema = serde_json::json!({"type": "object", "properties": {
        "po": {"type": "string", "pattern": "^PO-[0-9]{4,8}$"}}, "required": ["po"]});
    let schema_path = dir.path().join("po.schema.json");
    std::fs::write(&schema_path, schema.to_string()).unwrap();
    let image = root().join("samples/square.png");
    let out = dir.path().join("out");
    let run = quire(
        &[
            "--schema",
            schema_path.to_str().unwrap(),
            "--max-new-tokens",
            "60",
            image.to_str().unwrap(),
        ],
        &out,
    );
    assert_ok(&run);
    let rec = record(&out, "square.png");
    assert!(validator(&schema).is_valid(&rec["data"]), "{rec}");

    // Too small for the schema: exit 2 before any document, naming the budget that fits.
    let run = quire(
        &[
            "--schema",
            schema_path.to_str().unwrap(),
            "--max-new-tokens",
            "12",
            image.to_str().unwrap(),
        ],
        &dir.path().join("out2"),
    );
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{stderr}");
    // Said once, in our words.
    assert_eq!(stderr.matches("does not fit").count(), 1, "{stderr}");
    assert!(
        stderr.contains("does not fit --max-new-tokens 12")
            && stderr.contains("use --max-new-tokens 20 or more"),
        "{stderr}"
    );
}

#[test]
fn null_below_abstains_where_the_schema_allows_null() {
    let dir = tempfile::tempdir().unwrap();
    let schema = serde_json::json!({"type": "object", "properties": {
        "total": {"type": ["string", "null"], "maxLength": 8},
        "currency": {"enum": ["EUR", "USD"]}}, "required": ["total", "currency"]});
    let schema_path = dir.path().join("s.schema.json");
    std::fs::write(&schema_path, schema.to_string()).unwrap();
    let image = root().join("samples/square.png");
    let out = dir.path().join("out");
    let run = quire(
        &[
            "--schema",
            schema_path.to_str().unwrap(),
            "--max-new-tokens",
            "200",
            "--null-below",
            "1.0",
            image.to_str().unwrap(),
        ],
        &out,
    );
    assert_ok(&run);
    let rec = record(&out, "square.png");
    assert!(validator(&schema).is_valid(&rec["data"]), "{rec}");
    // Below 1.0 is anything the model chose: a nullable string becomes null unless it was
    // already null or forced; the enum (not nullable) keeps its value.
    let total_conf = rec["fields"]["/total"]["confidence"].as_f64().unwrap();
    if total_conf < 1.0 {
        assert_eq!(rec["data"]["total"], Value::Null, "{rec}");
    }
    assert!(rec["data"]["currency"].is_string());
    let warned = rec["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|w| w.as_str().unwrap().starts_with("/total: confidence"));
    if warned {
        assert_eq!(rec["data"]["total"], Value::Null, "{rec}");
    }
}

/// `--thinking`: extraction still gives schema-valid data, and neither the data nor the
/// Markdown of ocr carries the thought channel.
#[test]
fn thinking_never_reaches_the_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let image = root().join("samples/receipt.jpg");
    let schema = dir.path().join("s.schema.json");
    std::fs::write(
        &schema,
        r#"{"type": "object", "properties": {"title": {"type": "string", "maxLength": 20},
            "total": {"type": "number", "minimum": 0, "maximum": 1000}},
            "required": ["title", "total"]}"#,
    )
    .unwrap();
    let out = dir.path().join("extract");
    let run = quire(
        &[
            "--thinking",
            "--schema",
            schema.to_str().unwrap(),
            "--max-new-tokens",
            "256",
            image.to_str().unwrap(),
        ],
        &out,
    );
    assert_ok(&run);
    let rec = record(&out, "receipt.jpg");
    let schema: Value = serde_json::from_slice(&std::fs::read(&schema).unwrap()).unwrap();
    assert!(validator(&schema).is_valid(&rec["data"]), "{rec}");
    let out = dir.path().join("ocr");
    let run = quire(
        &[
            "--thinking",
            "--task",
            "ocr",
            "--max-new-tokens",
            "48",
            image.to_str().unwrap(),
        ],
        &out,
    );
    assert_eq!(run.status.code(), Some(0));
    let rec = record(&out, "receipt.jpg");
    let text = rec["text"].as_str().unwrap();
    assert!(
        !text.contains("<|channel>") && !text.contains("<channel|>"),
        "{text}"
    );
    let md = std::fs::read_to_string(out.join("receipt.jpg.md")).unwrap();
    assert!(
        !md.contains("<|channel>") && !md.contains("<channel|>"),
        "{md}"
    );
}
