//! `quire run` end to end on the samples with the tiny random-weight Gemma 4: outputs for every
//! document (schema-valid JSON checked by an independent validator, non-empty Markdown), broken
//! documents as error records with exit code 3, output paths contained, resume skipping done
//! documents with byte-identical outputs, batching across documents changing no output.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn model() -> PathBuf {
    root().join("samples/models/tiny-gemma4")
}

/// The good sample documents.
const SAMPLES: [&str; 8] = [
    "invoice.pdf",
    "scanned.pdf",
    "landscape.pdf",
    "delivery.tiff",
    "receipt.jpg",
    "receipt.webp",
    "square.png",
    "strip.png",
];

fn quire(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_quire"))
        .args(args)
        .output()
        .expect("run quire");
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    out
}

fn copy_samples(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for name in SAMPLES {
        std::fs::copy(root().join("samples").join(name), dir.join(name)).unwrap();
    }
}

fn run_args<'a>(input: &'a str, out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "run",
        input,
        "--out",
        out,
        "--model",
        model().to_str().unwrap().to_owned().leak(),
        "--budget",
        "70",
        "--workers",
        "2",
    ];
    args.extend_from_slice(extra);
    args
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| panic!("{path:?}: {e}")))
        .unwrap()
}

#[test]
fn extract_and_ocr_write_valid_outputs_for_every_sample() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    copy_samples(&input);
    let schema_path = root().join("samples/schemas/invoice.schema.json");
    let out = tmp.path().join("extract");
    let result = quire(&run_args(
        input.to_str().unwrap(),
        out.to_str().unwrap(),
        &[
            "--schema",
            schema_path.to_str().unwrap(),
            "--max-new-tokens",
            "2048",
            "--format",
            "json,jsonl",
        ],
    ));
    assert_eq!(result.status.code(), Some(0));
    let schema = read_json(&schema_path);
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap();
    for name in SAMPLES {
        let record = read_json(&out.join(format!("{name}.json")));
        assert_eq!(record["source"], name);
        assert!(record["error"].is_null(), "{name}: {}", record["error"]);
        let data = &record["data"];
        let errors: Vec<String> = validator.iter_errors(data).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{name}: {errors:?}\n{data}");
        assert!(record["page_count"].as_u64().unwrap() >= 1);
        assert_eq!(record["settings"]["budget"], 70);
    }
    let lines = std::fs::read_to_string(out.join("results.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), SAMPLES.len());

    let out = tmp.path().join("ocr");
    let result = quire(&run_args(
        input.to_str().unwrap(),
        out.to_str().unwrap(),
        &["--task", "ocr", "--max-new-tokens", "24"],
    ));
    assert_eq!(result.status.code(), Some(0));
    for name in SAMPLES {
        let md = std::fs::read_to_string(out.join(format!("{name}.md"))).unwrap();
        assert!(
            md.contains("<!-- page 1 -->") && md.len() > 20,
            "{name}: {md:?}"
        );
        let record = read_json(&out.join(format!("{name}.json")));
        assert_eq!(record["task"], "ocr");
        for page in record["pages"].as_array().unwrap() {
            assert!(page["soft_tokens"].as_u64().unwrap() <= 70);
        }
    }
    // Multi-page documents keep every page.
    let tiff = read_json(&out.join("delivery.tiff.json"));
    assert_eq!(tiff["page_count"], 3);
    let md = std::fs::read_to_string(out.join("delivery.tiff.md")).unwrap();
    assert!(md.contains("<!-- page 3 -->"));
}

#[test]
fn broken_documents_are_error_records_and_the_rest_succeeds() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    copy_samples(&input);
    let broken = [
        "garbage.pdf",
        "truncated.pdf",
        "encrypted.pdf",
        "zero_pages.pdf",
        "bad_stream.pdf",
        "bomb.png",
        "not_an_image.jpg",
    ];
    for name in broken {
        std::fs::copy(
            root().join("samples/malformed").join(name),
            input.join(format!("broken_{name}")),
        )
        .unwrap();
    }
    let out = tmp.path().join("out");
    let result = quire(&run_args(
        input.to_str().unwrap(),
        out.to_str().unwrap(),
        &["--task", "ocr", "--max-new-tokens", "8"],
    ));
    assert_eq!(
        result.status.code(),
        Some(3),
        "some documents failed: exit 3"
    );
    for name in SAMPLES {
        let record = read_json(&out.join(format!("{name}.json")));
        assert!(record["error"].is_null(), "{name}: {}", record["error"]);
        assert!(out.join(format!("{name}.md")).is_file());
    }
    let stderr = String::from_utf8_lossy(&result.stderr);
    let mut failed = 0;
    for name in broken {
        let file = format!("broken_{name}");
        let record = read_json(&out.join(format!("{file}.json")));
        if name == "bad_stream.pdf" {
            // PDFium renders a garbage content stream as a blank page: not an error.
            assert!(record["error"].is_null());
            continue;
        }
        failed += 1;
        let error = &record["error"];
        assert!(
            error["kind"].is_string() && error["message"].is_string(),
            "{file}: {record}"
        );
        assert!(
            !out.join(format!("{file}.md")).exists(),
            "{file}: no transcript"
        );
        assert!(stderr.contains(&file), "the summary names {file}");
    }
    let lines = std::fs::read_to_string(out.join("results.jsonl")).unwrap();
    let records: Vec<Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), SAMPLES.len() + broken.len());
    assert_eq!(
        records.iter().filter(|r| !r["error"].is_null()).count(),
        failed
    );

    // --allow-partial makes the same outcome exit 0.
    let out2 = tmp.path().join("out2");
    let result = quire(&run_args(
        input.to_str().unwrap(),
        out2.to_str().unwrap(),
        &[
            "--task",
            "ocr",
            "--max-new-tokens",
            "8",
            "--allow-partial",
            "true",
        ],
    ));
    assert_eq!(result.status.code(), Some(0));
}

