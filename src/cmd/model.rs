//! `quire model pull|list|verify`: get a Gemma 4 ONNX repository from a hub or mirror (only the
//! chosen dtypes, resumable, hash-checked), see the models of the model folder, and check a
//! copied folder against the manifest written at pull time.

use super::output::outln;
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use quire_onnx::gemma4::model_dir::{Dtype, Graph, ModelDir};
use quire_onnx::gemma4::Gemma4;
use quire_onnx::hub::{self, DtypeFiles, Hub, PullObserver, RepoFile};
use quire_onnx::manifest::{self, Manifest};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct ModelArgs {
    #[command(subcommand)]
    command: ModelCommand,
}

#[derive(Subcommand)]
enum ModelCommand {
    /// Download a model repository: config, tokenizer and the graphs of the chosen dtypes.
    Pull(PullArgs),
    /// The models under the model folder: dtypes, sizes, contract check of each graph.
    List(ListArgs),
    /// Re-hash a model folder against the manifest written by `pull` (exit 2 on a mismatch).
    Verify(VerifyArgs),
}

#[derive(Args)]
struct ModelsDir {
    /// The model folder (default: the `models` folder of quire's cache, next to its runtimes).
    #[arg(long, env = "QUIRE_MODELS_DIR", value_name = "DIR")]
    models_dir: Option<PathBuf>,
}

impl ModelsDir {
    fn resolve(&self, global: &super::Global) -> PathBuf {
        self.models_dir
            .clone()
            .unwrap_or_else(|| global.provisioner().cache_root.join("models"))
    }
}

#[derive(Args)]
struct PullArgs {
    /// Repository on the hub, e.g. onnx-community/gemma-4-E2B-it-ONNX.
    repo: String,
    /// Graph variants to fetch: one (`q4f16`), several (`q4f16,fp16`) or per graph
    /// (`q4f16,vision=fp16`: the q4f16 graphs and the fp16 vision encoder).
    #[arg(long, default_value = "q4f16")]
    dtype: DtypeFiles,
    /// Branch, tag or commit.
    #[arg(long, default_value = "main")]
    revision: String,
    /// Destination folder (default: MODELS_DIR/<owner>/<name>).
    #[arg(long, value_name = "D")]
    dir: Option<PathBuf>,
    #[command(flatten)]
    models: ModelsDir,
}

#[derive(Args)]
struct ListArgs {
    /// Folder to list (default: the model folder).
    dir: Option<PathBuf>,
    /// Do not load the graphs to check them against the contract (faster for big models).
    #[arg(long)]
    no_check: bool,
    #[command(flatten)]
    models: ModelsDir,
}

#[derive(Args)]
struct VerifyArgs {
    /// A model folder with a quire-manifest.json.
    dir: PathBuf,
}

pub fn run(global: &super::Global, args: ModelArgs) -> anyhow::Result<u8> {
    match args.command {
        ModelCommand::Pull(a) => pull(global, a),
        ModelCommand::List(a) => list(global, a),
        ModelCommand::Verify(a) => verify(a),
    }
}

fn pull(global: &super::Global, args: PullArgs) -> anyhow::Result<u8> {
    if global.offline {
        bail!(
            "`quire model pull {}`: downloads are forbidden (--offline / QUIRE_OFFLINE=1)",
            args.repo
        );
    }
    let parts: Vec<&str> = args.repo.split('/').collect();
    if parts.len() != 2 || parts.iter().any(|p| !manifest::is_safe_relative(p)) {
        bail!(
            "repository {:?}: expected OWNER/NAME, e.g. onnx-community/gemma-4-E2B-it-ONNX",
            args.repo
        );
    }
    let dest = args
        .dir
        .clone()
        .unwrap_or_else(|| args.models.resolve(global).join(&args.repo));
    let hub = Hub::from_env();
    eprintln!(
        "pulling {}@{} ({}) from {} into {}",
        args.repo,
        args.revision,
        args.dtype
            .graphs
            .iter()
            .map(|(g, d)| format!("{}={d}", g.key()))
            .collect::<Vec<_>>()
            .join(","),
        hub.endpoint,
        dest.display()
    );
    let mut observer = Bars::new();
    let req = hub::PullRequest {
        repo: &args.repo,
        revision: &args.revision,
        dtypes: &args.dtype,
        dest: &dest,
    };
    let pulled =
        hub::pull(&hub, &req, &mut observer).with_context(|| format!("pulling {}", args.repo))?;
    observer.finish();
    let m = &pulled.manifest;
    let bytes: u64 = m.files.iter().map(|f| f.size).sum();
    outln!(
        "{}@{} (commit {}): {} files, {} ({} downloaded now), hashes in {}",
        m.repo,
        m.revision,
        m.commit,
        m.files.len(),
        human(bytes),
        pulled.downloaded,
        Manifest::path(&dest).display()
    )?;
    outln!("{}", dest.display())?;
    Ok(crate::exit::OK)
}

/// Progress of a pull: a byte bar per file on a terminal, a line per file otherwise.
struct Bars {
    bar: Option<ProgressBar>,
    terminal: bool,
}

