//! The state store: one SQLite database per output folder (`OUT/.quire/state.sqlite`, WAL) with
//! a row per document keyed by its content hash and the fingerprint of every setting that
//! changes its output. A rerun skips what is done, retries what failed, and redoes what a run
//! that stopped left running.
//!
//! Several processes may share one output folder (two `quire run`, a run and a watch, pods on
//! a shared volume). A document is claimed in one write transaction that reads its row and
//! decides ([`StateStore::claim`]), so each is claimed by exactly one of them. A claimed
//! document is owned by a lease: the owner's id (host, PID, start time) and a heartbeat the
//! owner refreshes every [`HEARTBEAT`] ([`StateStore::start_heartbeat`]). A row whose heartbeat
//! is older than [`LEASE`] belongs to a process that is gone, whatever its PID says, and is
//! taken over; its attempt counts toward `--retries` like a failure. Sooner, on Linux: a row
//! whose owner ran on this machine since its last boot, in this PID namespace, and whose
//! process (PID and start time) is no longer there, is taken over at once (a run killed and
//! started again, a restarted service).

use quire_exporters::error_kind::ErrorKind;
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use serde::Serialize;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const STATE_DIR: &str = ".quire";
pub const STATE_FILE: &str = "state.sqlite";
/// Serializes creating the store and writing the summaries (`results.jsonl`) of runs sharing
/// the folder (an advisory `flock`).
pub const LOCK_FILE: &str = "lock";

/// How long a claim stays its owner's without a heartbeat.
pub const LEASE: Duration = Duration::from_secs(60);
/// How often a running process refreshes the heartbeat of its claims: well inside [`LEASE`],
/// so a slow write or two does not lose a lease.
pub const HEARTBEAT: Duration = Duration::from_secs(15);

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
    #[error(
        "state store {path} is corrupt ({detail}); quire does not start over on its own. To \
         recover, move the state folder aside (mv {dir} {dir}.corrupt) and run again: every \
         document is then processed again, its outputs rewritten, and --retries counts start \
         from zero. Or put back a backup of {dir}.",
        dir = .path.parent().unwrap_or(Path::new(STATE_DIR)).display()
    )]
    Corrupt { path: PathBuf, detail: String },
    #[error(
        "output folder {out} is not writable ({cause}): quire writes its outputs and its state \
         store ({STATE_DIR}/) there"
    )]
    NotWritable { out: PathBuf, cause: std::io::Error },
    #[error(
        "state store {path}: document {sha:.12}… was taken over by another run (this run's \
         lease expired); its result is left to that run"
    )]
    LeaseLost { path: PathBuf, sha: String },
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
    fn parse(s: &str) -> DocState {
        match s {
            "running" => DocState::Running,
            "done" => DocState::Done,
            "failed" => DocState::Failed,
            _ => DocState::Queued,
        }
    }
}

/// Who holds a running document.
#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    /// `host:pid:start` of the owning process.
    pub owner: String,
    /// Seconds since its last heartbeat; `None` when it never beat (a store of an older quire).
    pub age: Option<f64>,
    /// The owner ran on this machine, in this PID namespace, and its process is gone.
    pub gone: bool,
}

impl Lease {
    fn new(owner: Option<String>, heartbeat: Option<f64>, process: Option<String>) -> Lease {
        Lease {
            owner: owner.unwrap_or_default(),
            age: heartbeat.map(|h| (now() - h).max(0.0)),
            gone: process
                .and_then(|p| LocalProcess::parse(&p))
                .is_some_and(|p| p.is_gone()),
        }
    }

    pub fn expired(&self) -> bool {
        self.gone || self.age.is_none_or(|age| age >= LEASE.as_secs_f64())
    }
}

impl std::fmt::Display for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.age {
            _ if self.gone => write!(f, "{}, its process is gone", self.owner),
            Some(age) => write!(f, "{}, last heartbeat {age:.0} s ago", self.owner),
            None => write!(f, "{}, no heartbeat", self.owner),
        }
    }
}

/// A process as others on the same machine can check it (Linux): the boot, the PID namespace,
/// the PID and its start time. A PID alone says nothing: it is reused, and means another
/// process in another namespace or on another machine.
#[derive(Debug, Clone, PartialEq)]
struct LocalProcess {
    boot: String,
    pid_namespace: String,
    pid: u32,
    start: u64,
}

impl LocalProcess {
    /// This process; `None` where `/proc` does not say.
    fn current() -> Option<LocalProcess> {
        let pid = std::process::id();
        Some(LocalProcess {
            boot: boot_id()?,
            pid_namespace: pid_namespace()?,
            pid,
            start: start_time(pid)?,
        })
    }

    /// As stored in the `process` column: `boot pid_namespace pid start`.
    fn to_column(&self) -> String {
        format!(
            "{} {} {} {}",
            self.boot, self.pid_namespace, self.pid, self.start
        )
    }

    fn parse(column: &str) -> Option<LocalProcess> {
        let mut parts = column.split(' ');
        let process = LocalProcess {
            boot: parts.next()?.to_string(),
            pid_namespace: parts.next()?.to_string(),
            pid: parts.next()?.parse().ok()?,
            start: parts.next()?.parse().ok()?,
        };
        parts.next().is_none().then_some(process)
    }