#[cfg(unix)]
#[test]
fn output_paths_never_escape_the_output_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir_all(input.join("sub")).unwrap();
    let png = root().join("samples/square.png");
    // Names that look like traversal are plain names.
    std::fs::copy(&png, input.join("..evil.png")).unwrap();
    std::fs::copy(&png, input.join("sub/..png")).unwrap();
    std::fs::copy(&png, input.join("sub/x.png")).unwrap();
    // A symlinked folder inside the input pointing outside it.
    let outside_in = tmp.path().join("outside-in");
    std::fs::create_dir_all(&outside_in).unwrap();
    std::fs::copy(&png, outside_in.join("linked.png")).unwrap();
    std::os::unix::fs::symlink(&outside_in, input.join("link")).unwrap();
    // The output folder already holds a symlink where `sub/` would go.
    let out = tmp.path().join("out");
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, out.join("sub")).unwrap();

    let result = quire(&run_args(
        input.to_str().unwrap(),
        out.to_str().unwrap(),
        &["--task", "ocr", "--max-new-tokens", "4"],
    ));
    assert_eq!(
        result.status.code(),
        Some(3),
        "the documents under sub/ cannot be written"
    );
    assert!(out.join("..evil.png.json").is_file());
    assert!(out.join("..evil.png.md").is_file());
    assert_eq!(
        std::fs::read_dir(&elsewhere).unwrap().count(),
        0,
        "nothing written through the symlinked folder"
    );
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        4,
        "nothing beside the folders"
    );
    let lines = std::fs::read_to_string(out.join("results.jsonl")).unwrap();
    let failed: Vec<Value> = lines
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| !r["error"].is_null())
        .collect();
    assert!(failed.iter().all(|r| r["error"]["kind"] == "output_failed"
        && r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("symlinked folder")));
    assert_eq!(failed.len(), 2, "sub/..png and sub/x.png");
}

