//! The grid: every budget × dtype as one `quire run` of the inputs in a child process
//! ([`super::cell`]), in its own folder under the bench folder (outputs kept), then scored
//! against the truth ([`super::metrics`]) into a [`BenchReport`].

use super::cell::{self, CellError, ChildRun};
use super::compare::Answer;
use super::metrics::{self, Agreement, CharErrors, FieldCounts};
use super::report::{AgreementRow, BenchReport, CellReport, RowKind};
use super::truth::Truth;
use crate::settings::JobSettingsArgs;
use crate::state::StateStore;
use quire_exporters::record::DocumentRecord;
use quire_onnx::gemma4::Budget;
use serde_json::Value;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Errors shown to the user beyond this many per cell are counted, not listed.
const LISTED_ERRORS: usize = 5;

/// One point of the grid: a budget and a dtype as the user wrote it (`q4,vision=fp32`).
#[derive(Debug, Clone)]
pub struct CellSpec {
    pub budget: Budget,
    pub dtype: String,
}

impl CellSpec {
    pub fn label(&self) -> String {
        format!("b{} {}", self.budget.soft_tokens(), self.dtype)
    }

    /// The cell's folder name: `b70-q4`, `b70-q4_vision-fp32`.
    pub fn folder(&self) -> String {
        let dtype: String = self
            .dtype
            .chars()
            .map(|c| match c {
                ',' => '_',
                c if c.is_ascii_alphanumeric() => c,
                _ => '-',
            })
            .collect();
        format!("b{}-{dtype}", self.budget.soft_tokens())
    }
}

/// What each cell's `quire run` is given besides its budget, dtype and output folder.
#[derive(Debug, Clone)]
pub struct CellCommand {
    /// The quire executable.
    pub program: PathBuf,
    pub inputs: Vec<PathBuf>,
    /// The job's settings with the config file merged in: forwarded as flags, which win over
    /// any `QUIRE_*` variable the child inherits, so each cell runs exactly these.
    pub settings: JobSettingsArgs,
}

impl CellCommand {
    /// The arguments of `quire run` for `spec`, writing into `out`. The password (if any) is
    /// left to the inherited environment, never put on a command line.
    pub fn args(&self, spec: &CellSpec, out: &Path) -> Vec<OsString> {
        let mut settings = self.settings.clone();
        settings.output.out = Some(out.to_path_buf());
        settings.budget.budget = Some(spec.budget);
        settings.model.dtype = Some(spec.dtype.parse().expect("checked by the caller"));
        settings.pages.password = None;
        // The records are read back from results.jsonl.
        let formats = settings.job.format.take().map(|f| f.to_string());
        let formats = match formats {
            Some(f) if f.split(',').any(|f| f == "jsonl") => f,
            Some(f) => format!("{f},jsonl"),
            None => String::new(),
        };
        let mut args: Vec<OsString> = vec!["run".into()];
        let Value::Object(map) = serde_json::to_value(&settings).expect("settings serialize")
        else {
            unreachable!("settings serialize to a map")
        };
        for (key, value) in map {
            let value = match value {
                Value::Null => continue,
                Value::String(s) => s,
                other => other.to_string(),
            };
            // One argument each: a value that starts with `-` (a prompt) stays a value.
            args.push(format!("--{}={value}", key.replace('_', "-")).into());
        }
        if !formats.is_empty() {
            args.push(format!("--format={formats}").into());
        }
        // After `--`: an input named `-x` is an input.
        args.push("--".into());
        args.extend(self.inputs.iter().map(|p| p.as_os_str().to_owned()));
        args
    }
}

impl CellCommand {
    /// The child's environment beyond what it inherits: the password, where one was given.
    pub fn env(&self) -> Vec<(String, String)> {
        self.settings
            .pages
            .password
            .iter()
            .map(|p| ("QUIRE_PASSWORD".to_string(), p.0.clone()))
            .collect()
    }
}

