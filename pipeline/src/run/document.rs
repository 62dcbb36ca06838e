//! What flows between the stages: a document with its pages, filled in stage by stage (pixels,
//! then processed images, then image features, then the output), and its error record once a
//! stage fails it. A failed document still flows to the export stage, which writes its record.
//!
//! A long document flows in parts of a few pages each ([`Part`]), so that memory follows the
//! pages in flight, not the length of the longest document; the generate stage puts the parts'
//! outputs back together.

use super::extraction::Fields;
use crate::page::Page;
use crate::text_layer::TextLayer;
use quire_exporters::record::{ErrorKind, ErrorRecord, PageRecord, TokenCounts};
use quire_onnx::gemma4::{ProcessedImage, Rgb8};
use serde_json::Value;
use std::collections::BTreeMap;

/// A document on its way through the stages.
#[derive(Debug)]
pub struct Document {
    /// Index into the run's source list.
    pub index: usize,
    pub content_sha256: String,
    pub pages: Vec<DocumentPage>,
    pub error: Option<ErrorRecord>,
    pub warnings: Vec<String>,
    /// Milliseconds per stage.
    pub timings_ms: BTreeMap<String, f64>,
    /// The extraction (`extract`).
    pub data: Option<Value>,
    /// What is known of each value of `data`.
    pub fields: Fields,
    /// The Markdown or free text (`ocr`, `prompt`).
    pub text: Option<String>,
    pub tokens: TokenCounts,
    /// `None` for a document that flows whole; else which part of a long document this is.
    pub part: Option<Part>,
}

/// Which part of a long document a [`Document`] holds: its pages are a run of the document's
/// pages (their records carry the page numbers in the whole document).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    /// 0-based, in page order.
    pub number: u32,
    /// The document's last part: its count of parts is `number + 1`.
    pub last: bool,
}

/// One page of a [`Document`]: what the model needs of it, and its record.
#[derive(Debug)]
pub struct DocumentPage {
    /// The pixels as rendered or decoded (already at the model's size for the budget).
    pub pixels: Rgb8,
    /// Page size in points (PDF pages).
    pub points: Option<(f32, f32)>,
    /// Size before any resize (images), to warn when the model sees it much smaller.
    pub original_px: Option<(u32, u32)>,
    /// The text layer with its characters' boxes (PDF pages): for the prompt's text anchor
    /// and for where a value is on the page; dropped with the model inputs.
    pub text_layer: Option<TextLayer>,
    /// The page's entry in the output record.
    pub record: PageRecord,
    /// Set by the preprocess stage.
    pub image: Option<ProcessedImage>,
    /// Set by the vision stage: the page's soft tokens, `num_soft_tokens × hidden` floats.
    pub features: Option<Vec<f32>>,
    /// Set by the preprocess stage for a blank page the task skips (`--skip-blank-pages`):
    /// no model stage looks at it, and its text is empty.
    pub skipped: bool,
}

impl Document {
    /// A document as the render stage hands it on: its pages in page order, or the error
    /// record of why it has none. `render_ms` is the time its pages took to render.
    pub fn rendered(
        index: usize,
        content_sha256: String,
        pages: Result<Vec<Page>, ErrorRecord>,
        render_ms: f64,
    ) -> Document {
        let mut doc = Document {
            index,
            content_sha256,
            pages: Vec::new(),
            error: None,
            warnings: Vec::new(),
            timings_ms: BTreeMap::from([("render".to_string(), render_ms)]),
            data: None,
            fields: Fields::new(),
            text: None,
            tokens: TokenCounts::default(),
            part: None,
        };
        match pages {
            Ok(pages) if pages.is_empty() => {
                doc.fail(ErrorKind::EmptyDocument, "no pages".into(), None)
            }
            Ok(pages) => doc.pages = pages.into_iter().map(DocumentPage::new).collect(),
            Err(e) => doc.error = Some(e),
        }
        doc
    }

    /// Frees what only the model stages need (pixels, processed images, image features, text
    /// layers) once the output is generated: the export needs only the records.
    pub fn drop_model_inputs(&mut self) {
        for page in &mut self.pages {
            page.pixels.data = Vec::new();
            page.image = None;
            page.features = None;
            page.text_layer = None;
        }
    }

    /// Fails the document, unless an earlier stage did: the first error names the failure.
    pub fn fail(&mut self, kind: ErrorKind, message: String, page: Option<u32>) {
        if self.error.is_none() {
            self.error = Some(ErrorRecord {
                kind,
                message,
                page,
            });
        }
    }
}

impl DocumentPage {
    fn new(page: Page) -> DocumentPage {
        let (width, height) = page.image.dimensions();
        let index = page.page_index;
        DocumentPage {
            pixels: Rgb8 {
                width,
                height,
                data: page.image.into_raw(),
            },
            points: page.points,
            original_px: page.original_px,
            text_layer: page.text_layer,
            record: PageRecord {
                index,
                width_px: width,
                height_px: height,
                pixels_per_inch: None,
                soft_tokens: 0,
                warnings: Vec::new(),
            },
            image: None,
            features: None,
            skipped: false,
        }
    }
}
