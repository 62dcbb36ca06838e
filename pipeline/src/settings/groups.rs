//! The settings, defined once: small groups of options that commands flatten. Each field is a
//! flag (`--max-new-tokens`), a `QUIRE_*` environment variable (`QUIRE_MAX_NEW_TOKENS`) and a
//! key of the config file (`max_new_tokens`); every field is optional, its default applied when
//! the settings are resolved ([`super::resolve`]).
//!
//! Adding a setting: a field in a group (`Option<T>` of a type with `FromStr`; types without
//! serde of their own take `#[serde(default, with = "text")]`), an [`Example`] in [`EXAMPLES`],
//! and its use where the group is resolved. The settings test then sets it through each source.

use super::values::{text, Formats, Mode, Password, Providers, TaskName};
use crate::shard::Shard;
use clap::builder::BoolishValueParser;
use clap::Args;
use quire_onnx::gemma4::{Budget, DtypeSelection};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The TOML file of settings (`--config`); not itself a setting of the file.
#[derive(Args, Debug, Clone, Default)]
pub struct ConfigOption {
    /// TOML file with any of these settings (keys as the flags, with underscores). Flags and
    /// environment variables win over it.
    #[arg(long, env = "QUIRE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Where outputs go (`run`, `watch`, `render`).
#[derive(Args, Serialize, Deserialize, Debug, Clone, Default)]
pub struct OutputOptions {
    /// Output folder; the input tree is mirrored under it.
    #[arg(long, env = "QUIRE_OUT", value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// The visual token budget (`run`, `watch`, `render`, `generate`).
#[derive(Args, Serialize, Deserialize, Debug, Clone, Default)]
pub struct BudgetOptions {
    /// Visual tokens per page or image: 70, 140, 280, 560 (default) or 1120.
    #[arg(long, env = "QUIRE_BUDGET", value_name = "N")]
    pub budget: Option<Budget>,
}

/// Rendering pages: PDFium workers and image decoding (`run`, `watch`, `render`).
#[derive(Args, Serialize, Deserialize, Debug, Clone, Default)]
pub struct PageOptions {
    /// PDF rendering worker processes (default: one per CPU core, at most 4 for run and watch).
    #[arg(long, env = "QUIRE_WORKERS", value_name = "N")]
    pub workers: Option<usize>,
    /// Password of encrypted PDFs (on the command line it is visible to other local users in
    /// the process list: prefer --password-file or QUIRE_PASSWORD).
    #[arg(
        long,
        env = "QUIRE_PASSWORD",
        hide_env_values = true,
        conflicts_with = "password_file"
    )]
    #[serde(default, with = "text")]
    pub password: Option<Password>,
    /// File whose first line is the password of encrypted PDFs.
    #[arg(long, env = "QUIRE_PASSWORD_FILE", value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Seconds a PDF page may take to render before its worker is killed and the page fails
    /// (default 60).
    #[arg(long, env = "QUIRE_PAGE_TIMEOUT", value_name = "SECS")]
    pub page_timeout: Option<f64>,
    /// Largest image (width × height, in pixels) decoded; larger ones fail (default
    /// 100000000).
    #[arg(long, env = "QUIRE_MAX_PIXELS", value_name = "PIXELS")]
    pub max_pixels: Option<u64>,
}

/// The model and how it runs (`run`, `watch`, `generate`).
#[derive(Args, Serialize, Deserialize, Debug, Clone, Default)]
pub struct ModelOptions {
    /// Model directory (the Gemma 4 ONNX export layout: config.json, tokenizer.json,
    /// chat_template.jinja, onnx/*.onnx).
    #[arg(long, env = "QUIRE_MODEL", value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// Model weights variant: fp32 (default), fp16, q4, q4f16, q8; per graph: `q4,vision=fp32`.
    #[arg(long, env = "QUIRE_DTYPE")]
    #[serde(default, with = "text")]
    pub dtype: Option<DtypeSelection>,
    /// Execution providers in order of preference, e.g. `cuda,cpu`: cpu (default), cuda,
    /// tensorrt, coreml, directml, openvino.
    #[arg(long, env = "QUIRE_EP", value_name = "LIST")]
    #[serde(default, with = "text")]
    pub ep: Option<Providers>,
    /// Continue with the next provider when one cannot run here, with a warning (default: an
    /// error naming what is missing).
    #[arg(
        long,
        env = "QUIRE_EP_FALLBACK",
        num_args = 0..=1,
        default_missing_value = "true",
        value_parser = BoolishValueParser::new(),
        value_name = "BOOL"
    )]
    pub ep_fallback: Option<bool>,
    /// GPU ordinal for cuda, tensorrt and directml, where the decoder's KV cache is kept
    /// (default 0).
    #[arg(long, env = "QUIRE_DEVICE_ID", value_name = "N")]
    pub device_id: Option<u16>,
    /// Threads each ONNX Runtime session computes with (default: one per physical core).
    #[arg(long, env = "QUIRE_THREADS", value_name = "N")]
    pub threads: Option<usize>,
}

