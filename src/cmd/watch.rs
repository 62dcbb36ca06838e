//! `quire watch DIR`: a service that processes documents as they arrive in a folder, each
//! exactly once (the state store under `--out`), with the same settings as `quire run`.
//!
//! Loop: wait for stable files ([`Arrivals`]), process them as one batch with the job (the
//! model stays loaded), move sources to `done/` or `failed/` when asked, update the metrics
//! textfile. SIGINT/SIGTERM ([`super::signals`]) stop taking files: documents already started
//! finish, the rest of the batch is left (queued) for the next start, and the exit is 0. A
//! second signal exits at once (130 or 143): what was in flight is marked running and redone
//! next start.

use anyhow::{bail, Context};
use quire_exporters::record::DocumentRecord;
use quire_pipeline::run::DocumentDone;
use quire_pipeline::settings::{self, WatchArgs};
use quire_pipeline::sources::{collect_files, Source};
use quire_pipeline::watch::{Arrivals, Metrics};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub fn run(global: &super::Global, args: WatchArgs) -> anyhow::Result<u8> {
    let dir = std::fs::canonicalize(&args.dir)
        .with_context(|| format!("watch folder {}", args.dir.display()))?;
    if !dir.is_dir() {
        bail!("watch folder {} is not a folder", dir.display());
    }
    let watch = settings::resolve_watch(args.settings)?;
    let resolved = &watch.job;
    std::fs::create_dir_all(&resolved.out)
        .with_context(|| format!("creating {}", resolved.out.display()))?;
    let out = std::fs::canonicalize(&resolved.out)?;
    if dir.starts_with(&out) {
        bail!(
            "the watched folder {} lies inside --out {}",
            dir.display(),
            out.display()
        );
    }
    if let Some(m) = &watch.metrics {
        if m.extension().is_none_or(|e| e != "prom") {
            tracing::warn!(
                "node_exporter's textfile collector reads only *.prom files, not {}",
                m.display()
            );
        }
    }
    let stop = super::signals::Stop::on_signals(
        "finishing the documents in flight, then stopping (a second signal stops at once)",
    )?;
    let opened = settings::open_job(resolved, &global.provisioner())?;
    if let Some(bounds) = &opened.schema_bounds {
        super::run::print_schema_bounds(bounds);
    }
    let mut job = opened.job;

    let done_dir = dir.join("done");
    let failed_dir = dir.join("failed");
    let mut excluded = vec![out.clone()];
    if watch.move_sources {
        excluded.extend([done_dir.clone(), failed_dir.clone()]);
    }
    let mut arrivals = Arrivals::new(
        &dir,
        excluded,
        Duration::from_secs_f64(watch.settle),
        Duration::from_secs_f64(watch.rescan),
    );
    let mut metrics = Metrics::default();
    let publish = |metrics: &Metrics| {
        if let Some(path) = &watch.metrics {
            let text = metrics.render();
            if let Err(e) = quire_exporters::atomic::write_atomic(path, text.as_bytes(), 0o644) {
                tracing::warn!("metrics file {}: {e}", path.display());
            }
        }
    };
    publish(&metrics);
    eprintln!(
        "watching {} (settle {} s, rescan every {} s); outputs in {}; Ctrl-C or SIGTERM stops",
        dir.display(),
        watch.settle,
        watch.rescan,
        out.display()
    );

    let mover = Mover {
        enabled: watch.move_sources,
        root: dir.clone(),
        done: done_dir,
        failed: failed_dir,
    };
    while !stop.requested() {
        let ready = arrivals.poll(Duration::from_millis(200), watch.max_batch.max(1));
        let depth = (arrivals.waiting() + ready.len()) as u64;
        if depth != metrics.queue_depth {
            metrics.queue_depth = depth;
            publish(&metrics);
        }
        if ready.is_empty() {
            continue;
        }
        let started = Instant::now();
        let collected = collect_files(&dir, &ready);
        for error in &collected.errors {
            let relative = error.path.strip_prefix(&dir).unwrap_or(&error.path);
            let record = job.report_input_error(error, Some(relative));
            eprintln!("FAILED {error}");
            metrics.documents_failed += 1;
            mover.finish(&error.path, &record, &mut arrivals);
        }
        let batch = job.process_until(collected.sources, stop.flag(), log_event)?;
        for (source, record) in &batch.processed {
            match record.error {
                None => metrics.documents_done += 1,
                Some(_) => metrics.documents_failed += 1,
            }
            metrics.pages += record.page_count as u64;
            mover.finish(&source.path, record, &mut arrivals);
        }
        for (source, record) in &batch.kept {
            log_kept(source, record);
            mover.finish(&source.path, record, &mut arrivals);
        }
        for doc in &batch.busy {
            eprintln!(
                "BUSY {}: held by {} (left to it)",
                quire_pipeline::job::display(&doc.source),
                doc.lease
            );
        }
        if !batch.abandoned.is_empty() {
            eprintln!(
                "stopping: {} documents not started are left for the next start",
                batch.abandoned.len()
            );
        }
        let wall = started.elapsed().as_secs_f64();
        let pages = batch.summary.pages();
        metrics.busy_seconds += wall;
        if pages > 0 {
            metrics.seconds_per_page = Some(wall / pages as f64);
        }
        metrics.last_batch_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs_f64());
        metrics.queue_depth = arrivals.waiting() as u64;
        publish(&metrics);
    }
    eprintln!(
        "stopped: {} documents done, {} failed, {} pages since start",
        metrics.documents_done, metrics.documents_failed, metrics.pages
    );
    Ok(crate::exit::OK)
}

fn log_event(event: &DocumentDone) {
    let DocumentDone {
        source,
        pages,
        error,
        ..
    } = event;
    match error {
        None => eprintln!("done {source} ({pages} pages)"),
        Some(e) => eprintln!("FAILED {source}: {e}"),
    }
}

fn log_kept(source: &Source, record: &DocumentRecord) {
    let name = quire_pipeline::job::display(source);
    match &record.error {
        None => eprintln!("already done with these settings: {name}"),
        Some(e) => eprintln!("FAILED {name}: {}: {}", e.kind, e.message),
    }
}

/// Moves processed sources out of the watched tree, keeping their path below it.
struct Mover {
    enabled: bool,
    root: PathBuf,
    done: PathBuf,
    failed: PathBuf,
}

impl Mover {
    fn finish(&self, path: &Path, record: &DocumentRecord, arrivals: &mut Arrivals) {
        if !self.enabled {
            return;
        }
        let base = if record.error.is_none() {
            &self.done
        } else {
            &self.failed
        };
        let relative = path.strip_prefix(&self.root).unwrap_or(path);
        let mut target = base.join(relative);
        if target.exists() {
            // Never replace an earlier file of the same name: tell them apart by content.
            let stem = target
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let tag: String = record.content_sha256.chars().take(12).collect();
            let tag = if tag.is_empty() {
                format!("{}", std::process::id())
            } else {
                tag
            };
            let name = match target.extension() {
                Some(ext) => format!("{stem}-{tag}.{}", ext.to_string_lossy()),
                None => format!("{stem}-{tag}"),
            };
            target.set_file_name(name);
        }
        let moved = target
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::rename(path, &target));
        match moved {
            Ok(()) => arrivals.forget(path),
            Err(e) => tracing::warn!("moving {} to {}: {e}", path.display(), target.display()),
        }
    }
}
