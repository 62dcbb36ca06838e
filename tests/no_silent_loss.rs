//! Nothing is lost without a word: output formats that cannot hold the task's result are
//! refused before any document is read (the whole task × format matrix, for `run` and `watch`);
//! a mistyped input path is a usage error naming it, even with `--allow-partial`; the printing
//! commands end quietly when their reader closes stdout (`| head`), and a run whose stderr is
//! closed still writes its outputs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn sample(name: &str) -> String {
    root()
        .join("samples")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

fn model() -> String {
    sample("models/tiny-gemma4")
}

fn path(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn quire(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_quire"))
        .args(args)
        .output()
        .expect("run quire");
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    out
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const FORMATS: [&str; 4] = ["json", "jsonl", "csv", "md"];

/// Whether `format` keeps what `task` produces, said independently of the code: the JSON files
/// hold the whole record; extract's result is `data`, which the CSV table holds as columns and
/// Markdown not at all; ocr's and prompt's is `text`, which Markdown holds and CSV has no
/// column for.
fn holds(task: &str, format: &str) -> bool {
    match (task, format) {
        (_, "json" | "jsonl") => true,
        ("extract", "csv") => true,
        ("extract", "md") => false,
        (_, "md") => true,
        (_, "csv") => false,
        _ => unreachable!(),
    }
}

/// Every non-empty subset of `formats`, comma-joined in order.
fn subsets(formats: &[&str]) -> Vec<Vec<String>> {
    (1..1u32 << formats.len())
        .map(|bits| {
            (0..formats.len())
                .filter(|i| bits & (1 << i) != 0)
                .map(|i| formats[i].to_string())
                .collect()
        })
        .collect()
}

/// Checks one task × formats combination of `command` (`run` or `watch`). The model does not
/// exist: a refused combination must be refused before it is looked at, an accepted one gets as
/// far as the model.
fn check_combination(command: &str, task: &str, formats: &[String], dir: &Path) {
    let flat_schema = dir.join("flat.schema.json");
    let out = dir.join("out");
    // An accepted combination may have made it (watch does before loading the model).
    let _ = std::fs::remove_dir_all(&out);
    let input = dir.join("in");
    let joined = formats.join(",");
    let mut args = vec![command.to_string(), path(&input)];
    for arg in ["--out", &path(&out), "--model", "/nonexistent/model"] {
        args.push(arg.into());
    }
    for arg in ["--task", task, "--format", &joined] {
        args.push(arg.into());
    }
    match task {
        "extract" => args.extend(["--schema".into(), path(&flat_schema)]),
        "prompt" => args.extend(["--prompt".into(), "Summarise.".into()]),
        _ => {}
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = quire(&args);
    let text = stderr(&result);
    let case = format!("{command} --task {task} --format {joined}");
    assert_eq!(result.status.code(), Some(2), "{case}: {text}");
    let dropping: Vec<&str> = formats
        .iter()
        .map(String::as_str)
        .filter(|f| !holds(task, f))
        .collect();
    if dropping.is_empty() {
        assert!(!text.contains("cannot hold"), "{case}: {text}");
        assert!(text.contains("/nonexistent/model"), "{case}: {text}");
    } else {
        let fits: Vec<&str> = FORMATS.into_iter().filter(|f| holds(task, f)).collect();
        let expected = format!(
            "--format {} cannot hold what --task {task} produces",
            dropping.join(",")
        );
        assert!(text.contains(&expected), "{case}: {text}");
        let expected = format!(
            "which would be lost; formats for {task}: {}",
            fits.join(", ")
        );
        assert!(text.contains(&expected), "{case}: {text}");
        assert!(!text.contains("/nonexistent/model"), "{case}: {text}");
        assert!(!out.exists(), "{case}: nothing is written");
    }
}

fn matrix_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("in")).unwrap();
    std::fs::copy(sample("square.png"), dir.path().join("in/square.png")).unwrap();
    let schema = r#"{"type": "object", "properties": {"total": {"type": "number"}}}"#;
    std::fs::write(dir.path().join("flat.schema.json"), schema).unwrap();
    dir
}

#[test]
fn run_refuses_every_format_that_drops_the_result_of_its_task() {
    let dir = matrix_dir();
    let mut refused = 0;
    for task in ["ocr", "extract", "prompt"] {
        for formats in subsets(&FORMATS) {
            check_combination("run", task, &formats, dir.path());
            refused += formats.iter().any(|f| !holds(task, f)) as usize;
        }
    }
    // 15 format sets per task; ocr and prompt refuse the 8 with csv, extract the 8 with md.
    assert_eq!(refused, 24);

    // The same from a config file, with the exact message.
    let config = dir.path().join("quire.toml");
    std::fs::write(&config, "task = \"ocr\"\nformat = \"json,csv\"\n").unwrap();
    let out = dir.path().join("out");
    let args = [
        "run",
        &sample("square.png"),
        "--out",
        &path(&out),
        "--model",
    ];
    let result = quire(&[&args[..], &[&model(), "--config", &path(&config)]].concat());
    assert_eq!(result.status.code(), Some(2));
    assert_eq!(
        stderr(&result).trim(),
        "error: --format csv cannot hold what --task ocr produces (Markdown text), which would \
         be lost; formats for ocr: json, jsonl, md"
    );
    assert!(!out.exists());
}

#[test]
fn watch_refuses_every_format_that_drops_the_result_of_its_task() {
    // watch writes per-document files only (json, md; it refuses the summaries on its own).
    let dir = matrix_dir();
    for task in ["ocr", "extract", "prompt"] {
        for formats in subsets(&["json", "md"]) {
            check_combination("watch", task, &formats, dir.path());
        }
    }
}

#[test]
fn a_missing_input_path_is_a_usage_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let invoice = sample("invoice.pdf");
    let model = model();
    let missing = [
        dir.path().join("invoices-typo"),
        dir.path().join("nope.pdf"),
        // A path through a file (ENOTDIR rather than ENOENT).
        root().join("samples/invoice.pdf/page.pdf"),
    ];
    for missing in &missing {
        let missing = path(missing);
        for command in [
            vec![
                "run",
                &invoice,
                &missing,
                "--model",
                &model,
                "--allow-partial",
            ],
            vec!["render", &invoice, &missing, "--budget", "70"],
        ] {
            let result = quire(&[&command[..], &["--out", &path(&out)]].concat());
            assert_eq!(result.status.code(), Some(2), "{command:?}");
            assert_eq!(
                stderr(&result).trim(),
                format!("error: input {missing}: no such file or folder")
            );
            assert!(!out.exists(), "nothing ran");
        }
    }

    // A folder that exists but holds a broken file: that document fails, the run is not refused.
    let input = dir.path().join("in");
    std::fs::create_dir(&input).unwrap();
    std::fs::write(input.join("empty.pdf"), b"").unwrap();
    let args = [
        "run",
        &path(&input),
        "--out",
        &path(&out),
        "--model",
        &model,
    ];
    let result = quire(&[&args[..], &["--budget", "70"]].concat());
    assert_eq!(result.status.code(), Some(3));
    let record = std::fs::read_to_string(out.join("empty.pdf.json")).unwrap();
    assert!(record.contains("\"empty_file\""), "{record}");
}

