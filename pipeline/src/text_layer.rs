//! A PDF page's text layer with the box of each character, to say where on the page a value
//! came from (provenance).
//!
//! **Alignment.** [`TextLayer::text`] is PDFium's character list of the page concatenated
//! (the same text as PDFium's `FPDFText_GetBoundedText` over the page), and the layer holds
//! one box per `char` of it: the `i`-th `char` of the text has box `i`. Characters PDFium
//! generates itself (the `\r\n` between lines, spaces it infers between words) have no box.
//!
//! **Boxes.** `[x0, y0, x1, y1]` in PDF points, in the page's PDF user space as PDFium reports
//! it: origin at the user-space origin (bottom-left of the page for the usual
//! `/MediaBox [0 0 w h]`), y up. They are PDFium's *loose* character boxes: horizontally the
//! glyph's advance (so the boxes of a word touch, and a value's union box runs from its first
//! character's origin to its last one's advance), vertically from the baseline plus the font's
//! descent to the baseline plus its ascent (the font descriptor's `/Ascent` and `/Descent`;
//! PDFium's built-in metrics for a standard font without one), the same height for every
//! character of a line. The *tight* boxes PDFium also has are the glyphs' ink (a hyphen's is a
//! sliver, a space's has no height): not the box of a value. A page's `/Rotate` and a non-zero
//! `/MediaBox` origin are not applied: the boxes are in the same coordinates as the page's
//! content and annotations (`/Rect`), e.g. to place a highlight; map them through the rotation
//! to compare with the rendered image.
//!
//! Boxes are `f32` (16 bytes a character); they cross from the PDF worker in the frame's
//! payload ([`TextLayer::boxes_to_bytes`]) and stay with the page until its document is
//! generated.

/// `[x0, y0, x1, y1]` in PDF points (see the module documentation for the coordinates).
pub type PdfBox = [f32; 4];

/// Bytes of one box on the wire: four little-endian `f32`.
pub const BOX_BYTES: usize = 16;

/// A page's text and its characters' boxes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TextLayer {
    text: String,
    /// One per `char` of `text` (NaN: no box), or none at all (text without geometry).
    boxes: Vec<PdfBox>,
}

/// The text layer reads as its text (`page.text_layer.as_deref()` is the text).
impl std::ops::Deref for TextLayer {
    type Target = str;
    fn deref(&self) -> &str {
        &self.text
    }
}

impl From<String> for TextLayer {
    /// Text without boxes: [`TextLayer::locate`] finds nothing in it.
    fn from(text: String) -> TextLayer {
        TextLayer {
            text,
            boxes: Vec::new(),
        }
    }
}

impl TextLayer {
    /// A text layer from its characters and their boxes (`None`: no box, e.g. a character
    /// PDFium generated).
    pub fn from_chars(chars: impl IntoIterator<Item = (char, Option<PdfBox>)>) -> TextLayer {
        let mut layer = TextLayer::default();
        for (c, b) in chars {
            layer.text.push(c);
            layer.boxes.push(b.unwrap_or([f32::NAN; 4]));
        }
        layer.text.shrink_to_fit();
        layer.boxes.shrink_to_fit();
        layer
    }

    /// The text with the boxes as [`TextLayer::boxes_to_bytes`] wrote them; `None` when the
    /// bytes do not hold exactly one box per character of `text` (or none at all).
    pub fn from_wire(text: String, bytes: &[u8]) -> Option<TextLayer> {
        if !bytes.len().is_multiple_of(BOX_BYTES) {
            return None;
        }
        let boxes: Vec<PdfBox> = bytes
            .chunks_exact(BOX_BYTES)
            .map(|b| {
                std::array::from_fn(|i| f32::from_le_bytes(b[i * 4..i * 4 + 4].try_into().unwrap()))
            })
            .collect();
        if !boxes.is_empty() && boxes.len() != text.chars().count() {
            return None;
        }
        Some(TextLayer { text, boxes })
    }

