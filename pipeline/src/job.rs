//! A job: the model, the state store, the exporter and the fingerprint of the settings, kept
//! together so that `quire run` (one batch) and `quire watch` (one batch per wave of arrivals)
//! plan, process and mark documents the same way.
//!
//! Order of a document's life: claimed in the state store in one step (skip done, retry failed
//! up to `retries`, take over what a process that is gone left running, leave what another
//! live process holds), processed, its outputs written atomically, and only then marked done
//! or failed. While a job lives, a heartbeat thread keeps the leases of its claims.

use crate::render::PoolOptions;
use crate::run::render::{Documents, Split};
use crate::run::{DocumentDone, RunSettings, RunSummary};
use crate::shard::Shard;
use crate::sources::Source;
use crate::state::{self, DocKey, DocState, Heartbeat, Plan, StateError, StateStore};
use crate::{record, DocError};
use quire_constrained::JsonConstraint;
use quire_exporters::formats::Exporter;
use quire_exporters::record::{DocumentRecord, ErrorKind, ErrorRecord};
use quire_onnx::gemma4::model_dir::{DtypeSelection, Graph, ModelDir};
use quire_onnx::gemma4::Gemma4;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("model files: {0}")]
    Model(#[from] quire_onnx::gemma4::Error),
    #[error("cleaning {path}: {source}")]
    Clean {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Where and how a job runs, besides the model and the run settings.
#[derive(Debug, Clone)]
pub struct JobOptions {
    pub out: PathBuf,
    /// Extra attempts after a failure, across runs on the same `out`.
    pub retries: u32,
    pub shard: Option<Shard>,
    /// The render workers of each batch.
    pub pool: PoolOptions,
}

pub struct Job {
    /// `None` only while a batch runs (the stages own it).
    model: Option<Gemma4>,
    constraint: Option<Arc<JsonConstraint>>,
    settings: RunSettings,
    exporter: Exporter,
    store: StateStore,
    /// Keeps this job's leases; stops with the job.
    _heartbeat: Heartbeat,
    /// Tells other processes that this one works in the output folder.
    fingerprint: String,
    options: JobOptions,
}

/// What one batch did.
pub struct BatchOutcome {
    /// Documents processed now, with their records, in input order.
    pub processed: Vec<(Source, DocumentRecord)>,
    /// Documents not processed now: done before (their JSON is the record), out of retries, or
    /// unreadable.
    pub kept: Vec<(Source, DocumentRecord)>,
    /// Documents never started because a stop came first.
    pub abandoned: Vec<Source>,
    /// Among `kept`, those done before with the same settings.
    pub skipped_done: usize,
    /// Among `kept`, those that could not be read.
    pub unreadable: usize,
    /// Documents of other shards.
    pub not_ours: usize,
    /// Documents held by another live process on the same output folder when planned.
    pub busy: Vec<BusyDocument>,
    pub summary: RunSummary,
}

/// A document another process held when this one planned.
#[derive(Debug, Clone)]
pub struct BusyDocument {
    pub source: Source,
    pub content_sha256: String,
    pub lease: state::Lease,
}

/// What became of the documents another process held, looked up again at the end of a run.
#[derive(Default)]
pub struct Elsewhere {
    /// Finished by the other process: their records, read from their JSON.
    pub finished: Vec<(Source, DocumentRecord)>,
    /// Not finished (or finished without a JSON record to read), with why.
    pub unfinished: Vec<(Source, String)>,
}

impl Job {
    /// Opens the state store under `options.out` (removing temporaries a killed run left) and
    /// fingerprints the model files and settings.
    /// `model_dir` and `dtype` name the files the model was loaded from.
    pub fn new(
        model: Gemma4,
        model_dir: &Path,
        dtype: DtypeSelection,
        constraint: Option<Arc<JsonConstraint>>,
        mut settings: RunSettings,
        exporter: Exporter,
        options: JobOptions,
    ) -> Result<Job, JobError> {
        let store = StateStore::open(&options.out)?;
        // A run killed while writing leaves hidden temporary files, never partial outputs.
        // They are named after their writer: only those of processes that are gone go.
        let stale =
            quire_exporters::atomic::remove_stale_temporaries(&options.out).map_err(|source| {
                JobError::Clean {
                    path: options.out.clone(),
                    source,
                }
            })?;
        if stale > 0 {
            tracing::info!(stale, "removed temporary files of an interrupted run");
        }
        let fingerprint = fingerprint(&store, model_dir, dtype, &settings)?;
        settings.fingerprint = fingerprint.clone();
        let heartbeat = store.start_heartbeat()?;
        Ok(Job {
            model: Some(model),
            constraint,
            settings,
            exporter,
            store,
            _heartbeat: heartbeat,
            fingerprint,
            options,
        })
    }

    pub fn settings(&self) -> &RunSettings {
        &self.settings
    }

    pub fn exporter(&self) -> &Exporter {
        &self.exporter
    }

    pub fn store(&self) -> &StateStore {
        &self.store
    }

    /// Plans `sources`, processes those that need it and marks each done or failed after its
    /// outputs are written. `on_event` sees each processed document as it finishes.
    pub fn process(
        &mut self,
        sources: Vec<Source>,
        on_event: impl FnMut(&DocumentDone),
    ) -> Result<BatchOutcome, JobError> {
        self.process_until(sources, Arc::new(AtomicBool::new(false)), on_event)
    }

    /// [`Job::process`], starting no further document once `stop` is set: those already
    /// started finish; the others are released in the state store (not counted as an attempt)
    /// and listed in [`BatchOutcome::abandoned`].
    pub fn process_until(
        &mut self,
        sources: Vec<Source>,
        stop: Arc<AtomicBool>,
        mut on_event: impl FnMut(&DocumentDone),
    ) -> Result<BatchOutcome, JobError> {
        let plan = self.plan(sources)?;
        tracing::info!(
            process = plan.process.len(),
            kept = plan.kept.len(),
            busy = plan.busy.len(),
            "claimed in the state store"
        );
        let sources = Arc::new(plan.process);
        let events =
            crate::render::render_while(sources.to_vec(), self.options.pool.clone(), move || {
                !stop.load(Ordering::SeqCst)
            });
        let split = Split::for_pages_per_prompt(self.settings.max_pages_per_prompt);
        let documents = Documents::new(events, &sources, plan.hashes.clone(), split);
        let model = self.model.take().expect("no batch is running");
        let store = &self.store;
        let fingerprint = &self.fingerprint;
        let hashes = &plan.hashes;
        let observer = |event: DocumentDone| {
            let DocumentDone {
                index,
                error,
                pages,
                review,
                ..
            } = &event;
            // The outputs are in place (written atomically) before this event: now the mark.
            let key = DocKey {
                content_sha256: hashes[*index].clone(),
                fingerprint: fingerprint.clone(),
            };
            let marked = match error {
                None => store.mark_done(&key, *pages, *review),
                Some(e) => store.mark_failed(&key, e),
            };
            if let Err(e) = marked {
                tracing::error!("{e}");
            }
            on_event(&event);
        };
        let (summary, model) = crate::run::run(
            model,
            self.constraint.clone(),
            self.settings.clone(),
            sources.clone(),
            documents,
            self.exporter.clone(),
            observer,
        );
        self.model = Some(model);
        let processed: Vec<(Source, DocumentRecord)> = summary
            .indices
            .iter()
            .map(|&i| sources[i].clone())
            .zip(summary.records.iter().cloned())
            .collect();
        let went_through: std::collections::HashSet<usize> =
            summary.indices.iter().copied().collect();
        let mut abandoned = Vec::new();
        for (i, source) in sources.iter().enumerate() {
            if !went_through.contains(&i) {
                self.store.release(&self.key(&plan.hashes[i]))?;
                abandoned.push(source.clone());
            }
        }
        Ok(BatchOutcome {
            processed,
            abandoned,
            kept: plan.kept,
            skipped_done: plan.skipped_done,
            unreadable: plan.unreadable,
            not_ours: plan.not_ours,
            busy: plan.busy,
            summary,
        })
    }

    fn key(&self, sha: &str) -> DocKey {
        DocKey {
            content_sha256: sha.to_string(),
            fingerprint: self.fingerprint.clone(),
        }
    }

    /// Claims each source in the state store (see [`StateStore::claim`]).
    fn plan(&self, sources: Vec<Source>) -> Result<BatchPlan, JobError> {
        let mut plan = BatchPlan::default();
        let unreadable_before = self.store.input_failure_sources()?;
        for source in sources {
            let name = display(&source);
            let sha = match state::file_sha256(&source.path) {
                Ok(sha) => sha,
                Err(e) => {
                    // Listed by the walk, unreadable now (deleted or replaced since): an
                    // error record like any input that cannot be read.
                    let error = crate::error::vanished_or_io_error(&source.path, &e);
                    let record = self.report_input_error(&error, Some(&source.relative));
                    plan.unreadable += 1;
                    plan.kept.push((source, record));
                    continue;
                }
            };
            if unreadable_before.contains(&name) {
                self.store.forget_input_failure(&name)?;
            }
            if self
                .options
                .shard
                .is_some_and(|shard| !shard.contains(&sha))
            {
                plan.not_ours += 1;
                continue;
            }
            // Done before: its JSON is the record. Missing (deleted by hand) or replaced since
            // by a run with other settings: the claim redoes it.
            let mut done = None;
            let claimed = self
                .store
                .claim(&self.key(&sha), &name, self.options.retries, || {
                    done = self.output_record(&source, &sha);
                    done.is_some()
                })?;
            match claimed {
                Plan::Skip => {
                    plan.skipped_done += 1;
                    plan.kept
                        .push((source, done.expect("checked by the claim")));
                }
                Plan::Busy(lease) => plan.busy.push(BusyDocument {
                    source,
                    content_sha256: sha,
                    lease,
                }),
                Plan::GiveUp { message, .. } => {
                    let record = record::failed_before_run(
                        &self.settings,
                        name,
                        sha,
                        ErrorRecord {
                            kind: ErrorKind::RetriesExhausted,
                            message,
                            page: None,
                        },
                    );
                    // Written like any failed document's record.
                    if let Err(e) = self.exporter.write_document(&source.relative, &record) {
                        tracing::warn!("{e}");
                    }
                    plan.kept.push((source, record));
                }
                Plan::Process { .. } => {
                    plan.process.push(source);
                    plan.hashes.push(sha);
                }
            }
        }
        Ok(plan)
    }

    /// Looks up again, at the end of a run, the documents another process held when this one
    /// planned: finished ones give their record (their JSON), the others say why they are not.
    /// Call it under [`StateStore::lock_summaries`] so that what it reads is not stale when
    /// the summaries are written.
    pub fn finished_elsewhere(&self, busy: Vec<BusyDocument>) -> Result<Elsewhere, JobError> {
        let mut elsewhere = Elsewhere::default();
        for doc in busy {
            let key = self.key(&doc.content_sha256);
            let why = match self.store.state(&key)? {
                Some((DocState::Done | DocState::Failed, _)) => {
                    match self.output_record(&doc.source, &doc.content_sha256) {
                        Some(record) => {
                            elsewhere.finished.push((doc.source, record));
                            continue;
                        }
                        None => "finished by another run, with no JSON record to list".into(),
                    }
                }
                Some((DocState::Running, _)) => match self.store.lease(&key)? {
                    Some(lease) if !lease.expired() => format!("held by {lease}"),
                    Some(lease) => format!(
                        "left unfinished by {lease} (its lease expired: the next run takes it \
                         over)"
                    ),
                    None => "left unfinished by another run".into(),
                },
                _ => "left unfinished by another run (queued again)".into(),
            };
            elsewhere.unfinished.push((doc.source, why));
        }
        Ok(elsewhere)
    }

    /// The output JSON of `source` when it is the result of this content with these settings
    /// (an error record included).
    fn output_record(&self, source: &Source, sha: &str) -> Option<DocumentRecord> {
        let json =
            quire_exporters::layout::output_path(self.exporter.out(), &source.relative, "json")
                .ok()?;
        std::fs::read(&json)
            .ok()
            .and_then(|b| serde_json::from_slice::<DocumentRecord>(&b).ok())
            .filter(|r| r.content_sha256 == sha && r.settings.fingerprint == self.fingerprint)
    }

    /// The record of an input that could not even be read, written where its output would
    /// have gone when it has a place under the output folder (`relative`), like any failed
    /// document, and recorded as failed in the state store under its name. `quire run` and
    /// `quire watch` report such inputs this way.
    pub fn report_input_error(&self, error: &DocError, relative: Option<&Path>) -> DocumentRecord {
        let mut record = self.error_record(error);
        if let Some(relative) = relative {
            record.source = quire_exporters::layout::display_relative(relative);
            if let Err(e) = self.exporter.write_document(relative, &record) {
                tracing::warn!("{e}");
            }
        }
        let failure = format!("{}: {}", error.kind, error.message);
        if let Err(e) = self.store.record_input_failure(&record.source, &failure) {
            tracing::error!("{e}");
        }
        record
    }

    /// The record of an input that could not even be read.
    fn error_record(&self, error: &DocError) -> DocumentRecord {
        record::failed_before_run(
            &self.settings,
            error.path.display().to_string(),
            String::new(),
            error.to_record(),
        )
    }
}

#[derive(Default)]
struct BatchPlan {
    process: Vec<Source>,
    hashes: Vec<String>,
    kept: Vec<(Source, DocumentRecord)>,
    skipped_done: usize,
    unreadable: usize,
    not_ours: usize,
    busy: Vec<BusyDocument>,
}

pub fn display(source: &Source) -> String {
    quire_exporters::layout::display_relative(&source.relative)
}

/// Everything that changes an output: the model's files, the settings, quire's prompts.
fn fingerprint(
    store: &StateStore,
    model_dir: &Path,
    dtype: DtypeSelection,
    s: &RunSettings,
) -> Result<String, JobError> {
    let mut parts: Vec<(String, String)> = Vec::new();
    let dir = ModelDir::new(model_dir)?;
    for name in [
        "config.json",
        "generation_config.json",
        "processor_config.json",
        "preprocessor_config.json",
        "tokenizer.json",
        "chat_template.jinja",
    ] {
        let path = model_dir.join(name);
        if path.is_file() {
            parts.push((format!("model/{name}"), store.cached_file_sha256(&path)?));
        }
    }
    for graph in Graph::ALL {
        let path = dir.graph(graph, dtype.get(graph))?;
        for file in std::iter::once(path.clone()).chain(ModelDir::sidecars(&path)) {
            let name = file.file_name().map(|n| n.to_string_lossy().into_owned());
            parts.push((
                format!("model/onnx/{}", name.unwrap_or_default()),
                store.cached_file_sha256(&file)?,
            ));
        }
    }
    let task = match &s.task {
        crate::run::task::Task::Ocr => "ocr".to_string(),
        crate::run::task::Task::Extract { schema } => format!("extract {schema}"),
        crate::run::task::Task::Prompt { text } => format!("prompt {text}"),
    };
    parts.extend([
        ("task".into(), task),
        ("prompts".into(), crate::run::task::prompt_files()),
        ("budget".into(), s.budget.to_string()),
        ("dtype".into(), s.dtype.clone()),
        ("max_new_tokens".into(), s.max_new_tokens.to_string()),
        ("text_anchor".into(), s.text_anchor.to_string()),
        ("sampling".into(), format!("{:?}", s.sampling)),
        (
            "max_pages_per_prompt".into(),
            s.max_pages_per_prompt.to_string(),
        ),
        ("null_below".into(), format!("{:?}", s.null_below)),
        ("thinking".into(), s.thinking.to_string()),
    ]);
    // Only set by benchmarks: everyone else keeps the fingerprint they had.
    if s.ignore_eos {
        parts.push(("ignore_eos".into(), "true".into()));
    }
    // Only ocr skips blank pages: the other tasks' documents keep their fingerprints.
    if matches!(s.task, crate::run::task::Task::Ocr) {
        parts.push(("skip_blank_pages".into(), s.skip_blank_pages.to_string()));
    }
    Ok(state::fingerprint(&parts))
}
