//! Pulling a Gemma 4 ONNX repository from a Hugging Face hub, or a mirror with the same API
//! (`HF_ENDPOINT`): only the graphs of the chosen dtypes and the side files, each download
//! resumed with ranged requests after a dropped connection or an interrupted run, each LFS file
//! checked against the sha256 the hub lists, and a [`Manifest`] written at the end.
//!
//! The hub's API as used here: `GET /api/models/{repo}/revision/{rev}?blobs=true` lists the
//! commit (`sha`) and every file (`siblings[].rfilename`, `size`, `lfs.sha256`);
//! `GET /{repo}/resolve/{commit}/{path}` serves a file (ranged requests answered with 206).

use crate::gemma4::model_dir::{Dtype, Graph, ParseDtypeError};
use crate::manifest::{is_safe_relative, sha256_file, Manifest, ManifestEntry, ManifestError};
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";
/// Downloads of one file are retried (resuming where they stopped) this many times.
const ATTEMPTS: u32 = 5;

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error(
        "cannot reach the model hub at {endpoint}: {reason}. Check the network or proxy \
         (HTTPS_PROXY), set HF_ENDPOINT to a reachable mirror, or on a machine without network \
         copy a pulled model folder over and check it with `quire model verify DIR`"
    )]
    Unreachable { endpoint: String, reason: String },
    #[error("{url}: HTTP {status}{hint}")]
    Status {
        url: String,
        status: u16,
        hint: &'static str,
    },
    #[error("{url}: {reason}")]
    BadResponse { url: String, reason: String },
    #[error("{repo}@{revision}: no files for dtype {dtypes} (present: {present})")]
    NothingSelected {
        repo: String,
        revision: String,
        dtypes: String,
        present: String,
    },
    #[error(
        "{file}: sha256 {actual} does not match the hub's {expected}; the download was deleted"
    )]
    HashMismatch {
        file: String,
        expected: String,
        actual: String,
    },
    #[error(
        "{file}: {actual} bytes downloaded, the hub lists {expected}; the download was deleted"
    )]
    SizeMismatch {
        file: String,
        expected: u64,
        actual: u64,
    },
    #[error("{file}: download failed after {ATTEMPTS} attempts: {reason}")]
    Download { file: String, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Manifest(#[from] ManifestError),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> HubError + '_ {
    move |source| HubError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A file of the repository as the hub lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoFile {
    pub path: String,
    pub size: Option<u64>,
    /// sha256 of the content, for files stored in LFS.
    pub lfs_sha256: Option<String>,
}

#[derive(Debug, Clone)]
pub struct RepoInfo {
    pub commit: String,
    pub files: Vec<RepoFile>,
}

/// Which graphs to fetch: `q4f16` (all three graphs in q4f16), `q4f16,fp16` (both sets),
/// `q4f16,vision=fp16` (the q4f16 set plus the fp16 vision encoder): the union of the items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DtypeFiles {
    pub graphs: Vec<(Graph, Dtype)>,
}

impl std::str::FromStr for DtypeFiles {
    type Err = ParseDtypeError;
    fn from_str(s: &str) -> Result<Self, ParseDtypeError> {
        let mut graphs = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.split_once('=') {
                None => {
                    let d: Dtype = part.parse()?;
                    graphs.extend(Graph::ALL.map(|g| (g, d)));
                }
                Some((k, v)) => {
                    let g = Graph::from_key(k.trim())
                        .ok_or_else(|| ParseDtypeError::UnknownGraph(k.trim().to_string()))?;
                    graphs.push((g, v.parse()?));
                }
            }
        }
        graphs.dedup();
        Ok(DtypeFiles { graphs })
    }
}

impl DtypeFiles {
    /// Whether the repository file `path` belongs to the selection: a chosen graph
    /// (`onnx/<graph><suffix>.onnx`, its `.onnx_data`, `.onnx_data_N`), or a side file at the
    /// top (config, tokenizer, processor, template, readme, licence).
    pub fn wants(&self, path: &str) -> bool {
        match path.rsplit_once('/') {
            None => is_side_file(path) || self.is_graph_file(path),
            Some(("onnx", name)) => self.is_graph_file(name),
            Some(_) => false,
        }
    }

