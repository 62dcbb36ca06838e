//! Throughput benchmark (not a test): `quire run` with batching on (the defaults: vision runs
//! up to `--vision-patches`, one decoder batch across documents up to `--batch-size` rows and
//! `--batch-tokens`) against batching off (`--batch-size 1 --vision-patches 1`: one page per
//! vision run, one sequence per decoder step), on the tiny model, alternating the two modes.
//! Greedy decoding makes both give the same outputs; the bench checks that too.
//!
//! Two workloads: the PDFs' text layers given as anchors (the default; invoice.pdf's prompts are
//! ~1300 tokens beside ~200 for the images, and a left-padded batch pays the longest row's
//! length for every row), and `--no-text-anchor true` (image prompts only, similar lengths).
//!
//! Run with `cargo bench --bench batching`. Environment:
//! * `QUIRE_BENCH_RUNS=N` — runs per mode (median reported; default 3).
//! * `QUIRE_BENCH_COPIES=N` — copies of each of the 6 sample files (default 4: 24 documents).

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// Single-page samples: batching has to cross documents to fill a batch.
const SAMPLES: &[&str] = &[
    "invoice.pdf",
    "landscape.pdf",
    "receipt.jpg",
    "receipt.webp",
    "square.png",
    "strip.png",
];

const COMMON: &[&str] = &[
    "--task",
    "ocr",
    "--budget",
    "70",
    "--max-new-tokens",
    "64",
    "--format",
    "jsonl",
];

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// `data` and `text` of every record of `results.jsonl`, by source (the `run` field holds
/// timings and is left out), and the pages processed.
fn outputs(out: &Path) -> (BTreeMap<String, (Value, Value)>, u64) {
    let text = std::fs::read_to_string(out.join("results.jsonl")).expect("results.jsonl");
    let mut records = BTreeMap::new();
    let mut pages = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let r: Value = serde_json::from_str(line).expect("a JSON record");
        assert!(r["error"].is_null(), "a document failed: {}", r["error"]);
        pages += r["page_count"].as_u64().unwrap_or(0);
        records.insert(
            r["source"].as_str().unwrap_or_default().to_string(),
            (r["data"].clone(), r["text"].clone()),
        );
    }
    (records, pages)
}

fn main() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let model = repo.join("samples/models/tiny-gemma4");
    let runs = env_usize("QUIRE_BENCH_RUNS", 3).max(1);
    let copies = env_usize("QUIRE_BENCH_COPIES", 4).max(1);
    let tmp = tempfile::tempdir().expect("temp dir");
    let input = tmp.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    for name in SAMPLES {
        for c in 0..copies {
            std::fs::copy(
                repo.join("samples").join(name),
                input.join(format!("{c:02}-{name}")),
            )
            .unwrap();
        }
    }
    let modes: [(&str, &[&str]); 2] = [
        ("off", &["--batch-size", "1", "--vision-patches", "1"]),
        ("on (defaults)", &[]),
    ];
    let workloads: [(&str, &[&str]); 2] = [
        ("text anchors (default)", &[]),
        ("no text anchors", &["--no-text-anchor", "true"]),
    ];
    println!(
        "quire run, tiny model, {} documents ({} samples × {copies}), {}; {runs} runs per mode, alternating",
        SAMPLES.len() * copies,
        SAMPLES.len(),
        COMMON.join(" ")
    );
    println!("\n| workload | batching | pages | median wall s | pages/s | speed-up | outputs identical |");
    println!("|---|---|---|---|---|---|---|");
    for (w, (workload, workload_flags)) in workloads.iter().enumerate() {
        let mut times: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
        let mut pages = 0;
        let mut first: Vec<Option<BTreeMap<String, (Value, Value)>>> = vec![None; modes.len()];
        let mut identical = true;
        for run in 0..runs {
            for (m, (name, flags)) in modes.iter().enumerate() {
                let out = tmp.path().join(format!("out-{w}-{m}-{run}"));
                let started = Instant::now();
                let result = Command::new(env!("CARGO_BIN_EXE_quire"))
                    .arg("--offline")
                    .arg("run")
                    .arg(&input)
                    .arg("--out")
                    .arg(&out)
                    .arg("--model")
                    .arg(&model)
                    .args(COMMON)
                    .args(*workload_flags)
                    .args(*flags)
                    .output()
                    .expect("run quire");
                let secs = started.elapsed().as_secs_f64();
                assert!(
                    result.status.success(),
                    "batching {name}: {}",
                    String::from_utf8_lossy(&result.stderr)
                );
                eprintln!("{workload}, run {run}, batching {name}: {secs:.2} s");
                times[m].push(secs);
                let (records, n) = outputs(&out);
                pages = n;
                match &first[m] {
                    None => first[m] = Some(records),
                    Some(f) => identical &= *f == records,
                }
            }
        }
        identical &= first[0] == first[1];
        let off = median(times[0].clone());
        for (m, (name, _)) in modes.iter().enumerate() {
            let t = median(times[m].clone());
            println!(
                "| {workload} | {name} | {pages} | {t:.2} | {:.2} | {:.2}× | {} |",
                pages as f64 / t,
                off / t,
                if identical { "yes" } else { "NO" }
            );
        }
    }
}
