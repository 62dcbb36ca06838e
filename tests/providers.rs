//! Execution providers in the default build: `setup --check` lists every one with whether the
//! loaded ONNX Runtime has it; `--ep cuda` where it cannot run is one clear error naming what
//! is missing, and with `--ep-fallback` (a bare flag) the job runs on the CPU with one warning.

use quire_onnx::ep::Provider;
use quire_onnx::provision::Provisioner;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A cache holding only what `quire setup` installs (the CPU build of ONNX Runtime and PDFium),
/// linked from the real cache: whatever else that one holds, `--ep cuda` finds no GPU build.
fn cpu_only_cache() -> tempfile::TempDir {
    let real = Provisioner::from_env(false);
    let cache = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(cache.path().join("runtimes")).unwrap();
    for spec in [
        quire_onnx::runtime::spec(false),
        &quire_pipeline::pdfium::PDFIUM,
    ] {
        real.ensure(spec)
            .expect("runtime provisioned by `quire setup`");
        let dir = real.install_dir(spec);
        let link = cache.path().join("runtimes").join(dir.file_name().unwrap());
        std::os::unix::fs::symlink(&dir, link).unwrap();
    }
    cache
}

fn quire(cache: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_quire"));
    cmd.arg("--offline")
        .args(args)
        .env("QUIRE_CACHE_DIR", cache);
    for var in [
        "QUIRE_ORT_LIB",
        "QUIRE_PDFIUM_LIB",
        "QUIRE_EP",
        "QUIRE_EP_FALLBACK",
        "QUIRE_LOG",
    ] {
        cmd.env_remove(var);
    }
    cmd.output().expect("run quire")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const NO_GPU_BUILD: &str = "execution provider `cuda` cannot run here: it needs the GPU build of \
     ONNX Runtime (onnxruntime-gpu 1.31.1) and the CUDA 13 libraries, which are not installed: \
     run `quire setup --gpu`";

#[test]
fn setup_check_lists_every_provider_and_whether_the_library_has_it() {
    let cache = cpu_only_cache();
    let out = quire(cache.path(), &["setup", "--check"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", stderr(&out));
    let table: Vec<&str> = stdout
        .lines()
        .skip_while(|l| *l != "execution providers in this ONNX Runtime build:")
        .skip(1)
        .collect();
    // The CPU build has only the CPU provider; every other one is listed as absent.
    let expected: Vec<String> = Provider::ALL
        .iter()
        .map(|p| {
            let has = if *p == Provider::Cpu { "yes" } else { "no" };
            format!("  {:<14} {has}", p.name())
        })
        .collect();
    assert_eq!(table, expected, "{stdout}");
}

#[test]
fn setup_gpu_check_names_every_missing_cuda_library_and_fails() {
    let cache = tempfile::tempdir().unwrap();
    let out = quire(cache.path(), &["setup", "--gpu", "--check"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}{}", stderr(&out));
    let missing: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("MISSING (install with `quire setup --gpu`"))
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(
        missing,
        [
            "onnxruntime-gpu",
            "cuda-runtime",
            "cublas",
            "curand",
            "cufft",
            "nvrtc",
            "cudnn",
            "pdfium"
        ],
        "{stdout}"
    );
    assert!(
        std::fs::read_dir(cache.path()).unwrap().next().is_none(),
        "--check installs nothing"
    );
}

fn generate_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let model = root().join("samples/models/tiny-gemma4");
    let mut args = vec![
        "generate",
        "--model",
        model.to_str().unwrap().to_owned().leak(),
        "--prompt",
        "hi",
        "--max-new-tokens",
        "2",
    ];
    args.extend_from_slice(extra);
    args
}

#[test]
fn ep_cuda_without_the_gpu_build_is_one_error_naming_what_is_missing() {
    let cache = cpu_only_cache();
    let out = quire(cache.path(), &generate_args(&["--ep", "cuda,cpu"]));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(
        err.trim_end(),
        format!(
            "error: loading ONNX Runtime: {NO_GPU_BUILD} (pass --ep-fallback to continue with \
             the next provider)"
        )
    );
    assert!(out.stdout.is_empty());

    // `run` says it the same way, once, before any document.
    let work = tempfile::tempdir().unwrap();
    let out_dir = work.path().join("out");
    let out = quire(
        cache.path(),
        &[
            "run",
            root().join("samples/square.png").to_str().unwrap(),
            "--out",
            out_dir.to_str().unwrap(),
            "--model",
            root().join("samples/models/tiny-gemma4").to_str().unwrap(),
            "--ep",
            "cuda",
        ],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.matches(NO_GPU_BUILD).count(), 1, "{err}");
    assert!(!out_dir.join("square.png.json").exists());
}

#[test]
fn ep_fallback_as_a_bare_flag_runs_on_the_cpu_with_one_warning() {
    let cache = cpu_only_cache();
    let work = tempfile::tempdir().unwrap();
    let out_dir = work.path().join("out");
    let out = quire(
        cache.path(),
        &[
            "run",
            root().join("samples/square.png").to_str().unwrap(),
            "--out",
            out_dir.to_str().unwrap(),
            "--model",
            root().join("samples/models/tiny-gemma4").to_str().unwrap(),
            "--budget",
            "70",
            "--max-new-tokens",
            "4",
            "--ep",
            "cuda",
            "--ep-fallback",
        ],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let warning = format!(
        "WARN execution provider cuda cannot run here, continuing with cpu: {}",
        NO_GPU_BUILD.trim_start_matches("execution provider `cuda` cannot run here: ")
    );
    assert_eq!(err.matches(&warning).count(), 1, "{err}");
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("square.png.json")).unwrap()).unwrap();
    assert_eq!(record["settings"]["execution_provider"], "cpu");
    assert!(record["error"].is_null(), "{record}");

    // The value forms keep working: `true` falls back, `false` is the error.
    let out = quire(
        cache.path(),
        &generate_args(&["--ep", "cuda", "--ep-fallback", "true"]),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = quire(
        cache.path(),
        &generate_args(&["--ep", "cuda", "--ep-fallback=false"]),
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains(NO_GPU_BUILD), "{}", stderr(&out));
}

/// With the GPU build installed (`quire setup --gpu` into the default cache, or
/// `QUIRE_CACHE_DIR`) on a machine without an NVIDIA driver, the CUDA provider itself fails to
/// load, in a run and in `setup --gpu --check`, and the error names the driver's library. Skipped, saying so, where the GPU build is
/// not installed or a driver is present.
#[test]
fn ep_cuda_with_the_gpu_build_and_no_driver_names_the_driver() {
    let real = Provisioner::from_env(true);
    let Some(_) = real.locate(quire_onnx::runtime::spec(true)).unwrap() else {
        eprintln!("skipped: the GPU build of ONNX Runtime is not installed (`quire setup --gpu`)");
        return;
    };
    if Path::new("/dev/nvidiactl").exists() {
        eprintln!("skipped: this machine has an NVIDIA driver");
        return;
    }
    let out = quire(&real.cache_root, &generate_args(&["--ep", "cuda"]));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("execution provider `cuda` cannot run here:") && err.contains("libcuda.so.1"),
        "{err}"
    );
    assert_eq!(err.matches("cannot run here").count(), 1, "{err}");

    // `setup --gpu --check` creates the provider for real too, and fails.
    let out = quire(&real.cache_root, &["setup", "--gpu", "--check"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.starts_with(
            "error: the CUDA execution provider cannot run here: the NVIDIA driver is not \
             installed (libcuda.so.1 comes with it)"
        ),
        "{err}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("\n  cuda           yes, cannot run here (below)\n"),
        "{stdout}"
    );
}
