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

/// A born-digital PDF written by hand: one US Letter page (612 × 792 pt) per `(content
/// stream, /Rotate)`, every page with the standard font Helvetica as `/F1`. The font carries a
/// descriptor with Helvetica's AFM `Ascender` 718 and `Descender` -207 (PDFium's loose
/// character boxes span those; its built-in widths are the AFM's).
pub fn helvetica_pdf(pages: &[(&str, i32)]) -> Vec<u8> {
    let n = pages.len();
    let font = 3 + 2 * n;
    let mut objects: Vec<Vec<u8>> = vec![
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        format!(
            "<< /Type /Pages /Kids [{}] /Count {n} >>",
            (0..n)
                .map(|i| format!("{} 0 R", 3 + 2 * i))
                .collect::<Vec<_>>()
                .join(" ")
        )
        .into_bytes(),
    ];
    for (i, (content, rotate)) in pages.iter().enumerate() {
        objects.push(
            format!(
                "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Rotate {rotate} \
                 /Resources << /Font << /F1 {font} 0 R >> >> /Contents {} 0 R >>",
                4 + 2 * i
            )
            .into_bytes(),
        );
        let mut stream = format!("<< /Length {} >>\nstream\n", content.len()).into_bytes();
        stream.extend_from_slice(content.as_bytes());
        stream.extend_from_slice(b"\nendstream");
        objects.push(stream);
    }
    objects.push(
        format!(
            "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /FontDescriptor {} 0 R >>",
            font + 1
        )
        .into_bytes(),
    );
    objects.push(
        b"<< /Type /FontDescriptor /FontName /Helvetica /Flags 32 \
          /FontBBox [-166 -225 1000 931] /ItalicAngle 0 /Ascent 718 /Descent -207 \
          /CapHeight 718 /StemV 88 >>"
            .to_vec(),
    );
    let mut pdf = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, object) in objects.iter().enumerate() {
        offsets.push(pdf.len());
        pdf.extend_from_slice(format!("{} 0 obj\n", i + 1).as_bytes());
        pdf.extend_from_slice(object);
        pdf.extend_from_slice(b"\nendobj\n");
    }
    let xref = pdf.len();
    pdf.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
    );
    for offset in offsets {
        pdf.extend_from_slice(format!("{offset:010} 00000 n \n").as_bytes());
    }
    pdf.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    pdf
}
