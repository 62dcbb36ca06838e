//! `quire run` on documents with awkward file names: bytes that are not UTF-8 (a PDF, which
//! travels to a PDF worker, and a PNG), a newline, a leading dash (found in a folder, and given
//! on the command line after `--`). Each runs; its outputs and its record's `source` use the
//! display form of the name (invalid UTF-8 and control characters replaced by U+FFFD).
#![cfg(target_os = "linux")]

use serde_json::Value;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `quire run <args>` on the tiny model with fast settings, in `cwd`.
fn quire_run(cwd: &Path, out: &Path, args: &[&OsStr]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_quire"))
        .current_dir(cwd)
        .arg("run")
        .arg("--out")
        .arg(out)
        .arg("--model")
        .arg(root().join("samples/models/tiny-gemma4"))
        .args(["--budget", "70", "--max-new-tokens", "8", "--task", "ocr"])
        .args(["--workers", "2"])
        .args(args)
        .env_remove("QUIRE_TEST_FAIL_STAGE")
        .env_remove("QUIRE_TEST_CRASH_ON")
        .env_remove("QUIRE_TEST_HANG_ON")
        .output()
        .expect("run quire");
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("{stderr}");
    assert!(!stderr.contains("panicked"), "quire panicked");
    output
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| panic!("{path:?}: {e}")))
        .unwrap()
}

/// The sources listed in `results.jsonl`.
fn listed(out: &Path) -> Vec<String> {
    std::fs::read_to_string(out.join("results.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["source"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// Asserts `display` (the display form of the input's name) was processed: its JSON and
/// Markdown are named after it, the record says it as `source`, without an error, with
/// `pages` pages, and `results.jsonl` lists it.
fn assert_processed(out: &Path, display: &str, pages: u64) {
    let record = read_json(&out.join(format!("{display}.json")));
    assert_eq!(record["source"], display);
    assert!(
        record["error"].is_null(),
        "{display:?}: {}",
        record["error"]
    );
    assert_eq!(record["page_count"], pages, "{display:?}");
    assert!(out.join(format!("{display}.md")).is_file(), "{display:?}");
    assert!(
        listed(out).iter().any(|s| s == display),
        "{display:?} listed"
    );
}

/// Every file name under `dir` (recursively), as bytes.
fn names(dir: &Path) -> Vec<Vec<u8>> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        all.push(path.file_name().unwrap().as_bytes().to_vec());
        if path.is_dir() {
            all.extend(names(&path));
        }
    }
    all
}

#[test]
fn documents_with_awkward_names_in_a_folder_run() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&input).unwrap();
    let pdf = root().join("samples/invoice.pdf");
    let png = root().join("samples/square.png");
    let landscape = root().join("samples/landscape.pdf");
    let copies: [(&[u8], &Path); 4] = [
        (b"inv\xffoice.pdf", &pdf),
        (b"sq\xfeare.png", &png),
        (b"new\nline.pdf", &landscape),
        (b"-dash.png", &root().join("samples/strip.png")),
    ];
    for (name, from) in copies {
        std::fs::copy(from, input.join(OsStr::from_bytes(name))).unwrap();
    }
    let run = quire_run(tmp.path(), &out, &[input.as_os_str()]);
    assert_eq!(run.status.code(), Some(0));
    assert_processed(&out, "inv\u{FFFD}oice.pdf", 3);
    assert_processed(&out, "sq\u{FFFD}are.png", 1);
    assert_processed(&out, "new\u{FFFD}line.pdf", 1);
    assert_processed(&out, "-dash.png", 1);
    // Output names are all valid UTF-8 without control characters.
    for name in names(&out) {
        let name = String::from_utf8(name).expect("UTF-8 output name");
        assert!(!name.chars().any(char::is_control), "{name:?}");
    }
}

#[test]
fn a_leading_dash_after_double_dash_is_an_input_not_a_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    std::fs::copy(
        root().join("samples/invoice.pdf"),
        tmp.path().join("-x.pdf"),
    )
    .unwrap();
    std::fs::copy(root().join("samples/square.png"), tmp.path().join("-v")).unwrap();
    let run = quire_run(
        tmp.path(),
        &out,
        &["--".as_ref(), "-x.pdf".as_ref(), "-v".as_ref()],
    );
    assert_eq!(run.status.code(), Some(0));
    assert_processed(&out, "-x.pdf", 3);
    assert_processed(&out, "-v", 1);
}
