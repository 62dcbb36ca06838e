//! From a job's settings to a [`Job`]: runtimes, model, schema constraint, exporter, state store.

use super::JobSettings;
use crate::job::{Job, JobError, JobOptions};
use crate::run::task::Task;
use crate::run::{CompileError, RunSettings};
use crate::{PoolOptions, WorkerCommand};
use quire_exporters::formats::{ExportError, Exporter};
use quire_onnx::gemma4::{Gemma4, LoadOptions, Sampling};
use quire_onnx::provision::{ProvisionError, Provisioner};
use quire_onnx::runtime::RuntimeError;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What can go wrong opening a job: nothing has been processed yet.
#[derive(Debug, thiserror::Error)]
pub enum OpenJobError {
    /// Worded as the state store's own check (`StateError::NotWritable`), which this one
    /// precedes so that the model is not loaded for nothing. The cause is in the message (not a
    /// `source`), said once.
    #[error(
        "output folder {} is not writable ({error}): quire writes its outputs and its state \
         store ({}/) there",
        path.display(),
        crate::state::STATE_DIR
    )]
    OutputFolder {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Pdfium(#[from] ProvisionError),
    #[error("loading model {}", path.display())]
    Model {
        path: PathBuf,
        #[source]
        source: quire_onnx::gemma4::Error,
    },
    #[error(transparent)]
    Schema(#[from] CompileError),
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error("locating the quire executable")]
    Executable(#[source] std::io::Error),
    #[error(transparent)]
    Job(#[from] JobError),
}

/// The bounds a compiled schema puts on what the model can write, so that a complete object
/// always fits `max_new_tokens`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaBounds {
    pub max_new_tokens: usize,
    /// `maxLength` of strings without one.
    pub default_max_length: usize,
    /// `maxItems` of arrays without one.
    pub default_max_items: usize,
    pub worst_case_tokens: usize,
}

/// An open job, and what the user should know about it before it starts.
pub struct OpenedJob {
    pub job: Job,
    /// For `extract`: the bounds the schema constraint puts on the output.
    pub schema_bounds: Option<SchemaBounds>,
}

/// Loads the model and opens the job of `r`: runtimes, model, schema constraint, exporter, state
/// store. Everything that can be wrong with the settings fails here, before any document. The
/// PDF workers are this executable (`quire pdf-worker`).
pub fn open_job(r: &JobSettings, provisioner: &Provisioner) -> Result<OpenedJob, OpenJobError> {
    // First, so that a read-only or full output folder is said before the model loads.
    check_writable(&r.out)?;
    let runtime = quire_onnx::runtime::environment_for(provisioner, r.eps.clone())?;
    let pdfium = provisioner.ensure(&crate::pdfium::PDFIUM)?;

    let model = Gemma4::load(
        runtime.env,
        &r.model,
        &LoadOptions {
            dtype: r.dtype,
            eps: runtime.eps,
            text_only: false,
            session: r.session,
        },
    )
    .map_err(|source| OpenJobError::Model {
        path: r.model.clone(),
        source,
    })?;
    let schema_value = match &r.task {
        Task::Extract { schema } => Some(schema),
        _ => None,
    };
    // Compile the schema before touching any document: an unsupported one fails here.
    let constraint = schema_value
        .map(|schema| crate::run::compile_constraint(&model, schema, r.max_new_tokens))
        .transpose()?;
    let schema_bounds = constraint.as_ref().map(|c| {
        let prepared = c.schema();
        SchemaBounds {
            max_new_tokens: r.max_new_tokens,
            default_max_length: prepared.default_max_length,
            default_max_items: prepared.default_max_items,
            worst_case_tokens: prepared.worst_case_tokens,
        }
    });
    let exporter = Exporter::new(&r.out, &r.formats, r.mode, schema_value)?;
    let sampling = match r.sampling {
        None => Sampling::Greedy,
        Some(seed) => Sampling::Sample {
            temperature: model.generation.temperature.unwrap_or(1.0),
            top_k: model.generation.top_k.unwrap_or(0),
            top_p: model.generation.top_p.unwrap_or(1.0),
            seed,
        },
    };
    let settings = RunSettings {
        task: r.task.clone(),
        budget: r.budget,
        max_new_tokens: r.max_new_tokens,
        sampling,
        text_anchor: r.text_anchor,
        skip_blank_pages: r.skip_blank_pages,
        batch_size: r.batch_size,
        batch_tokens: r.batch_tokens,
        vision_patches: r.vision_patches,
        max_pages_per_prompt: r.max_pages_per_prompt,
        null_below: r.null_below,
        review_below: r.review_below,
        thinking: r.thinking,
        ignore_eos: r.ignore_eos,
        model_id: model_id(&r.model),
        dtype: r.dtype.to_string(),
        execution_provider: model
            .providers()
            .first()
            .map(|(_, report)| report.primary().name().to_string())
            .unwrap_or_else(|| "cpu".into()),
        schema_name: r
            .schema_path
            .as_ref()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned()),
        loop_guard: Default::default(),
        fingerprint: String::new(),
    };
    let mut pool = PoolOptions::new(r.budget, None);
    pool.workers = r.workers;
    pool.password = r.password.as_ref().map(|p| p.0.clone());
    pool.page_timeout = r.page_timeout;
    pool.image_limits.max_pixels = r.max_pixels;
    pool.worker = Some(WorkerCommand::quire(
        std::env::current_exe().map_err(OpenJobError::Executable)?,
        &pdfium.library,
    ));
    let options = JobOptions {
        out: r.out.clone(),
        retries: r.retries,
        shard: r.shard,
        pool,
    };
    let job = Job::new(
        model,
        &r.model,
        r.dtype,
        constraint.map(Arc::new),
        settings,
        exporter,
        options,
    )?;
    Ok(OpenedJob { job, schema_bounds })
}

/// Creates `out` if needed and writes (and removes) a small file in it.
fn check_writable(out: &Path) -> Result<(), OpenJobError> {
    let err = |error| OpenJobError::OutputFolder {
        path: out.to_path_buf(),
        error,
    };
    std::fs::create_dir_all(out).map_err(err)?;
    let probe = out.join(format!(".quire-write-check.{}", std::process::id()));
    // On a full disk the file may be created and its bytes refused: removed either way.
    let written = std::fs::write(&probe, b"quire");
    let removed = std::fs::remove_file(&probe);
    written.and(removed).map_err(err)
}

/// The model's name as recorded in outputs: its directory name.
pub fn model_id(dir: &Path) -> String {
    std::fs::canonicalize(dir)
        .unwrap_or_else(|_| dir.to_path_buf())
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| dir.display().to_string())
}