    /// Certainly gone: it ran since this boot in this PID namespace, and no process of its
    /// PID and start time is there. Anything else (another machine, namespace or boot, or no
    /// `/proc`) cannot be told from here: the lease decides.
    fn is_gone(&self) -> bool {
        boot_id().is_some_and(|boot| boot == self.boot)
            && pid_namespace().is_some_and(|ns| ns == self.pid_namespace)
            && start_time(self.pid) != Some(self.start)
    }
}

fn boot_id() -> Option<String> {
    let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    Some(id.trim().to_string()).filter(|id| !id.is_empty() && !id.contains(' '))
}

fn pid_namespace() -> Option<String> {
    let link = std::fs::read_link("/proc/self/ns/pid").ok()?;
    Some(link.to_string_lossy().into_owned()).filter(|ns| !ns.contains(' '))
}

/// The start time of process `pid` in clock ticks since boot (`/proc/PID/stat`, field 22).
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// What a run does with a document, decided and recorded by [`StateStore::claim`].
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Done before with the same fingerprint, its output in place.
    Skip,
    /// Held by another live process (another `quire` on the same output folder).
    Busy(Lease),
    /// Claimed: process it; `attempt` counts from 1.
    Process { attempt: u32 },
    /// `attempts` attempts failed or never finished, `--retries` exhausted; `message` says
    /// which. Marked failed.
    GiveUp { attempts: u32, message: String },
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Counts {
    pub queued: u64,
    pub running: u64,
    /// Among `running`: those whose lease expired, left by a process that stopped. The next
    /// run takes them over (or gives them up when out of retries).
    pub stale: u64,
    pub done: u64,
    /// Failed documents, inputs that could not be read included.
    pub failed: u64,
    /// Pages of done documents.
    pub pages_done: u64,
    /// Seconds spent on done documents (sum of their durations).
    pub busy_seconds: f64,
    /// Seconds from the first start to the last finish of done documents.
    pub span_seconds: f64,
    /// Values of done documents below --review-below (as the run that did each one set it).
    pub review_values: u64,
    /// Done documents with at least one such value.
    pub review_documents: u64,
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
    /// This process's id in `owner` columns: unique per opened store.
    owner: String,
    /// This process for others on this machine (the `process` column).
    process: Option<String>,
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// Columns of `documents`, in the order of the table a new store creates.
const COLUMNS: &str = "content_sha256, fingerprint, source, state, attempts, error, pages, pid, \
                       started_at, finished_at, duration_s, owner, heartbeat_at, process, review";

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS documents (
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
        owner          TEXT,
        heartbeat_at   REAL,
        process        TEXT,
        -- Values of a done document below --review-below (its lines in review.jsonl).
        review         INTEGER,
        PRIMARY KEY (content_sha256, fingerprint)
    );
    -- Inputs that failed before they had a content hash (unreadable, unknown format), by the
    -- name they are shown under.
    CREATE TABLE IF NOT EXISTS input_failures (
        source   TEXT PRIMARY KEY,
        error    TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 1,
        at       REAL
    );
    CREATE TABLE IF NOT EXISTS file_hashes (
        path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, sha256 TEXT
    );";

/// Columns added since the first stores: (name, type).
const ADDED_COLUMNS: [(&str, &str); 4] = [
    ("owner", "TEXT"),
    ("heartbeat_at", "REAL"),
    ("process", "TEXT"),
    ("review", "INTEGER"),
];

/// `host:pid:start-time`, plus a counter for stores opened by one process in the same instant.
fn new_owner() -> String {
    static OPENED: AtomicU32 = AtomicU32::new(0);
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "{}:{}:{started:x}.{}",
        hostname().unwrap_or_else(|| "unknown-host".into()),
        std::process::id(),
        OPENED.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(unix)]
fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into `buf`.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    (rc == 0 && end > 0).then(|| String::from_utf8_lossy(&buf[..end]).into_owned())
}

#[cfg(not(unix))]
fn hostname() -> Option<String> {
    std::env::var("COMPUTERNAME").ok()
}

/// A SQLite error on the store at `path`: [`StateError::Corrupt`] when SQLite says the file is
/// not a database or is damaged.
fn sqlite_error(path: &Path, source: rusqlite::Error) -> StateError {
    use rusqlite::ErrorCode::{DatabaseCorrupt, NotADatabase};
    match source.sqlite_error_code() {
        Some(NotADatabase | DatabaseCorrupt) => StateError::Corrupt {
            path: path.to_path_buf(),
            detail: source.to_string(),
        },
        _ => StateError::Sqlite {
            path: path.to_path_buf(),
            source,
        },
    }
}

fn not_writable(out: &Path, source: std::io::Error) -> StateError {
    match source.kind() {
        std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem => {
            StateError::NotWritable {
                out: out.to_path_buf(),
                cause: source,
            }
        }
        _ => StateError::Io {
            path: out.to_path_buf(),
            source,
        },
    }
}

/// Held while summaries are written (see [`StateStore::lock_summaries`]); released on drop.
pub struct SummaryLock {
    _file: std::fs::File,
}

