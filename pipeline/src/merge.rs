//! `quire merge`: the outputs and state of several shard runs as one result set, as if one run
//! had processed everything.

use crate::state::{StateError, StateStore, STATE_DIR};
use quire_exporters::atomic::write_atomic;
use quire_exporters::formats::{CSV_NAME, JSONL_NAME};
use quire_exporters::layout::prepare_parent;
use quire_exporters::record::DocumentRecord;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} and {1} hold different contents for the same output")]
    Conflict(PathBuf, PathBuf),
    #[error("{0}: the CSV header differs from the other shards' (different schemas?)")]
    CsvHeader(PathBuf),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Layout(#[from] quire_exporters::layout::LayoutError),
}

#[derive(Debug, Default)]
pub struct MergeReport {
    pub files: usize,
    pub documents: usize,
    pub failed: usize,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> MergeError + '_ {
    move |source| MergeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Merges the shard output folders `shards` into `out`, with files created with `mode`.
pub fn merge(out: &Path, shards: &[PathBuf], mode: u32) -> Result<MergeReport, MergeError> {
    let mut report = MergeReport::default();
    // Output file → the shard file it came from.
    let mut seen: BTreeMap<PathBuf, PathBuf> = BTreeMap::new();
    let mut records: Vec<DocumentRecord> = Vec::new();
    let mut csv_header: Option<String> = None;
    let mut csv_rows: Vec<(String, String)> = Vec::new();
    let store = StateStore::open(out)?;
    for shard in shards {
        for entry in walkdir::WalkDir::new(shard).sort_by_file_name() {
            let entry = entry.map_err(|e| MergeError::Io {
                path: shard.clone(),
                source: e.into(),
            })?;
            let path = entry.path();
            let relative = path.strip_prefix(shard).expect("walked under the shard");
            if !entry.file_type().is_file() || relative.starts_with(STATE_DIR) {
                continue;
            }
            let bytes = std::fs::read(path).map_err(io(path))?;
            if relative == Path::new(JSONL_NAME) {
                continue; // rebuilt from the per-document files
            }
            if relative == Path::new(CSV_NAME) {
                let text = String::from_utf8_lossy(&bytes).into_owned();
                let mut lines = text.lines();
                let header = lines.next().unwrap_or_default().to_string();
                match &csv_header {
                    Some(h) if *h != header => return Err(MergeError::CsvHeader(path.into())),
                    _ => csv_header = Some(header),
                }
                // Rows start with the quoted or plain source path: sorting by the row text
                // keeps the order a single run gives.
                csv_rows.extend(lines.map(|l| (l.to_string(), l.to_string())));
                continue;
            }
            let target = out.join(relative);
            if let Some(first) = seen.get(&target) {
                if std::fs::read(&target).map_err(io(&target))? != bytes {
                    return Err(MergeError::Conflict(first.clone(), path.to_path_buf()));
                }
                continue;
            }
            prepare_parent(out, &target)?;
            write_atomic(&target, &bytes, mode).map_err(io(&target))?;
            seen.insert(target, path.to_path_buf());
            report.files += 1;
            if path.extension().is_some_and(|e| e == "json") {
                if let Ok(record) = serde_json::from_slice::<DocumentRecord>(&bytes) {
                    records.push(record);
                }
            }
        }
        store.absorb(&shard.join(STATE_DIR).join(crate::state::STATE_FILE))?;
    }
    records.sort_by(|a, b| a.source.cmp(&b.source));
    report.documents = records.len();
    report.failed = records.iter().filter(|r| r.error.is_some()).count();
    let mut jsonl = Vec::new();
    for record in &records {
        serde_json::to_writer(&mut jsonl, record).expect("records serialize");
        jsonl.push(b'\n');
    }
    let path = out.join(JSONL_NAME);
    write_atomic(&path, &jsonl, mode).map_err(io(&path))?;
    if let Some(header) = csv_header {
        csv_rows.sort();
        let mut text = header + "\n";
        for (_, row) in csv_rows {
            text.push_str(&row);
            text.push('\n');
        }
        let path = out.join(CSV_NAME);
        write_atomic(&path, text.as_bytes(), mode).map_err(io(&path))?;
    }
    Ok(report)
}
