//! `quire status`: what the state store of an output folder says.

use super::output::outln;
use anyhow::Context;
use clap::Args;
use quire_pipeline::state::StateStore;
use std::path::PathBuf;

#[derive(Args)]
pub struct StatusArgs {
    /// The output folder of `quire run`.
    #[arg(long)]
    out: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(_global: &super::Global, args: StatusArgs) -> anyhow::Result<u8> {
    let store = StateStore::open_existing(&args.out)?.with_context(|| {
        format!(
            "{} has no quire state (no run wrote there)",
            args.out.display()
        )
    })?;
    let counts = store.counts()?;
    let failures = store.failures()?;
    let pages_per_s = if counts.span_seconds > 0.0 {
        counts.pages_done as f64 / counts.span_seconds
    } else {
        0.0
    };
    if args.json {
        let value = serde_json::json!({
            "counts": counts,
            "pages_per_second": pages_per_s,
            "failures": failures,
        });
        outln!("{}", serde_json::to_string_pretty(&value)?)?;
    } else {
        outln!(
            "done {}  failed {}  running {}  queued {}",
            counts.done,
            counts.failed,
            counts.running,
            counts.queued
        )?;
        if counts.stale > 0 {
            outln!(
                "{} of the running documents were left by a process that stopped (no heartbeat \
                 for {} s): the next run takes them over",
                counts.stale,
                quire_pipeline::state::LEASE.as_secs()
            )?;
        }
        outln!(
            "{} pages done in {:.1} s of processing ({pages_per_s:.2} pages/s over the run)",
            counts.pages_done,
            counts.busy_seconds
        )?;
        if counts.review_values > 0 {
            outln!(
                "review: {} values below --review-below in {} documents (review.jsonl)",
                counts.review_values,
                counts.review_documents
            )?;
        }
        for f in &failures {
            outln!("FAILED {} (attempts {}): {}", f.source, f.attempts, f.error)?;
        }
    }
    Ok(crate::exit::OK)
}
