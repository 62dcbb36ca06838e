//! The output formats: a JSON file and a Markdown file per document, and `results.jsonl` /
//! `results.csv` over all documents of a run.

use crate::atomic::{write_atomic, AtomicFile};
use crate::layout::{output_path, prepare_parent, LayoutError};
use crate::record::DocumentRecord;
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Json,
    Jsonl,
    Csv,
    Markdown,
}

impl Format {
    pub const ALL: [Format; 4] = [Format::Json, Format::Jsonl, Format::Csv, Format::Markdown];

    /// The `--format` name.
    pub fn name(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Jsonl => "jsonl",
            Format::Csv => "csv",
            Format::Markdown => "md",
        }
    }

    /// Whether the format writes a record's `data` (extract's result): the JSON files hold the
    /// whole record, the CSV table one column per property.
    pub fn holds_data(self) -> bool {
        matches!(self, Format::Json | Format::Jsonl | Format::Csv)
    }

    /// Whether the format writes a record's `text` (the result of ocr and prompt): the JSON
    /// files hold the whole record, Markdown the text; the CSV table has no column for it.
    pub fn holds_text(self) -> bool {
        matches!(self, Format::Json | Format::Jsonl | Format::Markdown)
    }
}

/// A `--format` name that is none of ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown output format {0:?}: expected json, jsonl, csv or md")]
pub struct UnknownFormat(pub String);

impl std::str::FromStr for Format {
    type Err = UnknownFormat;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "json" => Ok(Format::Json),
            "jsonl" => Ok(Format::Jsonl),
            "csv" => Ok(Format::Csv),
            "md" | "markdown" => Ok(Format::Markdown),
            other => Err(UnknownFormat(other.to_string())),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// The cause is in the message (not a `source`): records carry the message alone.
    #[error("cannot write {}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("--format csv needs a flat schema (an object of scalar properties): {0}")]
    NotFlat(String),
}

pub const JSONL_NAME: &str = "results.jsonl";
pub const CSV_NAME: &str = "results.csv";
pub const REVIEW_NAME: &str = "review.jsonl";

/// Writes the outputs of one run under `out`.
#[derive(Debug, Clone)]
pub struct Exporter {
    out: PathBuf,
    formats: Vec<Format>,
    mode: u32,
    csv_columns: Vec<String>,
}

impl Exporter {
    /// `schema` is the user's JSON Schema for `extract`; CSV takes its columns from it.
    pub fn new(
        out: &Path,
        formats: &[Format],
        mode: u32,
        schema: Option<&Value>,
    ) -> Result<Self, ExportError> {
        let csv_columns = if formats.contains(&Format::Csv) {
            flat_columns(schema)?
        } else {
            Vec::new()
        };
        Ok(Exporter {
            out: out.to_path_buf(),
            formats: formats.to_vec(),
            mode,
            csv_columns,
        })
    }

    pub fn out(&self) -> &Path {
        &self.out
    }

    /// The per-document files (`<source>.json`, `<source>.md`) for the document at `relative`
    /// (its path under its input root). All or nothing: each file is written completely to its
    /// temporary first, and only then are they renamed into place (the JSON last), so a failure
    /// (a full disk) leaves the previous outputs or none, never a new JSON without its
    /// Markdown. Returns the paths written.
    pub fn write_document(
        &self,
        relative: &Path,
        record: &DocumentRecord,
    ) -> Result<Vec<PathBuf>, ExportError> {
        let mut files = Vec::new();
        if self.formats.contains(&Format::Json) {
            files.push((
                output_path(&self.out, relative, "json")?,
                document_json(record),
            ));
        }
        if self.formats.contains(&Format::Markdown) {
            if let Some(text) = &record.text {
                let mut bytes = text.clone().into_bytes();
                if !bytes.ends_with(b"\n") {
                    bytes.push(b'\n');
                }
                files.push((output_path(&self.out, relative, "md")?, bytes));
            }
        }
        // Dropped on an error, the temporaries written so far are removed.
        let mut staged = Vec::with_capacity(files.len());
        for (path, bytes) in &files {
            prepare_parent(&self.out, path)?;
            let io = |error| ExportError::Io {
                path: path.clone(),
                error,
            };
            let mut file = AtomicFile::create(path, self.mode).map_err(io)?;
            file.write_all(bytes).map_err(io)?;
            file.sync().map_err(io)?;
            staged.push((path, file));
        }
        for (path, file) in staged.into_iter().rev() {
            file.commit().map_err(|error| ExportError::Io {
                path: path.clone(),
                error,
            })?;
        }
        Ok(files.into_iter().map(|(path, _)| path).collect())
    }

