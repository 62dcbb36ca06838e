//! The state store: one SQLite database per output folder (`OUT/.quire/state.sqlite`, WAL) with
//! a row per document keyed by its content hash and the fingerprint of every setting that
//! changes its output. A rerun skips what is done, retries what failed, and redoes what a dead
//! process left running.

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

pub const STATE_DIR: &str = ".quire";
pub const STATE_FILE: &str = "state.sqlite";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state store {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("state store {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A document's identity for the store: what it is and how it is processed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DocKey {
    pub content_sha256: String,
    pub fingerprint: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DocState {
    Queued,
    Running,
    Done,
    Failed,
}

impl DocState {
    fn as_str(self) -> &'static str {
        match self {
            DocState::Queued => "queued",
            DocState::Running => "running",
            DocState::Done => "done",
            DocState::Failed => "failed",
        }
    }
    fn parse(s: &str) -> DocState {
        match s {
            "running" => DocState::Running,
            "done" => DocState::Done,
            "failed" => DocState::Failed,
            _ => DocState::Queued,
        }
    }
}

/// What a run does with a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Done before with the same fingerprint.
    Skip,
    /// Running in another live process (another `quire` on the same output folder).
    Busy,
    /// Process it; `attempt` counts from 1.
    Process { attempt: u32 },
    /// Failed `attempts` times already, `--retries` exhausted.
    GiveUp { attempts: u32, error: String },
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Counts {
    pub queued: u64,
    pub running: u64,
    pub done: u64,
    pub failed: u64,
    /// Pages of done documents.
    pub pages_done: u64,
    /// Seconds spent on done documents (sum of their durations).
    pub busy_seconds: f64,
    /// Seconds from the first start to the last finish of done documents.
    pub span_seconds: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Failure {
    pub source: String,
    pub attempts: u32,
    pub error: String,
}

pub struct StateStore {
    conn: Connection,
    path: PathBuf,
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

impl StateStore {
    /// Opens (creating) the store of the output folder `out`.
    pub fn open(out: &Path) -> Result<Self, StateError> {
        let dir = out.join(STATE_DIR);
        std::fs::create_dir_all(&dir).map_err(|source| StateError::Io {
            path: dir.clone(),
            source,
        })?;
        Self::open_file(&dir.join(STATE_FILE))
    }

    /// Opens the store of `out` only if it exists (`quire status`).
    pub fn open_existing(out: &Path) -> Result<Option<Self>, StateError> {
        let path = out.join(STATE_DIR).join(STATE_FILE);
        if !path.is_file() {
            return Ok(None);
        }
        Self::open_file(&path).map(Some)
    }

    fn open_file(path: &Path) -> Result<Self, StateError> {
        let err = |source| StateError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(30))
            .map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        // FULL: a done mark that was acknowledged survives a power cut.
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(err)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS documents (
                content_sha256 TEXT NOT NULL,
                fingerprint    TEXT NOT NULL,
                source         TEXT NOT NULL,
                state          TEXT NOT NULL,
                attempts       INTEGER NOT NULL DEFAULT 0,
                error          TEXT,
                pages          INTEGER,
                pid            INTEGER,
                started_at     REAL,
                finished_at    REAL,
                duration_s     REAL,
                PRIMARY KEY (content_sha256, fingerprint)
            );",
        )
        .map_err(err)?;
        Ok(StateStore {
            conn,
            path: path.to_path_buf(),
        })
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> StateError + '_ {
        move |source| StateError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// Decides what to do with a document. `retries`: extra attempts after a failure.
    pub fn plan(&self, key: &DocKey, retries: u32) -> Result<Plan, StateError> {
        let row: Option<(String, u32, Option<String>, Option<i64>)> = self
            .conn
            .query_row(
                "SELECT state, attempts, error, pid FROM documents
                 WHERE content_sha256 = ?1 AND fingerprint = ?2",
                params![key.content_sha256, key.fingerprint],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()
            .map_err(self.err())?;
        Ok(match row {
            None => Plan::Process { attempt: 1 },
            Some((state, attempts, error, pid)) => match DocState::parse(&state) {
                DocState::Done => Plan::Skip,
                DocState::Failed if attempts > retries => Plan::GiveUp {
                    attempts,
                    error: error.unwrap_or_default(),
                },
                // Running by a live process (another `quire run` on the same folder) is not
                // ours to take; one left by a dead process is redone.
                DocState::Running
                    if pid.is_some_and(|p| p as u32 != std::process::id() && alive(p)) =>
                {
                    Plan::Busy
                }
                _ => Plan::Process {
                    attempt: attempts + 1,
                },
            },
        })
    }

    pub fn mark_queued(&self, key: &DocKey, source: &str) -> Result<(), StateError> {
        self.conn
            .execute(
                "INSERT INTO documents (content_sha256, fingerprint, source, state)
                 VALUES (?1, ?2, ?3, 'queued')
                 ON CONFLICT (content_sha256, fingerprint) DO UPDATE SET source = ?3
                 WHERE state != 'done'",
                params![key.content_sha256, key.fingerprint, source],
            )
            .map_err(self.err())?;
        Ok(())
    }

    pub fn mark_running(&self, key: &DocKey, source: &str) -> Result<(), StateError> {
        self.conn
            .execute(
                "INSERT INTO documents (content_sha256, fingerprint, source, state, attempts, pid, started_at)
                 VALUES (?1, ?2, ?3, 'running', 1, ?4, ?5)
                 ON CONFLICT (content_sha256, fingerprint) DO UPDATE SET
                   source = ?3, state = 'running', attempts = attempts + 1, pid = ?4,
                   started_at = ?5, error = NULL",
                params![
                    key.content_sha256,
                    key.fingerprint,
                    source,
                    std::process::id() as i64,
                    now()
                ],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// Call only after the document's outputs are durably in place.
    pub fn mark_done(&self, key: &DocKey, pages: u32) -> Result<(), StateError> {
        self.finish(key, DocState::Done, None, Some(pages))
    }

    /// A document marked running that was never started (a stop came first): queued again,
    /// the attempt not counted.
    pub fn release(&self, key: &DocKey) -> Result<(), StateError> {
        self.conn
            .execute(
                "UPDATE documents SET state = 'queued', attempts = MAX(attempts - 1, 0),
                   pid = NULL, started_at = NULL
                 WHERE content_sha256 = ?1 AND fingerprint = ?2 AND state = 'running'",
                params![key.content_sha256, key.fingerprint],
            )
            .map_err(self.err())?;
        Ok(())
    }

    pub fn mark_failed(&self, key: &DocKey, error: &str) -> Result<(), StateError> {
        self.finish(key, DocState::Failed, Some(error), None)
    }

    fn finish(
        &self,
        key: &DocKey,
        state: DocState,
        error: Option<&str>,
        pages: Option<u32>,
    ) -> Result<(), StateError> {
        let t = now();
        self.conn
            .execute(
                "UPDATE documents SET state = ?3, error = ?4, pages = ?5, pid = NULL,
                   finished_at = ?6, duration_s = ?6 - COALESCE(started_at, ?6)
                 WHERE content_sha256 = ?1 AND fingerprint = ?2",
                params![
                    key.content_sha256,
                    key.fingerprint,
                    state.as_str(),
                    error,
                    pages,
                    t
                ],
            )
            .map_err(self.err())?;
        Ok(())
    }

    pub fn state(&self, key: &DocKey) -> Result<Option<(DocState, u32)>, StateError> {
        self.conn
            .query_row(
                "SELECT state, attempts FROM documents WHERE content_sha256 = ?1 AND fingerprint = ?2",
                params![key.content_sha256, key.fingerprint],
                |r| Ok((DocState::parse(&r.get::<_, String>(0)?), r.get(1)?)),
            )
            .optional()
            .map_err(self.err())
    }

    pub fn counts(&self) -> Result<Counts, StateError> {
        let mut counts = Counts::default();
        let mut stmt = self
            .conn
            .prepare("SELECT state, COUNT(*) FROM documents GROUP BY state")
            .map_err(self.err())?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u64>(1)?)))
            .map_err(self.err())?;
        for row in rows {
            let (state, n) = row.map_err(self.err())?;
            match DocState::parse(&state) {
                DocState::Queued => counts.queued = n,
                DocState::Running => counts.running = n,
                DocState::Done => counts.done = n,
                DocState::Failed => counts.failed = n,
            }
        }
        let (pages, busy, span): (Option<i64>, Option<f64>, Option<f64>) = self
            .conn
            .query_row(
                "SELECT SUM(pages), SUM(duration_s), MAX(finished_at) - MIN(started_at)
                 FROM documents WHERE state = 'done'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .map_err(self.err())?;
        counts.pages_done = pages.unwrap_or(0) as u64;
        counts.busy_seconds = busy.unwrap_or(0.0);
        counts.span_seconds = span.unwrap_or(0.0);
        Ok(counts)
    }

    pub fn failures(&self) -> Result<Vec<Failure>, StateError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT source, attempts, COALESCE(error, '') FROM documents
                 WHERE state = 'failed' ORDER BY source",
            )
            .map_err(self.err())?;
        let rows = stmt
            .query_map([], |r| {
                Ok(Failure {
                    source: r.get(0)?,
                    attempts: r.get(1)?,
                    error: r.get(2)?,
                })
            })
            .map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }
}

#[cfg(unix)]
fn alive(pid: i64) -> bool {
    // Signal 0 checks existence without sending anything.
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
}

#[cfg(not(unix))]
fn alive(_pid: i64) -> bool {
    false
}

/// sha256 of a file, streamed.
pub fn file_sha256(path: &Path) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    let mut file = crate::sniff::open_regular(path)?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)?;
    Ok(hex::encode(hasher.finalize()))
}

