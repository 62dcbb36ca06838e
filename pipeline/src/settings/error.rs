use quire_onnx::ep::EpError;
use std::path::PathBuf;

/// Settings that cannot make a job: what is wrong and what to do.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("reading config file {}", path.display())]
    ReadConfig {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {}: {message}", path.display())]
    ConfigSyntax { path: PathBuf, message: String },
    #[error(
        "config file {}: unknown setting `{key}` (the settings are the flags' names with \
         underscores, e.g. `max_new_tokens`)",
        path.display()
    )]
    UnknownKey { key: String, path: PathBuf },
    #[error("config file {}: `{key}`: {message}", path.display())]
    ConfigValue {
        key: String,
        path: PathBuf,
        message: String,
    },
    #[error("config file {}: {message}", path.display())]
    ConfigMerge { path: PathBuf, message: String },
    /// A setting without default that no source gave (its config file key).
    #[error("--{flag} is required (or `{key}` in the config file)", flag = .0.replace('_', "-"), key = .0)]
    Required(&'static str),
    #[error("--task extract needs --schema FILE")]
    ExtractNeedsSchema,
    #[error("--task prompt needs --prompt TEXT")]
    PromptNeedsText,
    /// Formats that have no place for what the task produces: the documents would be marked
    /// done with their result written nowhere.
    #[error(
        "--format {formats} cannot hold what --task {task} produces ({result}), which would be \
         lost; formats for {task}: {fits}"
    )]
    FormatDropsResult {
        formats: String,
        task: &'static str,
        result: &'static str,
        fits: String,
    },
    #[error("reading schema {}", path.display())]
    ReadSchema {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("schema {} is not valid JSON", path.display())]
    SchemaJson {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("reading the password file {}", path.display())]
    ReadPassword {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "--password and --password-file (or `password` and `password_file`) conflict: give one"
    )]
    PasswordConflict,
    #[error(transparent)]
    Ep(#[from] EpError),
    #[error("--max-new-tokens must be at least 1")]
    MaxNewTokens,
    #[error("--max-pages-per-prompt must be at least 1")]
    MaxPagesPerPrompt,
    #[error("--{flag} must be a probability between 0 and 1, not {value}")]
    Probability { flag: &'static str, value: f64 },
    #[error("--workers must be at least 1")]
    Workers,
    #[error("--page-timeout must be a positive number of seconds")]
    PageTimeout,
    /// The scheduler's shard variables (`JOB_COMPLETION_INDEX`, `SLURM_ARRAY_TASK_ID`, ...).
    #[error(transparent)]
    ShardEnv(#[from] crate::shard::ShardError),
    #[error(
        "quire watch writes one output per document (--format json,md); results.jsonl \
         and results.csv are the summaries of a `quire run`"
    )]
    WatchFormats,
    #[error("--settle must be at least 0 and --rescan more than 0 seconds")]
    WatchIntervals,
}