    /// `results.jsonl` and `results.csv` over `records` (in the order given), replaced whole.
    pub fn write_summaries(&self, records: &[DocumentRecord]) -> Result<(), ExportError> {
        if self.formats.contains(&Format::Jsonl) {
            let mut bytes = Vec::new();
            for record in records {
                serde_json::to_writer(&mut bytes, record).expect("records serialize");
                bytes.push(b'\n');
            }
            self.write(&self.out.join(JSONL_NAME), &bytes)?;
        }
        if self.formats.contains(&Format::Csv) {
            let bytes = csv_table(&self.csv_columns, records);
            self.write(&self.out.join(CSV_NAME), &bytes)?;
        }
        Ok(())
    }

    /// `review.jsonl` over `records`: one line per value whose confidence is below `threshold`
    /// (`source`, `field` as a JSON Pointer into `data`, `value`, `confidence`, `page`, `box`),
    /// replaced whole. Returns the number of lines and of documents they come from.
    pub fn write_review(
        &self,
        records: &[DocumentRecord],
        threshold: f64,
    ) -> Result<(usize, usize), ExportError> {
        let mut bytes = Vec::new();
        let (mut lines, mut documents) = (0, 0);
        for record in records {
            let Some(data) = &record.data else { continue };
            let before = lines;
            for (field, f) in record.fields_below(threshold) {
                let line = ReviewLine {
                    source: &record.source,
                    field,
                    value: data.pointer(field),
                    confidence: f.confidence,
                    page: f.page,
                    bbox: f.bbox,
                };
                serde_json::to_writer(&mut bytes, &line).expect("values serialize");
                bytes.push(b'\n');
                lines += 1;
            }
            documents += usize::from(lines > before);
        }
        self.write(&self.out.join(REVIEW_NAME), &bytes)?;
        Ok((lines, documents))
    }

    fn write(&self, path: &Path, bytes: &[u8]) -> Result<(), ExportError> {
        prepare_parent(&self.out, path)?;
        write_atomic(path, bytes, self.mode).map_err(|error| ExportError::Io {
            path: path.to_path_buf(),
            error,
        })
    }
}

/// One line of `review.jsonl`.
#[derive(serde::Serialize)]
struct ReviewLine<'a> {
    source: &'a str,
    field: &'a str,
    value: Option<&'a Value>,
    confidence: f64,
    page: Option<u32>,
    #[serde(rename = "box")]
    bbox: Option<[f32; 4]>,
}

/// The per-document JSON: pretty, schema key order kept, newline-terminated.
pub fn document_json(record: &DocumentRecord) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(record).expect("records serialize");
    bytes.push(b'\n');
    bytes
}

/// CSV columns of a flat schema: its properties in schema order.
fn flat_columns(schema: Option<&Value>) -> Result<Vec<String>, ExportError> {
    let Some(schema) = schema else {
        // Without a schema (ocr, prompt) the table holds the provenance columns only.
        return Ok(Vec::new());
    };
    let properties = schema
        .get("properties")
        .and_then(Value::as_object)
        .ok_or_else(|| ExportError::NotFlat("the schema has no `properties`".into()))?;
    let mut columns = Vec::new();
    for (name, property) in properties {
        if !is_scalar(property) {
            return Err(ExportError::NotFlat(format!(
                "property `{name}` is not a string, number, integer, boolean or null"
            )));
        }
        columns.push(name.clone());
    }
    Ok(columns)
}

