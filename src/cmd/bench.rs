//! `quire bench`: every budget × dtype of the grid as a `quire run` of the inputs (a child
//! process each, outputs kept under `--out`), scored against `--truth`, optionally beside a
//! reference model (`--compare`); writes `bench.json`, `bench.csv` and `bench.html` and prints
//! the table. See [`quire_pipeline::bench`].

use super::output::outln;
use anyhow::{bail, Context};
use clap::Args;
use quire_onnx::gemma4::model_dir::{Graph, ModelDir};
use quire_onnx::gemma4::{Budget, DtypeSelection};
use quire_pipeline::bench::compare::{self, Endpoint};
use quire_pipeline::bench::grid::{self, CellCommand, CellSpec};
use quire_pipeline::bench::report::{BenchReport, CellReport};
use quire_pipeline::bench::truth::Truth;
use quire_pipeline::settings::{self, JobSettingsArgs};
use quire_pipeline::{PoolOptions, WorkerCommand};
use std::path::PathBuf;
use std::time::Duration;

/// The environment variable holding the reference endpoint's API key.
pub const COMPARE_API_KEY_VAR: &str = "QUIRE_COMPARE_API_KEY";

#[derive(Args)]
pub struct BenchArgs {
    /// Files and folders to process (folders are walked recursively).
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// What the documents should give, JSON Lines: `{"source": "invoice.pdf", "data": {...}}`
    /// (extract) or `{"source": ..., "text": "..."}` (ocr). Without it only speed, memory and
    /// dtype agreement are measured.
    #[arg(long, value_name = "FILE")]
    pub truth: Option<PathBuf>,
    /// Visual token budgets of the grid, comma-separated.
    #[arg(long, value_name = "LIST", default_value = "70,280,560,1120")]
    pub budgets: String,
    /// Dtypes of the grid, comma-separated; a `graph=dtype` piece belongs to the dtype before
    /// it (`fp32,q4,vision=fp32` is fp32 and q4 with an fp32 vision encoder).
    #[arg(long, value_name = "LIST", default_value = "fp32")]
    pub dtypes: String,
    /// A reference model's OpenAI-compatible endpoint (`http://host:8000/v1`, e.g. vLLM or
    /// llama.cpp): the same documents and schema, scored in the same table. Its API key, if
    /// it needs one, is read from QUIRE_COMPARE_API_KEY.
    #[arg(long, value_name = "URL")]
    pub compare: Option<String>,
    /// The reference model's name, as the endpoint knows it (needed with --compare).
    #[arg(long, value_name = "NAME", requires = "compare")]
    pub compare_model: Option<String>,
    /// Seconds one request to the reference model may take.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 600.0,
        requires = "compare"
    )]
    pub compare_timeout: f64,
    #[command(flatten)]
    pub settings: JobSettingsArgs,
}