/// Generation (`run`, `watch`, `generate`).
#[derive(Args, Serialize, Deserialize, Debug, Clone, Default)]
pub struct GenerationOptions {
    /// Most tokens generated per page (ocr, prompt) or per document (extract) (default 512;
    /// `generate`: 256).
    #[arg(long, env = "QUIRE_MAX_NEW_TOKENS", value_name = "N")]
    pub max_new_tokens: Option<usize>,
    /// Sample with this seed (temperature/top-k/top-p from the model) instead of greedy.
    #[arg(long, env = "QUIRE_SEED", value_name = "N")]
    pub seed: Option<u64>,
    /// Do not stop at the model's stop ids: every prompt generates --max-new-tokens tokens
    /// (benchmarks, parity checks; an extraction still ends with its JSON).
    #[arg(
        long,
        env = "QUIRE_IGNORE_EOS",
        num_args = 0..=1,
        default_missing_value = "true",
        value_parser = BoolishValueParser::new(),
        value_name = "BOOL"
    )]
    pub ignore_eos: Option<bool>,
}

/// The job: task, outputs, batching, state (`run`, `watch`).
#[derive(Args, Serialize, Deserialize, Debug, Clone, Default)]
pub struct JobOptions {
    /// ocr (Markdown per page), extract (JSON per document, needs --schema) or prompt
    /// (default: extract with --schema, prompt with --prompt, else ocr).
    #[arg(long, env = "QUIRE_TASK")]
    #[serde(default, with = "text")]
    pub task: Option<TaskName>,
    /// JSON Schema of the extraction (`--task extract`).
    #[arg(long, env = "QUIRE_SCHEMA", value_name = "FILE")]
    pub schema: Option<PathBuf>,
    /// Custom instruction (`--task prompt`, implied when given).
    #[arg(long, env = "QUIRE_PROMPT")]
    pub prompt: Option<String>,
    /// Output formats, comma-separated: json, jsonl, csv, md (default json,jsonl, and md for
    /// ocr and prompt).
    #[arg(long, env = "QUIRE_FORMAT", value_name = "LIST")]
    #[serde(default, with = "text")]
    pub format: Option<Formats>,
    /// Most sequences decoded together (default 8).
    #[arg(long, env = "QUIRE_BATCH_SIZE", value_name = "N")]
    pub batch_size: Option<usize>,
    /// Token budget of the decoder batch (rows × (cache + new tokens); default 16384).
    #[arg(long, env = "QUIRE_BATCH_TOKENS", value_name = "N")]
    pub batch_tokens: Option<usize>,
    /// Patch budget of one vision encoder run (default: 2520 on the CPU, one page at budget 280;
    /// 20160 with a GPU provider first, 4 pages at budget 560).
    #[arg(long, env = "QUIRE_VISION_PATCHES", value_name = "N")]
    pub vision_patches: Option<usize>,
    /// Do not give the PDF text layer to the model.
    #[arg(
        long,
        env = "QUIRE_NO_TEXT_ANCHOR",
        num_args = 0..=1,
        default_missing_value = "true",
        value_parser = BoolishValueParser::new(),
        value_name = "BOOL"
    )]
    pub no_text_anchor: Option<bool>,
    /// `ocr`: skip blank pages (nothing on the page, no text layer) with a page warning
    /// instead of transcribing them (default true).
    #[arg(
        long,
        env = "QUIRE_SKIP_BLANK_PAGES",
        num_args = 0..=1,
        default_missing_value = "true",
        value_parser = BoolishValueParser::new(),
        value_name = "BOOL"
    )]
    pub skip_blank_pages: Option<bool>,
    /// Permissions of output files, octal (default 600).
    #[arg(long, env = "QUIRE_MODE", value_name = "OCTAL")]
    #[serde(default, with = "text")]
    pub mode: Option<Mode>,
    /// Exit 0 even when some documents failed (their error records are still written).
    #[arg(
        long,
        env = "QUIRE_ALLOW_PARTIAL",
        num_args = 0..=1,
        default_missing_value = "true",
        value_parser = BoolishValueParser::new(),
        value_name = "BOOL"
    )]
    pub allow_partial: Option<bool>,
    /// Process only shard I of N (0-based, by content hash), e.g. `0/4`. Read from
    /// JOB_COMPLETION_INDEX/JOB_COMPLETIONS or SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT when
    /// not given.
    #[arg(long, env = "QUIRE_SHARD", value_name = "I/N")]
    #[serde(default, with = "text")]
    pub shard: Option<Shard>,
    /// Attempts after a failure, across reruns on the same --out (default 2).
    #[arg(long, env = "QUIRE_RETRIES", value_name = "N")]
    pub retries: Option<u32>,
    /// Most pages in one extraction prompt; longer documents are extracted page by page and
    /// the pages' results merged (default 8).
    #[arg(long, env = "QUIRE_MAX_PAGES_PER_PROMPT", value_name = "N")]
    pub max_pages_per_prompt: Option<usize>,
    /// Values whose confidence is below P (0–1) are listed in review.jsonl and counted in the
    /// summary and `quire status`.
    #[arg(long, env = "QUIRE_REVIEW_BELOW", value_name = "P")]
    pub review_below: Option<f64>,
    /// Values whose confidence is below P (0–1) become null where the schema allows null
    /// (abstain rather than invent); each is named in the record's warnings.
    #[arg(long, env = "QUIRE_NULL_BELOW", value_name = "P")]
    pub null_below: Option<f64>,
    /// Let the model think in its thought channel before answering (off by default; needs a
    /// chat template with a thinking mode). The thought never reaches the outputs; for extract
    /// it may take as many tokens again as --max-new-tokens.
    #[arg(
        long,
        env = "QUIRE_THINKING",
        num_args = 0..=1,
        default_missing_value = "true",
        value_parser = BoolishValueParser::new(),
        value_name = "BOOL"
    )]
    pub thinking: Option<bool>,
}