impl StateStore {
    /// Opens (creating) the store of the output folder `out`. A corrupt store is refused
    /// ([`StateError::Corrupt`]), never replaced; an output folder that cannot be written is
    /// [`StateError::NotWritable`].
    pub fn open(out: &Path) -> Result<Self, StateError> {
        let dir = out.join(STATE_DIR);
        std::fs::create_dir_all(&dir).map_err(|e| not_writable(out, e))?;
        let probe = dir.join(format!(".probe-{}", std::process::id()));
        std::fs::File::create(&probe).map_err(|e| not_writable(out, e))?;
        let _ = std::fs::remove_file(&probe);
        let path = dir.join(STATE_FILE);
        if !path.exists() {
            let lock = Self::lock_file(&dir)?;
            let io = |source| StateError::Io {
                path: path.clone(),
                source,
            };
            lock.lock().map_err(io)?;
            if !path.exists() {
                Self::create(&path)?;
            }
            drop(lock);
        }
        Self::open_file(&path)
    }

    /// Opens the store of `out` only if it exists (`quire status`).
    pub fn open_existing(out: &Path) -> Result<Option<Self>, StateError> {
        let path = out.join(STATE_DIR).join(STATE_FILE);
        if !path.is_file() {
            return Ok(None);
        }
        Self::open_file(&path).map(Some)
    }

    fn lock_file(dir: &Path) -> Result<std::fs::File, StateError> {
        Self::open_lock(dir.join(LOCK_FILE))
    }