#[test]
fn a_rerun_skips_done_documents_and_outputs_stay_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    copy_samples(&input);
    let out = tmp.path().join("out");
    let args = run_args(
        input.to_str().unwrap(),
        out.to_str().unwrap(),
        &["--task", "ocr", "--max-new-tokens", "16"],
    );
    assert_eq!(quire(&args).status.code(), Some(0));
    let first = snapshot(&out);
    let again = quire(&args);
    assert_eq!(again.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&again.stderr)
        .contains(&format!("{} documents were already done", SAMPLES.len())));
    assert_eq!(snapshot(&out), first, "outputs unchanged by the rerun");

    // Another budget changes the output: everything is redone.
    let mut other = args.clone();
    let i = other.iter().position(|a| *a == "70").unwrap();
    other[i] = "140";
    let redo = quire(&other);
    assert_eq!(redo.status.code(), Some(0));
    assert!(!String::from_utf8_lossy(&redo.stderr).contains("already done"));
    let status = Command::new(env!("CARGO_BIN_EXE_quire"))
        .args(["status", "--out", out.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["counts"]["done"], 2 * SAMPLES.len());
    assert_eq!(status["counts"]["failed"], 0);
}

/// Every output file's bytes, with run-specific fields (`run`: timings) left out.
fn snapshot(out: &Path) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&p).unwrap();
            let content = if name.ends_with(".jsonl") {
                text.lines()
                    .map(|l| strip_run(serde_json::from_str(l).unwrap()))
                    .collect::<Vec<_>>()
                    .join("\n")
            } else if name.ends_with(".json") {
                strip_run(serde_json::from_str(&text).unwrap())
            } else {
                text
            };
            (name, content)
        })
        .collect();
    files.sort();
    files
}

fn strip_run(mut v: Value) -> String {
    v.as_object_mut().unwrap().remove("run");
    v.to_string()
}

#[test]
fn shards_together_equal_one_run_and_merge() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    copy_samples(&input);
    let extra = ["--task", "ocr", "--max-new-tokens", "8"];
    let single = tmp.path().join("single");
    let args = run_args(input.to_str().unwrap(), single.to_str().unwrap(), &extra);
    assert_eq!(quire(&args).status.code(), Some(0));

    let mut shard_dirs = Vec::new();
    let mut per_shard = Vec::new();
    for i in 0..3 {
        let dir = tmp.path().join(format!("shard{i}"));
        let shard = format!("{i}/3");
        let mut args = run_args(input.to_str().unwrap(), dir.to_str().unwrap(), &extra);
        args.extend(["--shard", shard.as_str().to_owned().leak()]);
        assert_eq!(quire(&args).status.code(), Some(0));
        per_shard.push(
            std::fs::read_to_string(dir.join("results.jsonl"))
                .unwrap()
                .lines()
                .count(),
        );
        shard_dirs.push(dir);
    }
    assert_eq!(
        per_shard.iter().sum::<usize>(),
        SAMPLES.len(),
        "{per_shard:?}"
    );

    // The scheduler form: a Slurm array task.
    let slurm = tmp.path().join("slurm1");
    let out = Command::new(env!("CARGO_BIN_EXE_quire"))
        .args(run_args(
            input.to_str().unwrap(),
            slurm.to_str().unwrap(),
            &extra,
        ))
        .env("SLURM_ARRAY_TASK_ID", "1")
        .env("SLURM_ARRAY_TASK_COUNT", "3")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(snapshot(&slurm), snapshot(&shard_dirs[1]));

    let merged = tmp.path().join("merged");
    let mut args = vec!["merge", "--out", merged.to_str().unwrap()];
    args.extend(shard_dirs.iter().map(|d| d.to_str().unwrap()));
    assert_eq!(quire(&args).status.code(), Some(0));
    assert_eq!(snapshot(&merged), snapshot(&single));
    let status = Command::new(env!("CARGO_BIN_EXE_quire"))
        .args(["status", "--out", merged.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["counts"]["done"], SAMPLES.len());
}

