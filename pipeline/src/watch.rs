//! Folder watch: which files in a watched folder are complete and not yet taken
//! ([`Arrivals`]), and the Prometheus textfile of a watch ([`Metrics`]).
//!
//! A file is taken once it is stable: its size and modification time unchanged for the settle
//! time, or at once when it was renamed into place (the usual way to publish a finished file).
//! Change notifications (the `notify` crate) say where to look; a periodic rescan of the whole
//! folder is the safety net for missed or overflowed notifications. Exactly-once across
//! restarts is the state store's job, not this one's.

use notify::event::{ModifyKind, RenameMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// Names that are never documents: hidden files and the usual names of files still being
/// written (`.part`, `.tmp`, `.crdownload`, ...).
pub fn is_temporary_name(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    let lower = name.to_ascii_lowercase();
    name.starts_with('.')
        || name.ends_with('~')
        || [".part", ".partial", ".tmp", ".temp", ".crdownload", ".swp"]
            .iter()
            .any(|suffix| lower.ends_with(suffix))
}

/// Size and modification time: what changes while a file is written.
type Stamp = (u64, SystemTime);

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    meta.is_file().then(|| {
        (
            meta.len(),
            meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        )
    })
}

struct Pending {
    stamp: Stamp,
    /// When the stamp was last seen to change (or first seen).
    since: Instant,
    renamed_into_place: bool,
}

/// Files of a watched folder as they arrive and settle.
pub struct Arrivals {
    root: PathBuf,
    /// Folders under `root` never looked into (outputs, done/, failed/).
    excluded: Vec<PathBuf>,
    settle: Duration,
    rescan_every: Duration,
    last_rescan: Option<Instant>,
    pending: BTreeMap<PathBuf, Pending>,
    /// Files taken, with the stamp they had: taken again only when changed.
    taken: HashMap<PathBuf, Stamp>,
    events: crossbeam_channel::Receiver<notify::Result<Event>>,
    /// `None` when notifications are unavailable (e.g. the inotify watch limit): rescans only.
    _watcher: Option<RecommendedWatcher>,
}

