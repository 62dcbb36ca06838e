//! `quire generate`: one image and a prompt through Gemma 4. (Being built: issue 3.)

use clap::Args;

#[derive(Args)]
pub struct GenerateArgs {}

pub fn run(_global: &super::Global, _args: GenerateArgs) -> anyhow::Result<u8> {
    anyhow::bail!("quire generate is not implemented yet")
}