/// The fingerprint of everything that changes a document's output: `parts` are
/// (name, value) pairs such as model file hashes, dtype, budget, task, schema, prompt and
/// sampling. Order-independent.
pub fn fingerprint(parts: &[(String, String)]) -> String {
    use sha2::{Digest, Sha256};
    let mut sorted: Vec<&(String, String)> = parts.iter().collect();
    sorted.sort();
    let mut hasher = Sha256::new();
    for (name, value) in sorted {
        hasher.update((name.len() as u64).to_le_bytes());
        hasher.update(name.as_bytes());
        hasher.update((value.len() as u64).to_le_bytes());
        hasher.update(value.as_bytes());
    }
    hex::encode(hasher.finalize())
}

impl StateStore {
    /// [`file_sha256`] remembered by (path, size, mtime): model files are gigabytes and do not
    /// change between runs.
    pub fn cached_file_sha256(&self, path: &Path) -> Result<String, StateError> {
        let io = |source| StateError::Io {
            path: path.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(io)?;
        let mtime = meta
            .modified()
            .ok()
            .and_then(|m| m.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_nanos() as i64)
            .unwrap_or_default();
        let canonical = std::fs::canonicalize(path).map_err(io)?;
        let key = canonical.to_string_lossy().into_owned();
        self.conn
            .execute_batch(
                "CREATE TABLE IF NOT EXISTS file_hashes (
                    path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, sha256 TEXT)",
            )
            .map_err(self.err())?;
        let cached: Option<String> = self
            .conn
            .query_row(
                "SELECT sha256 FROM file_hashes WHERE path = ?1 AND size = ?2 AND mtime_ns = ?3",
                params![key, meta.len() as i64, mtime],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.err())?;
        if let Some(hash) = cached {
            return Ok(hash);
        }
        let hash = file_sha256(path).map_err(io)?;
        self.conn
            .execute(
                "INSERT OR REPLACE INTO file_hashes (path, size, mtime_ns, sha256) VALUES (?1, ?2, ?3, ?4)",
                params![key, meta.len() as i64, mtime, hash],
            )
            .map_err(self.err())?;
        Ok(hash)
    }
}