pub fn run(global: &super::Global, args: BenchArgs) -> anyhow::Result<u8> {
    super::check_inputs_exist(&args.inputs)?;
    let budgets = parse_budgets(&args.budgets)?;
    let dtypes = split_dtypes(&args.dtypes)?;
    if args.settings.budget.budget.is_some() || args.settings.model.dtype.is_some() {
        eprintln!(
            "warning: --budget and --dtype (or QUIRE_BUDGET, QUIRE_DTYPE) are replaced by the \
             grid's --budgets and --dtypes"
        );
    }
    let endpoint = match (&args.compare, &args.compare_model) {
        (Some(url), Some(model)) => Some(Endpoint {
            url: url.clone(),
            model: model.clone(),
            api_key: std::env::var(COMPARE_API_KEY_VAR)
                .ok()
                .filter(|k| !k.is_empty()),
            timeout: Duration::from_secs_f64(args.compare_timeout.max(0.001)),
        }),
        (Some(_), None) => {
            bail!("--compare needs --compare-model NAME (the model the endpoint serves)")
        }
        _ => None,
    };
    // The config file merged here, so that each cell gets every setting as a flag.
    let mut job_args = args.settings;
    if let Some(config) = job_args.config.config.take() {
        job_args = settings::config::fill_from_file(job_args, &config)?;
    }
    let Some(bench_dir) = job_args.output.out.clone() else {
        bail!("--out DIR is required: the bench folder (one output folder per cell under it)");
    };
    if std::fs::read_dir(&bench_dir).is_ok_and(|mut d| d.next().is_some()) {
        bail!(
            "--out {} is not empty: a bench needs fresh cells (documents a cell skipped as done \
             would have no timings); give a new folder",
            bench_dir.display()
        );
    }
    let cells: Vec<CellSpec> = budgets
        .iter()
        .flat_map(|&budget| {
            dtypes.iter().map(move |dtype| CellSpec {
                budget,
                dtype: dtype.clone(),
            })
        })
        .collect();
    let command = CellCommand {
        program: std::env::current_exe().context("locating the quire executable")?,
        inputs: args.inputs.clone(),
        settings: job_args,
    };
    // The first cell's settings, resolved as its `quire run` will: bad settings fail here,
    // before any cell runs.
    let first = &cells[0];
    let mut probe = command.settings.clone();
    probe.output.out = Some(bench_dir.join(first.folder()));
    probe.budget.budget = Some(first.budget);
    probe.model.dtype = Some(first.dtype.parse()?);
    let resolved = settings::resolve(probe)?;
    check_dtypes(&resolved.model, &dtypes)?;
    let truth = args.truth.as_deref().map(Truth::load).transpose()?;
    let collected = quire_pipeline::collect(&args.inputs);
    if collected.sources.is_empty() {
        bail!("no documents found in the inputs");
    }
    std::fs::create_dir_all(&bench_dir)
        .with_context(|| format!("creating the bench folder {}", bench_dir.display()))?;

    let mut outcomes = Vec::new();
    for (i, spec) in cells.iter().enumerate() {
        eprintln!("cell {}/{}: {} ...", i + 1, cells.len(), spec.label());
        let outcome = grid::run_cell(&command, spec, &bench_dir, truth.as_ref())?;
        eprintln!("  {}", one_line(&outcome.report));
        // The first cell refused by its `quire run` (exit 2: settings, schema, model): every
        // cell would be, so the bench stops with its error.
        if i == 0 && outcome.report.exit_code == Some(i32::from(crate::exit::USAGE)) {
            let why = outcome.report.errors.first().cloned().unwrap_or_default();
            bail!("the first cell ({}) could not run: {why}", spec.label());
        }
        outcomes.push((spec.clone(), outcome));
    }
    let compare_row = match &endpoint {
        Some(endpoint) => {
            eprintln!(
                "reference: {} at {} ...",
                endpoint.model,
                endpoint.completions_url()
            );
            // The reference sees the pages at the grid's largest budget.
            let budget = *budgets.iter().max().expect("at least one budget");
            let opts = pool_options(global, &resolved, budget, &collected.sources)?;
            let answers = compare::compare(
                endpoint,
                &resolved.task,
                resolved.text_anchor,
                collected.sources.clone(),
                opts,
            );
            let row = grid::compare_row(
                &endpoint.model,
                resolved.task.name(),
                &answers,
                truth.as_ref(),
            );
            eprintln!("  {}", one_line(&row));
            Some(row)
        }
        None => None,
    };
    let head = BenchReport {
        task: resolved.task.name().to_string(),
        model: resolved.model.display().to_string(),
        schema: resolved
            .schema_path
            .as_ref()
            .map(|p| p.display().to_string()),
        truth: args.truth.as_ref().map(|p| p.display().to_string()),
        documents: collected.sources.len() + collected.errors.len(),
        cells: Vec::new(),
        agreement: Vec::new(),
    };
    let report = grid::report(head, outcomes, compare_row);
    let files = report.write(&bench_dir)?;
    print_table(&report)?;
    for f in &files {
        eprintln!("wrote {}", f.display());
    }
    let failed = report
        .cells
        .iter()
        .any(|c| c.failed > 0 || c.exit_code.is_some_and(|e| e != 0) || !c.errors.is_empty());
    Ok(if failed {
        crate::exit::PARTIAL
    } else {
        crate::exit::OK
    })
}

fn parse_budgets(list: &str) -> anyhow::Result<Vec<Budget>> {
    let mut budgets: Vec<Budget> = Vec::new();
    for item in list.split(',').map(str::trim) {
        let budget: Budget = item
            .parse()
            .map_err(|e| anyhow::anyhow!("--budgets {list}: {item:?}: {e}"))?;
        if !budgets.contains(&budget) {
            budgets.push(budget);
        }
    }
    Ok(budgets)
}

/// `fp32,q4,vision=fp32` → `["fp32", "q4,vision=fp32"]`, each checked.
fn split_dtypes(list: &str) -> anyhow::Result<Vec<String>> {
    let mut dtypes: Vec<String> = Vec::new();
    for item in list.split(',').map(str::trim) {
        match dtypes.last_mut() {
            Some(last) if item.contains('=') => {
                last.push(',');
                last.push_str(item);
            }
            _ => dtypes.push(item.to_string()),
        }
    }
    for d in &dtypes {
        d.parse::<DtypeSelection>()
            .map_err(|e| anyhow::anyhow!("--dtypes {list}: {d:?}: {e}"))?;
    }
    Ok(dtypes)
}