/// A cell as it ran: its report (not yet scored against the others) and its outputs by source.
pub struct CellOutcome {
    pub report: CellReport,
    /// Successful documents' data (extract) or text (ocr, prompt), by source.
    pub outputs: BTreeMap<String, Value>,
}

/// Runs one cell into `bench_dir/<folder>` (its log beside it, `<folder>.log`) and scores it.
pub fn run_cell(
    command: &CellCommand,
    spec: &CellSpec,
    bench_dir: &Path,
    truth: Option<&Truth>,
) -> Result<CellOutcome, CellError> {
    let out = bench_dir.join(spec.folder());
    let log = bench_dir.join(format!("{}.log", spec.folder()));
    let child = cell::run_child(
        &command.program,
        &command.args(spec, &out),
        &command.env(),
        &log,
    )?;
    let mut report = CellReport {
        label: spec.label(),
        row: RowKind::Grid,
        budget: Some(spec.budget.soft_tokens()),
        dtype: Some(spec.dtype.clone()),
        out: Some(out.display().to_string()),
        exit_code: Some(child.code),
        wall_s: child.wall.as_secs_f64(),
        peak_rss_mib: Some(child.max_rss_bytes as f64 / (1 << 20) as f64),
        ..CellReport::default()
    };
    let records = match read_records(&out) {
        Ok(records) => records,
        Err(e) => {
            report
                .errors
                .push(format!("{e}; {}", last_line(&log, &child)));
            return Ok(CellOutcome {
                report,
                outputs: BTreeMap::new(),
            });
        }
    };
    // Pages over the span the state store saw (first claim to last finish): what
    // `quire status` reports, model loading left out.
    if let Ok(Some(store)) = StateStore::open_existing(&out) {
        if let Ok(counts) = store.counts() {
            if counts.span_seconds > 0.0 {
                report.pages_per_s = Some(counts.pages_done as f64 / counts.span_seconds);
            }
        }
    }
    let mut latencies = Vec::new();
    let mut outputs = BTreeMap::new();
    let mut scores = Scores::default();
    for record in &records {
        report.documents += 1;
        report.pages += u64::from(record.page_count);
        report.prompt_tokens += record.tokens.prompt;
        report.generated_tokens += record.tokens.generated;
        let output = if let Some(e) = &record.error {
            report.failed += 1;
            if report.errors.len() < LISTED_ERRORS {
                report
                    .errors
                    .push(format!("{}: {} ({})", record.source, e.message, e.kind));
            }
            None
        } else {
            // A document's time in the stages (queues not counted), shared by its pages.
            let ms: f64 = record.run.timings_ms.values().sum();
            let pages = record.page_count.max(1);
            latencies.extend(std::iter::repeat_n(ms / f64::from(pages), pages as usize));
            let output = match (&record.data, &record.text) {
                (Some(data), _) => Some(data.clone()),
                (None, Some(text)) => Some(Value::String(text.clone())),
                (None, None) => None,
            };
            if let Some(o) = &output {
                outputs.insert(record.source.clone(), o.clone());
            }
            output
        };
        if let Some(truth) = truth {
            scores.add(truth, &record.task, &record.source, output.as_ref());
        }
    }
    report.latency_p50_ms = metrics::percentile(&latencies, 50.0);
    report.latency_p95_ms = metrics::percentile(&latencies, 95.0);
    scores.fill(&mut report);
    Ok(CellOutcome { report, outputs })
}

