//! `quire setup --check` and `--offline`: what is missing is reported, never downloaded, and
//! the error says how to provide it.

use std::path::Path;
use std::process::{Command, Output};

fn quire(cache: &Path, envs: &[(&str, &Path)], args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_quire"));
    cmd.args(args)
        .env("QUIRE_CACHE_DIR", cache)
        .env_remove("QUIRE_ORT_LIB")
        .env_remove("QUIRE_PDFIUM_LIB")
        .env_remove("QUIRE_OFFLINE")
        // A pip that cannot run: any download attempt fails loudly instead of succeeding.
        .env("QUIRE_PYTHON", "/nonexistent/python3");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("run quire")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn check_reports_missing_runtimes_and_exits_2() {
    let cache = tempfile::tempdir().unwrap();
    let out = quire(cache.path(), &[], &["setup", "--check"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("onnxruntime") && t.contains("pdfium"), "{t}");
    assert_eq!(t.matches("MISSING").count(), 2, "{t}");
    assert!(
        t.contains("QUIRE_ORT_LIB") && t.contains("QUIRE_PDFIUM_LIB"),
        "{t}"
    );
    assert!(
        std::fs::read_dir(cache.path()).unwrap().next().is_none(),
        "--check installs nothing"
    );
}

#[test]
fn offline_never_downloads_and_says_how_to_provide_the_runtime() {
    let cache = tempfile::tempdir().unwrap();
    for args in [
        vec!["--offline", "setup"],
        vec![
            "--offline",
            "render",
            concat!(env!("CARGO_MANIFEST_DIR"), "/samples/invoice.pdf"),
            "--budget",
            "70",
            "--out",
            cache.path().join("out").to_str().unwrap().to_owned().leak(),
        ],
    ] {
        let out = quire(cache.path(), &[], &args);
        let t = text(&out);
        assert_ne!(out.status.code(), Some(0), "{args:?}: {t}");
        assert!(
            t.contains("--offline") || t.contains("QUIRE_OFFLINE"),
            "{args:?}: {t}"
        );
        assert!(t.contains("quire setup --from DIR"), "{args:?}: {t}");
        assert!(
            !t.contains("/nonexistent/python3"),
            "no download was tried: {t}"
        );
    }
    // The environment variable form too.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_quire"));
    let out = cmd
        .args(["setup"])
        .env("QUIRE_CACHE_DIR", cache.path())
        .env("QUIRE_OFFLINE", "1")
        .env_remove("QUIRE_ORT_LIB")
        .env_remove("QUIRE_PDFIUM_LIB")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("QUIRE_ORT_LIB=/path/to/library"));
}

#[test]
fn check_loads_libraries_named_by_environment_variables() {
    // The real libraries, provisioned by the project itself into the default cache.
    let provisioner = quire_onnx::provision::Provisioner::from_env(false);
    let ort = provisioner
        .ensure(quire_onnx::runtime::spec(false))
        .expect("ONNX Runtime");
    let pdfium = provisioner
        .ensure(&quire_pipeline::pdfium::PDFIUM)
        .expect("PDFium");
    let cache = tempfile::tempdir().unwrap();
    let out = quire(
        cache.path(),
        &[
            ("QUIRE_ORT_LIB", &ort.library),
            ("QUIRE_PDFIUM_LIB", &pdfium.library),
        ],
        &["--offline", "setup", "--check"],
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("1.32.0") && t.contains("5.15.2"), "{t}");
    assert_eq!(t.matches("loaded").count(), 2, "{t}");

    // A variable naming a missing file is an error naming it.
    let missing = cache.path().join("nope.so");
    let out = quire(
        cache.path(),
        &[("QUIRE_ORT_LIB", &missing)],
        &["setup", "--check"],
    );
    assert_ne!(out.status.code(), Some(0));
    assert!(text(&out).contains("nope.so"), "{}", text(&out));
}
