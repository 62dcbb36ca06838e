//! `quire run`: the batch job. Settings come from flags, then `QUIRE_*` environment variables,
//! then a TOML config file (`--config`), then defaults.

use super::progress::Progress;
use anyhow::{bail, Context};
use clap::Args;
use quire_exporters::formats::{Exporter, Format};
use quire_exporters::record::DocumentRecord;
use quire_onnx::ep::EpConfig;
use quire_onnx::gemma4::{Budget, DtypeSelection, Gemma4, LoadOptions, Sampling};
use quire_pipeline::job::{Job, JobOptions};
use quire_pipeline::run::task::Task;
use quire_pipeline::run::{RunSettings, RunSummary};
use quire_pipeline::shard::Shard;
use quire_pipeline::{PoolOptions, WorkerCommand};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(Args, Debug, Default)]
pub struct RunArgs {
    /// Files and folders to process (folders are walked recursively).
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    #[command(flatten)]
    job: JobArgs,
}

/// The settings of a job, shared by `quire run` and `quire watch`.
#[derive(Args, Debug, Default)]
pub struct JobArgs {
    /// Output folder; the input tree is mirrored under it.
    #[arg(long, env = "QUIRE_OUT")]
    out: Option<PathBuf>,
    /// Model directory (the Gemma 4 ONNX export layout).
    #[arg(long, env = "QUIRE_MODEL")]
    model: Option<PathBuf>,
    /// ocr (Markdown per page), extract (JSON per document, needs --schema) or prompt.
    #[arg(long, env = "QUIRE_TASK")]
    task: Option<String>,
    /// JSON Schema of the extraction (`--task extract`).
    #[arg(long, env = "QUIRE_SCHEMA")]
    schema: Option<PathBuf>,
    /// Custom instruction (`--task prompt`, implied when given).
    #[arg(long, env = "QUIRE_PROMPT")]
    prompt: Option<String>,
    /// Visual tokens per page: 70, 140, 280, 560 (default) or 1120.
    #[arg(long, env = "QUIRE_BUDGET")]
    budget: Option<Budget>,
    /// Model weights variant: fp32, fp16, q4, q4f16, q8.
    #[arg(long, env = "QUIRE_DTYPE")]
    dtype: Option<String>,
    /// Execution providers in order of preference, e.g. `cuda,cpu`.
    #[arg(long, env = "QUIRE_EP")]
    ep: Option<String>,
    /// Continue with the next provider when one fails to register (default: error).
    #[arg(long, env = "QUIRE_EP_FALLBACK")]
    ep_fallback: Option<bool>,
    /// PDF rendering worker processes.
    #[arg(long, env = "QUIRE_WORKERS")]
    workers: Option<usize>,
    /// Output formats, comma-separated: json, jsonl, csv, md.
    #[arg(long, env = "QUIRE_FORMAT")]
    pub format: Option<String>,
    /// Most tokens generated per page (ocr, prompt) or per document (extract).
    #[arg(long, env = "QUIRE_MAX_NEW_TOKENS")]
    max_new_tokens: Option<usize>,
    /// Most sequences decoded together.
    #[arg(long, env = "QUIRE_BATCH_SIZE")]
    batch_size: Option<usize>,
    /// Token budget of the decoder batch (rows × (cache + new tokens); default 16384).
    #[arg(long, env = "QUIRE_BATCH_TOKENS")]
    batch_tokens: Option<usize>,
    /// Patch budget of one vision encoder run (default 20160: 4 pages at budget 560).
    #[arg(long, env = "QUIRE_VISION_PATCHES")]
    vision_patches: Option<usize>,
    /// Do not give the PDF text layer to the model.
    #[arg(long, env = "QUIRE_NO_TEXT_ANCHOR")]
    no_text_anchor: Option<bool>,
    /// Sample with this seed (temperature/top-k/top-p from the model) instead of greedy.
    #[arg(long, env = "QUIRE_SEED")]
    seed: Option<u64>,
    /// Password of encrypted PDFs.
    #[arg(long, env = "QUIRE_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// File holding the password of encrypted PDFs.
    #[arg(long, env = "QUIRE_PASSWORD_FILE")]
    password_file: Option<PathBuf>,
    /// Seconds a PDF page may take to render before its worker is killed.
    #[arg(long, env = "QUIRE_PAGE_TIMEOUT")]
    page_timeout: Option<f64>,
    /// Permissions of output files, octal (default 600).
    #[arg(long, env = "QUIRE_MODE")]
    mode: Option<String>,
    /// Exit 0 even when some documents failed (their error records are still written).
    #[arg(long, env = "QUIRE_ALLOW_PARTIAL")]
    allow_partial: Option<bool>,
    /// Process only shard I of N (0-based, by content hash), e.g. `0/4`. Read from
    /// JOB_COMPLETION_INDEX/JOB_COMPLETIONS or SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT when
    /// not given.
    #[arg(long, env = "QUIRE_SHARD")]
    shard: Option<Shard>,
    /// Attempts after a failure, across reruns on the same --out (default 2).
    #[arg(long, env = "QUIRE_RETRIES")]
    retries: Option<u32>,
    /// TOML file with any of these settings (keys as the flags, with underscores).
    #[arg(long, env = "QUIRE_CONFIG")]
    config: Option<PathBuf>,
}

