//! The command lines of the commands that take settings: each flattens the groups it uses.
//! `*SettingsArgs` are the settings proper (what the config file can hold); `*Args` add the
//! positional arguments.

use super::groups::{
    BudgetOptions, ConfigOption, GenerateOptions, GenerationOptions, JobOptions, ModelOptions,
    OutputOptions, PageOptions, WatchOptions,
};
use clap::Args;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Every setting of a job: `quire run`, `quire watch`.
#[derive(Args, Serialize, Deserialize, Debug, Clone, Default)]
pub struct JobSettingsArgs {
    #[command(flatten)]
    #[serde(skip)]
    pub config: ConfigOption,
    #[command(flatten)]
    #[serde(flatten)]
    pub output: OutputOptions,
    #[command(flatten)]
    #[serde(flatten)]
    pub model: ModelOptions,
    #[command(flatten)]
    #[serde(flatten)]
    pub job: JobOptions,
    #[command(flatten)]
    #[serde(flatten)]
    pub budget: BudgetOptions,
    #[command(flatten)]
    #[serde(flatten)]
    pub generation: GenerationOptions,
    #[command(flatten)]
    #[serde(flatten)]
    pub pages: PageOptions,
}

/// `quire watch`: a job's settings and the watch's own.
#[derive(Args, Serialize, Deserialize, Debug, Clone, Default)]
pub struct WatchSettingsArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub job: JobSettingsArgs,
    #[command(flatten)]
    #[serde(flatten)]
    pub watch: WatchOptions,
}

/// `quire render`.
#[derive(Args, Serialize, Deserialize, Debug, Clone, Default)]
pub struct RenderSettingsArgs {
    #[command(flatten)]
    #[serde(skip)]
    pub config: ConfigOption,
    #[command(flatten)]
    #[serde(flatten)]
    pub output: OutputOptions,
    #[command(flatten)]
    #[serde(flatten)]
    pub budget: BudgetOptions,
    #[command(flatten)]
    #[serde(flatten)]
    pub pages: PageOptions,
}

/// `quire generate`.
#[derive(Args, Serialize, Deserialize, Debug, Clone, Default)]
pub struct GenerateSettingsArgs {
    #[command(flatten)]
    #[serde(skip)]
    pub config: ConfigOption,
    #[command(flatten)]
    #[serde(flatten)]
    pub model: ModelOptions,
    #[command(flatten)]
    #[serde(flatten)]
    pub generate: GenerateOptions,
    #[command(flatten)]
    #[serde(flatten)]
    pub budget: BudgetOptions,
    #[command(flatten)]
    #[serde(flatten)]
    pub generation: GenerationOptions,
}

/// `quire run INPUT...`
#[derive(Args, Debug, Clone, Default)]
pub struct RunArgs {
    /// Files and folders to process (folders are walked recursively).
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    #[command(flatten)]
    pub settings: JobSettingsArgs,
}

/// `quire watch DIR`
#[derive(Args, Debug, Clone, Default)]
pub struct WatchArgs {
    /// Folder to watch (with its subfolders).
    pub dir: PathBuf,
    #[command(flatten)]
    pub settings: WatchSettingsArgs,
}

/// `quire render INPUT...`
#[derive(Args, Debug, Clone, Default)]
pub struct RenderArgs {
    /// PDF and image files, and folders (walked recursively).
    #[arg(required = true, value_name = "INPUT")]
    pub inputs: Vec<PathBuf>,
    #[command(flatten)]
    pub settings: RenderSettingsArgs,
}

/// `quire generate`
#[derive(Args, Debug, Clone, Default)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub settings: GenerateSettingsArgs,
}
