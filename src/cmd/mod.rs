//! One module per subcommand.

pub mod bench;
pub mod completions;
pub mod generate;
pub mod merge;
pub mod model;
pub mod output;
pub mod progress;
pub mod render;
pub mod run;
pub mod setup;
pub mod signals;
pub mod status;
pub mod watch;

/// Options every subcommand sees.
pub struct Global {
    pub offline: bool,
}

impl Global {
    pub fn provisioner(&self) -> quire_onnx::provision::Provisioner {
        quire_onnx::provision::Provisioner::from_env(self.offline)
    }
}

/// Refuses inputs given on the command line that do not exist (a mistyped path): exit 2 before
/// anything runs, rather than a run that "completes" without them (with `--allow-partial`, exit
/// 0). Inputs that exist but cannot be read stay failures of their documents, like broken files
/// found in a folder.
pub fn check_inputs_exist(inputs: &[std::path::PathBuf]) -> anyhow::Result<()> {
    use std::io::ErrorKind;
    for input in inputs {
        if let Err(e) = std::fs::metadata(input) {
            if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) {
                anyhow::bail!("input {}: no such file or folder", input.display());
            }
        }
    }
    Ok(())
}
