//! The preprocess stage: the Gemma 4 image processor on every page of a document (pages in
//! parallel, rayon), plus the resolution warnings of the page records. With `skip_blank`, a
//! blank page ([`super::blank`], and no text layer) is marked skipped instead: no model stage
//! looks at it.

use super::blank;
use super::document::Document;
use crate::stage::{self, StageReport};
use crossbeam_channel::{Receiver, Sender};
use quire_exporters::record::ErrorKind;
use quire_onnx::gemma4::{Budget, ImageProcessor};
use rayon::prelude::*;
use std::thread::JoinHandle;
use std::time::Instant;

/// Below this many rendered pixels per inch of page, small print is lost.
pub const MIN_PIXELS_PER_INCH: f32 = 100.0;
/// An image shrunk by more than this factor (per side) loses detail.
pub const MAX_SHRINK: f32 = 2.0;
/// The warning of a page skipped as blank.
pub const BLANK_PAGE_WARNING: &str = "blank page: skipped";

pub(super) fn spawn(
    input: Receiver<Document>,
    output: Sender<Document>,
    processor: ImageProcessor,
    budget: Budget,
    skip_blank: bool,
) -> JoinHandle<StageReport> {
    stage::spawn("preprocess", input, output, move |mut doc, emit| {
        let t = Instant::now();
        preprocess(&processor, budget, skip_blank, &mut doc);
        doc.timings_ms
            .insert("preprocess".into(), t.elapsed().as_secs_f64() * 1e3);
        emit(doc)
    })
}

fn preprocess(processor: &ImageProcessor, budget: Budget, skip_blank: bool, doc: &mut Document) {
    if doc.error.is_some() {
        return;
    }
    let results: Vec<_> = doc
        .pages
        .par_iter()
        .map(|p| {
            let no_text = p.text_layer.as_deref().is_none_or(|t| t.trim().is_empty());
            let blank = skip_blank && no_text && blank::is_blank(&p.pixels);
            (!blank).then(|| processor.preprocess(&p.pixels, budget))
        })
        .collect();
    for (page, result) in doc.pages.iter_mut().zip(results) {
        let Some(result) = result else {
            page.skipped = true;
            page.record.warnings.push(BLANK_PAGE_WARNING.into());
            page.pixels.data = Vec::new();
            continue;
        };
        match result {
            Ok(image) => {
                let record = &mut page.record;
                record.width_px = image.resized_width;
                record.height_px = image.resized_height;
                record.soft_tokens = image.num_soft_tokens as u32;
                if let Some((w_pt, _)) = page.points {
                    let ppi = image.resized_width as f32 / (w_pt / 72.0);
                    record.pixels_per_inch = Some((ppi * 10.0).round() / 10.0);
                    if ppi < MIN_PIXELS_PER_INCH {
                        record.warnings.push(format!(
                            "low resolution: {ppi:.0} pixels per inch of page (small print needs \
                             {MIN_PIXELS_PER_INCH:.0}); raise --budget"
                        ));
                    }
                }
                if let Some((w, h)) = page.original_px {
                    let shrink = (w as f32 / image.resized_width as f32)
                        .max(h as f32 / image.resized_height as f32);
                    if shrink > MAX_SHRINK {
                        record.warnings.push(format!(
                            "image shrunk {shrink:.1}x ({w}x{h} to {}x{}); raise --budget",
                            image.resized_width, image.resized_height
                        ));
                    }
                }
                page.image = Some(image);
                // The processed image is what the model takes from here on.
                page.pixels.data = Vec::new();
            }
            Err(e) => {
                let index = page.record.index;
                doc.fail(ErrorKind::ImageTooThin, e.to_string(), Some(index));
                return;
            }
        }
    }
}
