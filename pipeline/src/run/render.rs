//! The render stage: the rendering pool's events (pages of several documents interleaved, error
//! records, one `Finished` per document) grouped into [`Document`]s, handed on as each one
//! finishes. A long document (more pages than [`Split::above`]) is handed on in [`Part`]s of
//! [`Split::part_pages`] pages as its pages arrive, so that it never sits whole in memory. The
//! pool itself (PDFium worker processes, image decoding) is [`crate::render`].

use super::document::{Document, Part};
use crate::page::Page;
use crate::render::RenderEvent;
use crate::sources::Source;
use crate::stage::StageReport;
use crate::DocError;
use crossbeam_channel::Sender;
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::Duration;

/// When documents flow in parts.
#[derive(Debug, Clone, Copy)]
pub struct Split {
    /// Documents with more pages flow in parts (extraction takes their pages one prompt each,
    /// so the parts change no output). At least `--max-pages-per-prompt`.
    pub above: usize,
    /// Pages per part.
    pub part_pages: usize,
}

impl Split {
    /// Parts of this many pages keep a few pages per stage in flight while still filling the
    /// vision and decoder batches, which take pages of several documents at once.
    pub const PART_PAGES: usize = 4;

    /// Documents of up to `max_pages_per_prompt` pages flow whole.
    pub fn for_pages_per_prompt(max_pages_per_prompt: usize) -> Split {
        Split {
            above: max_pages_per_prompt.max(1),
            part_pages: Self::PART_PAGES,
        }
    }
}

/// Groups `events` into documents; `sources` is the list the events were rendered from and
/// `content_sha256[i]` the hash of `sources[i]`.
pub struct Documents<I> {
    events: I,
    index: HashMap<PathBuf, usize>,
    content_sha256: Vec<String>,
    split: Split,
    partial: HashMap<usize, Partial>,
    /// Parts ready to go, before the next event is read.
    ready: VecDeque<Document>,
}

#[derive(Default)]
struct Partial {
    pages: Vec<Page>,
    error: Option<DocError>,
    render_ms: f64,
    /// Parts handed on so far.
    parts: u32,
}

impl<I: Iterator<Item = RenderEvent>> Documents<I> {
    pub fn new(events: I, sources: &[Source], content_sha256: Vec<String>, split: Split) -> Self {
        Documents {
            events,
            index: sources
                .iter()
                .enumerate()
                .map(|(i, s)| (s.path.clone(), i))
                .collect(),
            content_sha256,
            split,
            partial: HashMap::new(),
            ready: VecDeque::new(),
        }
    }

    fn page(&mut self, i: usize, page: Page) {
        let split = self.split;
        let partial = self.partial.entry(i).or_default();
        partial.render_ms += page.render_ms;
        let long = partial.parts > 0
            || page
                .page_count
                .map_or(partial.pages.len() + 1, |n| n as usize)
                > split.above;
        partial.pages.push(page);
        // A failed document is not extracted from its other pages: no more parts of it.
        if !long || partial.error.is_some() {
            return;
        }
        let mut parts = Vec::new();
        // One page always stays behind for the last part, sent when the document finishes.
        while partial.pages.len() > split.part_pages {
            let rest = partial.pages.split_off(split.part_pages);
            let pages = std::mem::replace(&mut partial.pages, rest);
            let render_ms: f64 = pages.iter().map(|p| p.render_ms).sum();
            partial.render_ms -= render_ms;
            let part = Part {
                number: partial.parts,
                last: false,
            };
            partial.parts += 1;
            parts.push((pages, render_ms, part));
        }
        for (pages, render_ms, part) in parts {
            let doc = self.document(i, Ok(pages), render_ms, Some(part));
            self.ready.push_back(doc);
        }
    }

    fn document(
        &self,
        i: usize,
        pages: Result<Vec<Page>, quire_exporters::record::ErrorRecord>,
        render_ms: f64,
        part: Option<Part>,
    ) -> Document {
        let sha = self.content_sha256.get(i).cloned().unwrap_or_default();
        let mut doc = Document::rendered(i, sha, pages, render_ms);
        doc.part = part;
        doc
    }
}

impl<I: Iterator<Item = RenderEvent>> Iterator for Documents<I> {
    type Item = Document;