/// The config file: the same settings as the flags.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    out: Option<PathBuf>,
    model: Option<PathBuf>,
    task: Option<String>,
    schema: Option<PathBuf>,
    prompt: Option<String>,
    budget: Option<Budget>,
    dtype: Option<String>,
    ep: Option<String>,
    ep_fallback: Option<bool>,
    workers: Option<usize>,
    format: Option<String>,
    max_new_tokens: Option<usize>,
    batch_size: Option<usize>,
    batch_tokens: Option<usize>,
    vision_patches: Option<usize>,
    no_text_anchor: Option<bool>,
    seed: Option<u64>,
    password_file: Option<PathBuf>,
    page_timeout: Option<f64>,
    mode: Option<String>,
    allow_partial: Option<bool>,
    retries: Option<u32>,
}

macro_rules! fill_from_config {
    ($args:expr, $file:expr, $($field:ident),*) => {
        $( if $args.$field.is_none() { $args.$field = $file.$field.take(); } )*
    };
}

/// The fully resolved settings of a run.
#[derive(Debug)]
pub struct Resolved {
    pub out: PathBuf,
    pub model: PathBuf,
    pub task: Task,
    pub schema_path: Option<PathBuf>,
    pub budget: Budget,
    pub dtype: DtypeSelection,
    /// As given, for records.
    pub dtype_name: String,
    pub eps: EpConfig,
    pub workers: usize,
    pub formats: Vec<Format>,
    pub max_new_tokens: usize,
    pub batch_size: usize,
    pub batch_tokens: usize,
    pub vision_patches: usize,
    pub text_anchor: bool,
    pub sampling: Option<u64>,
    pub password: Option<String>,
    pub page_timeout: Duration,
    pub mode: u32,
    pub allow_partial: bool,
    pub retries: u32,
    pub shard: Option<Shard>,
}