fn is_scalar(property: &Value) -> bool {
    let scalar = |t: &str| matches!(t, "string" | "number" | "integer" | "boolean" | "null");
    match property.get("type") {
        Some(Value::String(t)) => scalar(t),
        Some(Value::Array(ts)) => ts.iter().all(|t| t.as_str().is_some_and(scalar)),
        // `enum`/`const` without a type: scalar when every value is.
        None => property
            .get("enum")
            .and_then(Value::as_array)
            .map(|vs| vs.iter().all(|v| !v.is_object() && !v.is_array()))
            .or_else(|| {
                property
                    .get("const")
                    .map(|v| !v.is_object() && !v.is_array())
            })
            .unwrap_or(false),
        _ => false,
    }
}

fn csv_table(columns: &[String], records: &[DocumentRecord]) -> Vec<u8> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    let mut header = vec!["source", "content_sha256", "page_count"];
    header.extend(columns.iter().map(String::as_str));
    header.push("error");
    writer.write_record(&header).expect("in-memory csv");
    for record in records {
        let mut row = vec![
            record.source.clone(),
            record.content_sha256.clone(),
            record.page_count.to_string(),
        ];
        for column in columns {
            let value = record.data.as_ref().and_then(|d| d.get(column));
            row.push(match value {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
            });
        }
        row.push(
            record
                .error
                .as_ref()
                .map(|e| format!("{}: {}", e.kind, e.message))
                .unwrap_or_default(),
        );
        writer.write_record(&row).expect("in-memory csv");
    }
    writer.into_inner().expect("in-memory csv")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::*;

    fn record(source: &str, data: Option<Value>, error: Option<ErrorRecord>) -> DocumentRecord {
        DocumentRecord {
            source: source.into(),
            content_sha256: "ab".repeat(32),
            page_count: 2,
            task: "extract".into(),
            settings: Settings {
                model: "tiny".into(),
                dtype: "fp32".into(),
                budget: 280,
                execution_provider: "cpu".into(),
                schema: None,
                fingerprint: String::new(),
            },
            data,
            fields: Default::default(),
            text: Some("# Page 1".into()),
            pages: vec![],
            tokens: TokenCounts::default(),
            warnings: vec![],
            error,
            run: RunInfo::default(),
        }
    }

    #[test]
    fn writes_each_format_under_the_mirrored_tree() {
        let dir = tempfile::tempdir().unwrap();
        let schema = serde_json::json!({"type": "object", "properties": {
            "number": {"type": "string"}, "total": {"type": ["number", "null"]},
            "currency": {"enum": ["EUR", "USD"]}}});
        let formats = [Format::Json, Format::Jsonl, Format::Csv, Format::Markdown];
        let exporter = Exporter::new(dir.path(), &formats, 0o600, Some(&schema)).unwrap();
        let good = record(
            "a/inv, \"1\".pdf",
            Some(serde_json::json!({"number": "A-1", "total": 12.5, "currency": "EUR"})),
            None,
        );
        let bad = record(
            "b.pdf",
            None,
            Some(ErrorRecord {
                kind: crate::error_kind::ErrorKind::PdfCorrupt,
                message: "not a PDF".into(),
                page: None,
            }),
        );
        let written = exporter
            .write_document(Path::new("a/inv, \"1\".pdf"), &good)
            .unwrap();
        assert_eq!(written.len(), 2);
        let json: Value = serde_json::from_slice(&std::fs::read(&written[0]).unwrap()).unwrap();
        assert_eq!(json["data"]["number"], "A-1");
        assert_eq!(std::fs::read_to_string(&written[1]).unwrap(), "# Page 1\n");
        exporter
            .write_summaries(&[good.clone(), bad.clone()])
            .unwrap();
        let lines = std::fs::read_to_string(dir.path().join(JSONL_NAME)).unwrap();
        let parsed: Vec<DocumentRecord> = lines
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(parsed, vec![good, bad]);
        let mut reader = csv::Reader::from_path(dir.path().join(CSV_NAME)).unwrap();
        let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
        assert_eq!(
            header,
            [
                "source",
                "content_sha256",
                "page_count",
                "number",
                "total",
                "currency",
                "error"
            ]
        );
        let rows: Vec<Vec<String>> = reader
            .records()
            .map(|r| r.unwrap().iter().map(String::from).collect())
            .collect();
        assert_eq!(rows[0][0], "a/inv, \"1\".pdf");
        assert_eq!(&rows[0][3..6], ["A-1", "12.5", "EUR"]);
        assert_eq!(rows[1][6], "pdf_corrupt: not a PDF");
        assert_eq!(rows[1][3], "");
    }

    #[test]
    fn csv_refuses_nested_schemas_by_name() {
        let schema = serde_json::json!({"type": "object", "properties": {
            "vendor": {"type": "object", "properties": {"name": {"type": "string"}}}}});
        let err =
            Exporter::new(Path::new("/tmp/x"), &[Format::Csv], 0o600, Some(&schema)).unwrap_err();
        assert!(err.to_string().contains("`vendor`"), "{err}");
    }

    #[test]
    fn parses_format_lists() {
        assert_eq!("md".parse::<Format>().unwrap(), Format::Markdown);
        assert!("xml"
            .parse::<Format>()
            .unwrap_err()
            .to_string()
            .contains("json, jsonl, csv or md"));
    }

    #[test]
    fn a_document_whose_markdown_cannot_be_written_keeps_its_old_json() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path();
        let exporter = Exporter::new(out, &[Format::Json, Format::Markdown], 0o600, None).unwrap();
        std::fs::write(out.join("a.pdf.json"), b"old").unwrap();
        // A folder where the Markdown goes: its temporary is written, the rename fails.
        std::fs::create_dir(out.join("a.pdf.md")).unwrap();
        let err = exporter
            .write_document(Path::new("a.pdf"), &record("a.pdf", None, None))
            .unwrap_err();
        assert!(
            err.to_string().starts_with(&format!(
                "cannot write {}: ",
                out.join("a.pdf.md").display()
            )),
            "{err}"
        );
        assert_eq!(std::fs::read(out.join("a.pdf.json")).unwrap(), b"old");
        let mut names: Vec<_> = std::fs::read_dir(out)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["a.pdf.json", "a.pdf.md"], "no temporaries left");
    }

    #[test]
    fn review_lists_the_values_below_the_threshold() {
        let dir = tempfile::tempdir().unwrap();
        let field = |confidence, page| FieldRecord {
            confidence,
            mean_probability: confidence,
            page,
            bbox: Some([72.0, 697.5, 153.4, 708.6]),
            alternatives: Vec::new(),
        };
        let mut sure = record("a.pdf", Some(serde_json::json!({"n": "A-1", "t": 3})), None);
        sure.fields.insert("/n".into(), field(0.95, Some(0)));
        sure.fields.insert("/t".into(), field(0.42, Some(1)));
        let mut failed = record("b.pdf", None, None);
        failed.fields.insert("/n".into(), field(0.1, None));
        let exporter = Exporter::new(dir.path(), &[Format::Json], 0o600, None).unwrap();
        let counts = exporter.write_review(&[sure, failed], 0.8).unwrap();
        assert_eq!(counts, (1, 1));
        let text = std::fs::read_to_string(dir.path().join(REVIEW_NAME)).unwrap();
        assert_eq!(
            text,
            "{\"source\":\"a.pdf\",\"field\":\"/t\",\"value\":3,\"confidence\":0.42,\
             \"page\":1,\"box\":[72.0,697.5,153.4,708.6]}\n"
        );
    }
}
