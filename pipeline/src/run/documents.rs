//! The render stage's output as whole documents: the pool's events (pages of several documents
//! interleaved, error records, one `Finished` per document) grouped per document.

use super::{LoadedDocument, LoadedPage};
use crate::render::pool::Event;
use crate::sources::Source;
use crate::DocError;
use quire_onnx::gemma4::Rgb8;
use std::collections::HashMap;
use std::path::PathBuf;

/// Groups `events` into documents; `sources` is the list the events were rendered from and
/// `content_sha256[i]` the hash of `sources[i]`.
pub struct Documents<I> {
    events: I,
    index: HashMap<PathBuf, usize>,
    content_sha256: Vec<String>,
    partial: HashMap<usize, Partial>,
}

#[derive(Default)]
struct Partial {
    pages: Vec<LoadedPage>,
    error: Option<DocError>,
    render_ms: f64,
}

impl<I: Iterator<Item = Event>> Documents<I> {
    pub fn new(events: I, sources: &[Source], content_sha256: Vec<String>) -> Self {
        Documents {
            events,
            index: sources
                .iter()
                .enumerate()
                .map(|(i, s)| (s.path.clone(), i))
                .collect(),
            content_sha256,
            partial: HashMap::new(),
        }
    }
}

impl<I: Iterator<Item = Event>> Iterator for Documents<I> {
    type Item = LoadedDocument;

    fn next(&mut self) -> Option<LoadedDocument> {
        loop {
            match self.events.next()? {
                Event::Page(page) => {
                    let Some(&i) = self.index.get(&page.source) else {
                        continue;
                    };
                    let partial = self.partial.entry(i).or_default();
                    partial.render_ms += page.render_ms;
                    let (width, height) = page.image.dimensions();
                    partial.pages.push(LoadedPage {
                        image: Rgb8 {
                            width,
                            height,
                            data: page.image.into_raw(),
                        },
                        points: page.points,
                        original_px: page.original_px,
                        text_layer: page.text_layer,
                    });
                }
                Event::Error(error) => {
                    if let Some(&i) = self.index.get(&error.path) {
                        // The first error names the document's failure; a document with a
                        // failed page is not extracted from the others alone.
                        self.partial
                            .entry(i)
                            .or_default()
                            .error
                            .get_or_insert(error);
                    }
                }
                Event::Finished(finished) => {
                    let Some(&i) = self.index.get(&finished.source) else {
                        continue;
                    };
                    let partial = self.partial.remove(&i).unwrap_or_default();
                    return Some(LoadedDocument {
                        index: i,
                        content_sha256: self.content_sha256.get(i).cloned().unwrap_or_default(),
                        pages: match partial.error {
                            Some(e) => Err(e.to_record()),
                            None => Ok(partial.pages),
                        },
                        render_ms: partial.render_ms,
                    });
                }
            }
        }
    }
}
