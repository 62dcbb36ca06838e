//! The render stage: the rendering pool's events (pages of several documents interleaved, error
//! records, one `Finished` per document) grouped into [`Document`]s, handed on as each one
//! finishes. The pool itself (PDFium worker processes, image decoding) is [`crate::render`].

use super::document::Document;
use crate::page::Page;
use crate::render::RenderEvent;
use crate::sources::Source;
use crate::stage::StageReport;
use crate::DocError;
use crossbeam_channel::Sender;
use std::collections::HashMap;
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::Duration;

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
    pages: Vec<Page>,
    error: Option<DocError>,
    render_ms: f64,
}

impl<I: Iterator<Item = RenderEvent>> Documents<I> {
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

impl<I: Iterator<Item = RenderEvent>> Iterator for Documents<I> {
    type Item = Document;

    fn next(&mut self) -> Option<Document> {
        loop {
            match self.events.next()? {
                RenderEvent::Page(page) => {
                    let Some(&i) = self.index.get(&page.source) else {
                        continue;
                    };
                    let partial = self.partial.entry(i).or_default();
                    partial.render_ms += page.render_ms;
                    partial.pages.push(page);
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
                    return Some(Document::rendered(
                        i,
                        self.content_sha256.get(i).cloned().unwrap_or_default(),
                        match partial.error {
                            Some(e) => Err(e.to_record()),
                            None => Ok(partial.pages),
                        },
                        partial.render_ms,
                    ));
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
