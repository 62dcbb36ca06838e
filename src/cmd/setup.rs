//! `quire setup`: provision ONNX Runtime and PDFium (and with `--gpu` the GPU build and its CUDA
//! libraries) into quire's cache, from pip or a folder of wheels, or check what is there.

use super::output::outln;
use anyhow::Context;
use clap::Args;
use quire_onnx::ep::Provider;
use quire_onnx::provision::{Located, Origin, RuntimeSpec};
use std::path::PathBuf;

#[derive(Args)]
pub struct SetupArgs {
    /// Only report what is installed, load it and list the execution providers; install
    /// nothing. Exits 2 when something is missing (with --gpu: or the CUDA provider cannot run).
    #[arg(long)]
    check: bool,
    /// Install the CUDA/TensorRT build of ONNX Runtime (onnxruntime-gpu) instead of the CPU one,
    /// and the CUDA 13 libraries it needs (cudart, cuBLAS, cuRAND, cuFFT, NVRTC, cuDNN).
    #[arg(long, env = "QUIRE_GPU", value_parser = clap::builder::BoolishValueParser::new(), default_value_t = false)]
    gpu: bool,
    /// Install from wheels already in this folder (air-gapped sites) instead of pip.
    #[arg(long, value_name = "DIR")]
    from: Option<PathBuf>,
}

pub fn run(global: &super::Global, args: SetupArgs) -> anyhow::Result<u8> {
    let provisioner = global.provisioner();
    let mut specs: Vec<&RuntimeSpec> = vec![quire_onnx::runtime::spec(args.gpu)];
    if args.gpu {
        specs.extend(
            quire_onnx::cuda::CUDA_LIBRARIES
                .iter()
                .map(|(spec, _)| *spec),
        );
    }
    specs.push(&quire_pipeline::pdfium::PDFIUM);
    outln!("cache: {}", provisioner.cache_root.display())?;
    let mut missing = 0;
    let mut ort_env = None;
    for spec in specs {
        let found =
            if args.check {
                provisioner.locate(spec)?
            } else if let Some(dir) = &args.from {
                match provisioner.locate(spec)? {
                    Some(found) => Some(found),
                    None => Some(provisioner.install_from_dir(spec, dir).with_context(|| {
                        format!("installing {} from {}", spec.name, dir.display())
                    })?),
                }
            } else {
                Some(provisioner.ensure(spec)?)
            };
        match found {
            Some(found) => {
                if let Some(env) = report(spec, &found, args.check)? {
                    ort_env = Some(env);
                }
            }
            None => {
                missing += 1;
                outln!(
                    "{:<16} {:<10} MISSING (install with `quire setup{}`, or set {})",
                    spec.name,
                    spec.version,
                    if args.gpu { " --gpu" } else { "" },
                    spec.env_var
                )?;
            }
        }
    }
    if let Some(env) = &ort_env {
        if args.gpu {
            let done = quire_onnx::cuda::preload(&provisioner)?;
            outln!("{:<16} preloaded {} CUDA libraries", "", done.loaded.len())?;
        }
        list_providers(env, args.gpu)?;
    }
    Ok(if missing > 0 {
        crate::exit::USAGE
    } else {
        crate::exit::OK
    })
}

/// One line per runtime; with `load` (a check) the library is loaded too: a file that is there
/// but cannot load is not "found". Returns ONNX Runtime's environment when it loaded it.
fn report(
    spec: &RuntimeSpec,
    found: &Located,
    load: bool,
) -> anyhow::Result<Option<quire_onnx::runtime::Environment>> {
    let origin = match found.origin {
        Origin::EnvVar => spec.env_var,
        Origin::Cache => "cache",
        Origin::Installed => "installed now",
    };
    outln!(
        "{:<16} {:<10} {} ({origin})",
        spec.name,
        spec.version,
        found.library.display()
    )?;
    if !load {
        return Ok(None);
    }
    if spec.name.starts_with("onnxruntime") {
        let env = quire_onnx::runtime::load_library(&found.library)?;
        outln!(
            "{:<16} loaded: {}",
            "",
            quire_onnx::runtime::loaded_version()
        )?;
        return Ok(Some(env));
    }
    if spec.name == quire_pipeline::pdfium::PDFIUM.name {
        quire_pipeline::pdfium::bind(&found.library)?;
        outln!("{:<16} loaded", "")?;
    }
    // The CUDA libraries are loaded with the providers, after ONNX Runtime.
    Ok(None)
}

/// Every execution provider quire knows, and whether the ONNX Runtime build has it. With
/// `gpu`, the CUDA and TensorRT providers are created for real (a one-node session): the CUDA
/// one must run, or the check fails naming what is missing.
fn list_providers(env: &quire_onnx::runtime::Environment, gpu: bool) -> anyhow::Result<()> {
    outln!("execution providers in this ONNX Runtime build:")?;
    let mut cuda_failure = None;
    for p in Provider::ALL {
        let state = if !p.in_library() {
            "no".to_string()
        } else if gpu && p.needs_gpu_runtime() {
            match p.probe(env, 0) {
                Ok(()) => "yes, runs here".to_string(),
                // The CUDA provider's reason ends the check, said once.
                Err(reason) if p == Provider::Cuda => {
                    cuda_failure = Some(reason);
                    "yes, cannot run here (below)".to_string()
                }
                Err(reason) => format!("yes, cannot run here: {reason}"),
            }
        } else {
            "yes".to_string()
        };
        outln!("  {:<14} {state}", p.name())?;
    }
    if let Some(reason) = cuda_failure {
        anyhow::bail!("the CUDA execution provider cannot run here: {reason}");
    }
    Ok(())
}
