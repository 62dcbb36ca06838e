//! Where outputs go: the input tree mirrored under the output folder, never outside it, named
//! in the display form of the input's names ([`display_name`]).

use std::ffi::OsStr;
use std::path::{Component, Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("{path}: output path would leave the output folder ({reason})")]
    Escape { path: PathBuf, reason: &'static str },
    /// The cause is in the message (not a `source`): records carry the message alone.
    #[error("cannot create {}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
}

/// `out/<relative>.<extension>`: `invoice.pdf` → `out/invoice.pdf.json`. The source's own
/// extension stays in the name so that `a.pdf` and `a.png` never share an output.
///
/// `relative` is the document's path relative to the input root it was found under; only plain
/// names are accepted (no `..`, no root, no prefix), so the result is always inside `out`. Each
/// name is in its display form, so `out/<record's source>.json` is always the output.
pub fn output_path(out: &Path, relative: &Path, extension: &str) -> Result<PathBuf, LayoutError> {
    let mut path = out.to_path_buf();
    let mut depth = 0;
    for component in relative.components() {
        match component {
            Component::Normal(name) => {
                path.push(display_name(name));
                depth += 1;
            }
            Component::CurDir => {}
            Component::ParentDir => return Err(escape(relative, "`..` component")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(escape(relative, "absolute path"))
            }
        }
    }
    if depth == 0 {
        return Err(escape(relative, "empty name"));
    }
    let mut name = path.file_name().expect("has a name").to_os_string();
    name.push(".");
    name.push(extension);
    path.set_file_name(name);
    Ok(path)
}

/// Creates the folders between `out` and `file`, refusing to go through a symlink: a symlinked
/// folder inside the output tree could point anywhere.
pub fn prepare_parent(out: &Path, file: &Path) -> Result<(), LayoutError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |error| LayoutError::Io { path, error }
    };
    std::fs::create_dir_all(out).map_err(io(out))?;
    let relative = file
        .parent()
        .and_then(|p| p.strip_prefix(out).ok())
        .ok_or_else(|| escape(file, "not under the output folder"))?;
    let mut dir = out.to_path_buf();
    for component in relative.components() {
        let Component::Normal(name) = component else {
            return Err(escape(file, "`..` or absolute component"));
        };
        dir.push(name);
        match std::fs::symlink_metadata(&dir) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(escape(&dir, "symlinked folder"))
            }
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Err(escape(&dir, "a file is in the way")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir(&dir).map_err(io(&dir))?;
            }
            Err(e) => return Err(io(&dir)(e)),
        }
    }
    Ok(())
}

fn escape(path: &Path, reason: &'static str) -> LayoutError {
    LayoutError::Escape {
        path: path.to_path_buf(),
        reason,
    }
}

/// A display path relative to the input root, with `/` separators and each name in its
/// display form: what records and CSV rows show, independent of where the job ran.
pub fn display_relative(relative: &Path) -> String {
    relative
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(display_name(n)),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The display form of a file name: bytes that are not UTF-8 and control characters (a
/// newline, a tab) become U+FFFD. Output files are named with it and records show it, so
/// outputs have printable UTF-8 names whatever the inputs' names are.
pub fn display_name(name: &OsStr) -> String {
    name.to_string_lossy()
        .chars()
        .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_the_tree_and_keeps_the_source_extension() {
        let out = Path::new("/out");
        assert_eq!(
            output_path(out, Path::new("a/b/invoice.pdf"), "json").unwrap(),
            Path::new("/out/a/b/invoice.pdf.json")
        );
        // Dots inside a name are just a name.
        assert_eq!(
            output_path(out, Path::new("x..y.pdf"), "md").unwrap(),
            Path::new("/out/x..y.pdf.md")
        );
    }

    #[cfg(unix)]
    #[test]
    fn names_are_in_their_display_form() {
        use std::os::unix::ffi::OsStrExt;
        let relative = Path::new(OsStr::from_bytes(b"f\xffo/a\nb\tc\xe9.pdf"));
        assert_eq!(
            display_relative(relative),
            "f\u{FFFD}o/a\u{FFFD}b\u{FFFD}c\u{FFFD}.pdf"
        );
        assert_eq!(
            output_path(Path::new("/out"), relative, "json").unwrap(),
            Path::new("/out/f\u{FFFD}o/a\u{FFFD}b\u{FFFD}c\u{FFFD}.pdf.json")
        );
        // Valid UTF-8 stays as it is.
        assert_eq!(display_name(OsStr::new("-Ünïcode ✓.pdf")), "-Ünïcode ✓.pdf");
    }

    #[test]
    fn refuses_escapes() {
        let out = Path::new("/out");
        for bad in ["../etc/passwd", "a/../../b.pdf", "/etc/passwd", "", "."] {
            let err = output_path(out, Path::new(bad), "json").unwrap_err();
            assert!(matches!(err, LayoutError::Escape { .. }), "{bad}: {err}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn refuses_symlinked_folders_inside_the_output() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        let elsewhere = tmp.path().join("elsewhere");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::create_dir_all(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, out.join("sub")).unwrap();
        let file = output_path(&out, Path::new("sub/doc.pdf"), "json").unwrap();
        let err = prepare_parent(&out, &file).unwrap_err();
        assert!(err.to_string().contains("symlinked folder"), "{err}");
        let ok = output_path(&out, Path::new("other/doc.pdf"), "json").unwrap();
        prepare_parent(&out, &ok).unwrap();
        assert!(out.join("other").is_dir());
    }
}