#[cfg(unix)]
#[test]
fn a_killed_run_resumes_to_identical_outputs_without_redoing_finished_documents() {
    use std::time::{Duration, Instant, SystemTime};
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    copy_samples(&input);
    // One sequence at a time, so documents finish one after another through the run (a batch of
    // eight finishes them together at its end) and some kills come after a finished one.
    let extra = [
        "--task",
        "ocr",
        "--max-new-tokens",
        "48",
        "--batch-size",
        "1",
    ];
    let reference = tmp.path().join("reference");
    let args = run_args(input.to_str().unwrap(), reference.to_str().unwrap(), &extra);
    let started = Instant::now();
    assert_eq!(quire(&args).status.code(), Some(0));
    let full = started.elapsed();
    let expected = snapshot(&reference);

    // Kill at several points of the run: while loading and rendering, while generating, while
    // writing outputs.
    let mut finished_before_kills = 0;
    for (n, fraction) in [0.15, 0.4, 0.65, 0.9].into_iter().enumerate() {
        let out = tmp.path().join(format!("killed{n}"));
        let args = run_args(input.to_str().unwrap(), out.to_str().unwrap(), &extra);
        let mut child = Command::new(env!("CARGO_BIN_EXE_quire"))
            .args(&args)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(full.mul_f64(fraction));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        // No partial file is visible: every output present parses completely.
        if out.is_dir() {
            for entry in std::fs::read_dir(&out).unwrap() {
                let path = entry.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                if name.starts_with('.') {
                    continue; // a hidden temporary file or the state folder: not an output
                }
                if name.ends_with(".json") {
                    read_json(&path);
                }
            }
        }
        // Finished means marked done in the state store (outputs are written first, so a kill
        // between the two leaves an output that is rightly redone, to the same bytes).
        let finished: Vec<(PathBuf, SystemTime)> = done_sources(&out)
            .into_iter()
            .map(|source| {
                let path = out.join(format!("{source}.json"));
                let modified = path.metadata().unwrap().modified().unwrap();
                (path, modified)
            })
            .collect();
        finished_before_kills += finished.len();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(quire(&args).status.code(), Some(0));
        assert_eq!(snapshot(&out), expected, "kill at {fraction} of the run");
        // Documents finished before the kill were not processed again.
        for (path, modified) in finished {
            assert_eq!(
                path.metadata().unwrap().modified().unwrap(),
                modified,
                "{path:?} redone"
            );
        }
    }
    assert!(
        finished_before_kills > 0,
        "no kill came after a finished document: the redo check checked nothing"
    );
}

/// Sources marked done in the state store of `out` (none when it has no store yet).
fn done_sources(out: &Path) -> Vec<String> {
    let db = out.join(".quire/state.sqlite");
    if !db.is_file() {
        return Vec::new();
    }
    let db = rusqlite::Connection::open(db).unwrap();
    let mut stmt = db
        .prepare("SELECT source FROM documents WHERE state = 'done'")
        .unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// Documents done with one schema are skipped by a rerun with that schema (new ones processed);
/// another schema redoes them all; and going back redoes them again, since their outputs are
/// now the other schema's: a rerun trusts an output only when it carries the run's fingerprint.
#[test]
fn a_schema_change_redoes_its_documents_and_skips_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    for name in ["square.png", "receipt.jpg"] {
        std::fs::copy(root().join("samples").join(name), input.join(name)).unwrap();
    }
    let out = tmp.path().join("out");
    let schema = |name: &str| {
        root()
            .join(format!("samples/schemas/{name}.schema.json"))
            .to_str()
            .unwrap()
            .to_owned()
    };
    // The other schema: small, written here.
    let title = tmp.path().join("title.schema.json");
    std::fs::write(
        &title,
        r#"{"type": "object", "properties": {"title": {"type": "string", "maxLength": 24}},
            "required": ["title"]}"#,
    )
    .unwrap();
    let (invoice, title) = (schema("invoice"), title.to_str().unwrap().to_owned());
    let extract = |schema: &str| {
        let result = quire(&run_args(
            input.to_str().unwrap(),
            out.to_str().unwrap(),
            &["--schema", schema, "--max-new-tokens", "2048"],
        ));
        assert_eq!(result.status.code(), Some(0));
        String::from_utf8_lossy(&result.stderr).into_owned()
    };
    let valid_for = |schema: &str, name: &str| {
        let validator = jsonschema::options()
            .should_validate_formats(true)
            .build(&read_json(Path::new(schema)))
            .unwrap();
        let record = read_json(&out.join(format!("{name}.json")));
        validator.is_valid(&record["data"])
    };

    let log = extract(&invoice);
    assert!(!log.contains("already done"), "{log}");
    let first = snapshot(&out);
    // One new document: the two done ones are skipped, the new one processed.
    std::fs::copy(root().join("samples/strip.png"), input.join("strip.png")).unwrap();
    let log = extract(&invoice);
    assert!(log.contains("2 documents were already done"), "{log}");
    assert!(log.contains("1 documents (1 ok, 0 failed)"), "{log}");
    let with_strip = snapshot(&out);
    for entry in first
        .iter()
        .filter(|(name, _)| !name.starts_with("results."))
    {
        assert!(with_strip.contains(entry), "{} was rewritten", entry.0);
    }
    // Another schema: all three redone, against that schema.
    let log = extract(&title);
    assert!(!log.contains("already done"), "{log}");
    assert!(log.contains("3 documents (3 ok, 0 failed)"), "{log}");
    for name in ["square.png", "receipt.jpg", "strip.png"] {
        assert!(valid_for(&title, name), "{name}");
    }
    // Back to the first schema: the outputs on disk are the other schema's, so all are redone, and
    // they come out byte-identical to before.
    let log = extract(&invoice);
    assert!(log.contains("3 documents (3 ok, 0 failed)"), "{log}");
    assert_eq!(snapshot(&out), with_strip);
}

