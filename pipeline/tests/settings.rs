//! The settings, from their one definition: every option of `quire run` (and of `watch`,
//! `render`, `generate`), read from the clap definition, is given its example value through its
//! flag, through its `QUIRE_*` environment variable and through a config file key; the three
//! resolved settings must be equal and differ from the defaults. A test binary of its own: it
//! sets environment variables (every test here holds [`ENV`]).

use clap::Parser;
use quire_pipeline::settings::groups::{example_of, EXAMPLE_FILES};
use quire_pipeline::settings::{
    self, config, GenerateArgs, GenerateSettingsArgs, JobSettingsArgs, RenderArgs,
    RenderSettingsArgs, RunArgs, SettingsError, WatchArgs, WatchSettingsArgs,
};
use serde::Serialize;
use std::fmt::Debug;
use std::path::Path;
use std::sync::Mutex;

static ENV: Mutex<()> = Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    ENV.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Parser)]
struct Run {
    #[command(flatten)]
    args: RunArgs,
}

#[derive(Parser)]
struct Watch {
    #[command(flatten)]
    args: WatchArgs,
}

#[derive(Parser)]
struct Render {
    #[command(flatten)]
    args: RenderArgs,
}

#[derive(Parser)]
struct Generate {
    #[command(flatten)]
    args: GenerateArgs,
}

/// A command's settings, as the test needs them.
trait Command: Parser {
    /// What `settings::resolve*` makes of it.
    type Resolved: PartialEq + Debug;
    /// The settings proper (what a config file holds).
    type Settings: Serialize + Default;
    fn settings(&self) -> &Self::Settings;
    fn resolve(self) -> Result<Self::Resolved, SettingsError>;
}

impl Command for Run {
    type Resolved = settings::JobSettings;
    type Settings = JobSettingsArgs;
    fn settings(&self) -> &JobSettingsArgs {
        &self.args.settings
    }
    fn resolve(self) -> Result<Self::Resolved, SettingsError> {
        settings::resolve(self.args.settings)
    }
}

impl Command for Watch {
    type Resolved = settings::WatchSettings;
    type Settings = WatchSettingsArgs;
    fn settings(&self) -> &WatchSettingsArgs {
        &self.args.settings
    }
    fn resolve(self) -> Result<Self::Resolved, SettingsError> {
        settings::resolve_watch(self.args.settings)
    }
}

impl Command for Render {
    type Resolved = settings::RenderSettings;
    type Settings = RenderSettingsArgs;
    fn settings(&self) -> &RenderSettingsArgs {
        &self.args.settings
    }
    fn resolve(self) -> Result<Self::Resolved, SettingsError> {
        settings::resolve_render(self.args.settings)
    }
}

impl Command for Generate {
    type Resolved = settings::GenerateSettings;
    type Settings = GenerateSettingsArgs;
    fn settings(&self) -> &GenerateSettingsArgs {
        &self.args.settings
    }
    fn resolve(self) -> Result<Self::Resolved, SettingsError> {
        settings::resolve_generate(self.args.settings)
    }
}

/// One option of a command, from the clap definition.
#[derive(Debug, Clone)]
struct Opt {
    long: String,
    env: String,
    /// The config file key.
    key: String,
}

/// Every option of `C` but the positional arguments, `--config` and help/version.
fn options<C: Command>() -> Vec<Opt> {
    C::command()
        .get_arguments()
        .filter(|a| !a.is_positional())
        .filter(|a| !matches!(a.get_id().as_str(), "config" | "help" | "version"))
        .map(|a| {
            let long = a
                .get_long()
                .unwrap_or_else(|| panic!("{} has no long flag", a.get_id()))
                .to_string();
            let env = a
                .get_env()
                .unwrap_or_else(|| panic!("--{long} has no environment variable"))
                .to_str()
                .unwrap()
                .to_string();
            Opt {
                key: long.replace('-', "_"),
                env,
                long,
            }
        })
        .collect()
}