    fn is_graph_file(&self, name: &str) -> bool {
        self.graphs.iter().any(|(g, d)| {
            let graph = format!("{}{}.onnx", g.base_name(), d.suffix());
            match name.strip_prefix(&graph) {
                Some("") | Some("_data") => true,
                Some(rest) => rest
                    .strip_prefix("_data_")
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())),
                None => false,
            }
        })
    }
}

fn is_side_file(name: &str) -> bool {
    if name.starts_with('.') {
        return false;
    }
    match name.rsplit_once('.') {
        None => true, // LICENSE, NOTICE
        Some((_, ext)) => matches!(ext, "json" | "jinja" | "txt" | "md"),
    }
}

/// Something to show while pulling; every method has a no-op default.
pub trait PullObserver {
    /// A download starts (`from` > 0: resumed from a partial file).
    fn start(&mut self, _file: &RepoFile, _from: u64) {}
    /// Bytes of the current file on disk so far.
    fn progress(&mut self, _done: u64) {}
    /// The connection dropped; the download resumes from `at`.
    fn retry(&mut self, _file: &RepoFile, _at: u64, _reason: &str) {}
    /// The file is in place (`downloaded` false: it was already there, hash checked).
    fn done(&mut self, _file: &RepoFile, _downloaded: bool) {}
}

/// A client of one hub.
pub struct Hub {
    pub endpoint: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl Hub {
    /// `HF_ENDPOINT` (default <https://huggingface.co>) and `HF_TOKEN` (sent as a bearer token).
    pub fn from_env() -> Self {
        let endpoint = std::env::var("HF_ENDPOINT")
            .ok()
            .filter(|e| !e.is_empty())
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        let token = std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty());
        Hub::new(&endpoint, token)
    }

