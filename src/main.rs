//! The `quire` command line. Each subcommand lives in `cmd/`; this file only dispatches and maps
//! errors to exit codes.

/// `eprintln!` for the whole CLI, without std's panic when stderr is gone (`quire run ... 2>&1 |
/// head` closes it): messages then have nowhere to go, but the batch still runs to its end and
/// its outputs and exit code still say what happened. Shadows std's macro, so every subcommand
/// (and code added later) gets it without a new name to remember.
macro_rules! eprintln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod cmd;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use quire_pipeline::settings;
use std::process::ExitCode;

/// Exit codes, documented in the README.
pub mod exit {
    /// Everything succeeded.
    pub const OK: u8 = 0;
    /// Something failed before any input was processed: bad flags, config, model or runtime.
    pub const USAGE: u8 = 2;
    /// Some inputs failed; the others were processed.
    pub const PARTIAL: u8 = 3;
    /// Some inputs were held by another run on the same output folder at the end: not
    /// failed, not processed here, not in the summaries yet.
    pub const BUSY: u8 = 4;
    // `quire run` stopped by a signal exits with 128 + its number: 130 (SIGINT), 143 (SIGTERM)
    // (`cmd/signals.rs`).
}

#[derive(Parser)]
#[command(
    name = "quire",
    version,
    about = "Documents to structured data with Gemma 4, on your own machines"
)]
struct Cli {
    /// Never download anything; a missing runtime is an error (also QUIRE_OFFLINE=1).
    #[arg(long, global = true, env = "QUIRE_OFFLINE", value_parser = clap::builder::BoolishValueParser::new(), default_value_t = false)]
    offline: bool,

    /// More log output (-v debug, -vv trace). Logs go to stderr.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install (or check) the ONNX Runtime and PDFium libraries quire needs.
    Setup(cmd::setup::SetupArgs),
    /// Render PDF pages and images exactly as the model will see them (PNG + JSON lines).
    Render(settings::RenderArgs),
    /// Process documents: Markdown (ocr), schema-valid JSON (extract) or free text (prompt).
    Run(Box<settings::RunArgs>),
    /// Process documents as they arrive in a folder, each exactly once (a service).
    Watch(Box<settings::WatchArgs>),
    /// What the state store of an output folder says: counts, failures, throughput.
    Status(cmd::status::StatusArgs),
    /// Combine the outputs and state of `--shard` runs into one result set.
    Merge(cmd::merge::MergeArgs),
    /// Measure budgets × dtypes on your documents: accuracy against a truth, pages/s, latency,
    /// memory; the Pareto-optimal cells (bench.json, bench.csv, bench.html).
    Bench(Box<cmd::bench::BenchArgs>),
    /// Run Gemma 4 on one image and a prompt: a quick check of a model directory.
    Generate(Box<settings::GenerateArgs>),
    /// Print the completion script of a shell (bash, zsh, fish, elvish, powershell).
    Completions(cmd::completions::CompletionsArgs),
    /// Print the man page (roff), or write one page per command with --dir.
    Man(cmd::completions::ManArgs),
    /// Get a model from a hub (`pull`), see the model folder (`list`), check a copy (`verify`).
    Model(cmd::model::ModelArgs),
    /// Internal: a PDFium worker process driven by the pipeline over stdin/stdout.
    #[command(hide = true)]
    PdfWorker(cmd::render::PdfWorkerArgs),
}

fn main() -> ExitCode {
    fix_mmap_threshold();
    disable_onnxruntime_telemetry();
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    init_logging(cli.verbose);
    warn_of_password_flag(&matches);
    let global = cmd::Global {
        offline: cli.offline,
    };
    let result = match cli.command {
        Command::Setup(args) => cmd::setup::run(&global, args),
        Command::Render(args) => cmd::render::run(&global, args),
        Command::Run(args) => cmd::run::run(&global, *args),
        Command::Watch(args) => cmd::watch::run(&global, *args),
        Command::Status(args) => cmd::status::run(&global, args),
        Command::Merge(args) => cmd::merge::run(&global, args),
        Command::Bench(args) => cmd::bench::run(&global, *args),
        Command::Generate(args) => cmd::generate::run(&global, *args),
        Command::Completions(args) => cmd::completions::completions(args, Cli::command()),
        Command::Man(args) => cmd::completions::man(args, Cli::command()),
        Command::Model(args) => cmd::model::run(&global, args),
        Command::PdfWorker(args) => cmd::render::pdf_worker(args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        // The reader of stdout stopped reading (`quire status --json | head`): not a failure.
        Err(err) if err.downcast_ref::<cmd::output::StdoutClosed>().is_some() => {
            ExitCode::from(exit::OK)
        }
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(exit::USAGE)
        }
    }
}

/// `--password` on the command line can be read by every local user (`ps`, `/proc/PID/cmdline`)
/// for as long as quire runs. It still works; this says what to use instead.
fn warn_of_password_flag(matches: &clap::ArgMatches) {
    let Some((_, command)) = matches.subcommand() else {
        return;
    };
    if command.ids().any(|id| id == "password")
        && command.value_source("password") == Some(ValueSource::CommandLine)
    {
        eprintln!(
            "warning: --password on the command line is visible to other users of this machine \
             (ps, /proc/PID/cmdline); use --password-file FILE or the QUIRE_PASSWORD variable"
        );
    }
}

/// glibc raises its mmap threshold each time a large block is freed, after which page-sized
/// buffers (pixels, features, tensors) come from the heap and fragment it: peak memory then grew
/// with the number of documents (95 → 209 MiB for 10 → 1,000, `benches/rss.py`). A fixed
/// threshold stops that. It is fixed high (32 MiB, glibc's own ceiling) because the model's
/// buffers (KV cache, logits, activations) are reused from the heap below it; at 256 KiB each was
/// a fresh mapping, faulted in and unmapped on every decoder step, which halved throughput
/// (`cargo bench --bench batching`). The PDF workers set their own.
fn fix_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
    }
}

/// ONNX Runtime 1.31 carries Microsoft's 1DS telemetry client: building its environment writes
/// `~/.cache/Microsoft/DeveloperTools/.onnxruntime/{deviceid,onnxruntime.db}` and `$TMPDIR/.ses`
/// and looks up the collector's address in DNS, before `with_telemetry(false)` can switch it off. The library
/// reads `ORT_DISABLE_TELEMETRY` instead. Set here, before any thread starts (changing the
/// environment is only sound single-threaded), for every subcommand and the PDF workers alike.
fn disable_onnxruntime_telemetry() {
    std::env::set_var(
        quire_onnx::runtime::DISABLE_TELEMETRY_VAR,
        quire_onnx::runtime::DISABLE_TELEMETRY_VALUE,
    );
}

fn init_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "warn,ort=warn",
        1 => "info,ort=warn",
        2 => "debug,ort=warn",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_env("QUIRE_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(use_colour())
        .with_target(false)
        .init();
}

/// Colour codes only for a person at a terminal: a log file, a pipe or a journal gets plain text,
/// and `NO_COLOR` (any non-empty value, <https://no-color.org>) turns them off everywhere.
fn use_colour() -> bool {
    use std::io::IsTerminal;
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    !no_color && std::io::stderr().is_terminal()
}
