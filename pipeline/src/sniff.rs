//! What a file is, by its content (magic bytes), not by its name.

use std::io::Read;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Pdf,
    Png,
    Jpeg,
    Tiff,
    Webp,
}

impl Format {
    pub fn is_image(self) -> bool {
        self != Format::Pdf
    }

    /// The format a file name's extension claims, if it is one quire reads.
    pub fn from_extension(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        Some(match ext.as_str() {
            "pdf" => Format::Pdf,
            "png" => Format::Png,
            "jpg" | "jpeg" | "jpe" => Format::Jpeg,
            "tif" | "tiff" => Format::Tiff,
            "webp" => Format::Webp,
            _ => return None,
        })
    }
}

/// How many leading bytes [`sniff`] looks at. PDF readers accept the `%PDF-` header anywhere in
/// the first 1024 bytes.
pub const SNIFF_LEN: usize = 1024;

/// The format of a file that starts with `head`.
pub fn sniff(head: &[u8]) -> Option<Format> {
    if head.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(Format::Png)
    } else if head.starts_with(b"\xff\xd8\xff") {
        Some(Format::Jpeg)
    } else if head.starts_with(b"II*\0") || head.starts_with(b"MM\0*") {
        Some(Format::Tiff)
    } else if head.len() >= 12 && &head[0..4] == b"RIFF" && &head[8..12] == b"WEBP" {
        Some(Format::Webp)
    } else if find(&head[..head.len().min(SNIFF_LEN)], b"%PDF-").is_some() {
        Some(Format::Pdf)
    } else {
        None
    }
}

/// What [`sniff_file`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniffed {
    Known(Format),
    Empty,
    Unknown,
}

/// Reads the head of `path` and sniffs it.
pub fn sniff_file(path: &Path) -> std::io::Result<Sniffed> {
    let mut head = Vec::with_capacity(SNIFF_LEN);
    std::fs::File::open(path)?
        .take(SNIFF_LEN as u64)
        .read_to_end(&mut head)?;
    Ok(if head.is_empty() {
        Sniffed::Empty
    } else {
        sniff(&head).map_or(Sniffed::Unknown, Sniffed::Known)
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_bytes() {
        assert_eq!(sniff(b"%PDF-1.7\n"), Some(Format::Pdf));
        assert_eq!(sniff(b"junk before\n%PDF-1.4"), Some(Format::Pdf));
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n...."), Some(Format::Png));
        assert_eq!(sniff(b"\xff\xd8\xff\xe0"), Some(Format::Jpeg));
        assert_eq!(sniff(b"II*\0\x08\0\0\0"), Some(Format::Tiff));
        assert_eq!(sniff(b"MM\0*\0\0\0\x08"), Some(Format::Tiff));
        assert_eq!(sniff(b"RIFF\0\0\0\0WEBPVP8 "), Some(Format::Webp));
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
    fn extensions() {
        assert_eq!(
            Format::from_extension(Path::new("a/B.PDF")),
            Some(Format::Pdf)
        );
        assert_eq!(
            Format::from_extension(Path::new("x.jpeg")),
            Some(Format::Jpeg)
        );
        assert_eq!(Format::from_extension(Path::new("x.txt")), None);
        assert_eq!(Format::from_extension(Path::new("noext")), None);
    }
}
