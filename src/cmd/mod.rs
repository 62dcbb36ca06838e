//! One module per subcommand.

pub mod generate;
pub mod merge;
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
