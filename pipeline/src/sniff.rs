//! What a file is, by its content (magic bytes), not by its name.

use std::io::Read;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputFormat {
    Pdf,
    Png,
    Jpeg,
    Tiff,
    Webp,
}

impl InputFormat {
    pub fn is_image(self) -> bool {
        self != InputFormat::Pdf
    }

    /// The format a file name's extension claims, if it is one quire reads.
    pub fn from_extension(path: &Path) -> Option<InputFormat> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        Some(match ext.as_str() {
            "pdf" => InputFormat::Pdf,
            "png" => InputFormat::Png,
            "jpg" | "jpeg" | "jpe" => InputFormat::Jpeg,
            "tif" | "tiff" => InputFormat::Tiff,
            "webp" => InputFormat::Webp,
            _ => return None,
        })
    }
}

/// How many leading bytes [`sniff`] looks at. PDF readers accept the `%PDF-` header anywhere in
/// the first 1024 bytes.
pub const SNIFF_LEN: usize = 1024;

/// The format of a file that starts with `head`.
pub fn sniff(head: &[u8]) -> Option<InputFormat> {
    if head.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(InputFormat::Png)
    } else if head.starts_with(b"\xff\xd8\xff") {
        Some(InputFormat::Jpeg)
    } else if head.starts_with(b"II*\0") || head.starts_with(b"MM\0*") {
        Some(InputFormat::Tiff)
    } else if head.len() >= 12 && &head[0..4] == b"RIFF" && &head[8..12] == b"WEBP" {
        Some(InputFormat::Webp)
    } else if find(&head[..head.len().min(SNIFF_LEN)], b"%PDF-").is_some() {
        Some(InputFormat::Pdf)
    } else {
        None
    }
}

/// What [`sniff_file`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniffed {
    Known(InputFormat),
    Empty,
    Unknown,
}

/// Reads the head of `path` and sniffs it.
pub fn sniff_file(path: &Path) -> std::io::Result<Sniffed> {
    let mut head = Vec::with_capacity(SNIFF_LEN);
    open_regular(path)?
        .take(SNIFF_LEN as u64)
        .read_to_end(&mut head)?;
    Ok(if head.is_empty() {
        Sniffed::Empty
    } else {
        sniff(&head).map_or(Sniffed::Unknown, Sniffed::Known)
    })
}

/// Opens `path` for reading if it is a regular file, else fails with
/// [`std::io::ErrorKind::InvalidInput`] saying what it is. Inputs are read only this way: opening
/// a FIFO for reading waits for a writer, maybe forever, and a device may never end. The type is
/// checked before opening (opening some devices has effects) and again on the open file, which
/// is opened non-blocking so that a FIFO swapped in between cannot block either.
pub fn open_regular(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let not_regular = |kind: std::fs::FileType| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("not a regular file ({})", file_kind(kind)),
        )
    };
    let kind = std::fs::metadata(path)?.file_type();
    if !kind.is_file() {
        return Err(not_regular(kind));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let kind = file.metadata()?.file_type();
    if !kind.is_file() {
        return Err(not_regular(kind));
    }
    Ok(file)
}

/// What a file system entry is, in words.
pub fn file_kind(kind: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_file() {
        "a regular file"
    } else if kind.is_dir() {
        "a folder"
    } else if kind.is_fifo() {
        "a FIFO (named pipe)"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_block_device() || kind.is_char_device() {
        "a device"
    } else {
        "not a file"
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_bytes() {
        assert_eq!(sniff(b"%PDF-1.7\n"), Some(InputFormat::Pdf));
        assert_eq!(sniff(b"junk before\n%PDF-1.4"), Some(InputFormat::Pdf));
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n...."), Some(InputFormat::Png));
        assert_eq!(sniff(b"\xff\xd8\xff\xe0"), Some(InputFormat::Jpeg));
        assert_eq!(sniff(b"II*\0\x08\0\0\0"), Some(InputFormat::Tiff));
        assert_eq!(sniff(b"MM\0*\0\0\0\x08"), Some(InputFormat::Tiff));
        assert_eq!(sniff(b"RIFF\0\0\0\0WEBPVP8 "), Some(InputFormat::Webp));
        assert_eq!(sniff(b"hello world"), None);
        assert_eq!(sniff(b"RIFF\0\0\0\0WAVE"), None);
    }

    #[test]
    fn pdf_header_only_within_the_first_kilobyte() {
        let mut late = vec![b' '; 2000];
        late.extend_from_slice(b"%PDF-1.4");
        assert_eq!(sniff(&late), None);
    }

    #[test]
    fn a_fifo_is_refused_without_waiting_for_a_writer() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe.pdf");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // Opened the usual way this would block until a writer came, i.e. forever.
        let err = sniff_file(&fifo).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
        assert_eq!(err.to_string(), "not a regular file (a FIFO (named pipe))");
    }

    #[test]
    fn extensions() {
        assert_eq!(
            InputFormat::from_extension(Path::new("a/B.PDF")),
            Some(InputFormat::Pdf)
        );
        assert_eq!(
            InputFormat::from_extension(Path::new("x.jpeg")),
            Some(InputFormat::Jpeg)
        );
        assert_eq!(InputFormat::from_extension(Path::new("x.txt")), None);
        assert_eq!(InputFormat::from_extension(Path::new("noext")), None);
    }
}