/// Runs quire with stdout (and stderr with `both`) writing into a pipe whose reader is gone, as
/// in `quire status --json | head -c 0`.
fn closed_pipe(args: &[&str], both: bool) -> Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut command = Command::new(env!("CARGO_BIN_EXE_quire"));
    command.args(args);
    if both {
        command.stderr(writer.try_clone().unwrap());
    }
    let out = command
        .stdout(writer)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    eprintln!("{args:?}: {}", stderr(&out));
    out
}

const FAST: [&str; 4] = ["--budget", "70", "--max-new-tokens", "4"];

#[test]
fn a_run_whose_stderr_is_closed_still_writes_and_marks_its_documents() {
    // `quire run ... 2>&1 | head`: stdout and stderr both go to the closed pipe.
    let dir = tempfile::tempdir().unwrap();
    let out = path(&dir.path().join("out"));
    let args = [
        "run",
        &sample("square.png"),
        "--out",
        &out,
        "--model",
        &model(),
    ];
    let result = closed_pipe(&[&args[..], &["--task", "ocr"], &FAST].concat(), true);
    assert_eq!(result.status.code(), Some(0));
    assert!(dir.path().join("out/square.png.md").is_file());
    let status = quire(&["status", "--out", &out, "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["counts"]["done"], 1, "{status}");
}

#[test]
fn printing_commands_end_quietly_when_stdout_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let out = path(&dir.path().join("out"));
    let (model, png) = (model(), sample("square.png"));
    let args = [
        "run", &png, "--out", &out, "--model", &model, "--task", "ocr",
    ];
    assert_eq!(quire(&[&args[..], &FAST].concat()).status.code(), Some(0));

    let generate = [
        "generate", "--model", &model, "--image", &png, "--prompt", "Hi",
    ];
    let commands: Vec<Vec<&str>> = vec![
        vec!["status", "--out", &out, "--json"],
        vec!["status", "--out", &out],
        [&generate[..], &FAST, &["--json"]].concat(),
        [&generate[..], &FAST].concat(),
        vec!["setup", "--check"],
        vec!["--help"],
    ];
    let failed: Vec<String> = commands
        .iter()
        .filter_map(|args| {
            let result = closed_pipe(args, false);
            let text = stderr(&result);
            let quiet = result.status.code() == Some(0) && !text.contains("panicked");
            (!quiet).then(|| format!("{args:?}: {}: {text}", result.status))
        })
        .collect();
    assert!(failed.is_empty(), "{failed:#?}");
}