/// Where the example files are, and how to fill in `{dir}`.
struct Examples {
    dir: tempfile::TempDir,
}

impl Examples {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        for (name, contents) in EXAMPLE_FILES {
            std::fs::write(dir.path().join(name), contents).unwrap();
        }
        Examples { dir }
    }

    fn value(&self, v: &str) -> String {
        v.replace("{dir}", self.dir.path().to_str().unwrap())
    }
}

/// Command line: the positional arguments, then `--flag value` for each pair.
fn command_line(positional: &[&str], flags: &[(String, String)]) -> Vec<String> {
    let mut line = vec!["quire".to_string()];
    line.extend(positional.iter().map(|p| p.to_string()));
    for (long, value) in flags {
        line.push(format!("--{long}"));
        line.push(value.clone());
    }
    line
}

fn parse<C: Command>(line: &[String]) -> C {
    C::try_parse_from(line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
}

fn resolve<C: Command>(what: &str, line: &[String]) -> C::Resolved {
    parse::<C>(line)
        .resolve()
        .unwrap_or_else(|e| panic!("{what}: {line:?}: {e}"))
}

/// Each option of `C` through each source: the same resolved settings, unlike the defaults.
/// `base`: settings every case needs, given as flags (but for the option under test).
fn every_option_through_every_source<C: Command>(positional: &[&str], base: &[(&str, &str)]) {
    let _env = lock();
    let options = options::<C>();
    for opt in &options {
        std::env::remove_var(&opt.env);
    }
    std::env::remove_var("QUIRE_CONFIG");
    let by_key = |key: &str| {
        options
            .iter()
            .find(|o| o.key == key)
            .unwrap_or_else(|| panic!("no option for key {key}"))
            .clone()
    };
    let examples = Examples::new();
    let mut missing = Vec::new();
    for opt in &options {
        // The environment variable and the key follow the flag.
        assert_eq!(
            opt.env,
            format!("QUIRE_{}", opt.key.to_uppercase()),
            "--{}",
            opt.long
        );
        let Some(example) = example_of(&opt.key) else {
            missing.push(format!("--{}", opt.long));
            continue;
        };
        let value = examples.value(example.value);
        // Base settings and what the example needs, as flags.
        let mut flags: Vec<(String, String)> = base
            .iter()
            .filter(|(k, _)| *k != opt.key)
            .chain(example.with)
            .map(|(k, v)| (by_key(k).long, examples.value(v)))
            .collect();
        let defaults = {
            let mut with_base = flags.clone();
            if let Some((k, v)) = base.iter().find(|(k, _)| *k == opt.key) {
                with_base.push((by_key(k).long, examples.value(v)));
            }
            resolve::<C>("defaults", &command_line(positional, &with_base))
        };

        // 1. The flag.
        let mut line = command_line(positional, &flags);
        line.extend([format!("--{}", opt.long), value.clone()]);
        let from_flag = resolve::<C>("flag", &line);
        // The config file's value: what the flag's value is in the settings.
        let serialized = serde_json::to_value(parse::<C>(&line).settings()).unwrap();
        let file_value: toml::Value = serde_json::from_value(serialized[&opt.key].clone()).unwrap();

        // 2. The environment variable.
        std::env::set_var(&opt.env, &value);
        let from_env = resolve::<C>("environment", &command_line(positional, &flags));
        std::env::remove_var(&opt.env);

        // 3. The config file.
        let file = examples.dir.path().join(format!("{}.toml", opt.key));
        let table = toml::Table::from_iter([(opt.key.clone(), file_value)]);
        std::fs::write(&file, toml::to_string(&table).unwrap()).unwrap();
        flags.push(("config".into(), file.to_str().unwrap().into()));
        let from_file = resolve::<C>("config file", &command_line(positional, &flags));

        assert_eq!(from_flag, from_env, "--{} and ${}", opt.long, opt.env);
        assert_eq!(from_flag, from_file, "--{} and `{}`", opt.long, opt.key);
        assert_ne!(
            from_flag, defaults,
            "--{} {value} changes nothing",
            opt.long
        );
    }
    assert!(
        missing.is_empty(),
        "no example value for {missing:?}: add one to quire_pipeline::settings::groups::EXAMPLES"
    );
    // And the config file knows no key that is not an option.
    let mut keys = config::keys::<C::Settings>();
    let mut option_keys: Vec<String> = options.iter().map(|o| o.key.clone()).collect();
    keys.sort();
    option_keys.sort();
    assert_eq!(keys, option_keys);
}

#[test]
fn every_option_of_run_through_every_source() {
    every_option_through_every_source::<Run>(
        &["in"],
        &[("out", "/base/out"), ("model", "/base/model")],
    );
}

#[test]
fn every_option_of_watch_through_every_source() {
    every_option_through_every_source::<Watch>(
        &["dir"],
        &[("out", "/base/out"), ("model", "/base/model")],
    );
}

#[test]
fn every_option_of_render_through_every_source() {
    every_option_through_every_source::<Render>(&["in"], &[("out", "/base/out")]);
}

#[test]
fn every_option_of_generate_through_every_source() {
    every_option_through_every_source::<Generate>(
        &[],
        &[("model", "/base/model"), ("prompt", "hi")],
    );
}

fn run_line(extra: &[&str]) -> Vec<String> {
    ["quire", "in", "--out", "o", "--model", "m"]
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn flags_win_over_the_environment_which_wins_over_the_file() {
    let _env = lock();
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "quire.toml",
        "budget = 1120\nmax_new_tokens = 99\nseed = 3\n",
    );
    std::env::set_var("QUIRE_BUDGET", "280");
    std::env::set_var("QUIRE_MAX_NEW_TOKENS", "77");
    let r = resolve::<Run>("", &run_line(&["--config", &config, "--budget", "140"]));
    std::env::remove_var("QUIRE_BUDGET");
    std::env::remove_var("QUIRE_MAX_NEW_TOKENS");
    assert_eq!(r.budget.soft_tokens(), 140, "the flag wins");
    assert_eq!(r.max_new_tokens, 77, "the environment wins over the file");
    assert_eq!(r.sampling, Some(3), "the file fills the rest");
    // QUIRE_CONFIG names the file too.
    std::env::set_var("QUIRE_CONFIG", &config);
    let r = resolve::<Run>("", &run_line(&[]));
    std::env::remove_var("QUIRE_CONFIG");
    assert_eq!(r.budget.soft_tokens(), 1120);
}

#[test]
fn one_default_budget_for_every_command() {
    let _env = lock();
    let line = |args: &[&str]| -> Vec<String> { args.iter().map(|s| s.to_string()).collect() };
    let run = resolve::<Run>("", &run_line(&[]));
    let watch = resolve::<Watch>("", &line(&["quire", "d", "--out", "o", "--model", "m"]));
    let render = resolve::<Render>("", &line(&["quire", "in", "--out", "o"]));
    let generate = resolve::<Generate>("", &line(&["quire", "--model", "m", "--prompt", "p"]));
    for budget in [run.budget, watch.job.budget, render.budget, generate.budget] {
        assert_eq!(budget.soft_tokens(), settings::DEFAULT_BUDGET);
    }
}

#[test]
fn booleans_take_a_bare_flag_or_a_value() {
    let _env = lock();
    let bare = resolve::<Run>("", &run_line(&["--allow-partial", "--ep-fallback"]));
    let explicit = resolve::<Run>(
        "",
        &run_line(&["--allow-partial", "true", "--ep-fallback", "true"]),
    );
    let off = resolve::<Run>("", &run_line(&["--allow-partial", "false"]));
    assert!(bare.allow_partial && bare.eps.fallback);
    assert_eq!(bare, explicit);
    assert!(!off.allow_partial);
    let text_anchor = resolve::<Run>("", &run_line(&["--no-text-anchor"]));
    assert!(!text_anchor.text_anchor);
    let watch = resolve::<Watch>(
        "",
        &["quire", "d", "--move", "--out", "o", "--model", "m"].map(String::from),
    );
    assert!(watch.move_sources);
}

#[test]
fn the_password_is_the_first_line_of_its_file_and_the_two_conflict() {
    let _env = lock();
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "pw", "s3cret\r\nsecond line\n");
    let r = resolve::<Run>("", &run_line(&["--password-file", &file]));
    assert_eq!(r.password.unwrap().0, "s3cret");
    let r = resolve::<Render>(
        "",
        &["quire", "in", "--out", "o", "--password-file", &file].map(String::from),
    );
    assert_eq!(r.password.unwrap().0, "s3cret");
    // On the command line, clap refuses both.
    assert!(Run::try_parse_from(run_line(&["--password", "x", "--password-file", &file])).is_err());
    // Through the config file too.
    let config = write(dir.path(), "c.toml", &format!("password_file = {file:?}\n"));
    let err = parse::<Run>(&run_line(&["--password", "x", "--config", &config]))
        .resolve()
        .unwrap_err();
    assert!(err.to_string().contains("conflict"), "{err}");
    // The environment variable of the password.
    std::env::set_var("QUIRE_PASSWORD", "from-env");
    let r = resolve::<Run>("", &run_line(&[]));
    std::env::remove_var("QUIRE_PASSWORD");
    assert_eq!(r.password.unwrap().0, "from-env");
}