/// The reference model's answers as a row of the table.
pub fn compare_row(
    label: &str,
    task: &str,
    answers: &[Answer],
    truth: Option<&Truth>,
) -> CellReport {
    let mut report = CellReport {
        label: label.to_string(),
        row: RowKind::Compare,
        ..CellReport::default()
    };
    let mut latencies = Vec::new();
    let mut seconds = 0.0;
    let mut scores = Scores::default();
    for answer in answers {
        report.documents += 1;
        report.pages += u64::from(answer.pages);
        report.prompt_tokens += answer.prompt_tokens;
        report.generated_tokens += answer.completion_tokens;
        seconds += answer.latency.as_secs_f64();
        let output = match &answer.error {
            Some(e) => {
                report.failed += 1;
                if report.errors.len() < LISTED_ERRORS {
                    report.errors.push(format!("{}: {e}", answer.source));
                }
                None
            }
            None => {
                let pages = answer.pages.max(1);
                let ms = answer.latency.as_secs_f64() * 1e3 / f64::from(pages);
                latencies.extend(std::iter::repeat_n(ms, pages as usize));
                answer
                    .data
                    .clone()
                    .or_else(|| answer.text.clone().map(Value::String))
            }
        };
        if let Some(truth) = truth {
            scores.add(truth, task, &answer.source, output.as_ref());
        }
    }
    report.wall_s = seconds;
    if seconds > 0.0 {
        report.pages_per_s = Some(report.pages as f64 / seconds);
    }
    report.latency_p50_ms = metrics::percentile(&latencies, 50.0);
    report.latency_p95_ms = metrics::percentile(&latencies, 95.0);
    scores.fill(&mut report);
    report
}

/// Marks the Pareto-optimal grid cells (accuracy and pages/s, both higher is better).
pub fn mark_pareto(cells: &mut [CellReport]) {
    let points: Vec<Option<(f64, f64)>> = cells
        .iter()
        .map(|c| match (c.row, c.accuracy, c.pages_per_s) {
            (RowKind::Grid, Some(a), Some(p)) => Some((a, p)),
            _ => None,
        })
        .collect();
    for (cell, optimal) in cells.iter_mut().zip(metrics::pareto(&points)) {
        cell.pareto = optimal;
    }
}

/// For each budget, each pair of its dtypes (in the order given): how often they agree on the
/// documents both processed.
pub fn agreement(cells: &[(CellSpec, BTreeMap<String, Value>)]) -> Vec<AgreementRow> {
    let mut rows = Vec::new();
    for (i, (a, a_out)) in cells.iter().enumerate() {
        for (b, b_out) in &cells[i + 1..] {
            if a.budget.soft_tokens() != b.budget.soft_tokens() {
                continue;
            }
            let mut counts = Agreement::default();
            for (source, x) in a_out {
                match (x, b_out.get(source)) {
                    (Value::String(x), Some(Value::String(y))) => counts.add_text(x, y),
                    (x, Some(y)) => counts.add_data(x, y),
                    (_, None) => {}
                }
            }
            rows.push(AgreementRow {
                budget: a.budget.soft_tokens(),
                a: a.dtype.clone(),
                b: b.dtype.clone(),
                rate: counts.rate(),
                counts,
            });
        }
    }
    rows
}

/// Accuracy sums of a row: field counts (extract) or character errors (ocr).
#[derive(Default)]
struct Scores {
    scored: u64,
    fields: Option<FieldCounts>,
    chars: Option<CharErrors>,
}

impl Scores {
    /// Scores `source`'s output (`None` when it failed) if the truth has it for `task`.
    fn add(&mut self, truth: &Truth, task: &str, source: &str, output: Option<&Value>) {
        match task {
            "extract" => {
                if let Some(expected) = truth.data.get(source) {
                    let predicted = output.filter(|v| !v.is_string());
                    self.fields
                        .get_or_insert_default()
                        .add(FieldCounts::of(predicted, expected));
                    self.scored += 1;
                }
            }
            "ocr" => {
                if let Some(reference) = truth.text.get(source) {
                    let text = output.and_then(Value::as_str).unwrap_or("");
                    self.chars
                        .get_or_insert_default()
                        .add(CharErrors::of(text, reference));
                    self.scored += 1;
                }
            }
            _ => {}
        }
    }

