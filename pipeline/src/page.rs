//! One page as the model will see it.

use crate::text_layer::TextLayer;
use image::RgbImage;
use std::path::PathBuf;

/// A rendered PDF page or a decoded (and resized) image page, already at the pixel size the
/// Gemma 4 image processor produces for the chosen budget: it needs no further resize.
#[derive(Debug, Clone)]
pub struct Page {
    /// The input file.
    pub source: PathBuf,
    /// The input's path relative to the root it was found under (where outputs go).
    pub relative: PathBuf,
    /// 0-based page index (a TIFF frame for multi-page TIFFs; 0 for other images).
    pub page_index: u32,
    /// Pages in the document, when known.
    pub page_count: Option<u32>,
    pub image: RgbImage,
    /// The image's size before the resize, (width, height); `None` for PDF pages (rendered at
    /// the target size directly).
    pub original_px: Option<(u32, u32)>,
    /// PDF page size in points (width, height), as displayed (after /Rotate); `None` for images.
    pub points: Option<(f32, f32)>,
    /// The PDF page's text layer with its characters' boxes (empty for scanned pages); `None`
    /// for images.
    pub text_layer: Option<TextLayer>,
    /// Time spent rendering or decoding and resizing this page, in milliseconds.
    pub render_ms: f64,
}
