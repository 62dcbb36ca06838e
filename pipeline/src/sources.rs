//! Inputs: files and folders turned into a deterministic list of documents, each sniffed by its
//! content. Folders are walked recursively in name order; symlinks are followed but loops are
//! detected and reported, never walked forever. Only regular files are ever opened: a FIFO,
//! socket or device found in a folder is skipped with a warning (a FIFO would block its reader
//! forever), and one given by name is an error.

use crate::error::{io_error, DocError, ErrorKind};
use crate::sniff::{file_kind, sniff_file, InputFormat, Sniffed};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// One input document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The file as given or found by the walk.
    pub path: PathBuf,
    /// Its path relative to the input root it was found under: the file name for a file given
    /// directly, the path below the folder for a walked file. Outputs mirror this under `--out`.
    pub relative: PathBuf,
    pub format: InputFormat,
}

/// What [`collect`] found.
#[derive(Debug, Default)]
pub struct Collected {
    pub sources: Vec<Source>,
    /// Inputs that cannot be processed (missing, unreadable, not a supported format, ...).
    pub errors: Vec<DocError>,
    /// Files in walked folders that are neither a supported format by content nor by name
    /// (`notes.txt`, `.DS_Store`), and entries that are not regular files (FIFOs, sockets,
    /// devices; never opened, and logged as a warning): skipped without an error.
    pub skipped: Vec<PathBuf>,
}

/// Collects the documents of `inputs` (files and folders), in the order given and, inside a
/// folder, in file-name order. A file given directly must be a supported format; a file found
/// in a folder is skipped quietly unless its content or its extension says it is a PDF or an
/// image (then a bad one is an error that names it).
pub fn collect(inputs: &[PathBuf]) -> Collected {
    collect_excluding(inputs, &[])
}

/// [`collect`], never walking into the folders `exclude` (the output folder, when it lies
/// inside an input folder: a rerun must not take its own PNGs as inputs).
pub fn collect_excluding(inputs: &[PathBuf], exclude: &[PathBuf]) -> Collected {
    let exclude: Vec<PathBuf> = exclude
        .iter()
        .filter_map(|p| std::fs::canonicalize(p).ok())
        .collect();
    let mut out = Collected::default();
    for input in inputs {
        match std::fs::metadata(input) {
            Err(e) => out.errors.push(unreadable(input, &e)),
            Ok(meta) if meta.is_dir() => walk(input, &exclude, &mut out),
            Ok(_) => {
                let relative = input
                    .file_name()
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from("input"));
                classify(input.clone(), relative, true, &mut out);
            }
        }
    }
    dedupe(&mut out);
    out
}

/// The documents among `paths`, files found under the folder `root` (a watched folder): named
/// relative to `root`, classified like files found by a walk.
pub fn collect_files(root: &Path, paths: &[PathBuf]) -> Collected {
    let mut out = Collected::default();
    for path in paths {
        let relative = path.strip_prefix(root).unwrap_or(path).to_path_buf();
        classify(path.clone(), relative, false, &mut out);
    }
    out
}

fn walk(root: &Path, exclude: &[PathBuf], out: &mut Collected) {
    let walker = walkdir::WalkDir::new(root)
        .follow_links(true)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| {
            exclude.is_empty()
                || !e.file_type().is_dir()
                || std::fs::canonicalize(e.path()).map_or(true, |p| !exclude.contains(&p))
        });
    for entry in walker {
        match entry {
            Err(e) => {
                let path = e.path().unwrap_or(root).to_path_buf();
                let message = if e.loop_ancestor().is_some() {
                    "symlink loop: the folder links back to one of its parents; not walked again"
                        .to_string()
                } else if let Some(io) = e.io_error() {
                    // One unreadable entry (a dangling symlink, a folder without permission)
                    // is reported; the rest of the folder is still walked.
                    out.errors.push(unreadable(&path, io));
                    continue;
                } else {
                    e.to_string()
                };
                out.errors.push(DocError::new(path, ErrorKind::Io, message));
            }
            Ok(entry) => {
                let kind = entry.file_type();
                if kind.is_dir() {
                    continue;
                }
                if !kind.is_file() {
                    tracing::warn!(
                        "skipping {}: not a regular file ({}); quire reads only regular files",
                        entry.path().display(),
                        file_kind(kind)
                    );
                    out.skipped.push(entry.into_path());
                    continue;
                }
                let relative = entry
                    .path()
                    .strip_prefix(root)
                    .unwrap_or(entry.path())
                    .to_path_buf();
                classify(entry.into_path(), relative, false, out);
            }
        }
    }
}

/// The record of an input that cannot be read, saying so when it is a symlink to nothing or a
/// loop of symlinks (the OS only says "not found" or "too many levels of symbolic links").
fn unreadable(path: &Path, err: &std::io::Error) -> DocError {
    let link = std::fs::read_link(path);
    match (err.kind(), link) {
        (std::io::ErrorKind::NotFound, Ok(target)) => DocError::new(
            path,
            ErrorKind::NotFound,
            format!(
                "dangling symlink: its target {} does not exist",
                target.display()
            ),
        ),
        (_, Ok(_)) if err.raw_os_error() == Some(libc::ELOOP) => DocError::new(
            path,
            ErrorKind::Io,
            "symlink loop: the link leads back to itself and never reaches a file",
        ),
        _ => io_error(path, err),
    }
}

