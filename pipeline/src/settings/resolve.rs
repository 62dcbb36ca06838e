//! From the settings as given (flags, environment, config file) to the settings of a command:
//! defaults applied, files read, everything checked.

use super::commands::{
    GenerateSettingsArgs, JobSettingsArgs, RenderSettingsArgs, WatchSettingsArgs,
};
use super::config::fill_from_file;
use super::groups::{BudgetOptions, ModelOptions, PageOptions};
use super::values::{Password, TaskName};
use super::{SettingsError, DEFAULT_BUDGET};
use crate::images::ImageLimits;
use crate::run::task::Task;
use crate::shard::Shard;
use quire_exporters::formats::Format;
use quire_onnx::ep::{EpConfig, Provider};
use quire_onnx::gemma4::{Budget, DtypeSelection};
use quire_onnx::session::SessionSettings;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The fully resolved settings of a job (`quire run`, `quire watch`).
#[derive(Debug, Clone)]
pub struct JobSettings {
    pub out: PathBuf,
    pub model: PathBuf,
    pub task: Task,
    pub schema_path: Option<PathBuf>,
    pub budget: Budget,
    pub dtype: DtypeSelection,
    pub eps: EpConfig,
    pub session: SessionSettings,
    pub workers: usize,
    pub formats: Vec<Format>,
    pub max_new_tokens: usize,
    pub batch_size: usize,
    pub batch_tokens: usize,
    pub vision_patches: usize,
    pub text_anchor: bool,
    pub skip_blank_pages: bool,
    pub sampling: Option<u64>,
    pub password: Option<Password>,
    pub page_timeout: Duration,
    pub max_pixels: u64,
    pub mode: u32,
    pub allow_partial: bool,
    pub retries: u32,
    pub shard: Option<Shard>,
    pub max_pages_per_prompt: usize,
    pub review_below: Option<f64>,
    pub null_below: Option<f64>,
    pub thinking: bool,
    pub ignore_eos: bool,
}

/// Field by field; [`Task`] has no `PartialEq` of its own.
impl PartialEq for JobSettings {
    fn eq(&self, other: &Self) -> bool {
        // Destructured without `..`: a new field must be compared here.
        let JobSettings {
            out,
            model,
            task,
            schema_path,
            budget,
            dtype,
            eps,
            session,
            workers,
            formats,
            max_new_tokens,
            batch_size,
            batch_tokens,
            vision_patches,
            text_anchor,
            skip_blank_pages,
            sampling,
            password,
            page_timeout,
            max_pixels,
            mode,
            allow_partial,
            retries,
            shard,
            max_pages_per_prompt,
            review_below,
            null_below,
            thinking,
            ignore_eos,
        } = self;
        let same_task = match (task, &other.task) {
            (Task::Ocr, Task::Ocr) => true,
            (Task::Extract { schema: a }, Task::Extract { schema: b }) => a == b,
            (Task::Prompt { text: a }, Task::Prompt { text: b }) => a == b,
            _ => false,
        };
        same_task
            && *out == other.out
            && *model == other.model
            && *schema_path == other.schema_path
            && *budget == other.budget
            && *dtype == other.dtype
            && *eps == other.eps
            && *session == other.session
            && *workers == other.workers
            && *formats == other.formats
            && *max_new_tokens == other.max_new_tokens
            && *batch_size == other.batch_size
            && *batch_tokens == other.batch_tokens
            && *vision_patches == other.vision_patches
            && *text_anchor == other.text_anchor
            && *skip_blank_pages == other.skip_blank_pages
            && *sampling == other.sampling
            && *password == other.password
            && *page_timeout == other.page_timeout
            && *max_pixels == other.max_pixels
            && *mode == other.mode
            && *allow_partial == other.allow_partial
            && *retries == other.retries
            && *shard == other.shard
            && *max_pages_per_prompt == other.max_pages_per_prompt
            && *review_below == other.review_below
            && *null_below == other.null_below
            && *thinking == other.thinking
            && *ignore_eos == other.ignore_eos
    }
}

/// The settings of `quire watch`: a job's and the watch's own.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchSettings {
    pub job: JobSettings,
    /// Seconds a file must stay unchanged before it is taken.
    pub settle: f64,
    /// Seconds between full rescans.
    pub rescan: f64,
    pub move_sources: bool,
    pub metrics: Option<PathBuf>,
    pub max_batch: usize,
}

