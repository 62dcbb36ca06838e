//! The settings of `quire run`, `watch`, `render` and `generate`, defined once ([`groups`]),
//! from three sources: command-line flags, `QUIRE_*` environment variables (flags win) and the
//! TOML file given with `--config` (keys as the flags with underscores; it fills what neither
//! gave), then defaults.
//!
//! * [`groups`]: the options, in groups that commands flatten ([`commands`]); clap and serde
//!   from one definition, so a setting added to a group is a flag, a variable and a key.
//! * [`values`]: the typed values (`--ep`, `--format`, `--mode`, ...), each parsed once.
//! * [`config`]: the config file merge, generic over the settings.
//! * [`resolve()`]: settings as given → checked settings with defaults ([`JobSettings`], ...).
//! * [`open_job`]: a job's settings → a [`crate::job::Job`].

pub mod commands;
pub mod config;
mod error;
pub mod groups;
mod open;
mod resolve;
pub mod values;

pub use commands::{
    GenerateArgs, GenerateSettingsArgs, JobSettingsArgs, RenderArgs, RenderSettingsArgs, RunArgs,
    WatchArgs, WatchSettingsArgs,
};
pub use error::SettingsError;
pub use open::{model_id, open_job, OpenJobError, OpenedJob, SchemaBounds};
pub use resolve::{
    default_workers, resolve, resolve_generate, resolve_render, resolve_watch, GenerateSettings,
    JobSettings, RenderSettings, WatchSettings,
};

/// Visual tokens per page when no budget is given, for every command.
pub const DEFAULT_BUDGET: u32 = 560;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::task::Task;
    use clap::Parser;
    use quire_exporters::formats::Format;
    use std::path::PathBuf;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: RunArgs,
    }

    fn parse(args: &[&str]) -> JobSettingsArgs {
        Cli::try_parse_from(std::iter::once("quire").chain(args.iter().copied()))
            .unwrap()
            .args
            .settings
    }

    #[test]
    fn flags_win_over_the_config_file_which_fills_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("quire.toml");
        std::fs::write(
            &config,
            "out = \"/data/out\"\nmodel = \"/models/g\"\nbudget = 1120\nformat = \"json,md\"\n\
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
        assert_eq!(r.formats, vec![Format::Json, Format::Markdown]);
        assert_eq!(r.mode, 0o640);
        assert_eq!(r.retries, 5);
        assert!(matches!(r.task, Task::Ocr));
    }

    #[test]
    fn vision_runs_and_threads_follow_the_provider_and_the_flags() {
        let base = ["in", "--out", "o", "--model", "m"];
        let with = |extra: &[&str]| {
            let args: Vec<&str> = base.iter().chain(extra).copied().collect();
            resolve(parse(&args)).unwrap()
        };
        let cpu = with(&[]);
        assert_eq!(cpu.vision_patches, crate::run::DEFAULT_VISION_PATCHES_CPU);
        let session = quire_onnx::session::SessionSettings::default();
        assert_eq!(cpu.session, session.for_overlapping_stages());
        assert!(!cpu.session.spinning);
        let gpu = with(&["--ep", "cuda,cpu"]);
        assert_eq!(gpu.vision_patches, crate::run::DEFAULT_VISION_PATCHES);
        let given = with(&["--ep", "cuda", "--vision-patches", "630", "--threads", "3"]);
        assert_eq!(given.vision_patches, 630);
        assert_eq!(given.session.intra_threads, 3);
        assert!(given.session.cpu_arena);
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
        // A typed value: refused when parsed, from the command line or the config file.
        let err =
            Cli::try_parse_from(["quire", "in", "--out", "o", "--model", "m", "--mode", "999"])
                .err()
                .unwrap();
        assert!(err.to_string().contains("octal"));
        std::fs::write(&config, "mode = \"999\"\n").unwrap();
        let err = resolve(parse(&[
            "in",
            "--out",
            "o",
            "--model",
            "m",
            "--config",
            config.to_str().unwrap(),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("octal"));
        assert!(Cli::try_parse_from(["quire", "in", "--budget", "100"]).is_err());
    }
}
