//! What a bench found, and its three files: `bench.json` (everything), `bench.csv` (one row
//! per cell) and `bench.html` (the accuracy-vs-pages/s scatter as inline SVG, the table and
//! the dtype agreement; self-contained, nothing fetched).

use super::metrics::{Agreement, CharErrors, FieldCounts};
use plotters::prelude::*;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchReport {
    /// `extract`, `ocr` or `prompt`.
    pub task: String,
    pub model: String,
    pub schema: Option<String>,
    pub truth: Option<String>,
    /// Documents found in the inputs.
    pub documents: usize,
    /// The grid's cells, then the reference model's row (`--compare`).
    pub cells: Vec<CellReport>,
    /// For each budget, each pair of dtypes.
    pub agreement: Vec<AgreementRow>,
}

/// One row of the table.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CellReport {
    /// `b70 fp32`, or the reference model's name.
    pub label: String,
    pub row: RowKind,
    pub budget: Option<u32>,
    pub dtype: Option<String>,
    /// The cell's output folder (grid cells).
    pub out: Option<String>,
    /// Exit code of the cell's `quire run` (grid cells).
    pub exit_code: Option<i32>,
    pub documents: u64,
    pub failed: u64,
    pub pages: u64,
    /// Documents the truth has an entry for (for the task).
    pub scored: u64,
    pub fields: Option<FieldCounts>,
    pub precision: Option<f64>,
    pub recall: Option<f64>,
    pub f1: Option<f64>,
    pub chars: Option<CharErrors>,
    pub cer: Option<f64>,
    /// F1 (extract) or 1 − CER, at least 0 (ocr): the scatter's y axis.
    pub accuracy: Option<f64>,
    /// Pages over the span from the first document's start to the last one's end.
    pub pages_per_s: Option<f64>,
    pub latency_p50_ms: Option<f64>,
    pub latency_p95_ms: Option<f64>,
    pub peak_rss_mib: Option<f64>,
    /// The whole cell, model loading included.
    pub wall_s: f64,
    pub prompt_tokens: u64,
    pub generated_tokens: u64,
    /// Not beaten in both accuracy and pages/s by another grid cell.
    pub pareto: bool,
    /// Why documents (or the cell) failed: the first few.
    pub errors: Vec<String>,
}

/// Where a row comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RowKind {
    /// A cell of the grid: quire at one budget and dtype.
    #[default]
    Grid,
    /// The reference model (`--compare`).
    Compare,
}