impl Arrivals {
    /// Watches `root` (recursively). `excluded` folders are skipped; `settle` is how long a file
    /// must stay unchanged; `rescan_every` how often the whole folder is walked again. Without
    /// file notifications (a warning says why) the rescans alone find new files.
    pub fn new(
        root: &Path,
        excluded: Vec<PathBuf>,
        settle: Duration,
        rescan_every: Duration,
    ) -> Arrivals {
        let (tx, events) = crossbeam_channel::unbounded();
        let watcher = notify::recommended_watcher(move |event| {
            let _ = tx.send(event);
        })
        .and_then(|mut w| w.watch(root, RecursiveMode::Recursive).map(|()| w));
        let watcher = match watcher {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(
                    "no file notifications for {} ({e}): new files are found by the rescan \
                     every {} s",
                    root.display(),
                    rescan_every.as_secs_f64()
                );
                None
            }
        };
        Arrivals {
            root: root.to_path_buf(),
            excluded,
            settle,
            rescan_every,
            last_rescan: None,
            pending: BTreeMap::new(),
            taken: HashMap::new(),
            events,
            _watcher: watcher,
        }
    }

    /// Under an excluded folder, outside the root, or a temporary name anywhere on the way.
    fn ignored(&self, path: &Path) -> bool {
        self.excluded.iter().any(|e| path.starts_with(e))
            || path.strip_prefix(&self.root).map_or(true, |rel| {
                rel.components()
                    .any(|c| is_temporary_name(Path::new(c.as_os_str())))
            })
    }

    /// Files seen but not yet taken.
    pub fn waiting(&self) -> usize {
        self.pending.len()
    }

    /// Waits up to `wait` for notifications, rescans when due, and returns the files (at most
    /// `max`, in name order) that are stable now. They count as taken from here on.
    pub fn poll(&mut self, wait: Duration, max: usize) -> Vec<PathBuf> {
        let mut touched: HashSet<PathBuf> = HashSet::new();
        let mut renamed: HashSet<PathBuf> = HashSet::new();
        match self.events.recv_timeout(wait) {
            Ok(first) => {
                for event in std::iter::once(first).chain(self.events.try_iter()) {
                    match event {
                        Ok(event) => classify(event, &mut touched, &mut renamed),
                        Err(e) => {
                            // Overflowed or failed notifications: a rescan finds what they
                            // missed.
                            tracing::warn!("file notifications: {e}; rescanning");
                            self.last_rescan = None;
                        }
                    }
                }
            }
            // No watcher: nothing will ever arrive on the channel.
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => std::thread::sleep(wait),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
        }
        for path in touched {
            if std::fs::metadata(&path).is_ok_and(|m| m.is_dir()) {
                // A folder created or moved in: its files may predate its watch.
                self.walk(&path);
            } else {
                let was_renamed = renamed.contains(&path);
                self.observe(path, was_renamed);
            }
        }
        if self
            .last_rescan
            .is_none_or(|t| t.elapsed() >= self.rescan_every)
        {
            let root = self.root.clone();
            self.walk(&root);
            self.last_rescan = Some(Instant::now());
        }
        self.take_stable(max)
    }

    fn walk(&mut self, dir: &Path) {
        let excluded = self.excluded.clone();
        let walker = walkdir::WalkDir::new(dir)
            .follow_links(true)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|e| !excluded.iter().any(|x| e.path().starts_with(x)));
        for entry in walker.flatten() {
            if entry.file_type().is_file() {
                self.observe(entry.into_path(), false);
            }
        }
    }

    fn observe(&mut self, path: PathBuf, renamed_into_place: bool) {
        if self.ignored(&path) {
            return;
        }
        let Some(now) = stamp(&path) else {
            // Gone (moved away, deleted) or not a file.
            self.pending.remove(&path);
            self.taken.remove(&path);
            return;
        };
        if self.taken.get(&path) == Some(&now) {
            return;
        }
        match self.pending.get_mut(&path) {
            Some(p) if p.stamp == now => p.renamed_into_place |= renamed_into_place,
            _ => {
                self.pending.insert(
                    path,
                    Pending {
                        stamp: now,
                        since: Instant::now(),
                        renamed_into_place,
                    },
                );
            }
        }
    }

    fn take_stable(&mut self, max: usize) -> Vec<PathBuf> {
        let mut ready = Vec::new();
        let mut gone = Vec::new();
        for (path, p) in self.pending.iter_mut() {
            if ready.len() >= max {
                break;
            }
            // Look again right before taking: a write since the last look restarts the wait.
            match stamp(path) {
                None => gone.push(path.clone()),
                Some(now) if now != p.stamp => {
                    p.stamp = now;
                    p.since = Instant::now();
                    p.renamed_into_place = false;
                }
                Some(_) if p.renamed_into_place || p.since.elapsed() >= self.settle => {
                    ready.push(path.clone())
                }
                Some(_) => {}
            }
        }
        for path in gone {
            self.pending.remove(&path);
        }
        for path in &ready {
            let p = self.pending.remove(path).expect("pending");
            self.taken.insert(path.clone(), p.stamp);
        }
        ready
    }

    /// Forgets a taken file (it was moved away).
    pub fn forget(&mut self, path: &Path) {
        self.taken.remove(path);
    }
}

fn classify(event: Event, touched: &mut HashSet<PathBuf>, renamed: &mut HashSet<PathBuf>) {
    match event.kind {
        EventKind::Modify(ModifyKind::Name(RenameMode::To)) => {
            for p in event.paths {
                renamed.insert(p.clone());
                touched.insert(p);
            }
        }
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => {
            // paths: [from, to].
            if let Some(to) = event.paths.get(1) {
                renamed.insert(to.clone());
            }
            touched.extend(event.paths);
        }
        EventKind::Access(_) => {}
        _ => touched.extend(event.paths),
    }
}

/// Counters and gauges of a watch, written as a node_exporter textfile.
#[derive(Debug, Default, Clone)]
pub struct Metrics {
    pub documents_done: u64,
    pub documents_failed: u64,
    pub pages: u64,
    /// Files seen and not yet finished (settling, or in the batch being processed).
    pub queue_depth: u64,
    pub busy_seconds: f64,
    /// Wall seconds per page of the last batch.
    pub seconds_per_page: Option<f64>,
    pub last_batch_unix: Option<f64>,
}