impl StateStore {
    /// Copies every document row of another store (a shard's) into this one.
    pub fn absorb(&self, other: &Path) -> Result<(), StateError> {
        if !other.is_file() {
            return Ok(());
        }
        self.conn
            .execute(
                "ATTACH DATABASE ?1 AS shard",
                params![other.to_string_lossy()],
            )
            .map_err(self.err())?;
        let copied = self.conn.execute(
            "INSERT OR REPLACE INTO documents SELECT * FROM shard.documents",
            [],
        );
        self.conn
            .execute("DETACH DATABASE shard", [])
            .map_err(self.err())?;
        copied.map_err(self.err())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: &str) -> DocKey {
        DocKey {
            content_sha256: n.repeat(8),
            fingerprint: "fp".into(),
        }
    }

    #[test]
    fn done_is_skipped_failed_is_retried_then_given_up() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let (a, b) = (key("a"), key("b"));
        assert_eq!(store.plan(&a, 1).unwrap(), Plan::Process { attempt: 1 });
        store.mark_running(&a, "a.pdf").unwrap();
        store.mark_done(&a, 3).unwrap();
        assert_eq!(store.plan(&a, 1).unwrap(), Plan::Skip);

        store.mark_running(&b, "b.pdf").unwrap();
        store.mark_failed(&b, "pdf_corrupt: bad").unwrap();
        assert_eq!(store.plan(&b, 1).unwrap(), Plan::Process { attempt: 2 });
        store.mark_running(&b, "b.pdf").unwrap();
        store.mark_failed(&b, "pdf_corrupt: bad").unwrap();
        assert_eq!(
            store.plan(&b, 1).unwrap(),
            Plan::GiveUp {
                attempts: 2,
                error: "pdf_corrupt: bad".into()
            }
        );
        // Another fingerprint (other settings) is another document.
        let other = DocKey {
            fingerprint: "other".into(),
            ..a.clone()
        };
        assert_eq!(store.plan(&other, 1).unwrap(), Plan::Process { attempt: 1 });

