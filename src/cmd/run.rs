//! `quire run`: the batch job. Settings come from flags, then `QUIRE_*` environment variables,
//! then a TOML config file (`--config`), then defaults ([`quire_pipeline::settings`]).
//!
//! SIGINT/SIGTERM ([`super::signals`]): no new document starts, those in flight finish (a PDF
//! page within `--page-timeout`) and are marked, the others are left queued, the summaries are
//! written, and the exit code is 130 or 143. A second signal exits at once.

use super::progress::Progress;
use super::signals::Stop;
use anyhow::bail;
use quire_exporters::record::DocumentRecord;
use quire_pipeline::run::RunSummary;
use quire_pipeline::settings::{self, RunArgs, SchemaBounds};
use std::path::{Path, PathBuf};

pub fn run(global: &super::Global, args: RunArgs) -> anyhow::Result<u8> {
    let stop = Stop::on_signals(
        "finishing the documents in flight, starting no new ones (a second signal stops at once)",
    )?;
    let inputs = args.inputs;
    super::check_inputs_exist(&inputs)?;
    let resolved = settings::resolve(args.settings)?;
    let collected = quire_pipeline::collect(&inputs);
    if collected.sources.is_empty() && collected.errors.is_empty() {
        bail!("no documents found in the inputs");
    }
    let opened = settings::open_job(&resolved, &global.provisioner())?;
    if let Some(bounds) = &opened.schema_bounds {
        print_schema_bounds(bounds);
    }
    let mut job = opened.job;
    if let Some((signal, code)) = stop.received() {
        eprintln!("stopped by {signal} before any document started");
        return Ok(code);
    }

    let progress = Progress::new(collected.sources.len() as u64, "documents");
    let show = progress.observer();
    let batch = job.process_until(collected.sources, stop.flag(), |event| show(event.clone()))?;
    progress.finish();
    // Failures of documents not processed now (out of retries, unreadable) are said too.
    let kept_failures: Vec<String> = batch
        .kept
        .iter()
        .filter_map(|(_, r)| r.error.as_ref().map(|e| (r, e)))
        .map(|(r, e)| format!("FAILED {}: {} ({})", r.source, e.message, e.kind))
        .collect();
    // The summaries cover every input: done now, done before, and inputs that never started.
    let mut all: Vec<(PathBuf, DocumentRecord)> = batch
        .kept
        .into_iter()
        .chain(batch.processed)
        .map(|(source, record)| (source.path, record))
        .collect();
    let mut unreadable = batch.unreadable;
    // An unreadable input has no hash: shard 0 reports it.
    let report_input_errors = resolved.shard.is_none_or(|s| s.index == 0);
    for error in collected.errors.iter().filter(|_| report_input_errors) {
        let relative = relative_to_inputs(&inputs, &error.path);
        let record = job.report_input_error(error, relative.as_deref());
        all.push((error.path.clone(), record));
        unreadable += 1;
    }
    // Documents another run on this folder held: under the summary lock, what it finished is
    // listed from its records, so the run that finishes last writes the complete summary.
    let lock = job.store().lock_summaries()?;
    let elsewhere = job.finished_elsewhere(batch.busy)?;
    all.extend(
        elsewhere
            .finished
            .into_iter()
            .map(|(source, record)| (source.path, record)),
    );
    all.sort_by(|a, b| a.0.cmp(&b.0));
    let records: Vec<DocumentRecord> = all.into_iter().map(|(_, r)| r).collect();
    // Documents were processed: a summary that cannot be written (a full disk) is reported
    // after them, not instead of them.
    let summaries = job.exporter().write_summaries(&records);
    let review = resolved
        .review_below
        .map(|threshold| (threshold, job.exporter().write_review(&records, threshold)));
    drop(lock);
    print_summary(&batch.summary, unreadable, &resolved.out);
    for line in &kept_failures {
        eprintln!("{line}");
    }
    let failed = records.iter().filter(|r| r.error.is_some()).count();
    if batch.skipped_done > 0 {
        eprintln!(
            "{} documents were already done with these settings (skipped)",
            batch.skipped_done
        );
    }
    for e in &collected.errors {
        eprintln!("FAILED {e}");
    }
    if let Err(e) = &summaries {
        eprintln!("error: {e}");
    }
    match &review {
        Some((threshold, Ok((values, documents)))) => {
            eprintln!(
                "review: {values} values below --review-below {threshold} in {documents} \
                 documents: {}",
                resolved
                    .out
                    .join(quire_exporters::formats::REVIEW_NAME)
                    .display()
            );
        }
        Some((_, Err(e))) => eprintln!("error: {e}"),
        None => {}
    }
    if !elsewhere.unfinished.is_empty() {
        eprintln!(
            "{} documents are busy in another run on {}: not processed here and not in the \
             summaries yet (the run that finishes last lists them; or run again later)",
            elsewhere.unfinished.len(),
            resolved.out.display()
        );
        const LISTED: usize = 20;
        for (source, why) in elsewhere.unfinished.iter().take(LISTED) {
            eprintln!("BUSY {}: {why}", quire_pipeline::job::display(source));
        }
        if elsewhere.unfinished.len() > LISTED {
            eprintln!("BUSY ... and {} more", elsewhere.unfinished.len() - LISTED);
        }
    }
    if let Some((signal, code)) = stop.received() {
        eprintln!(
            "stopped by {signal}: {} documents not started are left queued for the next run",
            batch.abandoned.len()
        );
        return Ok(code);
    }
    if !elsewhere.unfinished.is_empty() {
        return Ok(crate::exit::BUSY);
    }
    if summaries.is_err() || matches!(review, Some((_, Err(_)))) {
        return Ok(crate::exit::PARTIAL);
    }
    Ok(if failed > 0 && !resolved.allow_partial {
        crate::exit::PARTIAL
    } else {
        crate::exit::OK
    })
}

