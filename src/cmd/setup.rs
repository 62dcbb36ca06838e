//! `quire setup`: provision ONNX Runtime and PDFium into quire's cache, from pip or a folder of
//! wheels, or check what is there.

use super::output::outln;
use anyhow::Context;
use clap::Args;
use quire_onnx::provision::{Located, Origin, RuntimeSpec};
use std::path::PathBuf;

#[derive(Args)]
pub struct SetupArgs {
    /// Only report what is installed; install nothing. Exits 2 when something is missing.
    #[arg(long)]
    check: bool,
    /// Install the CUDA/TensorRT build of ONNX Runtime (onnxruntime-gpu) instead of the CPU one.
    #[arg(long, env = "QUIRE_GPU", value_parser = clap::builder::BoolishValueParser::new(), default_value_t = false)]
    gpu: bool,
    /// Install from wheels already in this folder (air-gapped sites) instead of pip.
    #[arg(long, value_name = "DIR")]
    from: Option<PathBuf>,
}

pub fn run(global: &super::Global, args: SetupArgs) -> anyhow::Result<u8> {
    let provisioner = global.provisioner();
    let specs: [&RuntimeSpec; 2] = [
        quire_onnx::runtime::spec(args.gpu),
        &quire_pipeline::pdfium::PDFIUM,
    ];
    outln!("cache: {}", provisioner.cache_root.display())?;
    let mut missing = 0;
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
            Some(found) => report(spec, &found, args.check)?,
            None => {
                missing += 1;
                outln!(
                    "{:<16} {:<8} MISSING (install with `quire setup`, or set {})",
                    spec.name,
                    spec.version,
                    spec.env_var
                )?;
            }
        }
    }
    Ok(if missing > 0 {
        crate::exit::USAGE
    } else {
        crate::exit::OK
    })
}

fn report(spec: &RuntimeSpec, found: &Located, load: bool) -> anyhow::Result<()> {
    let origin = match found.origin {
        Origin::EnvVar => spec.env_var,
        Origin::Cache => "cache",
        Origin::Installed => "installed now",
    };
    outln!(
        "{:<16} {:<8} {} ({origin})",
        spec.name,
        spec.version,
        found.library.display()
    )?;
    // A check loads the library too: a file that is there but cannot load is not "found".
    if load {
        if spec.name.starts_with("onnxruntime") {
            quire_onnx::runtime::load_library(&found.library)?;
            outln!(
                "{:<16} loaded: {}",
                "",
                quire_onnx::runtime::loaded_version()
            )?;
        } else {
            quire_pipeline::pdfium::bind(&found.library)?;
            outln!("{:<16} loaded", "")?;
        }
    }
    Ok(())
}