/// The folder watch's own settings (`watch`).
#[derive(Args, Serialize, Deserialize, Debug, Clone, Default)]
pub struct WatchOptions {
    /// Seconds a file's size and modification time must stay unchanged before it is taken
    /// (default 2). A file renamed into place is taken at once.
    #[arg(long, env = "QUIRE_SETTLE", value_name = "SECS")]
    pub settle: Option<f64>,
    /// Seconds between full rescans of the folder, a safety net for missed notifications
    /// (default 30).
    #[arg(long, env = "QUIRE_RESCAN", value_name = "SECS")]
    pub rescan: Option<f64>,
    /// Move each source into DIR/done/ or DIR/failed/ once it is processed.
    #[arg(
        long = "move",
        env = "QUIRE_MOVE",
        num_args = 0..=1,
        default_missing_value = "true",
        value_parser = BoolishValueParser::new(),
        value_name = "BOOL"
    )]
    #[serde(rename = "move")]
    pub move_sources: Option<bool>,
    /// Prometheus textfile to keep up to date (for node_exporter's textfile collector; name it
    /// `*.prom`).
    #[arg(long, env = "QUIRE_METRICS", value_name = "FILE")]
    pub metrics: Option<PathBuf>,
    /// Most documents taken into one batch (default 32).
    #[arg(long, env = "QUIRE_MAX_BATCH", value_name = "N")]
    pub max_batch: Option<usize>,
}

/// `quire generate`'s own settings.
#[derive(Args, Serialize, Deserialize, Debug, Clone, Default)]
pub struct GenerateOptions {
    /// Image file (PNG, JPEG, TIFF, WebP); repeat for several images, placed before the text.
    #[arg(long, env = "QUIRE_IMAGE", value_name = "FILE")]
    pub image: Option<Vec<PathBuf>>,
    /// The user prompt.
    #[arg(long, env = "QUIRE_PROMPT")]
    pub prompt: Option<String>,
    /// Greedy decoding (the default unless --seed is given).
    #[arg(
        long,
        env = "QUIRE_GREEDY",
        conflicts_with = "seed",
        num_args = 0..=1,
        default_missing_value = "true",
        value_parser = BoolishValueParser::new(),
        value_name = "BOOL"
    )]
    pub greedy: Option<bool>,
    /// Sampling temperature (with --seed; default: generation_config.json's).
    #[arg(long, env = "QUIRE_TEMPERATURE", requires = "seed")]
    pub temperature: Option<f32>,
    /// Top-k of sampling (with --seed; default: generation_config.json's).
    #[arg(long, env = "QUIRE_TOP_K", requires = "seed")]
    pub top_k: Option<usize>,
    /// Top-p of sampling (with --seed; default: generation_config.json's).
    #[arg(long, env = "QUIRE_TOP_P", requires = "seed")]
    pub top_p: Option<f32>,
    /// Turn on the thinking channel (its text is hidden from the output).
    #[arg(
        long,
        env = "QUIRE_THINKING",
        num_args = 0..=1,
        default_missing_value = "true",
        value_parser = BoolishValueParser::new(),
        value_name = "BOOL"
    )]
    pub thinking: Option<bool>,
    /// Print one JSON object: input_ids, generated_ids, text, timings, providers.
    #[arg(
        long,
        env = "QUIRE_JSON",
        num_args = 0..=1,
        default_missing_value = "true",
        value_parser = BoolishValueParser::new(),
        value_name = "BOOL"
    )]
    pub json: Option<bool>,
}