/// `path` relative to the input root it was found under, as the walk names documents.
fn relative_to_inputs(inputs: &[PathBuf], path: &Path) -> Option<PathBuf> {
    inputs
        .iter()
        .find_map(|input| {
            if input.is_dir() {
                path.strip_prefix(input).ok().map(Path::to_path_buf)
            } else if input == path {
                path.file_name().map(PathBuf::from)
            } else {
                None
            }
        })
        .filter(|r| !r.as_os_str().is_empty())
}

/// The run's numbers; `unreadable` inputs (failed before any stage) count as failed documents.
fn print_summary(summary: &RunSummary, unreadable: usize, out: &Path) {
    let wall = summary.wall.as_secs_f64();
    let docs = summary.records.len() + unreadable;
    let failed = summary.failed() + unreadable;
    eprintln!();
    eprintln!(
        "{docs} documents ({} ok, {failed} failed), {} pages, {} tokens generated in {wall:.1} s \
         ({:.2} pages/s, {:.1} tokens/s)",
        docs - failed,
        summary.pages(),
        summary.generated_tokens(),
        summary.pages() as f64 / wall.max(1e-9),
        summary.generated_tokens() as f64 / wall.max(1e-9),
    );
    eprintln!(
        "{:<11} {:>6} {:>9} {:>7} {:>10}",
        "stage", "items", "busy s", "busy %", "max queue"
    );
    for stage in &summary.stages {
        eprintln!(
            "{:<11} {:>6} {:>9.2} {:>6.0}% {:>10}",
            stage.name,
            stage.items,
            stage.busy.as_secs_f64(),
            100.0 * stage.utilisation(summary.wall),
            stage.max_queue
        );
    }
    if let Some(b) = quire_pipeline::stage::bottleneck(&summary.stages, summary.wall) {
        eprintln!(
            "bounded by: {} ({:.0}% busy); time in ONNX Runtime calls: {:.0}% of wall time \
             (vision and generate overlap)",
            b.name,
            100.0 * b.utilisation(summary.wall),
            100.0 * summary.inference_share()
        );
    }
    for record in summary.records.iter().filter(|r| r.error.is_some()) {
        let e = record.error.as_ref().expect("filtered");
        eprintln!("FAILED {}: {} ({})", record.source, e.message, e.kind);
    }
    eprintln!("outputs in {}", out.display());
}

/// The bounds that make a complete object always fit the token limit: said, since they cap what
/// the model can write.
pub fn print_schema_bounds(b: &SchemaBounds) {
    eprintln!(
        "schema bounds for --max-new-tokens {}: strings without maxLength hold at most {} \
         characters, arrays without maxItems at most {} items (worst case {} tokens)",
        b.max_new_tokens, b.default_max_length, b.default_max_items, b.worst_case_tokens
    );
}