impl Metrics {
    /// The Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, f64)]| {
            s.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
            for (labels, value) in samples {
                s.push_str(&format!("{name}{labels} {value}\n"));
            }
        };
        metric(
            "quire_documents_total",
            "counter",
            "Documents finished by this watch process, by result.",
            &[
                ("{result=\"done\"}", self.documents_done as f64),
                ("{result=\"failed\"}", self.documents_failed as f64),
            ],
        );
        metric(
            "quire_pages_total",
            "counter",
            "Pages of the documents finished by this watch process.",
            &[("", self.pages as f64)],
        );
        metric(
            "quire_queue_depth",
            "gauge",
            "Files seen and not finished yet (settling or being processed).",
            &[("", self.queue_depth as f64)],
        );
        metric(
            "quire_busy_seconds_total",
            "counter",
            "Wall seconds spent processing batches.",
            &[("", self.busy_seconds)],
        );
        if let Some(v) = self.seconds_per_page {
            metric(
                "quire_seconds_per_page",
                "gauge",
                "Wall seconds per page over the last batch.",
                &[("", v)],
            );
        }
        if let Some(v) = self.last_batch_unix {
            metric(
                "quire_last_batch_timestamp_seconds",
                "gauge",
                "When the last batch finished (Unix time).",
                &[("", v)],
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names_are_never_documents() {
        for name in [
            ".x.pdf",
            "a.pdf.part",
            "a.PDF.TMP",
            "b.crdownload",
            "c.pdf~",
        ] {
            assert!(is_temporary_name(Path::new(name)), "{name}");
        }
        for name in ["a.pdf", "scan.tiff", "partial.pdf"] {
            assert!(!is_temporary_name(Path::new(name)), "{name}");
        }
    }

    #[test]
    fn a_file_is_taken_once_stable_and_again_only_when_changed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let settle = Duration::from_millis(300);
        let mut arrivals = Arrivals::new(&root, Vec::new(), settle, Duration::from_secs(3600));
        let file = root.join("a.png");
        std::fs::write(&file, b"first").unwrap();
        let started = Instant::now();
        let mut taken = Vec::new();
        while taken.is_empty() && started.elapsed() < Duration::from_secs(10) {
            taken = arrivals.poll(Duration::from_millis(50), 10);
        }
        assert_eq!(taken, vec![file.clone()]);
        assert!(started.elapsed() >= settle, "taken before it settled");
        // Unchanged: never again.
        let again = arrivals.poll(Duration::from_millis(500), 10);
        assert!(again.is_empty(), "{again:?}");
        // Renamed into place: taken without waiting for the settle time.
        std::fs::write(root.join(".b.png.tmp"), b"second").unwrap();
        let renamed = Instant::now();
        std::fs::rename(root.join(".b.png.tmp"), root.join("b.png")).unwrap();
        let mut taken = Vec::new();
        while taken.is_empty() && renamed.elapsed() < Duration::from_secs(10) {
            taken = arrivals.poll(Duration::from_millis(20), 10);
        }
        assert_eq!(taken, vec![root.join("b.png")]);
        // Changed: taken again.
        std::fs::write(&file, b"first, then more").unwrap();
        let mut taken = Vec::new();
        let changed = Instant::now();
        while taken.is_empty() && changed.elapsed() < Duration::from_secs(10) {
            taken = arrivals.poll(Duration::from_millis(50), 10);
        }
        assert_eq!(taken, vec![file]);
    }

    #[test]
    fn metrics_are_prometheus_text() {
        let m = Metrics {
            documents_done: 3,
            documents_failed: 1,
            pages: 7,
            queue_depth: 2,
            busy_seconds: 1.5,
            seconds_per_page: Some(0.25),
            last_batch_unix: None,
        };
        let text = m.render();
        assert!(text.contains("quire_documents_total{result=\"done\"} 3\n"));
        assert!(text.contains("quire_documents_total{result=\"failed\"} 1\n"));
        assert!(text.contains("# TYPE quire_queue_depth gauge\nquire_queue_depth 2\n"));
        assert!(text.contains("quire_seconds_per_page 0.25\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').unwrap();
            value.parse::<f64>().unwrap();
        }
    }
}
