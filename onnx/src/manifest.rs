//! `quire-manifest.json`: the size and sha256 of every file of a pulled model folder, written by
//! `quire model pull` and checked by `quire model verify` (an air-gapped copy is the same bytes).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

/// The manifest's file name, at the top of the model folder.
pub const MANIFEST_FILE: &str = "quire-manifest.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// `owner/name` on the hub.
    pub repo: String,
    /// The revision asked for (`main`, a tag, a commit).
    pub revision: String,
    /// The commit it resolved to: every file was downloaded from this commit.
    pub commit: String,
    /// The hub (or mirror) it came from.
    pub endpoint: String,
    /// Relative paths (`/`-separated), sorted.
    pub files: Vec<ManifestEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a quire manifest: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{} has no {MANIFEST_FILE} (it is written by `quire model pull`)", dir.display())]
    NoManifest { dir: PathBuf },
    #[error("{manifest}: file path {path:?} leaves the model folder")]
    UnsafePath { manifest: PathBuf, path: String },
}

/// One way a file differs from the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    Missing {
        path: String,
    },
    SizeChanged {
        path: String,
        expected: u64,
        actual: u64,
    },
    Changed {
        path: String,
        expected: String,
        actual: String,
    },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Missing { path } => write!(f, "{path}: missing"),
            Problem::SizeChanged {
                path,
                expected,
                actual,
            } => write!(f, "{path}: size {actual} bytes, manifest says {expected}"),
            Problem::Changed {
                path,
                expected,
                actual,
            } => write!(f, "{path}: sha256 {actual}, manifest says {expected}"),
        }
    }
}

/// What `verify` found.
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    /// Files of the manifest that match it.
    pub ok: Vec<String>,
    pub problems: Vec<Problem>,
    /// Files in the folder that the manifest does not list (reported, not a failure).
    pub unlisted: Vec<String>,
}

/// A relative `/`-separated path that stays inside its folder: no `..`, no root, no drive.
pub fn is_safe_relative(path: &str) -> bool {
    !path.is_empty()
        && Path::new(path)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

impl Manifest {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(MANIFEST_FILE)
    }

    /// The manifest of `dir`; `Ok(None)` when there is none.
    pub fn read(dir: &Path) -> Result<Option<Manifest>, ManifestError> {
        let path = Self::path(dir);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(ManifestError::Io { path, source }),
        };
        let m: Manifest = serde_json::from_str(&text).map_err(|source| ManifestError::Json {
            path: path.clone(),
            source,
        })?;
        if let Some(bad) = m.files.iter().find(|f| !is_safe_relative(&f.path)) {
            return Err(ManifestError::UnsafePath {
                manifest: path,
                path: bad.path.clone(),
            });
        }
        Ok(Some(m))
    }

    /// Writes through a temporary file and a rename: a killed pull never leaves half a manifest.
    pub fn write(&self, dir: &Path) -> Result<(), ManifestError> {
        let path = Self::path(dir);
        let io = |source| ManifestError::Io {
            path: path.clone(),
            source,
        };
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
        let text = serde_json::to_string_pretty(self).expect("manifest serializes");
        tmp.write_all(text.as_bytes()).map_err(io)?;
        tmp.write_all(b"\n").map_err(io)?;
        tmp.as_file().sync_all().map_err(io)?;
        tmp.persist(&path).map_err(|e| io(e.error))?;
        Ok(())
    }
}

/// sha256 of a file, streamed; `on_bytes` sees the running count (for progress bars).
pub fn sha256_file(path: &Path, on_bytes: &mut dyn FnMut(u64)) -> std::io::Result<String> {
    let mut f = fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        done += n as u64;
        on_bytes(done);
    }
    Ok(hex::encode(h.finalize()))
}

/// Re-hashes every file of `dir`'s manifest. `on_file` is called before each file is hashed.
pub fn verify(
    dir: &Path,
    on_file: &mut dyn FnMut(&ManifestEntry),
) -> Result<VerifyReport, ManifestError> {
    let manifest = Manifest::read(dir)?.ok_or_else(|| ManifestError::NoManifest {
        dir: dir.to_path_buf(),
    })?;
    let mut report = VerifyReport::default();
    for entry in &manifest.files {
        on_file(entry);
        let path = dir.join(&entry.path);
        let meta = match fs::metadata(&path) {
            Ok(m) if m.is_file() => m,
            Ok(_) => {
                report.problems.push(Problem::Missing {
                    path: entry.path.clone(),
                });
                continue;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                report.problems.push(Problem::Missing {
                    path: entry.path.clone(),
                });
                continue;
            }
            Err(source) => return Err(ManifestError::Io { path, source }),
        };
        if meta.len() != entry.size {
            report.problems.push(Problem::SizeChanged {
                path: entry.path.clone(),
                expected: entry.size,
                actual: meta.len(),
            });
            continue;
        }
        let actual =
            sha256_file(&path, &mut |_| {}).map_err(|source| ManifestError::Io { path, source })?;
        if actual != entry.sha256 {
            report.problems.push(Problem::Changed {
                path: entry.path.clone(),
                expected: entry.sha256.clone(),
                actual,
            });
        } else {
            report.ok.push(entry.path.clone());
        }
    }
    let listed: std::collections::HashSet<&str> =
        manifest.files.iter().map(|f| f.path.as_str()).collect();
    for e in walkdir_files(dir) {
        if e != MANIFEST_FILE && !listed.contains(e.as_str()) {
            report.unlisted.push(e);
        }
    }
    Ok(report)
}

/// Relative `/`-separated paths of the files under `dir`, sorted.
fn walkdir_files(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| {
            let rel = e.path().strip_prefix(dir).ok()?;
            let parts: Vec<_> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            Some(parts.join("/"))
        })
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_relative_paths_are_safe() {
        assert!(is_safe_relative("onnx/decoder_model_merged_q4f16.onnx"));
        assert!(is_safe_relative("config.json"));
        assert!(!is_safe_relative("../config.json"));
        assert!(!is_safe_relative("onnx/../../x"));
        assert!(!is_safe_relative("/etc/passwd"));
        assert!(!is_safe_relative(""));
    }
}
