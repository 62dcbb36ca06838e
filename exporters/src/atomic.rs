//! Atomic file writes: a temporary file in the target folder, fsync, rename into place, fsync of
//! the folder. A reader (or a rerun after a crash) sees the old file or the whole new one, never
//! half of one.
//!
//! Temporary files are named `.quire-tmp-<pid>-<start>-<random>.<name>.tmp`: `<pid>` and
//! `<start>` (the process's start time in clock ticks after boot, from `/proc`; `0` where there
//! is no `/proc`) name the process writing it. [`remove_stale_temporaries`] removes only such
//! files, and only those whose writer is gone: never a user's file, never the temporaries of a
//! quire still running on the same folder.

use std::ffi::OsStr;
use std::io::Write;
use std::path::Path;
use std::sync::OnceLock;
use tempfile::NamedTempFile;

/// The start of every temporary file name quire writes.
pub const TEMP_PREFIX: &str = ".quire-tmp-";

/// Default permissions of outputs: documents are sensitive.
pub const DEFAULT_MODE: u32 = 0o600;

/// Writes `bytes` to `path` atomically with Unix permissions `mode`. The parent must exist.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "path has no file name")
    })?;
    let mut tmp = temporary_in(dir, name)?;
    set_mode(tmp.as_file(), mode)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    sync_dir(dir)
}

/// A file written in pieces and put in place atomically by [`AtomicFile::commit`]: until then
/// it is a dot-prefixed temporary file in the target folder; dropped without a commit, it is
/// removed and the old file (if any) stays.
pub struct AtomicFile {
    path: std::path::PathBuf,
    tmp: tempfile::NamedTempFile,
    buf: std::io::BufWriter<std::fs::File>,
}

impl AtomicFile {
    /// Starts writing `path` (whose parent must exist) with Unix permissions `mode`.
    pub fn create(path: &Path, mode: u32) -> std::io::Result<AtomicFile> {
        let dir = parent_of(path);
        let name = path.file_name().ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "path has no file name")
        })?;
        let tmp = temporary_in(dir, name)?;
        set_mode(tmp.as_file(), mode)?;
        let buf = std::io::BufWriter::new(tmp.as_file().try_clone()?);
        Ok(AtomicFile {
            path: path.to_path_buf(),
            tmp,
            buf,
        })
    }

    /// Flushes and fsyncs the temporary: the bytes are on disk (a full disk fails here, before
    /// anything is renamed), and [`AtomicFile::commit`] only has to rename.
    pub fn sync(&mut self) -> std::io::Result<()> {
        self.buf.flush()?;
        self.buf.get_ref().sync_all()
    }

    /// Flushes, fsyncs and renames the file into place, then fsyncs the folder.
    pub fn commit(self) -> std::io::Result<()> {
        let AtomicFile { path, tmp, buf } = self;
        let file = buf.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        tmp.persist(&path).map_err(|e| e.error)?;
        sync_dir(parent_of(&path))
    }
}

impl Write for AtomicFile {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.write(bytes)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.buf.flush()
    }
}

fn parent_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// A new temporary file in `dir` for the output `name`, named after this process (see the
/// module's documentation): a hidden name no output pattern matches.
fn temporary_in(dir: &Path, name: &OsStr) -> std::io::Result<NamedTempFile> {
    let owner = Owner::current();
    // Part of the output's name, for people; short, so the temporary name stays within the
    // file system's limit whenever the output's does.
    let mut shown = name.to_string_lossy().into_owned();
    if shown.len() > 64 {
        let mut end = 64;
        while !shown.is_char_boundary(end) {
            end -= 1;
        }
        shown.truncate(end);
    }
    tempfile::Builder::new()
        .prefix(&format!("{TEMP_PREFIX}{}-{}-", owner.pid, owner.start))
        .suffix(&format!(".{shown}.tmp"))
        .tempfile_in(dir)
}

/// The process that writes a temporary file: its pid and its start time (which tells it from a
/// later process that got the same pid).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Owner {
    pid: u32,
    start: u64,
}

impl Owner {
    fn current() -> Owner {
        static CURRENT: OnceLock<Owner> = OnceLock::new();
        *CURRENT.get_or_init(|| {
            let pid = std::process::id();
            Owner {
                pid,
                start: start_time(pid).unwrap_or(0),
            }
        })
    }

    /// The owner named by a temporary file name; `None` for any other name.
    fn of(file_name: &str) -> Option<Owner> {
        let rest = file_name.strip_prefix(TEMP_PREFIX)?;
        if !rest.ends_with(".tmp") {
            return None;
        }
        let mut parts = rest.splitn(3, '-');
        let pid = parts.next()?.parse().ok()?;
        let start = parts.next()?.parse().ok()?;
        parts.next()?;
        Some(Owner { pid, start })
    }

    /// Whether the process is gone: no such process, or another one that got its pid since.
    fn is_gone(&self) -> bool {
        match start_time(self.pid) {
            Some(start) => start != self.start,
            None => !process_exists(self.pid),
        }
    }
}