/// The settings of `quire render`.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderSettings {
    pub out: PathBuf,
    pub budget: Budget,
    /// `None`: the pool's default, one per CPU core.
    pub workers: Option<usize>,
    pub password: Option<Password>,
    pub page_timeout: Duration,
    pub max_pixels: u64,
}

/// The settings of `quire generate`.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateSettings {
    pub model: PathBuf,
    pub images: Vec<PathBuf>,
    pub prompt: String,
    pub budget: Budget,
    pub dtype: DtypeSelection,
    pub eps: EpConfig,
    pub session: SessionSettings,
    pub max_new_tokens: usize,
    pub seed: Option<u64>,
    pub greedy: bool,
    pub temperature: Option<f32>,
    pub top_k: Option<usize>,
    pub top_p: Option<f32>,
    pub ignore_eos: bool,
    pub thinking: bool,
    pub json: bool,
}

/// `args` with its config file (if any) filled in.
fn with_config_file<T: Serialize + DeserializeOwned>(
    args: T,
    config: Option<&Path>,
) -> Result<T, SettingsError> {
    match config {
        Some(path) => fill_from_file(args, path),
        None => Ok(args),
    }
}

/// The settings of a job: flags and environment (`args`), then the config file, then defaults.
pub fn resolve(args: JobSettingsArgs) -> Result<JobSettings, SettingsError> {
    let config = args.config.config.clone();
    job_settings(with_config_file(args, config.as_deref())?)
}

/// The settings of `quire watch`.
pub fn resolve_watch(args: WatchSettingsArgs) -> Result<WatchSettings, SettingsError> {
    let config = args.job.config.config.clone();
    let WatchSettingsArgs { job, watch } = with_config_file(args, config.as_deref())?;
    let settle = watch.settle.unwrap_or(2.0);
    let rescan = watch.rescan.unwrap_or(30.0);
    if !(settle.is_finite() && settle >= 0.0 && rescan.is_finite() && rescan > 0.0) {
        return Err(SettingsError::WatchIntervals);
    }
    if let Some(formats) = &job.job.format {
        if formats.contains(Format::Jsonl) || formats.contains(Format::Csv) {
            return Err(SettingsError::WatchFormats);
        }
    }
    let mut job = job_settings(job)?;
    job.formats
        .retain(|f| matches!(f, Format::Json | Format::Markdown));
    Ok(WatchSettings {
        job,
        settle,
        rescan,
        move_sources: watch.move_sources.unwrap_or(false),
        metrics: watch.metrics,
        max_batch: watch.max_batch.unwrap_or(32),
    })
}

/// The settings of `quire render`.
pub fn resolve_render(args: RenderSettingsArgs) -> Result<RenderSettings, SettingsError> {
    let config = args.config.config.clone();
    let RenderSettingsArgs {
        config: _,
        output,
        budget,
        pages,
    } = with_config_file(args, config.as_deref())?;
    let page_timeout = pages.page_timeout()?;
    let workers = pages.workers()?;
    let password = pages.password()?;
    Ok(RenderSettings {
        out: output.out.ok_or(SettingsError::Required("out"))?,
        budget: budget.budget(),
        workers,
        password,
        page_timeout,
        max_pixels: pages.max_pixels(),
    })
}

/// The settings of `quire generate`.
pub fn resolve_generate(args: GenerateSettingsArgs) -> Result<GenerateSettings, SettingsError> {
    let config = args.config.config.clone();
    let GenerateSettingsArgs {
        config: _,
        model,
        generate,
        budget,
        generation,
    } = with_config_file(args, config.as_deref())?;
    let model_dir = model
        .model
        .clone()
        .ok_or(SettingsError::Required("model"))?;
    let prompt = generate.prompt.ok_or(SettingsError::Required("prompt"))?;
    Ok(GenerateSettings {
        model: model_dir,
        images: generate.image.unwrap_or_default(),
        prompt,
        budget: budget.budget(),
        dtype: model.dtype(),
        eps: model.eps()?,
        session: model.session(),
        max_new_tokens: generation.max_new_tokens.unwrap_or(256),
        seed: generation.seed,
        greedy: generate.greedy.unwrap_or(false),
        temperature: generate.temperature,
        top_k: generate.top_k,
        top_p: generate.top_p,
        ignore_eos: generation.ignore_eos.unwrap_or(false),
        thinking: generate.thinking.unwrap_or(false),
        json: generate.json.unwrap_or(false),
    })
}