/// An example value of a setting, unlike its default: the settings test gives it through the
/// flag, the environment variable and the config file, and checks that all three reach the
/// resolved settings the same way. Every option needs one (the test fails otherwise).
#[derive(Debug, Clone, Copy)]
pub struct Example {
    /// The config file key (the long flag with underscores).
    pub key: &'static str,
    /// The value as given on the command line; `{dir}` stands for a folder holding
    /// [`EXAMPLE_FILES`].
    pub value: &'static str,
    /// Other settings this value needs (given as flags in every case).
    pub with: &'static [(&'static str, &'static str)],
}

const fn example(key: &'static str, value: &'static str) -> Example {
    Example {
        key,
        value,
        with: &[],
    }
}

/// One example per option of every group.
pub const EXAMPLES: &[Example] = &[
    // OutputOptions
    example("out", "{dir}/out"),
    // BudgetOptions
    example("budget", "140"),
    // PageOptions
    example("workers", "3"),
    example("password", "secret"),
    example("password_file", "{dir}/password.txt"),
    example("page_timeout", "5"),
    example("max_pixels", "1000000"),
    // ModelOptions
    example("model", "{dir}/model"),
    example("dtype", "q4,vision=fp32"),
    // cpu twice: the one provider every build has, unlike the default list.
    example("ep", "cpu,cpu"),
    example("ep_fallback", "true"),
    example("device_id", "1"),
    example("threads", "8"),
    // GenerationOptions
    example("max_new_tokens", "99"),
    example("seed", "7"),
    example("ignore_eos", "true"),
    // JobOptions
    Example {
        key: "task",
        value: "ocr",
        // A prompt alone implies `--task prompt`: the task overrides that.
        with: &[("prompt", "Describe the page.")],
    },
    example("schema", "{dir}/schema.json"),
    example("prompt", "List the totals."),
    // Not jsonl or csv, which `watch` refuses.
    example("format", "md,json"),
    example("batch_size", "2"),
    example("batch_tokens", "4096"),
    example("vision_patches", "5040"),
    example("no_text_anchor", "true"),
    example("skip_blank_pages", "false"),
    example("mode", "640"),
    example("allow_partial", "true"),
    example("shard", "1/4"),
    example("retries", "5"),
    example("max_pages_per_prompt", "2"),
    example("review_below", "0.8"),
    example("null_below", "0.5"),
    // WatchOptions
    example("settle", "0.5"),
    example("rescan", "5"),
    example("move", "true"),
    example("metrics", "{dir}/quire.prom"),
    example("max_batch", "8"),
    // GenerateOptions (`prompt` above serves it too)
    example("image", "{dir}/page.png"),
    example("greedy", "true"),
    Example {
        key: "temperature",
        value: "0.5",
        with: &[("seed", "7")],
    },
    Example {
        key: "top_k",
        value: "40",
        with: &[("seed", "7")],
    },
    Example {
        key: "top_p",
        value: "0.9",
        with: &[("seed", "7")],
    },
    example("thinking", "true"),
    example("json", "true"),
];

/// Files the examples name, as (file name, contents).
pub const EXAMPLE_FILES: &[(&str, &str)] = &[
    ("password.txt", "secret\nnot the password\n"),
    (
        "schema.json",
        r#"{"type": "object", "properties": {"total": {"type": "string"}}}"#,
    ),
];

/// The example of the option with config key `key`.
pub fn example_of(key: &str) -> Option<&'static Example> {
    EXAMPLES.iter().find(|e| e.key == key)
}