    fn next(&mut self) -> Option<Document> {
        loop {
            if let Some(doc) = self.ready.pop_front() {
                return Some(doc);
            }
            match self.events.next()? {
                RenderEvent::Page(page) => {
                    if let Some(&i) = self.index.get(&page.source) {
                        self.page(i, page);
                    }
                }
                RenderEvent::Error(error) => {
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
                RenderEvent::Finished(finished) => {
                    let Some(&i) = self.index.get(&finished.source) else {
                        continue;
                    };
                    let partial = self.partial.remove(&i).unwrap_or_default();
                    let part = (partial.parts > 0).then_some(Part {
                        number: partial.parts,
                        last: true,
                    });
                    let pages = match partial.error {
                        Some(e) => Err(e.to_record()),
                        None => Ok(partial.pages),
                    };
                    return Some(self.document(i, pages, partial.render_ms, part));
                }
            }
        }
    }
}

/// Drains `documents` (whose iterator runs the rendering pool) into `output`.
pub(super) fn spawn(
    documents: impl Iterator<Item = Document> + Send + 'static,
    output: Sender<Document>,
) -> JoinHandle<StageReport> {
    std::thread::Builder::new()
        .name("stage-render".into())
        .spawn(move || {
            let mut report = StageReport::new("render", 1);
            for doc in documents {
                let busy = doc.timings_ms.get("render").copied().unwrap_or(0.0);
                report.record(Duration::from_secs_f64(busy / 1000.0), 0);
                if output.send(doc).is_err() {
                    break;
                }
            }
            report
        })
        .expect("spawn render stage")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::RenderedDocument;
    use crate::sniff::InputFormat;
    use crate::ErrorKind;

    fn source(name: &str) -> Source {
        Source {
            path: PathBuf::from(name),
            relative: PathBuf::from(name),
            format: InputFormat::Pdf,
        }
    }

    fn page(name: &str, index: u32, count: Option<u32>) -> RenderEvent {
        RenderEvent::Page(Page {
            source: PathBuf::from(name),
            relative: PathBuf::from(name),
            page_index: index,
            page_count: count,
            image: image::RgbImage::new(8, 8),
            original_px: None,
            points: None,
            text_layer: None,
            render_ms: 1.0,
        })
    }

    fn finished(name: &str) -> RenderEvent {
        RenderEvent::Finished(RenderedDocument {
            source: PathBuf::from(name),
            relative: PathBuf::from(name),
            pages: 0,
            errors: 0,
        })
    }

    /// A document handed on: (document index, part, page numbers, error kind).
    type Grouped = (usize, Option<Part>, Vec<u32>, Option<ErrorKind>);

    fn grouped(events: Vec<RenderEvent>) -> Vec<Grouped> {
        let sources = [source("long.pdf"), source("short.pdf")];
        let split = Split {
            above: 8,
            part_pages: 4,
        };
        Documents::new(events.into_iter(), &sources, vec![String::new(); 2], split)
            .map(|d| {
                let pages = d.pages.iter().map(|p| p.record.index).collect();
                (d.index, d.part, pages, d.error.map(|e| e.kind))
            })
            .collect()
    }

    fn part(number: u32, last: bool) -> Option<Part> {
        Some(Part { number, last })
    }

    #[test]
    fn a_long_document_goes_on_in_parts_as_its_pages_arrive() {
        // Eleven pages of a long document interleaved with a short one.
        let mut events = Vec::new();
        for i in 0..11 {
            events.push(page("long.pdf", i, Some(11)));
            if i < 3 {
                events.push(page("short.pdf", i, Some(3)));
            }
        }
        events.push(finished("short.pdf"));
        events.push(finished("long.pdf"));
        assert_eq!(
            grouped(events),
            vec![
                (0, part(0, false), vec![0, 1, 2, 3], None),
                (0, part(1, false), vec![4, 5, 6, 7], None),
                (1, None, vec![0, 1, 2], None),
                (0, part(2, true), vec![8, 9, 10], None),
            ]
        );
    }

    #[test]
    fn a_document_up_to_the_limit_flows_whole_and_an_unknown_count_splits_past_it() {
        let mut events: Vec<RenderEvent> = (0..8).map(|i| page("short.pdf", i, Some(8))).collect();
        events.push(finished("short.pdf"));
        // No page count: whole until the ninth page shows it is long.
        events.extend((0..9).map(|i| page("long.pdf", i, None)));
        events.push(finished("long.pdf"));
        assert_eq!(
            grouped(events),
            vec![
                (1, None, (0..8).collect(), None),
                (0, part(0, false), vec![0, 1, 2, 3], None),
                (0, part(1, false), vec![4, 5, 6, 7], None),
                (0, part(2, true), vec![8], None),
            ]
        );
    }

    #[test]
    fn a_render_error_ends_the_parts_and_comes_with_the_last() {
        let mut events: Vec<RenderEvent> = (0..6).map(|i| page("long.pdf", i, Some(20))).collect();
        events.push(RenderEvent::Error(DocError {
            page: Some(6),
            ..DocError::new("long.pdf", ErrorKind::WorkerCrashed, "worker died")
        }));
        events.push(page("long.pdf", 7, Some(20)));
        events.push(page("long.pdf", 8, Some(20)));
        events.push(page("long.pdf", 9, Some(20)));
        events.push(finished("long.pdf"));
        assert_eq!(
            grouped(events),
            vec![
                (0, part(0, false), vec![0, 1, 2, 3], None),
                (0, part(1, true), vec![], Some(ErrorKind::WorkerCrashed)),
            ]
        );
    }
}
