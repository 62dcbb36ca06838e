//! `quire bench` end to end with the tiny random-weight model: the grid's three files with the
//! expected cells and columns, scores that do not depend on what the random model writes (a
//! schema whose `doc_type` can only be right and whose `total` the truth puts out of range),
//! `--compare` against a stub OpenAI-compatible server on 127.0.0.1 that checks each request
//! and answers known values, and bad settings refused before any cell runs.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn model() -> PathBuf {
    root().join("samples/models/tiny-gemma4")
}

fn quire(args: &[&str], env: &[(&str, &str)]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_quire"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run quire");
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    out
}

/// `doc_type` has one allowed value, so every extraction gets it right; `total` is a number in
/// 0..=1000 that the truth sets to -1 (scanned, receipt) so no extraction gets it right.
const SCHEMA: &str = r#"{
  "type": "object",
  "properties": {
    "doc_type": {"type": "string", "enum": ["invoice"]},
    "total": {"type": "number", "minimum": 0, "maximum": 1000, "multipleOf": 0.01}
  },
  "required": ["doc_type", "total"],
  "additionalProperties": false
}"#;

struct Fixture {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    input: PathBuf,
    schema: PathBuf,
    truth: PathBuf,
}

/// `docs` copied from the samples into `in/`, the schema, and `truth` as the truth file.
fn fixture(docs: &[&str], truth: &[Value]) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let input = dir.join("in");
    std::fs::create_dir_all(&input).unwrap();
    for doc in docs {
        std::fs::copy(root().join("samples").join(doc), input.join(doc)).unwrap();
    }
    let schema = dir.join("schema.json");
    std::fs::write(&schema, SCHEMA).unwrap();
    let truth_path = dir.join("truth.jsonl");
    let lines: Vec<String> = truth.iter().map(Value::to_string).collect();
    std::fs::write(&truth_path, lines.join("\n") + "\n").unwrap();
    Fixture {
        _tmp: tmp,
        dir,
        input,
        schema,
        truth: truth_path,
    }
}

fn bench_args<'a>(f: &'a Fixture, out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "bench",
        f.input.to_str().unwrap(),
        "--truth",
        f.truth.to_str().unwrap(),
        "--schema",
        f.schema.to_str().unwrap(),
        "--model",
        model().to_str().unwrap().to_owned().leak(),
        "--out",
        out,
        "--budgets",
        "70",
        "--max-new-tokens",
        "48",
        "--workers",
        "2",
    ];
    // A flag of `extra` replaces the default's value.
    for pair in extra.chunks(2) {
        match args.iter().position(|a| *a == pair[0]) {
            Some(at) if pair.len() == 2 => args[at + 1] = pair[1],
            _ => args.extend_from_slice(pair),
        }
    }
    args
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| panic!("{path:?}: {e}")))
        .unwrap()
}