pub fn resolve(mut args: JobArgs) -> anyhow::Result<Resolved> {
    if let Some(path) = &args.config {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        let mut file: ConfigFile =
            toml::from_str(&text).with_context(|| format!("config file {}", path.display()))?;
        fill_from_config!(
            args,
            file,
            out,
            model,
            task,
            schema,
            prompt,
            budget,
            dtype,
            ep,
            ep_fallback,
            workers,
            format,
            max_new_tokens,
            batch_size,
            batch_tokens,
            vision_patches,
            no_text_anchor,
            seed,
            password_file,
            page_timeout,
            mode,
            allow_partial,
            retries
        );
    }
    let out = args
        .out
        .context("--out is required (or `out` in the config file)")?;
    let model = args
        .model
        .context("--model is required (or `model` in the config file)")?;
    let task_name = args.task.clone().unwrap_or_else(|| {
        if args.prompt.is_some() {
            "prompt".into()
        } else if args.schema.is_some() {
            "extract".into()
        } else {
            "ocr".into()
        }
    });
    let task = match task_name.as_str() {
        "ocr" => Task::Ocr,
        "extract" => {
            let path = args
                .schema
                .as_ref()
                .context("--task extract needs --schema FILE")?;
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading schema {}", path.display()))?;
            let schema = serde_json::from_str(&text)
                .with_context(|| format!("schema {} is not valid JSON", path.display()))?;
            Task::Extract { schema }
        }
        "prompt" => Task::Prompt {
            text: args
                .prompt
                .clone()
                .context("--task prompt needs --prompt TEXT")?,
        },
        other => bail!("unknown task {other:?}: expected ocr, extract or prompt"),
    };
    let formats = args
        .format
        .as_deref()
        .unwrap_or(match task {
            Task::Extract { .. } => "json,jsonl",
            _ => "json,jsonl,md",
        })
        .split(',')
        .map(str::parse::<Format>)
        .collect::<Result<Vec<_>, _>>()
        .map_err(anyhow::Error::msg)?;
    let password = match (&args.password, &args.password_file) {
        (Some(p), _) => Some(p.clone()),
        (None, Some(file)) => Some(
            std::fs::read_to_string(file)
                .with_context(|| format!("reading password file {}", file.display()))?
                .trim_end_matches(['\n', '\r'])
                .to_string(),
        ),
        (None, None) => None,
    };
    let mode = match &args.mode {
        Some(m) => u32::from_str_radix(m.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .with_context(|| format!("--mode {m:?} is not an octal file mode like 600"))?,
        None => quire_exporters::atomic::DEFAULT_MODE,
    };
    let eps = EpConfig {
        providers: EpConfig::parse_list(args.ep.as_deref().unwrap_or("cpu"))
            .map_err(anyhow::Error::msg)?,
        fallback: args.ep_fallback.unwrap_or(false),
    };
    eps.check_compiled()?;
    let max_new_tokens = args.max_new_tokens.unwrap_or(512);
    if max_new_tokens == 0 {
        bail!("--max-new-tokens must be at least 1");
    }
    Ok(Resolved {
        out,
        model,
        task,
        schema_path: args.schema,
        budget: args
            .budget
            .unwrap_or_else(|| Budget::try_from(560).expect("560 is a budget")),
        dtype: args
            .dtype
            .as_deref()
            .unwrap_or("fp32")
            .parse()
            .map_err(anyhow::Error::msg)?,
        dtype_name: args.dtype.clone().unwrap_or_else(|| "fp32".into()),
        eps,
        workers: args.workers.unwrap_or_else(default_workers).max(1),
        formats,
        max_new_tokens,
        batch_size: args.batch_size.unwrap_or(4).max(1),
        batch_tokens: args
            .batch_tokens
            .unwrap_or(quire_pipeline::run::DEFAULT_BATCH_TOKENS)
            .max(1),
        vision_patches: args
            .vision_patches
            .unwrap_or(quire_pipeline::run::DEFAULT_VISION_PATCHES)
            .max(1),
        text_anchor: !args.no_text_anchor.unwrap_or(false),
        sampling: args.seed,
        password,
        page_timeout: Duration::from_secs_f64(args.page_timeout.unwrap_or(60.0).max(0.1)),
        mode,
        allow_partial: args.allow_partial.unwrap_or(false),
        retries: args.retries.unwrap_or(2),
        shard: match args.shard {
            Some(shard) => Some(shard),
            None => Shard::from_env(|k| std::env::var(k).ok())?,
        },
    })
}

fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get().min(4))
        .unwrap_or(2)
}

/// Loads the model and opens the job of `r`: runtimes, model, schema constraint, exporter, state
/// store. Everything that can be wrong with the settings fails here, before any document.
pub fn open_job(global: &super::Global, r: &Resolved) -> anyhow::Result<Job> {
    let provisioner = global.provisioner();
    let gpu = r.eps.needs_gpu_runtime();
    let (env, _) = quire_onnx::runtime::environment(&provisioner, gpu)?;
    let pdfium = provisioner.ensure(&quire_pipeline::pdfium::PDFIUM)?;

    let model = Gemma4::load(
        env,
        &r.model,
        &LoadOptions {
            dtype: r.dtype,
            eps: r.eps.clone(),
            text_only: false,
        },
    )
    .with_context(|| format!("loading model {}", r.model.display()))?;
    // Compile the schema before touching any document: an unsupported one fails here.
    let constraint = match &r.task {
        Task::Extract { schema } => Some(quire_pipeline::run::compile_constraint(
            &model,
            schema,
            r.max_new_tokens,
        )?),
        _ => None,
    };
    if let Some(c) = &constraint {
        // The bounds that make a complete object always fit the token limit: say them, since
        // they cap what the model can write.
        let prepared = c.schema();
        eprintln!(
            "schema bounds for --max-new-tokens {}: strings without maxLength hold at most {} \
             characters, arrays without maxItems at most {} items (worst case {} tokens)",
            r.max_new_tokens,
            prepared.default_max_length,
            prepared.default_max_items,
            prepared.worst_case_tokens
        );
    }
    let schema_value = match &r.task {
        Task::Extract { schema } => Some(schema),
        _ => None,
    };
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
        batch_size: r.batch_size,
        batch_tokens: r.batch_tokens,
        vision_patches: r.vision_patches,
        max_pages_per_prompt: 8,
        model_id: model_id(&r.model),
        dtype: r.dtype_name.clone(),
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
    pool.password = r.password.clone();
    pool.page_timeout = r.page_timeout;
    pool.worker = Some(WorkerCommand::quire(
        std::env::current_exe().context("locating the quire executable")?,
        &pdfium.library,
    ));
    let options = JobOptions {
        out: r.out.clone(),
        retries: r.retries,
        shard: r.shard,
        pool,
    };
    Ok(Job::new(
        model,
        &r.model,
        r.dtype,
        constraint.map(Arc::new),
        settings,
        exporter,
        options,
    )?)
}