/// Every dtype's graphs are in the model folder: a missing one fails now, naming the file
/// and the variants there are, not as a failed cell later.
fn check_dtypes(model: &std::path::Path, dtypes: &[String]) -> anyhow::Result<()> {
    let dir = ModelDir::new(model)?;
    for d in dtypes {
        let selection: DtypeSelection = d.parse()?;
        for graph in Graph::ALL {
            dir.graph(graph, selection.get(graph))
                .with_context(|| format!("--dtypes {d}"))?;
        }
    }
    Ok(())
}

fn pool_options(
    global: &super::Global,
    resolved: &settings::JobSettings,
    budget: Budget,
    sources: &[quire_pipeline::Source],
) -> anyhow::Result<PoolOptions> {
    let worker = if sources
        .iter()
        .any(|s| s.format == quire_pipeline::sniff::InputFormat::Pdf)
    {
        let pdfium = global
            .provisioner()
            .ensure(&quire_pipeline::pdfium::PDFIUM)
            .context("PDFium is needed to render PDFs")?;
        let exe = std::env::current_exe().context("locating the quire executable")?;
        Some(WorkerCommand::quire(exe, &pdfium.library))
    } else {
        None
    };
    let mut opts = PoolOptions::new(budget, worker);
    opts.workers = resolved.workers;
    opts.password = resolved.password.as_ref().map(|p| p.0.clone());
    opts.page_timeout = resolved.page_timeout;
    opts.image_limits.max_pixels = resolved.max_pixels;
    Ok(opts)
}

fn num(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.digits$}"))
}

fn one_line(c: &CellReport) -> String {
    let accuracy = match (c.f1, c.cer) {
        (Some(f1), _) => format!("F1 {f1:.3}, "),
        (None, Some(cer)) => format!("CER {cer:.3}, "),
        _ => String::new(),
    };
    let mut line = format!(
        "{} documents ({} failed), {} pages: {accuracy}{} pages/s, p50 {} ms/page, peak {} MiB",
        c.documents,
        c.failed,
        c.pages,
        num(c.pages_per_s, 2),
        num(c.latency_p50_ms, 0),
        num(c.peak_rss_mib, 0),
    );
    if let Some(e) = c.errors.first() {
        line.push_str(&format!("; {e}"));
    }
    line
}

fn print_table(report: &BenchReport) -> anyhow::Result<()> {
    let accuracy = if report.task == "ocr" { "CER" } else { "F1" };
    outln!(
        "{:<24} {:>5} {:>6} {:>6} {:>7} {:>8} {:>8} {:>8} {:>8} {:>10} {:>6}",
        "cell",
        "docs",
        "failed",
        "pages",
        accuracy,
        "pages/s",
        "p50 ms",
        "p95 ms",
        "RSS MiB",
        "gen tokens",
        "Pareto"
    )?;
    for c in &report.cells {
        outln!(
            "{:<24} {:>5} {:>6} {:>6} {:>7} {:>8} {:>8} {:>8} {:>8} {:>10} {:>6}",
            c.label,
            c.documents,
            c.failed,
            c.pages,
            num(if report.task == "ocr" { c.cer } else { c.f1 }, 3),
            num(c.pages_per_s, 2),
            num(c.latency_p50_ms, 0),
            num(c.latency_p95_ms, 0),
            num(c.peak_rss_mib, 0),
            c.generated_tokens,
            if c.pareto { "*" } else { "" }
        )?;
    }
    for a in &report.agreement {
        outln!(
            "agreement b{} {} vs {}: {} ({} of {} fields; {} of {} documents identical)",
            a.budget,
            a.a,
            a.b,
            num(a.rate, 3),
            a.counts.same,
            a.counts.total,
            a.counts.identical_documents,
            a.counts.documents
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtype_lists_keep_per_graph_pieces_with_their_dtype() {
        assert_eq!(
            split_dtypes("fp32,q4,vision=fp32,fp16").unwrap(),
            ["fp32", "q4,vision=fp32", "fp16"]
        );
        let err = split_dtypes("fp32,q5").unwrap_err().to_string();
        assert!(err.starts_with("--dtypes fp32,q5: \"q5\""), "{err}");
        let budgets = parse_budgets("70, 280,70").unwrap();
        assert_eq!(
            budgets.iter().map(|b| b.soft_tokens()).collect::<Vec<_>>(),
            [70, 280]
        );
        assert!(parse_budgets("70,100").is_err());
    }
}
