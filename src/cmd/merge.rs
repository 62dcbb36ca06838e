//! `quire merge`: combine the outputs and state of shard runs into one result set.

use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct MergeArgs {
    /// The shard output folders.
    #[arg(required = true)]
    shards: Vec<PathBuf>,
    /// The merged output folder.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(_global: &super::Global, args: MergeArgs) -> anyhow::Result<u8> {
    let report = quire_pipeline::merge::merge(
        &args.out,
        &args.shards,
        quire_exporters::atomic::DEFAULT_MODE,
    )?;
    eprintln!(
        "merged {} shards: {} documents ({} failed), {} files into {}",
        args.shards.len(),
        report.documents,
        report.failed,
        report.files,
        args.out.display()
    );
    Ok(crate::exit::OK)
}