fn classify(path: PathBuf, relative: PathBuf, explicit: bool, out: &mut Collected) {
    let claimed = InputFormat::from_extension(&path);
    match sniff_file(&path) {
        // Not a regular file (`sniff_file` opens no other): an error when asked for by name.
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput && !explicit => {
            tracing::warn!(
                "skipping {}: {e}; quire reads only regular files",
                path.display()
            );
            out.skipped.push(path);
        }
        Err(e) => out.errors.push(unreadable(&path, &e)),
        Ok(Sniffed::Known(format)) => out.sources.push(Source {
            path,
            relative,
            format,
        }),
        Ok(Sniffed::Empty) if explicit || claimed.is_some() => out.errors.push(DocError::new(
            path,
            ErrorKind::EmptyFile,
            "empty file (0 bytes)",
        )),
        Ok(Sniffed::Unknown) if explicit || claimed.is_some() => {
            let message = match claimed {
                Some(f) => format!(
                    "not a {} file: the name says so but the content is not a PDF, PNG, JPEG, TIFF or WebP",
                    format_name(f)
                ),
                None => "not a PDF, PNG, JPEG, TIFF or WebP file (by its content)".to_string(),
            };
            let kind = if claimed == Some(InputFormat::Pdf) {
                ErrorKind::PdfCorrupt
            } else {
                ErrorKind::UnsupportedFormat
            };
            out.errors.push(DocError::new(path, kind, message));
        }
        Ok(_) => out.skipped.push(path),
    }
}

pub fn format_name(f: InputFormat) -> &'static str {
    match f {
        InputFormat::Pdf => "PDF",
        InputFormat::Png => "PNG",
        InputFormat::Jpeg => "JPEG",
        InputFormat::Tiff => "TIFF",
        InputFormat::Webp => "WebP",
    }
}