/// A job's settings from `args`, the config file already applied.
fn job_settings(args: JobSettingsArgs) -> Result<JobSettings, SettingsError> {
    let JobSettingsArgs {
        config: _,
        output,
        model,
        job,
        budget,
        generation,
        pages,
    } = args;
    let out = output.out.ok_or(SettingsError::Required("out"))?;
    let model_dir = model
        .model
        .clone()
        .ok_or(SettingsError::Required("model"))?;
    let task_name = job.task.unwrap_or(if job.prompt.is_some() {
        TaskName::Prompt
    } else if job.schema.is_some() {
        TaskName::Extract
    } else {
        TaskName::Ocr
    });
    let task = match task_name {
        TaskName::Ocr => Task::Ocr,
        TaskName::Extract => {
            let path = job
                .schema
                .as_ref()
                .ok_or(SettingsError::ExtractNeedsSchema)?;
            let text =
                std::fs::read_to_string(path).map_err(|source| SettingsError::ReadSchema {
                    path: path.clone(),
                    source,
                })?;
            let schema =
                serde_json::from_str(&text).map_err(|source| SettingsError::SchemaJson {
                    path: path.clone(),
                    source,
                })?;
            Task::Extract { schema }
        }
        TaskName::Prompt => Task::Prompt {
            text: job.prompt.clone().ok_or(SettingsError::PromptNeedsText)?,
        },
    };
    let formats = match job.format {
        Some(formats) => formats.0,
        None => match task {
            Task::Extract { .. } => vec![Format::Json, Format::Jsonl],
            _ => vec![Format::Json, Format::Jsonl, Format::Markdown],
        },
    };
    check_formats_hold_result(&task, &formats)?;
    let password = pages.password()?;
    let mode = job
        .mode
        .map_or(quire_exporters::atomic::DEFAULT_MODE, |m| m.0);
    let eps = model.eps()?;
    let vision_patches = job
        .vision_patches
        .unwrap_or_else(|| default_vision_patches(&eps))
        .max(1);
    let max_new_tokens = generation.max_new_tokens.unwrap_or(512);
    if max_new_tokens == 0 {
        return Err(SettingsError::MaxNewTokens);
    }
    let max_pages_per_prompt = job.max_pages_per_prompt.unwrap_or(8);
    if max_pages_per_prompt == 0 {
        return Err(SettingsError::MaxPagesPerPrompt);
    }
    let probability = |flag: &'static str, value: Option<f64>| match value {
        Some(value) if !(0.0..=1.0).contains(&value) => {
            Err(SettingsError::Probability { flag, value })
        }
        _ => Ok(value),
    };
    let review_below = probability("review-below", job.review_below)?;
    let null_below = probability("null-below", job.null_below)?;
    Ok(JobSettings {
        out,
        model: model_dir,
        task,
        schema_path: job.schema,
        budget: budget.budget(),
        dtype: model.dtype(),
        eps,
        session: model.session().for_overlapping_stages(),
        workers: pages.workers()?.unwrap_or_else(default_workers),
        formats,
        max_new_tokens,
        batch_size: job
            .batch_size
            .unwrap_or(crate::run::DEFAULT_BATCH_SIZE)
            .max(1),
        batch_tokens: job
            .batch_tokens
            .unwrap_or(crate::run::DEFAULT_BATCH_TOKENS)
            .max(1),
        vision_patches,
        text_anchor: !job.no_text_anchor.unwrap_or(false),
        skip_blank_pages: job.skip_blank_pages.unwrap_or(true),
        sampling: generation.seed,
        password,
        page_timeout: pages.page_timeout()?,
        max_pixels: pages.max_pixels(),
        mode,
        allow_partial: job.allow_partial.unwrap_or(false),
        retries: job.retries.unwrap_or(2),
        shard: match job.shard {
            Some(shard) => Some(shard),
            None => Shard::from_env(|k| std::env::var(k).ok()).map_err(SettingsError::ShardEnv)?,
        },
        max_pages_per_prompt,
        review_below,
        null_below,
        thinking: job.thinking.unwrap_or(false),
        ignore_eos: generation.ignore_eos.unwrap_or(false),
    })
}