impl Bars {
    fn new() -> Self {
        Bars {
            bar: None,
            terminal: std::io::stderr().is_terminal(),
        }
    }
    fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

impl PullObserver for Bars {
    fn start(&mut self, file: &RepoFile, from: u64) {
        self.finish();
        let size = file.size.map(human).unwrap_or_else(|| "? bytes".into());
        if self.terminal {
            let bar = ProgressBar::with_draw_target(file.size, ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} (eta {eta})",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar.set_message(file.path.clone());
            bar.set_position(from);
            self.bar = Some(bar);
        } else if from > 0 {
            eprintln!("{}: resuming at {from} of {size}", file.path);
        } else {
            eprintln!("{}: downloading {size}", file.path);
        }
    }
    fn progress(&mut self, done: u64) {
        if let Some(b) = &self.bar {
            b.set_position(done);
        }
    }
    fn retry(&mut self, file: &RepoFile, at: u64, reason: &str) {
        let line = format!(
            "{}: interrupted at {at} bytes ({reason}); resuming",
            file.path
        );
        match &self.bar {
            Some(b) => b.println(line),
            None => eprintln!("{line}"),
        }
    }
    fn done(&mut self, file: &RepoFile, downloaded: bool) {
        self.finish();
        if !downloaded {
            eprintln!("{}: already here, sha256 checked", file.path);
        }
    }
}

fn list(global: &super::Global, args: ListArgs) -> anyhow::Result<u8> {
    let root = args
        .dir
        .clone()
        .unwrap_or_else(|| args.models.resolve(global));
    if !root.is_dir() {
        bail!(
            "model folder {}: no such folder (pull a model with `quire model pull REPO`)",
            root.display()
        );
    }
    let models = find_models(&root);
    if models.is_empty() {
        outln!("no models under {}", root.display())?;
        return Ok(crate::exit::OK);
    }
    let env = if args.no_check {
        None
    } else {
        // Listing downloads nothing: a runtime that is not installed means no contract check.
        let provisioner = quire_onnx::provision::Provisioner {
            offline: true,
            ..global.provisioner()
        };
        match quire_onnx::runtime::environment(&provisioner, false) {
            Ok((env, _)) => Some(env),
            Err(e) => {
                eprintln!("warning: contract not checked: loading ONNX Runtime: {e}");
                None
            }
        }
    };
    let check =
        |model: &ModelDir, g: Graph, d: Dtype| env.map(|env| Gemma4::check_graph(env, model, g, d));
    for dir in models {
        list_model(&dir, &check)?;
    }
    Ok(crate::exit::OK)
}

/// Folders under `root` (itself included, three levels down) with a config.json and a graph.
fn find_models(root: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = walkdir_dirs(root)
        .into_iter()
        .filter(|d| d.join("config.json").is_file())
        .filter(|d| {
            ModelDir::new(d.clone())
                .map(|m| Graph::ALL.iter().any(|g| !m.variants(*g).is_empty()))
                .unwrap_or(false)
        })
        .collect();
    out.sort();
    out
}

fn walkdir_dirs(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![root.to_path_buf()];
    let mut frontier = vec![root.to_path_buf()];
    for _ in 0..3 {
        let mut next = Vec::new();
        for d in &frontier {
            let Ok(rd) = std::fs::read_dir(d) else {
                continue;
            };
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    next.push(e.path());
                }
            }
        }
        out.extend(next.iter().cloned());
        frontier = next;
    }
    out
}

/// `check` loads one graph and checks it against the contract (`None`: not checked).
type Check<'a> =
    dyn Fn(&ModelDir, Graph, Dtype) -> Option<Result<(), quire_onnx::gemma4::Error>> + 'a;

fn list_model(dir: &Path, check: &Check<'_>) -> anyhow::Result<()> {
    let model = ModelDir::new(dir.to_path_buf())?;
    let origin = match Manifest::read(dir) {
        Ok(Some(m)) => format!("{}@{} (commit {})", m.repo, m.revision, m.commit),
        Ok(None) => "no quire-manifest.json".to_string(),
        Err(e) => format!("{e}"),
    };
    outln!("{}  [{origin}]", dir.display())?;
    outln!(
        "  {:<6} {:<16} {:<16} {:<22} {:>10}",
        "dtype",
        "vision_encoder",
        "embed_tokens",
        "decoder_model_merged",
        "size"
    )?;
    let mut failures = Vec::new();
    for d in Dtype::ALL {
        let present: Vec<Graph> = Graph::ALL
            .into_iter()
            .filter(|g| model.variants(*g).contains(&d))
            .collect();
        if present.is_empty() {
            continue;
        }
        let mut cells = Vec::new();
        let mut bytes = 0;
        for g in Graph::ALL {
            if !present.contains(&g) {
                cells.push("-".to_string());
                continue;
            }
            let path = model.graph(g, d)?;
            bytes += std::iter::once(path.clone())
                .chain(ModelDir::sidecars(&path))
                .filter_map(|p| std::fs::metadata(p).ok())
                .map(|m| m.len())
                .sum::<u64>();
            cells.push(match check(&model, g, d) {
                None => "present".to_string(),
                Some(Ok(())) => "ok".to_string(),
                Some(Err(e)) => {
                    failures.push(format!("{d} {}: {e}", g.base_name()));
                    "FAILS CONTRACT".to_string()
                }
            });
        }
        outln!(
            "  {:<6} {:<16} {:<16} {:<22} {:>10}",
            d.name(),
            cells[0],
            cells[1],
            cells[2],
            human(bytes)
        )?;
    }
    for f in failures {
        outln!("  contract: {f}")?;
    }
    Ok(())
}

fn verify(args: VerifyArgs) -> anyhow::Result<u8> {
    let report = manifest::verify(&args.dir, &mut |e| {
        tracing::info!(file = %e.path, size = e.size, "hashing");
    })?;
    for p in &report.problems {
        outln!("MISMATCH {p}")?;
    }
    for u in &report.unlisted {
        outln!("note: {u}: not in the manifest")?;
    }
    outln!(
        "{}: {} files match the manifest, {} do not",
        args.dir.display(),
        report.ok.len(),
        report.problems.len()
    )?;
    Ok(if report.problems.is_empty() {
        crate::exit::OK
    } else {
        crate::exit::USAGE
    })
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