    pub fn new(endpoint: &str, token: Option<String>) -> Self {
        let tls = ureq::tls::TlsConfig::builder()
            // The system's trust store, so a corporate mirror's own CA is accepted.
            .root_certs(ureq::tls::RootCerts::PlatformVerifier)
            .build();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(120)))
            // A stalled transfer is a dropped connection: resumed like one.
            .timeout_per_read(Some(Duration::from_secs(120)))
            .user_agent(concat!("quire/", env!("CARGO_PKG_VERSION")))
            // The token stays with the hub: LFS downloads redirect to signed storage URLs.
            .redirect_auth_headers(ureq::config::RedirectAuthHeaders::SameHost)
            .tls_config(tls)
            .build()
            .into();
        Hub {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            token,
            agent,
        }
    }

    fn get(&self, url: &str, range_from: u64) -> Result<ureq::http::Response<ureq::Body>, String> {
        let mut req = self.agent.get(url);
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        if range_from > 0 {
            req = req.header("Range", format!("bytes={range_from}-"));
        }
        req.call().map_err(|e| e.to_string())
    }

    fn status_error(url: String, status: u16) -> HubError {
        let hint = match status {
            401 | 403 => " (a gated or private repository needs HF_TOKEN)",
            404 => " (no such repository, revision or file)",
            _ => "",
        };
        HubError::Status { url, status, hint }
    }

    /// The commit `revision` resolves to and the files of that commit.
    pub fn repo_info(&self, repo: &str, revision: &str) -> Result<RepoInfo, HubError> {
        let url = format!(
            "{}/api/models/{}/revision/{}?blobs=true",
            self.endpoint,
            encode_path(repo),
            encode_segment(revision)
        );
        let mut resp = self.get(&url, 0).map_err(|reason| HubError::Unreachable {
            endpoint: self.endpoint.clone(),
            reason,
        })?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(Self::status_error(url, status));
        }
        let bad = |reason: String| HubError::BadResponse {
            url: url.clone(),
            reason,
        };
        let text = resp
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()
            .map_err(|e| bad(e.to_string()))?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let commit = v["sha"]
            .as_str()
            .ok_or_else(|| bad("no `sha` (commit) in the model info".into()))?
            .to_string();
        let siblings = v["siblings"]
            .as_array()
            .ok_or_else(|| bad("no `siblings` (file list) in the model info".into()))?;
        let mut files = Vec::with_capacity(siblings.len());
        for s in siblings {
            let path = s["rfilename"]
                .as_str()
                .ok_or_else(|| bad("a sibling without `rfilename`".into()))?;
            if !is_safe_relative(path) {
                return Err(bad(format!("file path {path:?} leaves the model folder")));
            }
            let lfs = &s["lfs"];
            // `lfs.sha256` in model info; `lfs.oid` in tree listings (some mirrors).
            let lfs_sha256 = lfs["sha256"]
                .as_str()
                .or_else(|| lfs["oid"].as_str())
                .map(|h| h.trim_start_matches("sha256:").to_ascii_lowercase());
            files.push(RepoFile {
                path: path.to_string(),
                size: s["size"].as_u64().or_else(|| lfs["size"].as_u64()),
                lfs_sha256,
            });
        }
        Ok(RepoInfo { commit, files })
    }

    /// Downloads one file into `dir` (through `<file>.part`, resumed if one is there) and
    /// checks it; returns its sha256 and whether it was fetched now (a file already in place
    /// whose hash matches the hub's is kept as it is).
    pub fn download(
        &self,
        repo: &str,
        commit: &str,
        file: &RepoFile,
        dir: &Path,
        observer: &mut dyn PullObserver,
    ) -> Result<(String, bool), HubError> {
        let dest = dir.join(&file.path);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        if let (Some(expected), Ok(meta)) = (&file.lfs_sha256, fs::metadata(&dest)) {
            if Some(meta.len()) == file.size {
                let actual = sha256_file(&dest, &mut |_| {}).map_err(io_err(&dest))?;
                if &actual == expected {
                    observer.done(file, false);
                    return Ok((actual, false));
                }
            }
        }
        let part = part_path(&dest);
        let url = format!(
            "{}/{}/resolve/{}/{}",
            self.endpoint,
            encode_path(repo),
            encode_segment(commit),
            encode_path(&file.path)
        );
        let mut last_error = String::new();
        let mut complete = false;
        let mut started = false;
        for _ in 0..ATTEMPTS {
            let mut have = fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
            if file.size.is_some_and(|s| have > s) {
                have = 0;
            }
            if file.size.is_some_and(|s| have == s) {
                complete = true;
                break;
            }
            if !started {
                observer.start(file, have);
                started = true;
            }
            match self.fetch_into(&url, &part, have, observer) {
                Ok(()) => {
                    let now = fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
                    // Without a listed size, a response that ended cleanly is the whole file.
                    if file.size.is_none_or(|s| now >= s) {
                        complete = true;
                        break;
                    }
                    last_error = format!("connection closed at {now} bytes");
                }
                Err(Fetch::Fatal(e)) => return Err(e),
                Err(Fetch::Retry(reason)) => last_error = reason,
            }
            let at = fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
            tracing::info!(file = %file.path, at, reason = %last_error, "download interrupted; resuming");
            observer.retry(file, at, &last_error);
        }
        if !complete {
            return Err(HubError::Download {
                file: file.path.clone(),
                reason: last_error,
            });
        }
        let actual_size = fs::metadata(&part).map_err(io_err(&part))?.len();
        if let Some(expected) = file.size.filter(|s| *s != actual_size) {
            let _ = fs::remove_file(&part);
            return Err(HubError::SizeMismatch {
                file: file.path.clone(),
                expected,
                actual: actual_size,
            });
        }
        let actual = sha256_file(&part, &mut |_| {}).map_err(io_err(&part))?;
        if let Some(expected) = file.lfs_sha256.as_ref().filter(|e| **e != actual) {
            let _ = fs::remove_file(&part);
            return Err(HubError::HashMismatch {
                file: file.path.clone(),
                expected: expected.clone(),
                actual,
            });
        }
        fs::rename(&part, &dest).map_err(io_err(&dest))?;
        observer.done(file, true);
        Ok((actual, true))
    }

    /// One GET of `url` appended to `part` from byte `from`.
    fn fetch_into(
        &self,
        url: &str,
        part: &Path,
        from: u64,
        observer: &mut dyn PullObserver,
    ) -> Result<(), Fetch> {
        let mut resp = self.get(url, from).map_err(Fetch::Retry)?;
        let status = resp.status().as_u16();
        let mut f = fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(part)
            .map_err(|e| Fetch::Fatal(io_err(part)(e)))?;
        let start = match status {
            206 => {
                let range = resp
                    .headers()
                    .get("content-range")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                // `bytes 100-199/200`: it must start where the partial file ends.
                let first = range
                    .strip_prefix("bytes ")
                    .and_then(|r| r.split('-').next())
                    .and_then(|n| n.parse::<u64>().ok());
                if first != Some(from) {
                    return Err(Fetch::Fatal(HubError::BadResponse {
                        url: url.to_string(),
                        reason: format!("asked for bytes from {from}, got Content-Range {range:?}"),
                    }));
                }
                from
            }
            // The server ignored the range: start over.
            200 => 0,
            500..=599 | 429 => return Err(Fetch::Retry(format!("HTTP {status}"))),
            _ => return Err(Fetch::Fatal(Self::status_error(url.to_string(), status))),
        };
        f.set_len(start)
            .and_then(|_| f.seek(SeekFrom::Start(start)))
            .map_err(|e| Fetch::Fatal(io_err(part)(e)))?;
        let mut reader = resp.body_mut().as_reader();
        let mut buf = vec![0u8; 256 << 10];
        let mut done = start;
        observer.progress(done);
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    f.flush().map_err(|e| Fetch::Fatal(io_err(part)(e)))?;
                    return Err(Fetch::Retry(e.to_string()));
                }
            };
            f.write_all(&buf[..n])
                .map_err(|e| Fetch::Fatal(io_err(part)(e)))?;
            done += n as u64;
            observer.progress(done);
        }
        f.sync_all().map_err(|e| Fetch::Fatal(io_err(part)(e)))
    }
}