/// The start time of process `pid` in clock ticks after boot (`/proc/<pid>/stat`, field 22).
#[cfg(target_os = "linux")]
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces and parentheses.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(not(target_os = "linux"))]
fn start_time(_pid: u32) -> Option<u64> {
    None
}

/// Whether a process `pid` exists (one of another user counts: it may be a quire).
#[cfg(unix)]
fn process_exists(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // 0 would mean "my process group".
    pid > 0
        && (unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM))
}

#[cfg(not(unix))]
fn process_exists(_pid: u32) -> bool {
    true
}

/// Removes the temporary files that quire processes no longer running left under `dir` (a
/// run killed while writing), skipping folders whose name starts with a dot (quire's state).
/// Any other file, whatever its name, is left alone. Returns how many were removed.
pub fn remove_stale_temporaries(dir: &Path) -> std::io::Result<usize> {
    let mut removed = 0;
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let kind = entry.file_type()?;
        if kind.is_dir() && !name.starts_with('.') {
            removed += remove_stale_temporaries(&entry.path())?;
        } else if kind.is_file() && Owner::of(&name).is_some_and(|owner| owner.is_gone()) {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => removed += 1,
                // Another run's cleanup took it first.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(removed)
}

#[cfg(unix)]
fn set_mode(file: &std::fs::File, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(std::fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_mode(_file: &std::fs::File, _mode: u32) -> std::io::Result<()> {
    Ok(())
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_files_with_the_asked_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.json");
        write_atomic(&path, b"first", DEFAULT_MODE).unwrap();
        write_atomic(&path, b"second", DEFAULT_MODE).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file left behind");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
    }

    #[test]
    fn streamed_file_appears_only_on_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pages.jsonl");
        std::fs::write(&path, b"old").unwrap();
        let mut f = AtomicFile::create(&path, DEFAULT_MODE).unwrap();
        f.write_all(b"line 1\n").unwrap();
        f.write_all(b"line 2\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        f.commit().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"line 1\nline 2\n");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

        let mut g = AtomicFile::create(&path, DEFAULT_MODE).unwrap();
        g.write_all(b"never committed").unwrap();
        drop(g);
        assert_eq!(std::fs::read(&path).unwrap(), b"line 1\nline 2\n");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn temporaries_are_named_after_their_writer() {
        let dir = tempfile::tempdir().unwrap();
        let f = AtomicFile::create(&dir.path().join("x.json"), DEFAULT_MODE).unwrap();
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 1);
        assert!(names[0].ends_with(".x.json.tmp"), "{names:?}");
        assert_eq!(Owner::of(&names[0]), Some(Owner::current()));
        assert!(!Owner::current().is_gone());
        // Only its own writer's cleanup would see it as stale: kept while this process lives.
        assert_eq!(remove_stale_temporaries(dir.path()).unwrap(), 0);
        f.commit().unwrap();
    }

    #[test]
    fn only_temporaries_of_gone_writers_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let me = Owner::current();
        std::fs::create_dir_all(dir.path().join("a/.quire")).unwrap();
        let write = |name: &str| std::fs::write(dir.path().join(name), b"x").unwrap();
        // A writer that is gone: this pid with another start time (the pid was reused).
        let stale = format!("a/.quire-tmp-{}-{}-abc123.x.json.tmp", me.pid, me.start + 1);
        let live = format!("a/.quire-tmp-{}-{}-abc123.y.json.tmp", me.pid, me.start);
        let kept = [
            live.as_str(),
            "a/.x.json.abc123.tmp", // a user's (or another tool's) file
            "a/.quire-tmp-x-1-abc123.z.tmp", // not a name quire writes
            "a/.quire/.quire-tmp-1-1-abc.tmp", // quire's state folder is not walked
            "a/x.json",
        ];
        write(&stale);
        for name in kept {
            write(name);
        }
        assert_eq!(remove_stale_temporaries(dir.path()).unwrap(), 1);
        assert!(!dir.path().join(&stale).exists());
        for name in kept {
            assert!(dir.path().join(name).is_file(), "{name}");
        }
        assert_eq!(
            remove_stale_temporaries(&dir.path().join("missing")).unwrap(),
            0
        );
    }

    #[test]
    fn owners_parse_from_names() {
        assert_eq!(
            Owner::of(".quire-tmp-42-1234-aB3xYz.a-b.pdf.json.tmp"),
            Some(Owner {
                pid: 42,
                start: 1234
            })
        );
        for other in [
            ".scan.pdf.tmp",
            ".quire-tmp-42-1234-aB3xYz.json",
            ".quire-tmp--1234-a.tmp",
            ".quire-tmp-42.tmp",
            "quire-tmp-42-1-a.tmp",
        ] {
            assert_eq!(Owner::of(other), None, "{other}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn replaces_a_symlink_instead_of_writing_through_it() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target.txt");
        std::fs::write(&target, b"keep").unwrap();
        let link = dir.path().join("out.json");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        write_atomic(&link, b"new", DEFAULT_MODE).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
        assert!(!std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
    }
}
