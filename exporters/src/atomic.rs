//! Atomic file writes: a temporary file in the target folder, fsync, rename into place, fsync of
//! the folder. A reader (or a rerun after a crash) sees the old file or the whole new one, never
//! half of one.

use std::io::Write;
use std::path::Path;

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
    // A dot-prefixed temporary name that no output pattern matches.
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{}.", name.to_string_lossy()))
        .suffix(".tmp")
        .tempfile_in(dir)?;
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
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{}.", name.to_string_lossy()))
            .suffix(".tmp")
            .tempfile_in(dir)?;
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

/// Removes the temporary files a killed writer left under `dir` (`.NAME.XXXX.tmp`, never an
/// output name), skipping folders whose name starts with a dot (quire's state). Returns how
/// many were removed.
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
        } else if kind.is_file() && name.starts_with('.') && name.ends_with(".tmp") {
            std::fs::remove_file(entry.path())?;
            removed += 1;
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
    fn stale_temporaries_are_removed_and_outputs_kept() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/.quire")).unwrap();
        std::fs::write(dir.path().join("a/.x.json.abc123.tmp"), b"half").unwrap();
        std::fs::write(dir.path().join("a/.quire/.keep.tmp"), b"state").unwrap();
        std::fs::write(dir.path().join("a/x.json"), b"{}").unwrap();
        assert_eq!(remove_stale_temporaries(dir.path()).unwrap(), 1);
        assert!(dir.path().join("a/x.json").is_file());
        assert!(dir.path().join("a/.quire/.keep.tmp").is_file());
        assert_eq!(
            remove_stale_temporaries(&dir.path().join("missing")).unwrap(),
            0
        );
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