    fn open_lock(path: PathBuf) -> Result<std::fs::File, StateError> {
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| StateError::Io { path, source })
    }

    /// A new store, built beside `path` and renamed into place: `path` never exists empty, so
    /// an empty one is a damaged one.
    fn create(path: &Path) -> Result<(), StateError> {
        let building = path.with_extension(format!("new-{}", std::process::id()));
        let _ = std::fs::remove_file(&building);
        let conn = Connection::open(&building).map_err(|e| sqlite_error(&building, e))?;
        conn.execute_batch(SCHEMA)
            .and_then(|()| conn.pragma_update(None, "journal_mode", "WAL"))
            .map_err(|e| sqlite_error(&building, e))?;
        conn.close().map_err(|(_, e)| sqlite_error(&building, e))?;
        std::fs::rename(&building, path).map_err(|source| StateError::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    fn open_file(path: &Path) -> Result<Self, StateError> {
        let err = |source| sqlite_error(path, source);
        let empty = std::fs::metadata(path).is_ok_and(|m| m.len() == 0);
        if empty {
            return Err(StateError::Corrupt {
                path: path.to_path_buf(),
                detail: "the file is empty".into(),
            });
        }
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(Duration::from_secs(30)).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        // FULL: a done mark that was acknowledged survives a power cut.
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(err)?;
        let check: String = conn
            .query_row("PRAGMA quick_check(1)", [], |r| r.get(0))
            .map_err(err)?;
        if check != "ok" {
            return Err(StateError::Corrupt {
                path: path.to_path_buf(),
                detail: check,
            });
        }
        let store = StateStore {
            conn,
            path: path.to_path_buf(),
            owner: new_owner(),
            process: LocalProcess::current().map(|p| p.to_column()),
        };
        store.migrate()?;
        Ok(store)
    }

    /// Brings a store of an older quire up to the current schema (adds the lease columns and
    /// tables it lacks), in one write transaction so that two processes do not both add them.
    fn migrate(&self) -> Result<(), StateError> {
        if self.missing_schema()?.is_empty() && self.has_table("input_failures")? {
            return Ok(());
        }
        let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)
            .map_err(self.err())?;
        tx.execute_batch(SCHEMA).map_err(self.err())?;
        for (name, kind) in self.missing_schema()? {
            tx.execute_batch(&format!("ALTER TABLE documents ADD COLUMN {name} {kind}"))
                .map_err(self.err())?;
        }
        tx.commit().map_err(self.err())
    }

    /// The added columns `documents` lacks (all of them when there is no table yet).
    fn missing_schema(&self) -> Result<Vec<(&'static str, &'static str)>, StateError> {
        let mut stmt = self
            .conn
            .prepare("SELECT name FROM pragma_table_info('documents')")
            .map_err(self.err())?;
        let present: HashSet<String> = stmt
            .query_map([], |r| r.get(0))
            .map_err(self.err())?
            .collect::<Result<_, _>>()
            .map_err(self.err())?;
        Ok(ADDED_COLUMNS
            .into_iter()
            .filter(|(name, _)| !present.contains(*name))
            .collect())
    }

    fn has_table(&self, name: &str) -> Result<bool, StateError> {
        self.conn
            .prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1")
            .and_then(|mut s| s.exists([name]))
            .map_err(self.err())
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> StateError + '_ {
        move |source| sqlite_error(&self.path, source)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// This store's owner id, as written in the rows it claims.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Decides what to do with a document and records it, in one write transaction: no other
    /// process can claim the same document in between. `retries`: extra attempts after a
    /// failure (or an attempt that never finished). `output_ok` says whether the output of a
    /// document done before is still in place (otherwise it is redone); it runs inside the
    /// transaction.
    pub fn claim(
        &self,
        key: &DocKey,
        source: &str,
        retries: u32,
        output_ok: impl FnOnce() -> bool,
    ) -> Result<Plan, StateError> {
        let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)
            .map_err(self.err())?;
        let t = now();
        type Row = (String, u32, Option<String>, Option<String>, Lease);
        let row: Option<Row> = tx
            .query_row(
                "SELECT state, attempts, error, owner, heartbeat_at, process FROM documents
                 WHERE content_sha256 = ?1 AND fingerprint = ?2",
                params![key.content_sha256, key.fingerprint],
                |r| {
                    let lease = Lease::new(r.get(3)?, r.get(4)?, r.get(5)?);
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, lease))
                },
            )
            .optional()
            .map_err(self.err())?;
        let take = |attempts: u32| -> Result<Plan, StateError> {
            tx.execute(
                "INSERT INTO documents (content_sha256, fingerprint, source, state, attempts,
                   pid, owner, heartbeat_at, started_at, process)
                 VALUES (?1, ?2, ?3, 'running', 1, ?4, ?5, ?6, ?6, ?7)
                 ON CONFLICT (content_sha256, fingerprint) DO UPDATE SET
                   source = ?3, state = 'running', attempts = attempts + 1, pid = ?4,
                   owner = ?5, heartbeat_at = ?6, started_at = ?6, process = ?7, error = NULL",
                params![
                    key.content_sha256,
                    key.fingerprint,
                    source,
                    std::process::id() as i64,
                    self.owner,
                    t,
                    self.process
                ],
            )
            .map_err(self.err())?;
            Ok(Plan::Process {
                attempt: attempts + 1,
            })
        };
        let plan = match row {
            None => take(0)?,
            Some((state, attempts, error, owner, lease)) => match DocState::parse(&state) {
                DocState::Done if output_ok() => Plan::Skip,
                DocState::Failed if attempts > retries => Plan::GiveUp {
                    attempts,
                    message: format!(
                        "failed {attempts} times, last: {}",
                        error.unwrap_or_default()
                    ),
                },
                // A second input with the same content in this run: already ours.
                DocState::Running if owner.as_deref() == Some(self.owner.as_str()) => {
                    Plan::Process { attempt: attempts }
                }
                DocState::Running => {
                    if !lease.expired() {
                        Plan::Busy(lease)
                    } else if attempts > retries {
                        // Every attempt ended with its process (killed, out of memory, its
                        // machine gone): it would take this one down too.
                        let message = format!(
                            "{attempts} attempts did not finish (the process running it \
                             stopped without a result: killed, out of memory, or its machine \
                             went down); not tried again with --retries {retries}"
                        );
                        tx.execute(
                            "UPDATE documents SET state = 'failed', error = ?3, pid = NULL,
                               owner = ?4, finished_at = ?5
                             WHERE content_sha256 = ?1 AND fingerprint = ?2",
                            params![
                                key.content_sha256,
                                key.fingerprint,
                                format!("{}: {message}", ErrorKind::RetriesExhausted),
                                self.owner,
                                t
                            ],
                        )
                        .map_err(self.err())?;
                        Plan::GiveUp { attempts, message }
                    } else {
                        take(attempts)?
                    }
                }
                // Failed with retries left, queued, or done with its output gone.
                _ => take(attempts)?,
            },
        };
        tx.commit().map_err(self.err())?;
        Ok(plan)
    }

    /// Call only after the document's outputs are durably in place.
    /// `review`: how many of its values are below --review-below.
    pub fn mark_done(&self, key: &DocKey, pages: u32, review: u32) -> Result<(), StateError> {
        self.finish(key, "done", None, Some(pages), review)
    }

    pub fn mark_failed(&self, key: &DocKey, error: &str) -> Result<(), StateError> {
        self.finish(key, "failed", Some(error), None, 0)
    }

    /// A document this process claimed that was never started (a stop came first): queued
    /// again, the attempt not counted.
    pub fn release(&self, key: &DocKey) -> Result<(), StateError> {
        self.conn
            .execute(
                "UPDATE documents SET state = 'queued', attempts = MAX(attempts - 1, 0),
                   pid = NULL, started_at = NULL, heartbeat_at = NULL
                 WHERE content_sha256 = ?1 AND fingerprint = ?2 AND state = 'running'
                   AND owner = ?3",
                params![key.content_sha256, key.fingerprint, self.owner],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// Marks a document this process claimed; one taken over by another process since (this
    /// lease expired) is left to it ([`StateError::LeaseLost`]).
    fn finish(
        &self,
        key: &DocKey,
        state: &str,
        error: Option<&str>,
        pages: Option<u32>,
        review: u32,
    ) -> Result<(), StateError> {
        let t = now();
        let changed = self
            .conn
            .execute(
                "UPDATE documents SET state = ?3, error = ?4, pages = ?5, pid = NULL,
                   finished_at = ?6, duration_s = ?6 - COALESCE(started_at, ?6), review = ?8
                 WHERE content_sha256 = ?1 AND fingerprint = ?2 AND owner = ?7",
                params![
                    key.content_sha256,
                    key.fingerprint,
                    state,
                    error,
                    pages,
                    t,
                    self.owner,
                    review
                ],
            )
            .map_err(self.err())?;
        if changed == 0 {
            return Err(StateError::LeaseLost {
                path: self.path.clone(),
                sha: key.content_sha256.clone(),
            });
        }
        Ok(())
    }

    /// Refreshes the heartbeat of every document this process holds.
    pub fn renew(&self) -> Result<(), StateError> {
        renew(&self.conn, &self.owner).map_err(self.err())
    }

    /// Refreshes the heartbeat of this process's claims every [`HEARTBEAT`] on a thread of its
    /// own (with its own connection) until the returned guard is dropped.
    pub fn start_heartbeat(&self) -> Result<Heartbeat, StateError> {
        let conn = Connection::open(&self.path).map_err(self.err())?;
        conn.busy_timeout(Duration::from_secs(30))
            .map_err(self.err())?;
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let owner = self.owner.clone();
        let path = self.path.clone();
        let thread = std::thread::Builder::new()
            .name("quire-heartbeat".into())
            .spawn(move || {
                while let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(HEARTBEAT)
                {
                    if let Err(e) = renew(&conn, &owner) {
                        tracing::warn!("state store {}: heartbeat: {e}", path.display());
                    }
                }
            })
            .map_err(|source| StateError::Io {
                path: self.path.clone(),
                source,
            })?;
        Ok(Heartbeat {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Excludes other processes writing summaries of this output folder until dropped, so
    /// that the run that finishes last writes last.
    pub fn lock_summaries(&self) -> Result<SummaryLock, StateError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let file = Self::lock_file(dir)?;
        file.lock().map_err(|source| StateError::Io {
            path: dir.join(LOCK_FILE),
            source,
        })?;
        Ok(SummaryLock { _file: file })
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

    /// The lease of a running document; `None` when it is not running.
    pub fn lease(&self, key: &DocKey) -> Result<Option<Lease>, StateError> {
        self.conn
            .query_row(
                "SELECT owner, heartbeat_at, process FROM documents
                 WHERE content_sha256 = ?1 AND fingerprint = ?2 AND state = 'running'",
                params![key.content_sha256, key.fingerprint],
                |r| Ok(Lease::new(r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(self.err())
    }

    /// Records an input that failed before it had a content hash (`error`: `kind: message`),
    /// under the name it is shown by.
    pub fn record_input_failure(&self, source: &str, error: &str) -> Result<(), StateError> {
        self.conn
            .execute(
                "INSERT INTO input_failures (source, error, attempts, at) VALUES (?1, ?2, 1, ?3)
                 ON CONFLICT (source) DO UPDATE SET error = ?2, attempts = attempts + 1, at = ?3",
                params![source, error, now()],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// The names of inputs recorded as failed before they had a content hash.
    pub fn input_failure_sources(&self) -> Result<HashSet<String>, StateError> {
        let mut stmt = self
            .conn
            .prepare("SELECT source FROM input_failures")
            .map_err(self.err())?;
        let rows = stmt.query_map([], |r| r.get(0)).map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    /// Forgets the intake failure of `source`: it can be read now.
    pub fn forget_input_failure(&self, source: &str) -> Result<(), StateError> {
        self.conn
            .execute("DELETE FROM input_failures WHERE source = ?1", [source])
            .map_err(self.err())?;
        Ok(())
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
                DocState::Queued => counts.queued += n,
                DocState::Running => counts.running += n,
                DocState::Done => counts.done += n,
                DocState::Failed => counts.failed += n,
            }
        }
        type Sums = (
            Option<i64>,
            Option<f64>,
            Option<f64>,
            Option<i64>,
            Option<i64>,
        );
        let (pages, busy, span, review, review_docs): Sums = self
            .conn
            .query_row(
                "SELECT SUM(pages), SUM(duration_s), MAX(finished_at) - MIN(started_at),
                   SUM(review), SUM(review > 0)
                 FROM documents WHERE state = 'done'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .map_err(self.err())?;
        counts.review_values = review.unwrap_or(0) as u64;
        counts.review_documents = review_docs.unwrap_or(0) as u64;
        counts.pages_done = pages.unwrap_or(0) as u64;
        counts.busy_seconds = busy.unwrap_or(0.0);
        counts.span_seconds = span.unwrap_or(0.0);
        let mut stmt = self
            .conn
            .prepare("SELECT owner, heartbeat_at, process FROM documents WHERE state = 'running'")
            .map_err(self.err())?;
        let leases = stmt
            .query_map([], |r| Ok(Lease::new(r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(self.err())?;
        for lease in leases {
            counts.stale += u64::from(lease.map_err(self.err())?.expired());
        }
        let unreadable: u64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM input_failures", [], |r| r.get(0))
            .map_err(self.err())?;
        counts.failed += unreadable;
        Ok(counts)
    }

    /// Failed documents and inputs, by source.
    pub fn failures(&self) -> Result<Vec<Failure>, StateError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT source, attempts, COALESCE(error, '') FROM documents
                   WHERE state = 'failed'
                 UNION ALL
                 SELECT source, attempts, error FROM input_failures
                 ORDER BY 1",
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

fn renew(conn: &Connection, owner: &str) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE documents SET heartbeat_at = ?2 WHERE owner = ?1 AND state = 'running'",
        params![owner, now()],
    )
    .map(drop)
}

/// The heartbeat thread of [`StateStore::start_heartbeat`]; stops when dropped.
pub struct Heartbeat {
    stop: Option<crossbeam_channel::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
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
    /// Copies every document row and input failure of another store (a shard's) into this
    /// one. The other store is brought to the current schema first, and refused if corrupt.
    pub fn absorb(&self, other: &Path) -> Result<(), StateError> {
        if !other.is_file() {
            return Ok(());
        }
        drop(Self::open_file(other)?);
        self.conn
            .execute(
                "ATTACH DATABASE ?1 AS shard",
                params![other.to_string_lossy()],
            )
            .map_err(self.err())?;
        let copied = self.conn.execute_batch(&format!(
            "INSERT OR REPLACE INTO documents ({COLUMNS}) SELECT {COLUMNS} FROM shard.documents;
             INSERT OR REPLACE INTO input_failures (source, error, attempts, at)
               SELECT source, error, attempts, at FROM shard.input_failures;"
        ));
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

    fn claim(store: &StateStore, key: &DocKey, retries: u32) -> Plan {
        store.claim(key, "doc", retries, || true).unwrap()
    }

    /// Sets the heartbeat of `key` `age` seconds back.
    fn age_heartbeat(store: &StateStore, key: &DocKey, age: f64) {
        store
            .conn
            .execute(
                "UPDATE documents SET heartbeat_at = ?2 WHERE content_sha256 = ?1",
                params![key.content_sha256, now() - age],
            )
            .unwrap();
    }

    #[test]
    fn done_is_skipped_failed_is_retried_then_given_up() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let (a, b) = (key("a"), key("b"));
        assert_eq!(claim(&store, &a, 1), Plan::Process { attempt: 1 });
        store.mark_done(&a, 3, 0).unwrap();
        assert_eq!(claim(&store, &a, 1), Plan::Skip);
        // Done, but its output is gone: redone.
        assert_eq!(
            store.claim(&a, "a.pdf", 1, || false).unwrap(),
            Plan::Process { attempt: 2 }
        );
        store.mark_done(&a, 3, 0).unwrap();

        assert_eq!(claim(&store, &b, 1), Plan::Process { attempt: 1 });
        store.mark_failed(&b, "pdf_corrupt: bad").unwrap();
        assert_eq!(claim(&store, &b, 1), Plan::Process { attempt: 2 });
        store.mark_failed(&b, "pdf_corrupt: bad").unwrap();
        assert_eq!(
            claim(&store, &b, 1),
            Plan::GiveUp {
                attempts: 2,
                message: "failed 2 times, last: pdf_corrupt: bad".into()
            }
        );
        // Another fingerprint (other settings) is another document.
        let other = DocKey {
            fingerprint: "other".into(),
            ..a.clone()
        };
        assert_eq!(claim(&store, &other, 1), Plan::Process { attempt: 1 });

        let counts = store.counts().unwrap();
        assert_eq!((counts.done, counts.failed, counts.pages_done), (1, 1, 3));
        assert_eq!((counts.running, counts.stale), (1, 0));
        let failures = store.failures().unwrap();
        assert_eq!(failures.len(), 1);
        assert_eq!(failures[0].source, "doc");
        assert_eq!(failures[0].attempts, 2);
    }

    /// Two processes (two connections, two owners) claiming the same documents at the same
    /// time: each document is claimed by exactly one of them.
    #[test]
    fn two_stores_claim_each_document_exactly_once() {
        let dir = tempfile::tempdir().unwrap();
        StateStore::open(dir.path()).unwrap();
        let keys: Vec<DocKey> = (0..200).map(|i| key(&format!("{i:08}"))).collect();
        let claimed: Vec<Vec<usize>> = std::thread::scope(|scope| {
            let claimers: Vec<_> = (0..2)
                .map(|_| {
                    let (keys, out) = (&keys, dir.path());
                    scope.spawn(move || {
                        let store = StateStore::open(out).unwrap();
                        let mut mine = Vec::new();
                        for (i, key) in keys.iter().enumerate() {
                            match claim(&store, key, 2) {
                                Plan::Process { attempt: 1 } => mine.push(i),
                                Plan::Busy(lease) => assert_ne!(lease.owner, store.owner()),
                                other => panic!("{other:?}"),
                            }
                        }
                        mine
                    })
                })
                .collect();
            claimers.into_iter().map(|c| c.join().unwrap()).collect()
        });
        let mut all: Vec<usize> = claimed.concat();
        all.sort();
        assert_eq!(all, (0..200).collect::<Vec<_>>(), "each claimed once");
        let store = StateStore::open(dir.path()).unwrap();
        assert!(keys
            .iter()
            .all(|k| store.state(k).unwrap() == Some((DocState::Running, 1))));
    }

    /// A document held by a live lease is busy for others; once the heartbeat is older than
    /// the lease it is taken over (whatever process once held it), and the old owner's mark
    /// is refused.
    #[test]
    fn an_expired_lease_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let first = StateStore::open(dir.path()).unwrap();
        let second = StateStore::open(dir.path()).unwrap();
        assert_ne!(first.owner(), second.owner());
        let a = key("a");
        assert_eq!(claim(&first, &a, 2), Plan::Process { attempt: 1 });
        match claim(&second, &a, 2) {
            Plan::Busy(lease) => {
                assert_eq!(lease.owner, first.owner());
                assert!(!lease.expired());
            }
            other => panic!("{other:?}"),
        }
        // The heartbeat keeps it: still busy just before the lease would have expired.
        age_heartbeat(&first, &a, LEASE.as_secs_f64() - 5.0);
        first.renew().unwrap();
        assert!(matches!(claim(&second, &a, 2), Plan::Busy(_)));

        age_heartbeat(&first, &a, LEASE.as_secs_f64() + 1.0);
        assert_eq!(first.counts().unwrap().stale, 1);
        assert_eq!(claim(&second, &a, 2), Plan::Process { attempt: 2 });
        assert!(matches!(
            first.mark_done(&a, 1, 0),
            Err(StateError::LeaseLost { .. })
        ));
        second.mark_done(&a, 1, 0).unwrap();
        assert_eq!(first.state(&a).unwrap(), Some((DocState::Done, 2)));
    }

    /// On this machine, a lease whose process is gone (its PID free, or reused by another
    /// process: another start time) is taken over at once, heartbeat or not; one whose process
    /// is there, or that ran elsewhere (another boot or PID namespace), waits for the lease.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_lease_of_a_local_process_that_is_gone_is_taken_over_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let here = LocalProcess::current().expect("/proc");
        let init_start = start_time(1).expect("pid 1");
        let with = |pid: u32, start: u64, boot: &str| {
            LocalProcess {
                pid,
                start,
                boot: boot.into(),
                ..here.clone()
            }
            .to_column()
        };
        let cases = [
            ("init, alive", with(1, init_start, &here.boot), false),
            ("pid reused", with(1, init_start + 1, &here.boot), true),
            ("pid free", with(2_147_483_646, 1, &here.boot), true),
            ("another boot", with(2_147_483_646, 1, "other-boot"), false),
        ];
        for (i, (what, process, gone)) in cases.into_iter().enumerate() {
            let k = key(&format!("{i}"));
            store.claim(&k, what, 5, || true).unwrap();
            store
                .conn
                .execute(
                    "UPDATE documents SET owner = 'elsewhere', process = ?2
                     WHERE content_sha256 = ?1",
                    params![k.content_sha256, process],
                )
                .unwrap();
            match claim(&store, &k, 5) {
                Plan::Process { attempt: 2 } if gone => {}
                Plan::Busy(lease) if !gone => assert!(!lease.gone, "{what}"),
                other => panic!("{what}: {other:?}"),
            }
        }
    }

    /// A document left running by an owner that is gone, after more attempts than `retries`
    /// allows: given up and marked failed, not redone forever (a document that kills the
    /// process, e.g. out of memory, would kill every rerun).
    #[test]
    fn unfinished_attempts_count_toward_retries() {
        let dir = tempfile::tempdir().unwrap();
        let a = key("a");
        for attempt in 1..=2 {
            // Each store plays a process that claims the document and dies.
            let store = StateStore::open(dir.path()).unwrap();
            assert_eq!(claim(&store, &a, 1), Plan::Process { attempt });
            age_heartbeat(&store, &a, 3600.0);
        }
        let store = StateStore::open(dir.path()).unwrap();
        match claim(&store, &a, 1) {
            Plan::GiveUp { attempts, message } => {
                assert_eq!(attempts, 2);
                assert!(
                    message.starts_with("2 attempts did not finish"),
                    "{message}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(store.state(&a).unwrap(), Some((DocState::Failed, 2)));
        let failures = store.failures().unwrap();
        assert!(failures[0]
            .error
            .starts_with("retries_exhausted: 2 attempts"));
        // And stays given up.
        assert!(matches!(claim(&store, &a, 1), Plan::GiveUp { .. }));
    }

    #[test]
    fn the_same_content_twice_in_one_run_is_claimed_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let a = key("a");
        assert_eq!(claim(&store, &a, 0), Plan::Process { attempt: 1 });
        assert_eq!(claim(&store, &a, 0), Plan::Process { attempt: 1 });
        store.mark_done(&a, 1, 0).unwrap();
        store.mark_done(&a, 1, 0).unwrap();
        assert_eq!(store.state(&a).unwrap(), Some((DocState::Done, 1)));
    }

    #[test]
    fn a_released_document_is_queued_without_counting_the_attempt() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let (a, b) = (key("a"), key("b"));
        claim(&store, &a, 0);
        store.release(&a).unwrap();
        assert_eq!(store.state(&a).unwrap(), Some((DocState::Queued, 0)));
        assert_eq!(claim(&store, &a, 0), Plan::Process { attempt: 1 });
        // Only a running document is released: a done one stays done.
        claim(&store, &b, 0);
        store.mark_done(&b, 1, 0).unwrap();
        store.release(&b).unwrap();
        assert_eq!(store.state(&b).unwrap(), Some((DocState::Done, 1)));
    }

    /// A store written by an older quire (a `pid` column, no lease): opened, it gains the lease
    /// columns and tables, keeps its rows, and a row it left running is taken over.
    #[test]
    fn a_store_of_the_old_schema_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_DIR).join(STATE_FILE);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let old = Connection::open(&path).unwrap();
        old.execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE documents (
                content_sha256 TEXT NOT NULL, fingerprint TEXT NOT NULL, source TEXT NOT NULL,
                state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, error TEXT,
                pages INTEGER, pid INTEGER, started_at REAL, finished_at REAL, duration_s REAL,
                PRIMARY KEY (content_sha256, fingerprint));
             INSERT INTO documents (content_sha256, fingerprint, source, state, attempts, pid)
               VALUES ('aaaaaaaa', 'fp', 'a.pdf', 'running', 1, 1),
                      ('bbbbbbbb', 'fp', 'b.pdf', 'done', 1, NULL);",
        )
        .unwrap();
        drop(old);
        let store = StateStore::open(dir.path()).unwrap();
        assert_eq!(store.state(&key("b")).unwrap(), Some((DocState::Done, 1)));
        assert_eq!(claim(&store, &key("b"), 0), Plan::Skip);
        // Its pid (1) exists, but it has no lease: taken over.
        assert_eq!(claim(&store, &key("a"), 2), Plan::Process { attempt: 2 });
        store.mark_done(&key("a"), 1, 0).unwrap();
        store
            .record_input_failure("x.txt", "unsupported_format: x")
            .unwrap();
        assert_eq!(store.counts().unwrap().failed, 1);
        // A second process opening it finds nothing left to migrate.
        let again = StateStore::open(dir.path()).unwrap();
        assert_eq!(again.counts().unwrap().done, 2);
    }

    /// A shard's store, old or new, merges into a new one with its input failures.
    #[test]
    fn absorb_copies_rows_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let shard = StateStore::open(&dir.path().join("shard")).unwrap();
        claim(&shard, &key("a"), 0);
        shard.mark_done(&key("a"), 2, 0).unwrap();
        shard
            .record_input_failure("x.txt", "unsupported_format: x")
            .unwrap();
        let merged = StateStore::open(&dir.path().join("merged")).unwrap();
        merged.absorb(shard.path()).unwrap();
        let counts = merged.counts().unwrap();
        assert_eq!((counts.done, counts.failed, counts.pages_done), (1, 1, 2));
    }

    /// Inputs that could not be read count as failed until they can be read.
    #[test]
    fn input_failures_are_failed_until_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        store
            .record_input_failure("b.txt", "unsupported_format: not a document")
            .unwrap();
        store
            .record_input_failure("b.txt", "unsupported_format: not a document")
            .unwrap();
        store
            .record_input_failure("a.pdf", "empty_file: empty")
            .unwrap();
        assert_eq!(store.counts().unwrap().failed, 2);
        let failures = store.failures().unwrap();
        assert_eq!(
            failures
                .iter()
                .map(|f| (f.source.as_str(), f.attempts))
                .collect::<Vec<_>>(),
            [("a.pdf", 1), ("b.txt", 2)]
        );
        store.forget_input_failure("b.txt").unwrap();
        assert_eq!(
            store.input_failure_sources().unwrap(),
            HashSet::from(["a.pdf".to_string()])
        );
    }

    /// A damaged store is refused, naming it and saying how to recover, and left as it is.
    #[test]
    fn a_corrupt_store_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_DIR).join(STATE_FILE);
        StateStore::open(dir.path())
            .unwrap()
            .conn
            .execute_batch(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000)
                 INSERT INTO documents (content_sha256, fingerprint, source, state)
                   SELECT printf('%064d', i), 'fp', 'doc', 'done' FROM n",
            )
            .unwrap();
        let whole = std::fs::read(&path).unwrap();
        assert!(
            whole.len() > 64 * 1024,
            "{} bytes: several pages",
            whole.len()
        );
        let garbage = b"not a database ".repeat(100);
        for (what, bytes) in [
            ("garbage", &garbage[..]),
            ("empty", &[][..]),
            ("truncated", &whole[..whole.len() / 2]),
        ] {
            std::fs::write(&path, bytes).unwrap();
            let error = match StateStore::open(dir.path()) {
                Err(e @ StateError::Corrupt { .. }) => e.to_string(),
                Err(e) => panic!("{what}: {e}"),
                Ok(_) => panic!("{what}: opened"),
            };
            assert!(
                error.contains(&format!("state store {} is corrupt", path.display())),
                "{what}: {error}"
            );
            assert!(error.contains("mv "), "{error}");
            assert!(matches!(
                StateStore::open_existing(dir.path()),
                Err(StateError::Corrupt { .. })
            ));
            assert_eq!(
                std::fs::read(&path).unwrap(),
                bytes,
                "{what}: left as it is"
            );
        }
    }
}