/// The same file given twice is processed once; two different files that would write the same
/// outputs (same relative path from different roots, or names that differ only in bytes the
/// display form replaces) make the later one an error.
fn dedupe(out: &mut Collected) {
    let mut seen_files = std::collections::HashSet::new();
    let mut seen_outputs: HashMap<String, PathBuf> = HashMap::new();
    let mut kept = Vec::with_capacity(out.sources.len());
    for source in out.sources.drain(..) {
        let canonical = std::fs::canonicalize(&source.path).unwrap_or_else(|_| source.path.clone());
        if !seen_files.insert(canonical) {
            continue;
        }
        let output = quire_exporters::layout::display_relative(&source.relative);
        if let Some(first) = seen_outputs.get(&output) {
            out.errors.push(DocError::new(
                &source.path,
                ErrorKind::DuplicateOutput,
                format!(
                    "would write the same outputs as {} (same relative name {}); render it separately",
                    first.display(),
                    source.relative.display()
                ),
            ));
            continue;
        }
        seen_outputs.insert(output, source.path.clone());
        kept.push(source);
    }
    out.sources = kept;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, bytes: &[u8]) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn walks_in_name_order_and_sniffs_content() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("in");
        write(&root.join("b.pdf"), b"%PDF-1.4\n");
        write(&root.join("a/z.png"), b"\x89PNG\r\n\x1a\nrest");
        write(&root.join("a/y.dat"), b"%PDF-1.7 pdf without the extension");
        write(&root.join("notes.txt"), b"hello");
        write(&root.join("bad.jpg"), b"hello");
        write(&root.join("empty.pdf"), b"");
        let got = collect(std::slice::from_ref(&root));
        let rel: Vec<_> = got.sources.iter().map(|s| s.relative.clone()).collect();
        assert_eq!(
            rel,
            [PathBuf::from("a/y.dat"), "a/z.png".into(), "b.pdf".into()]
        );
        assert_eq!(got.sources[0].format, InputFormat::Pdf);
        assert_eq!(got.skipped, [root.join("notes.txt")]);
        let kinds: Vec<_> = got
            .errors
            .iter()
            .map(|e| (e.path.clone(), e.kind))
            .collect();
        assert_eq!(
            kinds,
            [
                (root.join("bad.jpg"), ErrorKind::UnsupportedFormat),
                (root.join("empty.pdf"), ErrorKind::EmptyFile)
            ]
        );
    }

    #[test]
    fn an_unreadable_entry_is_reported_and_the_walk_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("in");
        write(&root.join("c.pdf"), b"%PDF-1.4\n");
        write(&root.join("z.png"), b"\x89PNG\r\n\x1a\nrest");
        std::os::unix::fs::symlink(root.join("missing.pdf"), root.join("a.pdf")).unwrap();
        std::os::unix::fs::symlink("itself.pdf", root.join("itself.pdf")).unwrap();
        let got = collect(std::slice::from_ref(&root));
        let rel: Vec<_> = got.sources.iter().map(|s| s.relative.clone()).collect();
        assert_eq!(rel, [PathBuf::from("c.pdf"), "z.png".into()]);
        let errors: Vec<_> = got.errors.iter().map(|e| e.path.clone()).collect();
        assert_eq!(errors, [root.join("a.pdf"), root.join("itself.pdf")]);
        assert_eq!(got.errors[0].kind, ErrorKind::NotFound);
        assert_eq!(
            got.errors[0].message,
            format!(
                "dangling symlink: its target {} does not exist",
                root.join("missing.pdf").display()
            )
        );
        assert_eq!(got.errors[1].kind, ErrorKind::Io);
        assert!(got.errors[1].message.starts_with("symlink loop"));
    }

    #[test]
    fn fifos_and_sockets_are_never_opened() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("in");
        write(&root.join("a.png"), b"\x89PNG\r\n\x1a\nrest");
        let fifo = root.join("pipe.pdf");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let socket = root.join("socket.png");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        // In a folder: skipped (opening the FIFO would wait for a writer forever).
        let got = collect(std::slice::from_ref(&root));
        assert_eq!(got.sources.len(), 1);
        assert!(got.errors.is_empty(), "{:?}", got.errors);
        assert_eq!(got.skipped, [fifo.clone(), socket.clone()]);
        // By name: an error saying what it is.
        let got = collect(&[fifo.clone(), socket.clone()]);
        assert!(got.sources.is_empty());
        let errors: Vec<_> = got
            .errors
            .iter()
            .map(|e| (e.path.clone(), e.kind, e.message.clone()))
            .collect();
        assert_eq!(
            errors,
            [
                (
                    fifo,
                    ErrorKind::Io,
                    "not a regular file (a FIFO (named pipe))".to_string()
                ),
                (
                    socket,
                    ErrorKind::Io,
                    "not a regular file (a socket)".to_string()
                )
            ]
        );
    }

    #[test]
    fn missing_inputs_and_explicit_unknown_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let txt = dir.path().join("notes.txt");
        write(&txt, b"hello");
        let missing = dir.path().join("missing.pdf");
        let got = collect(&[txt.clone(), missing.clone()]);
        assert!(got.sources.is_empty());
        assert_eq!(got.errors[0].path, txt);
        assert_eq!(got.errors[0].kind, ErrorKind::UnsupportedFormat);
        assert_eq!(got.errors[1].path, missing);
        assert_eq!(got.errors[1].kind, ErrorKind::NotFound);
    }

    #[cfg(unix)]
    #[test]
    fn symlink_loops_are_reported_not_followed_forever() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("in");
        write(&root.join("sub/a.pdf"), b"%PDF-1.4\n");
        std::os::unix::fs::symlink(&root, root.join("sub/loop")).unwrap();
        let got = collect(std::slice::from_ref(&root));
        assert_eq!(got.sources.len(), 1);
        assert_eq!(got.errors.len(), 1);
        assert!(got.errors[0].message.contains("symlink loop"));
    }

    #[test]
    fn the_output_folder_is_not_walked() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("in");
        write(&root.join("a.pdf"), b"%PDF-1.4\n");
        write(&root.join("out/a.pdf.p0001.png"), b"\x89PNG\r\n\x1a\nrest");
        let got = collect_excluding(std::slice::from_ref(&root), &[root.join("out")]);
        assert_eq!(got.sources.len(), 1);
        assert_eq!(got.sources[0].relative, PathBuf::from("a.pdf"));
    }

    #[test]
    fn duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a/x.pdf");
        let b = dir.path().join("b/x.pdf");
        write(&a, b"%PDF-1.4\n");
        write(&b, b"%PDF-1.4\n");
        let got = collect(&[a.clone(), a.clone(), b.clone()]);
        assert_eq!(got.sources.len(), 1);
        assert_eq!(got.errors.len(), 1);
        assert_eq!(got.errors[0].path, b);
        assert_eq!(got.errors[0].kind, ErrorKind::DuplicateOutput);
    }

    /// Names that differ only in bytes the display form replaces would share outputs.
    #[cfg(unix)]
    #[test]
    fn names_with_the_same_display_form_are_duplicates() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let name = |bytes: &[u8]| dir.path().join(std::ffi::OsStr::from_bytes(bytes));
        write(&name(b"x\xff.pdf"), b"%PDF-1.4\n");
        write(&name(b"x\xfe.pdf"), b"%PDF-1.7\n");
        write(&name(b"x\n.pdf"), b"%PDF-1.5\n");
        let got = collect(&[dir.path().to_path_buf()]);
        assert_eq!(got.sources.len(), 1);
        assert_eq!(got.errors.len(), 2);
        assert!(got
            .errors
            .iter()
            .all(|e| e.kind == ErrorKind::DuplicateOutput));
    }
}