#[test]
fn config_file_errors_name_the_key_and_the_file() {
    let _env = lock();
    let dir = tempfile::tempdir().unwrap();
    for (text, key) in [
        ("budgett = 70\n", "budgett"),
        ("budget = 100\n", "budget"),
        ("mode = \"999\"\n", "mode"),
        ("ep = \"cpu,gpu\"\n", "ep"),
        ("workers = \"many\"\n", "workers"),
        ("config = \"other.toml\"\n", "config"),
    ] {
        let config = write(dir.path(), "bad.toml", text);
        let err = parse::<Run>(&run_line(&["--config", &config]))
            .resolve()
            .unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains(key) && message.contains(&config),
            "{text:?}: {message}"
        );
    }
    // Watch's own settings are in watch's file, not run's.
    let config = write(dir.path(), "watch.toml", "settle = 1.5\n");
    assert!(parse::<Run>(&run_line(&["--config", &config]))
        .resolve()
        .is_err());
    let watch = resolve::<Watch>(
        "",
        &[
            "quire", "d", "--out", "o", "--model", "m", "--config", &config,
        ]
        .map(String::from),
    );
    assert_eq!(watch.settle, 1.5);
}

#[test]
fn watch_refuses_summary_formats_from_any_source() {
    let _env = lock();
    let dir = tempfile::tempdir().unwrap();
    let watch = |extra: &[&str]| {
        let mut line: Vec<String> = ["quire", "d", "--out", "o", "--model", "m"]
            .map(String::from)
            .to_vec();
        line.extend(extra.iter().map(|s| s.to_string()));
        parse::<Watch>(&line).resolve()
    };
    let err = watch(&["--format", "json,csv"]).unwrap_err();
    assert!(err.to_string().contains("one output per document"), "{err}");
    let config = write(dir.path(), "w.toml", "format = \"jsonl\"\n");
    assert!(watch(&["--config", &config]).is_err());
    let ok = watch(&["--format", "json,md"]).unwrap();
    assert_eq!(ok.job.formats.len(), 2);
    // Without --format the job's default loses its summaries.
    let default = watch(&[]).unwrap();
    assert!(default
        .job
        .formats
        .iter()
        .all(|f| !matches!(f, quire_exporters::formats::Format::Jsonl)));
}