/// `data` and `text` of every record of `results.jsonl`, by source.
fn results(out: &Path) -> Vec<(String, Value, Value)> {
    let mut rows: Vec<(String, Value, Value)> = std::fs::read_to_string(out.join("results.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let r: Value = serde_json::from_str(l).unwrap();
            let source = r["source"].as_str().unwrap().to_string();
            (source, r["data"].clone(), r["text"].clone())
        })
        .collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    rows
}

#[test]
fn batching_across_documents_gives_the_unbatched_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    copy_samples(&input);
    let schema = root().join("samples/schemas/invoice.schema.json");
    let schema = schema.to_str().unwrap();
    // Token budgets that let a few rows share the batch but not every mix of prompt lengths.
    for (name, task, small_budget) in [
        (
            "ocr",
            vec!["--task", "ocr", "--max-new-tokens", "24"],
            "400",
        ),
        (
            "extract",
            vec!["--schema", schema, "--max-new-tokens", "2048"],
            "8000",
        ),
    ] {
        let mut outs = Vec::new();
        // Off (one page per vision run, one sequence per step), then small budgets that make
        // sequences join and leave a running batch, then the defaults.
        for (i, flags) in [
            vec!["--batch-size", "1", "--vision-patches", "1"],
            vec![
                "--batch-size",
                "3",
                "--batch-tokens",
                small_budget,
                "--vision-patches",
                "1500",
            ],
            vec![],
        ]
        .into_iter()
        .enumerate()
        {
            let out = tmp.path().join(format!("{name}-{i}"));
            let mut extra = task.clone();
            extra.extend(flags);
            let result = quire(&run_args(
                input.to_str().unwrap(),
                out.to_str().unwrap(),
                &extra,
            ));
            assert_eq!(result.status.code(), Some(0), "{extra:?}");
            outs.push(results(&out));
        }
        assert_eq!(outs[0].len(), SAMPLES.len());
        assert_eq!(outs[1], outs[0], "{task:?}: small budgets");
        assert_eq!(outs[2], outs[0], "{task:?}: defaults");
    }
}

#[test]
fn ignore_eos_generates_max_new_tokens_for_every_page() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    copy_samples(&input);
    let out = tmp.path().join("out");
    let extra = [
        "--task",
        "ocr",
        "--max-new-tokens",
        "12",
        "--ignore-eos",
        "--skip-blank-pages",
        "false",
    ];
    let result = quire(&run_args(
        input.to_str().unwrap(),
        out.to_str().unwrap(),
        &extra,
    ));
    assert_eq!(result.status.code(), Some(0));
    let records: Vec<Value> = std::fs::read_to_string(out.join("results.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), SAMPLES.len());
    for r in records.iter().filter(|r| r["error"].is_null()) {
        let pages = r["page_count"].as_u64().unwrap();
        assert_eq!(r["tokens"]["generated"], 12 * pages, "{}", r["source"]);
    }
    assert!(records.iter().any(|r| r["error"].is_null()));
}