#[test]
fn bench_runs_the_grid_and_writes_json_csv_and_html() {
    let f = fixture(
        &["scanned.pdf", "receipt.jpg", "square.png"],
        &[
            // Case and whitespace differ from the model's "invoice": equal after folding.
            json!({"source": "scanned.pdf", "data": {"doc_type": " INVOICE ", "total": -1}}),
            json!({"source": "receipt.jpg", "data": {"doc_type": "invoice", "total": "-1.00"}}),
            // square.png has no truth: processed and timed, not scored.
        ],
    );
    let out = f.dir.join("bench");
    let result = quire(
        &bench_args(
            &f,
            out.to_str().unwrap(),
            &["--dtypes", "fp32,q4,vision=fp32"],
        ),
        &[],
    );
    assert_eq!(result.status.code(), Some(0));

    let report = read_json(&out.join("bench.json"));
    assert_eq!(report["task"], "extract");
    assert_eq!(report["documents"], 3);
    let cells = report["cells"].as_array().unwrap();
    let labels: Vec<&str> = cells.iter().map(|c| c["label"].as_str().unwrap()).collect();
    assert_eq!(labels, ["b70 fp32", "b70 q4,vision=fp32"]);
    for (cell, folder) in cells.iter().zip(["b70-fp32", "b70-q4_vision-fp32"]) {
        let label = &cell["label"];
        assert_eq!(cell["row"], "grid");
        assert_eq!(cell["budget"], 70);
        assert_eq!(cell["exit_code"], 0, "{label}");
        assert_eq!(cell["documents"], 3, "{label}");
        assert_eq!(cell["failed"], 0, "{label}");
        assert_eq!(cell["pages"], 3, "{label}");
        assert_eq!(cell["scored"], 2, "{label}");
        // Two documents, two leaves each predicted and expected; `doc_type` always matches,
        // `total` never: P = R = F1 = 0.5.
        assert_eq!(
            cell["fields"],
            json!({"matched": 2, "predicted": 4, "expected": 4}),
            "{label}"
        );
        for k in ["precision", "recall", "f1", "accuracy"] {
            assert_eq!(cell[k], 0.5, "{label} {k}");
        }
        assert!(cell["pages_per_s"].as_f64().unwrap() > 0.0, "{label}");
        let (p50, p95) = (
            cell["latency_p50_ms"].as_f64().unwrap(),
            cell["latency_p95_ms"].as_f64().unwrap(),
        );
        assert!(p50 > 0.0 && p95 >= p50, "{label}: {p50} {p95}");
        assert!(cell["peak_rss_mib"].as_f64().unwrap() > 10.0, "{label}");
        assert!(cell["generated_tokens"].as_u64().unwrap() > 0, "{label}");
        // The cell's outputs are kept in its own folder, with its log beside it.
        let cell_out = out.join(folder);
        assert_eq!(cell["out"], cell_out.to_str().unwrap());
        let record = read_json(&cell_out.join("scanned.pdf.json"));
        assert_eq!(record["data"]["doc_type"], "invoice");
        assert_eq!(record["settings"]["budget"], 70);
        assert!(out.join(format!("{folder}.log")).is_file());
    }
    assert_eq!(
        cells[1]["dtype"], "q4,vision=fp32",
        "the dtype as given on the command line"
    );
    // Equal accuracy: the faster cell is the Pareto-optimal one (both, if equally fast).
    let speeds: Vec<f64> = cells
        .iter()
        .map(|c| c["pages_per_s"].as_f64().unwrap())
        .collect();
    let fastest = speeds.iter().copied().fold(0.0, f64::max);
    for (cell, speed) in cells.iter().zip(&speeds) {
        assert_eq!(cell["pareto"], *speed == fastest, "{}", cell["label"]);
    }
    // Dtype agreement at budget 70: `doc_type` agrees in all 3 documents, 6 leaves in either.
    let agreement = report["agreement"].as_array().unwrap();
    assert_eq!(agreement.len(), 1);
    let a = &agreement[0];
    assert_eq!(
        (&a["budget"], &a["a"], &a["b"]),
        (&json!(70), &json!("fp32"), &json!("q4,vision=fp32"))
    );
    assert_eq!(a["documents"], 3);
    assert_eq!(a["total"], 6);
    assert!(a["same"].as_u64().unwrap() >= 3, "{a}");

    let csv = std::fs::read_to_string(out.join("bench.csv")).unwrap();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next().unwrap(),
        "label,row,budget,dtype,exit_code,documents,failed,pages,scored,precision,recall,f1,\
         cer,accuracy,pages_per_s,latency_p50_ms,latency_p95_ms,peak_rss_mib,wall_s,\
         prompt_tokens,generated_tokens,pareto,out,errors"
    );
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 2);
    assert!(
        rows[0].starts_with("b70 fp32,grid,70,fp32,0,3,0,3,2,0.5000,0.5000,0.5000,,0.5000,"),
        "{}",
        rows[0]
    );
    // A label with a comma is quoted.
    assert!(
        rows[1].starts_with("\"b70 q4,vision=fp32\",grid,70,\"q4,vision=fp32\",0,3,0,3,2,"),
        "{}",
        rows[1]
    );

    let html = std::fs::read_to_string(out.join("bench.html")).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains("<svg"), "the scatter is inline");
    assert!(!html.contains("src=\"http"), "self-contained");
    for label in ["b70 fp32", "b70 q4,vision=fp32", "Dtype agreement"] {
        assert!(html.contains(label), "{label}");
    }

    // The table on stdout.
    let stdout = String::from_utf8(result.stdout).unwrap();
    assert!(stdout.starts_with("cell "), "{stdout}");
    assert!(stdout.contains("b70 q4,vision=fp32"), "{stdout}");
    assert!(
        stdout.contains("agreement b70 fp32 vs q4,vision=fp32: "),
        "{stdout}"
    );
}