/// Refuses `formats` of which one has no place for `task`'s result (`--task ocr --format csv`):
/// before any document is read, rather than marking documents done with nothing written.
fn check_formats_hold_result(task: &Task, formats: &[Format]) -> Result<(), SettingsError> {
    let (holds, result): (fn(Format) -> bool, _) = match task {
        Task::Extract { .. } => (Format::holds_data, "a JSON object per document"),
        Task::Ocr => (Format::holds_text, "Markdown text"),
        Task::Prompt { .. } => (Format::holds_text, "free text"),
    };
    let dropping: Vec<&str> = formats
        .iter()
        .filter(|f| !holds(**f))
        .map(|f| f.name())
        .collect();
    if dropping.is_empty() {
        return Ok(());
    }
    let fits: Vec<&str> = Format::ALL
        .into_iter()
        .filter(|f| holds(*f))
        .map(Format::name)
        .collect();
    Err(SettingsError::FormatDropsResult {
        formats: dropping.join(","),
        task: task.name(),
        result,
        fits: fits.join(", "),
    })
}

/// `--vision-patches` when not given: small runs when the CPU is the first provider asked for,
/// large ones on a device.
pub fn default_vision_patches(eps: &EpConfig) -> usize {
    match eps.providers.first() {
        None | Some(Provider::Cpu) => crate::run::DEFAULT_VISION_PATCHES_CPU,
        Some(_) => crate::run::DEFAULT_VISION_PATCHES,
    }
}

/// PDF workers of a job when not given: one per core, at most 4.
pub fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get().min(4))
        .unwrap_or(2)
}

impl BudgetOptions {
    /// The budget given, else [`DEFAULT_BUDGET`].
    pub fn budget(&self) -> Budget {
        self.budget
            .unwrap_or_else(|| Budget::try_from(DEFAULT_BUDGET).expect("the default is a budget"))
    }
}

impl ModelOptions {
    /// The weights variant given, else fp32.
    pub fn dtype(&self) -> DtypeSelection {
        self.dtype.unwrap_or_default()
    }

    /// The providers given (else cpu); which of them can run is found out when the runtime is
    /// loaded (`quire_onnx::runtime::environment_for`).
    pub fn eps(&self) -> Result<EpConfig, SettingsError> {
        Ok(EpConfig {
            providers: self
                .ep
                .as_ref()
                .map_or_else(|| EpConfig::default().providers, |p| p.0.clone()),
            fallback: self.ep_fallback.unwrap_or(false),
            device_id: self.device_id.unwrap_or(0).into(),
        })
    }

    /// How the sessions run: `--threads`, the rest as measured best
    /// ([`SessionSettings::default`]).
    pub fn session(&self) -> SessionSettings {
        SessionSettings {
            intra_threads: self.threads.unwrap_or(0),
            ..SessionSettings::default()
        }
    }
}

impl PageOptions {
    /// The password given, or the first line of the password file.
    pub fn password(&self) -> Result<Option<Password>, SettingsError> {
        match (&self.password, &self.password_file) {
            (Some(_), Some(_)) => Err(SettingsError::PasswordConflict),
            (Some(p), None) => Ok(Some(p.clone())),
            (None, Some(file)) => {
                let text = std::fs::read_to_string(file).map_err(|source| {
                    SettingsError::ReadPassword {
                        path: file.clone(),
                        source,
                    }
                })?;
                Ok(Some(Password(
                    text.lines().next().unwrap_or("").to_string(),
                )))
            }
            (None, None) => Ok(None),
        }
    }

    /// The page timeout given (a positive number of seconds), else 60 s.
    pub fn page_timeout(&self) -> Result<Duration, SettingsError> {
        let secs = self.page_timeout.unwrap_or(60.0);
        if !(secs > 0.0 && secs.is_finite()) {
            return Err(SettingsError::PageTimeout);
        }
        Ok(Duration::from_secs_f64(secs))
    }

    /// The workers given (at least 1), or `None` for the command's default.
    pub fn workers(&self) -> Result<Option<usize>, SettingsError> {
        match self.workers {
            Some(0) => Err(SettingsError::Workers),
            n => Ok(n),
        }
    }

    /// The image decoder's pixel limit given, else [`ImageLimits`]' default.
    pub fn max_pixels(&self) -> u64 {
        self.max_pixels
            .unwrap_or_else(|| ImageLimits::default().max_pixels)
    }
}