pub fn run(global: &super::Global, args: RunArgs) -> anyhow::Result<u8> {
    let inputs = args.inputs;
    let resolved = resolve(args.job)?;
    let collected = quire_pipeline::collect(&inputs);
    if collected.sources.is_empty() && collected.errors.is_empty() {
        bail!("no documents found in the inputs");
    }
    let mut job = open_job(global, &resolved)?;

    let progress = Progress::new(collected.sources.len() as u64, "documents");
    let show = progress.observer();
    let batch = job.process(collected.sources, |event| show(event.clone()))?;
    progress.finish();
    // The summaries cover every input: done now, done before, and inputs that never started.
    let mut all: Vec<(PathBuf, DocumentRecord)> = batch
        .kept
        .into_iter()
        .chain(batch.processed)
        .map(|(source, record)| (source.path, record))
        .collect();
    // An unreadable input has no hash: shard 0 reports it.
    let report_input_errors = resolved.shard.is_none_or(|s| s.index == 0);
    for error in collected.errors.iter().filter(|_| report_input_errors) {
        let mut record = job.error_record(error);
        // An unreadable file inside an input folder gets its error record where its output
        // would have gone, like any failed document.
        if let Some(relative) = relative_to_inputs(&inputs, &error.path) {
            record.source = quire_exporters::layout::display_relative(&relative);
            if let Err(e) = job.exporter().write_document(&relative, &record) {
                tracing::warn!("{e}");
            }
        }
        all.push((error.path.clone(), record));
    }
    all.sort_by(|a, b| a.0.cmp(&b.0));
    let records: Vec<DocumentRecord> = all.into_iter().map(|(_, r)| r).collect();
    job.exporter().write_summaries(&records)?;
    print_summary(&batch.summary, &resolved.out);
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

/// The model's name as recorded in outputs: its directory name.
fn model_id(dir: &Path) -> String {
    std::fs::canonicalize(dir)
        .unwrap_or_else(|_| dir.to_path_buf())
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| dir.display().to_string())
}

fn print_summary(summary: &RunSummary, out: &Path) {
    let wall = summary.wall.as_secs_f64();
    let docs = summary.records.len();
    let failed = summary.failed();
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: RunArgs,
    }

    fn parse(args: &[&str]) -> JobArgs {
        Cli::try_parse_from(std::iter::once("quire").chain(args.iter().copied()))
            .unwrap()
            .args
            .job
    }

    #[test]
    fn flags_win_over_the_config_file_which_fills_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("quire.toml");
        std::fs::write(
            &config,
            "out = \"/data/out\"\nmodel = \"/models/g\"\nbudget = 1120\nformat = \"json,csv\"\n\
             max_new_tokens = 99\nmode = \"640\"\nretries = 5\n",
        )
        .unwrap();
        let r = resolve(parse(&[
            "in",
            "--config",
            config.to_str().unwrap(),
            "--budget",
            "140",
        ]))
        .unwrap();
        assert_eq!(r.out, PathBuf::from("/data/out"));
        assert_eq!(r.budget.soft_tokens(), 140, "the flag wins");
        assert_eq!(r.max_new_tokens, 99, "the file fills what no flag gave");
        assert_eq!(r.formats, vec![Format::Json, Format::Csv]);
        assert_eq!(r.mode, 0o640);
        assert_eq!(r.retries, 5);
        assert!(matches!(r.task, Task::Ocr));
    }

    #[test]
    fn bad_settings_are_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("bad.toml");
        std::fs::write(&config, "budgett = 70\n").unwrap();
        let err = resolve(parse(&["in", "--config", config.to_str().unwrap()])).unwrap_err();
        assert!(format!("{err:#}").contains("budgett"), "{err:#}");
        let err = resolve(parse(&["in", "--model", "m"])).unwrap_err();
        assert!(err.to_string().contains("--out is required"));
        let err = resolve(parse(&[
            "in", "--out", "o", "--model", "m", "--task", "extract",
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("--schema"));
        let err = resolve(parse(&[
            "in", "--out", "o", "--model", "m", "--mode", "999",
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("octal"));
        assert!(Cli::try_parse_from(["quire", "in", "--budget", "100"]).is_err());
    }
}
