//! Helpers shared by the `quire render` tests: run the binary, read pages.jsonl.
#![allow(dead_code)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn sample(name: &str) -> PathBuf {
    repo().join("samples").join(name)
}

pub struct Rendered {
    pub code: i32,
    pub stderr: String,
    pub lines: Vec<Value>,
    pub out: PathBuf,
}

impl Rendered {
    pub fn pages(&self) -> Vec<&Value> {
        self.lines.iter().filter(|l| l["type"] == "page").collect()
    }
    pub fn errors(&self) -> Vec<&Value> {
        self.lines.iter().filter(|l| l["type"] == "error").collect()
    }
    /// Pages whose source file name is `name`.
    pub fn pages_of(&self, name: &str) -> Vec<&Value> {
        self.pages()
            .into_iter()
            .filter(|l| file_name(&l["source"]) == name)
            .collect()
    }
    pub fn errors_of(&self, name: &str) -> Vec<&Value> {
        self.errors()
            .into_iter()
            .filter(|l| file_name(&l["path"]) == name)
            .collect()
    }
}

pub fn file_name(v: &Value) -> String {
    Path::new(v.as_str().unwrap_or_default())
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Runs `quire render <args> --out <out>` with extra environment variables.
pub fn render(out: &Path, args: &[&str], env: &[(&str, &str)]) -> Rendered {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_quire"));
    cmd.current_dir(repo())
        .arg("render")
        .args(args)
        .arg("--out")
        .arg(out)
        .env_remove("QUIRE_TEST_CRASH_ON")
        .env_remove("QUIRE_TEST_HANG_ON")
        .env_remove("QUIRE_PDF_PASSWORD");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let output = cmd.output().expect("running quire");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let jsonl = std::fs::read_to_string(out.join("pages.jsonl"))
        .unwrap_or_else(|e| panic!("no pages.jsonl ({e}); stderr:\n{stderr}"));
    let lines = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).expect("pages.jsonl line is JSON"))
        .collect();
    assert!(!stderr.contains("panicked"), "quire panicked:\n{stderr}");
    Rendered {
        code: output.status.code().unwrap_or(-1),
        stderr,
        lines,
        out: out.to_path_buf(),
    }
}

/// No temporary files (dot-prefixed `.tmp`) left anywhere under `dir`.
pub fn assert_no_temp_files(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(
            !(name.starts_with('.') && name.ends_with(".tmp")),
            "temporary file left: {}",
            entry.path().display()
        );
        if entry.file_type().unwrap().is_dir() {
            assert_no_temp_files(&entry.path());
        }
    }
}