/// One HTTP request as the stub saw it.
struct Request {
    head: String,
    body: Value,
}

/// A stub chat completions server for `n` requests: each answered with `answer(body)`, the
/// connection then closed.
fn stub_server(
    n: usize,
    answer: impl Fn(&Value) -> Value + Send + 'static,
) -> (String, std::thread::JoinHandle<Vec<Request>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for stream in listener.incoming().take(n) {
            let mut stream = stream.unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = String::new();
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if line == "\r\n" || line.is_empty() {
                    break;
                }
                head.push_str(&line);
            }
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().unwrap())
                })
                .expect("a Content-Length");
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let body: Value = serde_json::from_slice(&body).unwrap();
            let reply = answer(&body).to_string();
            write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{reply}",
                reply.len()
            )
            .unwrap();
            seen.push(Request { head, body });
        }
        seen
    });
    (url, handle)
}

#[test]
fn compare_sends_pages_and_schema_to_the_endpoint_and_scores_its_answers() {
    let f = fixture(
        &["invoice.pdf", "scanned.pdf"],
        &[
            json!({"source": "invoice.pdf", "data": {"doc_type": "Invoice", "total": "7,326.81"}}),
            json!({"source": "scanned.pdf", "data": {"doc_type": "invoice", "total": 340.2}}),
        ],
    );
    // The invoice's text layer is in its prompt: its answer is right; the scanned one's total
    // is wrong.
    let (url, server) = stub_server(2, |body| {
        let prompt = body["messages"][0]["content"][0]["text"]
            .as_str()
            .unwrap_or("");
        let total = if prompt.contains("INV-2026-0042") {
            7326.81
        } else {
            1.0
        };
        let content = json!({"doc_type": "invoice", "total": total}).to_string();
        json!({
            "choices": [{"message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 10}
        })
    });
    let out = f.dir.join("bench");
    let result = quire(
        &bench_args(
            &f,
            out.to_str().unwrap(),
            &[
                "--dtypes",
                "fp32",
                "--compare",
                &url,
                "--compare-model",
                "ref-model",
            ],
        ),
        &[("QUIRE_COMPARE_API_KEY", "test-key")],
    );
    assert_eq!(result.status.code(), Some(0));
    let requests = server.join().unwrap();
    let schema: Value = serde_json::from_str(SCHEMA).unwrap();
    let mut image_counts = Vec::new();
    for r in &requests {
        assert!(
            r.head.starts_with("POST /v1/chat/completions HTTP/1.1\r\n"),
            "{}",
            r.head
        );
        assert!(
            r.head.contains("\r\nauthorization: Bearer test-key\r\n")
                || r.head.contains("\r\nAuthorization: Bearer test-key\r\n"),
            "{}",
            r.head
        );
        let body = &r.body;
        assert_eq!(body["model"], "ref-model");
        assert_eq!(
            body["response_format"],
            json!({"type": "json_schema", "json_schema": {"name": "extraction", "schema": schema, "strict": true}})
        );
        let content = body["messages"][0]["content"].as_array().unwrap();
        assert_eq!(body["messages"][0]["role"], "user");
        assert_eq!(content[0]["type"], "text");
        assert!(
            content[0]["text"]
                .as_str()
                .unwrap()
                .contains("\"enum\":[\"invoice\"]"),
            "the schema is in the instruction"
        );
        let images = &content[1..];
        for part in images {
            assert_eq!(part["type"], "image_url");
            let url = part["image_url"]["url"].as_str().unwrap();
            let data = url
                .strip_prefix("data:image/png;base64,")
                .expect("a PNG data URL");
            // Base64 of the PNG signature.
            assert!(data.starts_with("iVBORw0KGgo"), "{}", &data[..16]);
        }
        image_counts.push(images.len());
    }
    image_counts.sort();
    assert_eq!(image_counts, [1, 3], "one image part per page");

    let report = read_json(&out.join("bench.json"));
    let cells = report["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 2);
    let reference = &cells[1];
    assert_eq!(reference["label"], "ref-model");
    assert_eq!(reference["row"], "compare");
    assert_eq!(reference["documents"], 2);
    assert_eq!(reference["pages"], 4);
    assert_eq!(reference["scored"], 2);
    assert_eq!(reference["failed"], 0);
    assert_eq!(
        reference["fields"],
        json!({"matched": 3, "predicted": 4, "expected": 4})
    );
    assert_eq!(reference["f1"], 0.75);
    assert_eq!(reference["prompt_tokens"], 200);
    assert_eq!(reference["generated_tokens"], 20);
    assert_eq!(
        reference["pareto"], false,
        "the reference is not a grid cell"
    );
    assert_eq!(reference["peak_rss_mib"], Value::Null);
    let csv = std::fs::read_to_string(out.join("bench.csv")).unwrap();
    assert!(
        csv.lines()
            .nth(2)
            .unwrap()
            .starts_with("ref-model,compare,,,,2,0,4,2,0.7500,0.7500,0.7500,"),
        "{csv}"
    );
    let html = std::fs::read_to_string(out.join("bench.html")).unwrap();
    assert!(html.contains("ref-model"));
}

#[test]
fn bad_grids_truths_and_folders_are_refused_before_any_cell_runs() {
    let f = fixture(
        &["receipt.jpg"],
        &[json!({"source": "receipt.jpg", "data": {}})],
    );
    let out = f.dir.join("bench");
    let out_str = out.to_str().unwrap();
    let refused = |args: Vec<&str>, env: &[(&str, &str)], message: &str| {
        let result = quire(&args, env);
        assert_eq!(result.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert!(stderr.contains(message), "{message:?} in {stderr}");
        assert!(!out.join("bench.json").exists());
    };
    refused(
        bench_args(&f, out_str, &["--budgets", "70,100"]),
        &[],
        "--budgets 70,100: \"100\"",
    );
    refused(
        bench_args(&f, out_str, &["--dtypes", "fp32,q5"]),
        &[],
        "--dtypes fp32,q5: \"q5\"",
    );
    refused(
        bench_args(&f, out_str, &["--compare", "http://127.0.0.1:9/v1"]),
        &[],
        "--compare needs --compare-model NAME",
    );
    // A model folder without the fp16 graphs: named before any cell runs.
    let partial = f.dir.join("model");
    std::fs::create_dir_all(partial.join("onnx")).unwrap();
    for entry in walk(&model()) {
        let rel = entry.strip_prefix(model()).unwrap();
        if !rel.to_str().unwrap().contains("_fp16") {
            std::fs::create_dir_all(partial.join(rel).parent().unwrap()).unwrap();
            std::fs::copy(&entry, partial.join(rel)).unwrap();
        }
    }
    let args = bench_args(
        &f,
        out_str,
        &[
            "--dtypes",
            "fp32,fp16",
            "--model",
            partial.to_str().unwrap(),
        ],
    );
    refused(args, &[], "vision_encoder_fp16.onnx");
    assert!(!out.exists(), "nothing written");

    std::fs::write(
        &f.truth,
        "{\"source\": \"receipt.jpg\", \"text\": \"x\"}\n{\"file\": 1}\n",
    )
    .unwrap();
    refused(
        bench_args(&f, out_str, &["--dtypes", "fp32"]),
        &[],
        &format!("{}:2: not a truth line", f.truth.display()),
    );
    std::fs::write(&f.truth, "{\"source\": \"receipt.jpg\", \"data\": {}}\n").unwrap();
    // Settings only the cell's `quire run` can check (the schema against the token limit,
    // with the tokenizer): the first cell's refusal stops the bench.
    refused(
        bench_args(
            &f,
            out_str,
            &["--dtypes", "fp32,fp16", "--max-new-tokens", "4"],
        ),
        &[],
        "the first cell (b70 fp32) could not run",
    );
    let log = std::fs::read_to_string(out.join("b70-fp32.log")).unwrap();
    assert!(log.contains("does not fit --max-new-tokens 4"), "{log}");
    assert!(!out.join("b70-fp16").exists(), "no second cell");
    std::fs::write(out.join("old.txt"), "x").unwrap();
    refused(
        bench_args(&f, out_str, &["--dtypes", "fp32"]),
        &[],
        &format!("--out {out_str} is not empty"),
    );
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}