        let counts = store.counts().unwrap();
        assert_eq!((counts.done, counts.failed, counts.pages_done), (1, 1, 3));
        let failures = store.failures().unwrap();
        assert_eq!(failures.len(), 1);
        assert_eq!(failures[0].source, "b.pdf");
        assert_eq!(failures[0].attempts, 2);
    }

    #[test]
    fn running_left_by_a_dead_process_is_redone() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let a = key("a");
        store.mark_running(&a, "a.pdf").unwrap();
        // A pid that cannot exist: the process that marked it is gone.
        store
            .conn
            .execute("UPDATE documents SET pid = 2147483646", [])
            .unwrap();
        assert_eq!(store.plan(&a, 0).unwrap(), Plan::Process { attempt: 2 });
        // Survives reopening.
        drop(store);
        let store = StateStore::open_existing(dir.path()).unwrap().unwrap();
        assert_eq!(store.state(&a).unwrap(), Some((DocState::Running, 1)));
    }

    #[test]
    fn a_released_document_is_queued_without_counting_the_attempt() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let (a, b) = (key("a"), key("b"));
        store.mark_running(&a, "a.pdf").unwrap();
        store.release(&a).unwrap();
        assert_eq!(store.state(&a).unwrap(), Some((DocState::Queued, 0)));
        assert_eq!(store.plan(&a, 0).unwrap(), Plan::Process { attempt: 1 });
        // Only a running document is released: a done one stays done.
        store.mark_running(&b, "b.pdf").unwrap();
        store.mark_done(&b, 1).unwrap();
        store.release(&b).unwrap();
        assert_eq!(store.state(&b).unwrap(), Some((DocState::Done, 1)));
    }
}