    fn fill(self, report: &mut CellReport) {
        report.scored = self.scored;
        if let Some(f) = self.fields {
            report.precision = Some(f.precision());
            report.recall = Some(f.recall());
            report.f1 = Some(f.f1());
            report.accuracy = report.f1;
            report.fields = Some(f);
        }
        if let Some(c) = self.chars {
            report.cer = Some(c.cer());
            report.accuracy = Some((1.0 - c.cer()).max(0.0));
            report.chars = Some(c);
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum RecordsError {
    #[error("the cell wrote no results ({path}: {source})")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: not a document record: {source}")]
    Parse {
        path: PathBuf,
        line: usize,
        source: serde_json::Error,
    },
}

fn read_records(out: &Path) -> Result<Vec<DocumentRecord>, RecordsError> {
    let path = out.join("results.jsonl");
    let content = std::fs::read_to_string(&path).map_err(|source| RecordsError::Read {
        path: path.clone(),
        source,
    })?;
    content
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|source| RecordsError::Parse {
                path: path.clone(),
                line: i + 1,
                source,
            })
        })
        .collect()
}

/// The last line the cell's `quire run` logged, to say why it wrote nothing.
fn last_line(log: &Path, child: &ChildRun) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let line = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    format!(
        "quire run exited with {}: {line} (log: {})",
        child.code,
        log.display()
    )
}

/// Assembles the report: grid cells in order, then the compare row, Pareto marked.
pub fn report(
    head: BenchReport,
    grid: Vec<(CellSpec, CellOutcome)>,
    compare: Option<CellReport>,
) -> BenchReport {
    let mut report = head;
    let outputs: Vec<(CellSpec, BTreeMap<String, Value>)> = grid
        .iter()
        .map(|(spec, o)| (spec.clone(), o.outputs.clone()))
        .collect();
    report.agreement = agreement(&outputs);
    report.cells = grid.into_iter().map(|(_, o)| o.report).collect();
    report.cells.extend(compare);
    mark_pareto(&mut report.cells);
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn agreement_pairs_dtypes_within_a_budget() {
        let spec = |b: &str, d: &str| CellSpec {
            budget: b.parse().unwrap(),
            dtype: d.into(),
        };
        let out = |v: Value| BTreeMap::from([("a.pdf".to_string(), v)]);
        let cells = vec![
            (spec("70", "fp32"), out(json!({"x": 1, "y": 2}))),
            (spec("70", "q4"), out(json!({"x": 1, "y": 3}))),
            (spec("140", "fp32"), out(json!({"x": 1}))),
        ];
        let rows = agreement(&cells);
        assert_eq!(rows.len(), 1, "only the two cells of budget 70 pair");
        assert_eq!((rows[0].a.as_str(), rows[0].b.as_str()), ("fp32", "q4"));
        assert_eq!((rows[0].counts.same, rows[0].counts.total), (1, 2));
        assert_eq!(rows[0].rate, Some(0.5));
    }

    #[test]
    fn cells_run_with_their_settings_as_flags() {
        let mut settings = JobSettingsArgs::default();
        settings.model.model = Some("m".into());
        settings.generation.max_new_tokens = Some(16);
        settings.job.allow_partial = Some(true);
        settings.job.format = Some("md".parse().unwrap());
        settings.pages.password = Some("secret".parse().unwrap());
        let command = CellCommand {
            program: "quire".into(),
            inputs: vec!["in".into()],
            settings,
        };
        let spec = CellSpec {
            budget: "140".parse().unwrap(),
            dtype: "q4,vision=fp32".into(),
        };
        assert_eq!(spec.folder(), "b140-q4_vision-fp32");
        let args: Vec<String> = command
            .args(&spec, Path::new("bench/b140"))
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        let joined = args.join(" ");
        assert!(joined.starts_with("run --"), "{joined}");
        assert!(joined.ends_with(" -- in"), "{joined}");
        for pair in [
            "--out=bench/b140",
            "--budget=140",
            "--dtype=vision=fp32,embed=q4,decoder=q4",
            "--model=m",
            "--max-new-tokens=16",
            "--allow-partial=true",
            "--format=md,jsonl",
        ] {
            assert!(joined.contains(pair), "{pair} in {joined}");
        }
        assert!(!joined.contains("secret"), "{joined}");
        assert_eq!(
            command.env(),
            [("QUIRE_PASSWORD".to_string(), "secret".to_string())]
        );
    }
}