impl RowKind {
    pub fn name(self) -> &'static str {
        match self {
            RowKind::Grid => "grid",
            RowKind::Compare => "compare",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgreementRow {
    pub budget: u32,
    pub a: String,
    pub b: String,
    #[serde(flatten)]
    pub counts: Agreement,
    /// `null` when no document of the budget had an output in both.
    pub rate: Option<f64>,
}

/// The CSV columns, in order.
pub const CSV_COLUMNS: [&str; 24] = [
    "label",
    "row",
    "budget",
    "dtype",
    "exit_code",
    "documents",
    "failed",
    "pages",
    "scored",
    "precision",
    "recall",
    "f1",
    "cer",
    "accuracy",
    "pages_per_s",
    "latency_p50_ms",
    "latency_p95_ms",
    "peak_rss_mib",
    "wall_s",
    "prompt_tokens",
    "generated_tokens",
    "pareto",
    "out",
    "errors",
];

#[derive(Debug, thiserror::Error)]
#[error("writing {path}: {source}")]
pub struct WriteError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

impl BenchReport {
    /// Writes `bench.json`, `bench.csv` and `bench.html` into `dir`; their paths.
    pub fn write(&self, dir: &Path) -> Result<Vec<PathBuf>, WriteError> {
        let mut json = serde_json::to_vec_pretty(self).expect("reports serialize");
        json.push(b'\n');
        let files = [
            ("bench.json", json),
            ("bench.csv", self.csv().into_bytes()),
            ("bench.html", self.html().into_bytes()),
        ];
        let mut written = Vec::new();
        for (name, bytes) in files {
            let path = dir.join(name);
            quire_exporters::atomic::write_atomic(&path, &bytes, 0o644).map_err(|source| {
                WriteError {
                    path: path.clone(),
                    source,
                }
            })?;
            written.push(path);
        }
        Ok(written)
    }

    pub fn csv(&self) -> String {
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(CSV_COLUMNS).expect("in memory");
        for c in &self.cells {
            let opt = |v: Option<f64>| v.map(|v| format!("{v:.4}")).unwrap_or_default();
            let row = [
                c.label.clone(),
                c.row.name().to_string(),
                c.budget.map(|b| b.to_string()).unwrap_or_default(),
                c.dtype.clone().unwrap_or_default(),
                c.exit_code.map(|e| e.to_string()).unwrap_or_default(),
                c.documents.to_string(),
                c.failed.to_string(),
                c.pages.to_string(),
                c.scored.to_string(),
                opt(c.precision),
                opt(c.recall),
                opt(c.f1),
                opt(c.cer),
                opt(c.accuracy),
                opt(c.pages_per_s),
                opt(c.latency_p50_ms),
                opt(c.latency_p95_ms),
                opt(c.peak_rss_mib),
                format!("{:.3}", c.wall_s),
                c.prompt_tokens.to_string(),
                c.generated_tokens.to_string(),
                c.pareto.to_string(),
                c.out.clone().unwrap_or_default(),
                c.errors.join(" | "),
            ];
            w.write_record(&row).expect("in memory");
        }
        String::from_utf8(w.into_inner().expect("in memory")).expect("UTF-8 fields")
    }

    /// The scatter: accuracy (y) against pages/s (x), Pareto cells filled and joined, the
    /// reference model as a triangle.
    pub fn svg(&self) -> String {
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (720, 440)).into_drawing_area();
            // Drawing into a string cannot fail short of a plotters bug: a plot is an extra.
            let _ = self.draw(&root);
            let _ = root.present();
        }
        svg
    }

    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, plotters::coord::Shift>,
    ) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        root.fill(&WHITE)?;
        let points: Vec<(&CellReport, f64, f64)> = self
            .cells
            .iter()
            .filter_map(|c| Some((c, c.pages_per_s?, c.accuracy?)))
            .collect();
        let accuracy = if self.task == "extract" {
            "accuracy (field F1)"
        } else {
            "accuracy (1 - CER)"
        };
        let max_x = points.iter().map(|p| p.1).fold(0.0, f64::max).max(1e-3) * 1.35;
        let mut chart = ChartBuilder::on(root)
            .caption(
                format!("{}: {accuracy} vs pages/s", self.model),
                ("sans-serif", 18),
            )
            .margin(16)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..max_x, 0.0..1.05)?;
        chart
            .configure_mesh()
            .x_desc("pages/s")
            .y_desc(accuracy)
            .draw()?;
        if points.is_empty() {
            root.draw(&Text::new(
                "no cell has both an accuracy (give --truth) and a throughput",
                (120, 200),
                ("sans-serif", 15),
            ))?;
            return Ok(());
        }
        let mut frontier: Vec<(f64, f64)> = points
            .iter()
            .filter(|p| p.0.pareto)
            .map(|p| (p.1, p.2))
            .collect();
        frontier.sort_by(|a, b| a.0.total_cmp(&b.0));
        chart.draw_series(LineSeries::new(frontier, RED.stroke_width(2)))?;
        // Labels alternate between two heights above their points: cells of equal accuracy
        // sit in a row.
        for (i, (cell, x, y)) in points.iter().enumerate() {
            let dy = if i % 2 == 0 { -16 } else { -30 };
            let colour = if cell.row == RowKind::Compare {
                GREEN.filled()
            } else if cell.pareto {
                RED.filled()
            } else {
                BLUE.stroke_width(2)
            };
            if cell.row == RowKind::Compare {
                chart.draw_series(std::iter::once(TriangleMarker::new((*x, *y), 7, colour)))?;
            } else {
                chart.draw_series(std::iter::once(Circle::new((*x, *y), 5, colour)))?;
            }
            chart.draw_series(std::iter::once(
                EmptyElement::at((*x, *y))
                    + Text::new(cell.label.clone(), (6, dy), ("sans-serif", 12)),
            ))?;
        }
        Ok(())
    }

    pub fn html(&self) -> String {
        let mut h = String::new();
        let title = format!("quire bench: {} ({})", esc(&self.model), esc(&self.task));
        let _ = write!(
            h,
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\
             <style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}\
             td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}\
             td:first-child,th:first-child{{text-align:left}}tr.pareto td{{background:#fde}}\
             </style></head><body>\n<h1>{title}</h1>\n<p>{} documents; truth: {}; schema: {}. \
             Pareto-optimal cells (accuracy vs pages/s) are highlighted.</p>\n",
            self.documents,
            esc(self.truth.as_deref().unwrap_or("none")),
            esc(self.schema.as_deref().unwrap_or("none")),
        );
        h.push_str(&self.svg());
        h.push_str("\n<h2>Cells</h2>\n<table>\n<tr>");
        let columns = [
            "cell",
            "docs",
            "failed",
            "pages",
            "scored",
            "P",
            "R",
            "F1",
            "CER",
            "pages/s",
            "p50 ms/page",
            "p95 ms/page",
            "peak RSS MiB",
            "wall s",
            "prompt tok",
            "gen tok",
            "Pareto",
        ];
        for c in columns {
            let _ = write!(h, "<th>{c}</th>");
        }
        h.push_str("</tr>\n");
        let f = |v: Option<f64>, digits: usize| match v {
            Some(v) => format!("{v:.digits$}"),
            None => "–".into(),
        };
        for c in &self.cells {
            let _ = writeln!(
                h,
                "<tr{}><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
                 <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
                 <td>{:.1}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                if c.pareto { " class=\"pareto\"" } else { "" },
                esc(&c.label),
                c.documents,
                c.failed,
                c.pages,
                c.scored,
                f(c.precision, 3),
                f(c.recall, 3),
                f(c.f1, 3),
                f(c.cer, 3),
                f(c.pages_per_s, 2),
                f(c.latency_p50_ms, 0),
                f(c.latency_p95_ms, 0),
                f(c.peak_rss_mib, 0),
                c.wall_s,
                c.prompt_tokens,
                c.generated_tokens,
                if c.pareto { "yes" } else { "" },
            );
        }
        h.push_str("</table>\n");
        if !self.agreement.is_empty() {
            h.push_str(
                "<h2>Dtype agreement</h2>\n<p>Same budget, same documents: fields with equal \
                 (normalised) values over fields in either (extract), or 1 − CER of one text \
                 against the other (ocr).</p>\n<table><tr><th>budget</th><th>a</th><th>b</th>\
                 <th>agreement</th><th>identical documents</th></tr>\n",
            );
            for a in &self.agreement {
                let _ = writeln!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{} ({}/{})</td><td>{}/{}</td></tr>",
                    a.budget,
                    esc(&a.a),
                    esc(&a.b),
                    a.rate.map_or_else(|| "–".into(), |r| format!("{r:.3}")),
                    a.counts.same,
                    a.counts.total,
                    a.counts.identical_documents,
                    a.counts.documents
                );
            }
            h.push_str("</table>\n");
        }
        let errors: Vec<String> = self
            .cells
            .iter()
            .flat_map(|c| c.errors.iter().map(move |e| format!("{}: {e}", c.label)))
            .collect();
        if !errors.is_empty() {
            h.push_str("<h2>Failures</h2>\n<ul>\n");
            for e in errors {
                let _ = writeln!(h, "<li>{}</li>", esc(&e));
            }
            h.push_str("</ul>\n");
        }
        h.push_str("</body></html>\n");
        h
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