    /// The boxes as bytes for the worker protocol: four little-endian `f32` per character.
    pub fn boxes_to_bytes(&self, out: &mut Vec<u8>) {
        out.reserve(self.boxes.len() * BOX_BYTES);
        for b in &self.boxes {
            for v in b {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// Characters with a box slot (0 for a text layer without geometry).
    pub fn box_count(&self) -> usize {
        self.boxes.len()
    }

    /// The box of the `i`-th `char` of the text, if it has one.
    pub fn char_box(&self, i: usize) -> Option<PdfBox> {
        self.boxes.get(i).copied().filter(|b| !b[0].is_nan())
    }

    /// The box of `value` on this page: the union of the boxes of its characters where it
    /// first appears in the text, or `None` if it does not appear (or has no boxes).
    ///
    /// The match is verbatim and case-sensitive, except for whitespace: any run of whitespace
    /// (spaces, line breaks) in the page or in `value` matches any other, and whitespace at
    /// the ends of `value` is ignored, so a value broken across lines is found (its box then
    /// spans both lines). A value is found as a whole, not inside a longer word or number:
    /// where it begins (ends) with a letter or digit, the page's character before (after) it
    /// must not be one (`42` is not found in `0042`, nor `Total` in `Subtotal`). Numbers are
    /// matched as printed: pass the form on the page (`1,234.50`, not `1234.5`).
    pub fn locate(&self, value: &str) -> Option<PdfBox> {
        if self.boxes.is_empty() {
            return None;
        }
        let needle = value.split_whitespace().collect::<Vec<_>>().join(" ");
        if needle.is_empty() {
            return None;
        }
        // The text with whitespace runs as one space, and each char's index in the text.
        let mut flat = String::with_capacity(self.text.len());
        let mut origin: Vec<usize> = Vec::with_capacity(self.boxes.len());
        let mut space = false;
        for (i, c) in self.text.chars().enumerate() {
            if c.is_whitespace() {
                space = !flat.is_empty();
                continue;
            }
            if space {
                flat.push(' ');
                origin.push(usize::MAX);
                space = false;
            }
            flat.push(c);
            origin.push(i);
        }
        let word = |c: Option<char>| c.is_some_and(char::is_alphanumeric);
        let first = needle.chars().next();
        let last = needle.chars().next_back();
        let (start, _) = flat.match_indices(needle.as_str()).find(|&(at, m)| {
            let before = flat[..at].chars().next_back();
            let after = flat[at + m.len()..].chars().next();
            let cuts_start = word(first) && word(before);
            let cuts_end = word(last) && word(after);
            !cuts_start && !cuts_end
        })?;
        let from = flat[..start].chars().count();
        let count = needle.chars().count();
        origin[from..from + count]
            .iter()
            .filter_map(|&i| self.char_box(i))
            .reduce(|a, b| {
                [
                    a[0].min(b[0]),
                    a[1].min(b[1]),
                    a[2].max(b[2]),
                    a[3].max(b[3]),
                ]
            })
    }
}

/// The first page where `value` appears ([`TextLayer::locate`]) and its box there, for a
/// value extracted from several pages in one prompt. `pages` are the document's text layers
/// in page order (`None` for a page without one, e.g. an image); the index returned is the
/// position in `pages`.
pub fn locate_in_pages<'a>(
    pages: impl IntoIterator<Item = Option<&'a TextLayer>>,
    value: &str,
) -> Option<(usize, PdfBox)> {
    pages
        .into_iter()
        .enumerate()
        .find_map(|(i, page)| Some((i, page?.locate(value)?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A line of text laid out left to right from (x, y), each char 10 pt wide, 12 pt high;
    /// `\n` starts a new line 20 pt lower and has no box (as PDFium's generated breaks).
    fn layout(text: &str) -> TextLayer {
        let (mut x, mut y) = (0.0, 100.0);
        TextLayer::from_chars(text.chars().map(|c| {
            if c == '\n' {
                (x, y) = (0.0, y - 20.0);
                return (c, None);
            }
            let b = [x, y, x + 10.0, y + 12.0];
            x += 10.0;
            (c, Some(b))
        }))
    }

    #[test]
    fn finds_values_verbatim_and_unions_their_boxes() {
        let page = layout("No. 0042 total\nINV-42 due 42");
        assert_eq!(page.locate("0042"), Some([40.0, 100.0, 80.0, 112.0]));
        assert_eq!(page.locate("INV-42"), Some([0.0, 80.0, 60.0, 92.0]));
        // Whole values only: "42" is not found inside "0042"; after "INV-" it stands apart
        // (a hyphen is neither letter nor digit), so that is its first place.
        assert_eq!(page.locate("42"), Some([40.0, 80.0, 60.0, 92.0]));
        assert_eq!(page.locate("due 42"), Some([70.0, 80.0, 130.0, 92.0]));
        // Case-sensitive; absent text.
        assert_eq!(page.locate("Total"), None);
        assert_eq!(page.locate("tota"), None);
        assert_eq!(page.locate("  "), None);
        // Across the line break: whitespace runs match, the box spans both lines.
        assert_eq!(page.locate("total INV-42"), Some([0.0, 80.0, 140.0, 112.0]));
        assert_eq!(
            page.locate(" total \t INV-42\n"),
            page.locate("total INV-42")
        );
    }

    #[test]
    fn no_boxes_no_location() {
        assert_eq!(TextLayer::from("0042".to_string()).locate("0042"), None);
        let pages = [None, Some(layout("a b")), Some(layout("b"))];
        assert_eq!(
            locate_in_pages(pages.iter().map(Option::as_ref), "b"),
            Some((1, [20.0, 100.0, 30.0, 112.0]))
        );
        assert_eq!(locate_in_pages(pages.iter().map(Option::as_ref), "c"), None);
    }

    #[test]
    fn boxes_cross_the_wire_exactly() {
        let page = layout("ab\ncd");
        let mut bytes = vec![];
        page.boxes_to_bytes(&mut bytes);
        assert_eq!(bytes.len(), 5 * BOX_BYTES);
        let back = TextLayer::from_wire("ab\ncd".into(), &bytes).unwrap();
        assert_eq!(back.char_box(1), Some([10.0, 100.0, 20.0, 112.0]));
        assert_eq!(back.char_box(2), None);
        assert_eq!(back.locate("cd"), page.locate("cd"));
        // One box short, or a torn box: refused.
        assert!(TextLayer::from_wire("ab\ncd".into(), &bytes[BOX_BYTES..]).is_none());
        assert!(TextLayer::from_wire("ab\ncd".into(), &bytes[1..]).is_none());
        assert_eq!(&*TextLayer::from_wire("x".into(), &[]).unwrap(), "x");
    }
}
