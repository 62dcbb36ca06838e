//! `quire render`: pages as the model sees them. (Being built: issue 2.)

use clap::Args;

#[derive(Args)]
pub struct RenderArgs {}

#[derive(Args)]
pub struct PdfWorkerArgs {}

pub fn run(_global: &super::Global, _args: RenderArgs) -> anyhow::Result<u8> {
    anyhow::bail!("quire render is not implemented yet")
}

pub fn pdf_worker(_args: PdfWorkerArgs) -> anyhow::Result<u8> {
    anyhow::bail!("quire pdf-worker is not implemented yet")
}