enum Fetch {
    Retry(String),
    Fatal(HubError),
}

fn part_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(".part");
    dest.with_file_name(name)
}

/// What to pull and where.
pub struct PullRequest<'a> {
    pub repo: &'a str,
    pub revision: &'a str,
    pub dtypes: &'a DtypeFiles,
    pub dest: &'a Path,
}

/// The result of a pull.
pub struct Pulled {
    pub manifest: Manifest,
    /// Files fetched now (the others were already in place).
    pub downloaded: usize,
}

/// Lists the repository, downloads the selected files into `dest` and writes its manifest
/// (entries of an earlier pull into the same folder, of files still there, are kept).
pub fn pull(
    hub: &Hub,
    req: &PullRequest<'_>,
    observer: &mut dyn PullObserver,
) -> Result<Pulled, HubError> {
    let info = hub.repo_info(req.repo, req.revision)?;
    let chosen: Vec<&RepoFile> = info
        .files
        .iter()
        .filter(|f| req.dtypes.wants(&f.path))
        .collect();
    let missing_graphs: Vec<String> = req
        .dtypes
        .graphs
        .iter()
        .filter(|(g, d)| {
            let name = format!("onnx/{}{}.onnx", g.base_name(), d.suffix());
            !chosen.iter().any(|f| f.path == name)
        })
        .map(|(g, d)| format!("onnx/{}{}.onnx", g.base_name(), d.suffix()))
        .collect();
    if !missing_graphs.is_empty() {
        let present: Vec<&str> = info
            .files
            .iter()
            .map(|f| f.path.as_str())
            .filter(|p| p.ends_with(".onnx"))
            .collect();
        return Err(HubError::NothingSelected {
            repo: req.repo.to_string(),
            revision: req.revision.to_string(),
            dtypes: format!(
                "{} (missing {})",
                dtypes_text(req.dtypes),
                missing_graphs.join(", ")
            ),
            present: if present.is_empty() {
                "no .onnx files".into()
            } else {
                present.join(", ")
            },
        });
    }
    fs::create_dir_all(req.dest).map_err(io_err(req.dest))?;
    let mut entries: Vec<ManifestEntry> = Vec::new();
    let mut downloaded = 0;
    for file in &chosen {
        let (sha256, fetched) = hub.download(req.repo, &info.commit, file, req.dest, observer)?;
        let path = req.dest.join(&file.path);
        let size = fs::metadata(&path).map_err(io_err(&path))?.len();
        downloaded += usize::from(fetched);
        entries.push(ManifestEntry {
            path: file.path.clone(),
            size,
            sha256,
        });
    }
    // Keep what an earlier pull of the same commit put here (another dtype).
    if let Some(old) = Manifest::read(req.dest)? {
        if old.repo == req.repo && old.commit == info.commit {
            for e in old.files {
                if !entries.iter().any(|n| n.path == e.path) && req.dest.join(&e.path).is_file() {
                    entries.push(e);
                }
            }
        }
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    let manifest = Manifest {
        repo: req.repo.to_string(),
        revision: req.revision.to_string(),
        commit: info.commit,
        endpoint: hub.endpoint.clone(),
        files: entries,
    };
    manifest.write(req.dest)?;
    Ok(Pulled {
        manifest,
        downloaded,
    })
}

fn dtypes_text(d: &DtypeFiles) -> String {
    d.graphs
        .iter()
        .map(|(g, d)| format!("{}={}", g.key(), d))
        .collect::<Vec<_>>()
        .join(",")
}

/// Percent-encodes one path segment (RFC 3986 unreserved characters stay).
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Percent-encodes each `/`-separated segment of a path.
fn encode_path(s: &str) -> String {
    s.split('/')
        .map(encode_segment)
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtype_files_select_graphs_and_side_files() {
        let d: DtypeFiles = "q4f16,vision=fp16".parse().unwrap();
        assert!(d.wants("onnx/decoder_model_merged_q4f16.onnx"));
        assert!(d.wants("onnx/decoder_model_merged_q4f16.onnx_data"));
        assert!(d.wants("onnx/decoder_model_merged_q4f16.onnx_data_1"));
        assert!(d.wants("onnx/vision_encoder_fp16.onnx_data"));
        assert!(d.wants("onnx/vision_encoder_q4f16.onnx"));
        assert!(!d.wants("onnx/decoder_model_merged_fp16.onnx"));
        assert!(!d.wants("onnx/decoder_model_merged.onnx"));
        assert!(!d.wants("onnx/decoder_model_merged_q4f16.onnx_data_x"));
        assert!(!d.wants("onnx/audio_encoder_q4f16.onnx"));
        assert!(d.wants("config.json"));
        assert!(d.wants("chat_template.jinja"));
        assert!(d.wants("LICENSE"));
        assert!(!d.wants(".gitattributes"));
        assert!(!d.wants("model.safetensors"));
        let fp32: DtypeFiles = "fp32".parse().unwrap();
        assert!(fp32.wants("onnx/embed_tokens.onnx_data"));
        assert!(!fp32.wants("onnx/embed_tokens_q4.onnx"));
        assert!("vision=q3".parse::<DtypeFiles>().is_err());
        assert!("audio=fp16".parse::<DtypeFiles>().is_err());
    }

    #[test]
    fn paths_are_percent_encoded_per_segment() {
        assert_eq!(encode_segment("refs/pr/1"), "refs%2Fpr%2F1");
        assert_eq!(
            encode_path("onnx/a b+.onnx"),
            "onnx/a%20b%2B.onnx".to_string()
        );
    }
}
