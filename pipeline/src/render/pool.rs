//! The scheduling of rendering: a pool of slots, each owning at most one PDFium worker process
//! (started on its first PDF, restarted after a crash or a timeout; see [`super::process`]).
//! Slots take documents from a channel, split long PDFs into page ranges when asked, and send
//! [`RenderEvent`]s: pages, error records and one `Finished` per document. Images are decoded
//! in the slot's own thread (no PDFium involved).

use super::process::{Received, StartError, WorkerCommand, WorkerProcess};
use super::protocol::{RenderJob, Reply};
use crate::error::{vanished_or_io_error, DocError, ErrorKind};
use crate::images::{decode_pages, into_budget_size, ImageLimits};
use crate::page::Page;
use crate::sniff::InputFormat;
use crate::sources::Source;
use crate::text_layer::{TextLayer, BOX_BYTES};
use crossbeam_channel::{Receiver, Sender};
use quire_onnx::gemma4::image_processor::{Budget, ResizeRule};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// Slots, i.e. documents in flight and PDFium processes at most (at least 1).
    pub workers: usize,
    pub budget: Budget,
    pub rule: ResizeRule,
    pub password: Option<String>,
    /// Longest a worker may take for one page (or to open a document) before it is killed.
    pub page_timeout: Duration,
    /// Longest a new worker may take to load PDFium.
    pub start_timeout: Duration,
    /// Worker crashes or timeouts on one document after which its remaining pages are skipped.
    pub max_failures_per_document: u32,
    pub image_limits: ImageLimits,
    /// Split long PDFs into page ranges that several workers render at once. Pages of such a
    /// document then arrive out of page order (consumers sort by `page_index`); off by
    /// default, so each document's pages come in order from one worker.
    pub split_long_documents: bool,
    /// `None` when PDFium is not available: PDFs then fail with `worker_failed`.
    pub worker: Option<WorkerCommand>,
}

impl PoolOptions {
    pub fn new(budget: Budget, worker: Option<WorkerCommand>) -> Self {
        PoolOptions {
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            budget,
            rule: ResizeRule::default(),
            password: None,
            page_timeout: Duration::from_secs(60),
            start_timeout: Duration::from_secs(30),
            max_failures_per_document: 2,
            image_limits: ImageLimits::default(),
            split_long_documents: false,
            worker,
        }
    }
}

impl PoolOptions {
    fn splits(&self) -> bool {
        self.split_long_documents && self.workers > 1
    }
}

/// What the pool reports.
#[derive(Debug)]
pub enum RenderEvent {
    Page(Page),
    /// A document, or one page of it, failed.
    Error(DocError),
    /// A document is done: after all its pages and errors (pages of a PDF split across
    /// workers, see `PoolOptions::split_long_documents`, may arrive out of page order).
    Finished(RenderedDocument),
}

#[derive(Debug, Clone)]
pub struct RenderedDocument {
    pub source: PathBuf,
    pub relative: PathBuf,
    /// Pages delivered.
    pub pages: u32,
    /// Error records for this document.
    pub errors: u32,
}

/// Running slot threads; dropping the events receiver makes them stop at their next event.
pub struct Pool {
    threads: Vec<JoinHandle<()>>,
}

impl Pool {
    /// Starts `opts.workers` slots reading `sources` and writing `events`. The pool ends when
    /// `sources` is closed and drained (or `events` is dropped).
    pub fn spawn(
        opts: PoolOptions,
        sources: Receiver<Source>,
        events: Sender<RenderEvent>,
    ) -> Pool {
        let (split_tx, split_rx) = crossbeam_channel::unbounded();
        let shared = Arc::new(Shared {
            opts,
            split_tx,
            split_rx,
            opening: AtomicUsize::new(0),
        });
        // The dispatcher counts a PDF as `opening` before any slot can see it, so an idle slot
        // never leaves while a document that may still split is on its way.
        let (inner_tx, inner_rx) = crossbeam_channel::bounded::<Source>(0);
        let dispatcher = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("quire-render-dispatch".into())
                .spawn(move || {
                    for source in sources {
                        let splits = source.format == InputFormat::Pdf && shared.opts.splits();
                        if splits {
                            shared.opening.fetch_add(1, Ordering::SeqCst);
                        }
                        if inner_tx.send(source).is_err() {
                            if splits {
                                shared.opening.fetch_sub(1, Ordering::SeqCst);
                            }
                            break;
                        }
                    }
                })
                .expect("spawning the render dispatcher")
        };
        let mut threads: Vec<JoinHandle<()>> = (0..shared.opts.workers.max(1))
            .map(|i| {
                let (shared, sources, events) = (shared.clone(), inner_rx.clone(), events.clone());
                std::thread::Builder::new()
                    .name(format!("quire-render-{i}"))
                    .spawn(move || Slot::new(shared, events).run(sources))
                    .expect("spawning a render thread")
            })
            .collect();
        threads.push(dispatcher);
        Pool { threads }
    }

    /// Waits for every slot to end.
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// With several workers and `split_long_documents`, a PDF's first job covers this many pages; once its page count is
/// known, the rest is split into ranges that idle slots take (so one long PDF uses every
/// worker). Each range reopens the document in its worker.
const FIRST_RANGE: u32 = 4;
/// Smallest range split off.
const MIN_RANGE: u32 = 4;

struct Shared {
    opts: PoolOptions,
    /// Page ranges split off documents, taken before new documents.
    split_tx: Sender<Range>,
    split_rx: Receiver<Range>,
    /// First ranges still waiting for their page count (they may still split).
    opening: AtomicUsize,
}

/// A PDF in flight, possibly split into ranges rendered by several slots.
struct DocShared {
    source: Source,
    /// Ranges not finished; the slot that finishes the last one sends `Finished`.
    outstanding: AtomicUsize,
    pages: AtomicU32,
    errors: AtomicU32,
}

/// Pages `start..end` (`end` `None`: to the last page) of a document.
struct Range {
    doc: Arc<DocShared>,
    start: u32,
    end: Option<u32>,
    /// The document's first range, counted in `Shared::opening` until its page count is known.
    first: bool,
}

/// Pages and errors sent for one document or range.
#[derive(Default)]
struct Tally {
    pages: u32,
    errors: u32,
}

/// The events receiver was dropped: stop.
struct Stopped;

enum Work {
    New(Source),
    Range(Range),
}

struct Slot {
    shared: Arc<Shared>,
    events: Sender<RenderEvent>,
    worker: Option<WorkerProcess>,
}

impl Slot {
    fn new(shared: Arc<Shared>, events: Sender<RenderEvent>) -> Self {
        Slot {
            shared,
            events,
            worker: None,
        }
    }

    fn next_work(&self, sources: &Receiver<Source>, sources_open: &mut bool) -> Option<Work> {
        let split = &self.shared.split_rx;
        loop {
            if let Ok(range) = split.try_recv() {
                return Some(Work::Range(range));
            }
            if *sources_open {
                crossbeam_channel::select! {
                    recv(split) -> range => {
                        if let Ok(range) = range {
                            return Some(Work::Range(range));
                        }
                    }
                    recv(sources) -> source => match source {
                        Ok(source) => return Some(Work::New(source)),
                        Err(_) => *sources_open = false,
                    }
                }
            } else {
                // No new documents: wait only while some document may still split.
                if self.shared.opening.load(Ordering::SeqCst) == 0 && split.is_empty() {
                    return None;
                }
                if let Ok(range) = split.recv_timeout(Duration::from_millis(20)) {
                    return Some(Work::Range(range));
                }
            }
        }
    }

    fn run(mut self, sources: Receiver<Source>) {
        let mut sources_open = true;
        while let Some(work) = self.next_work(&sources, &mut sources_open) {
            let result = match work {
                Work::New(source) if source.format == InputFormat::Pdf => {
                    // Counted in `opening` by the dispatcher.
                    let split = self.shared.opts.splits();
                    let doc = Arc::new(DocShared {
                        source,
                        outstanding: AtomicUsize::new(1),
                        pages: AtomicU32::new(0),
                        errors: AtomicU32::new(0),
                    });
                    self.range(Range {
                        doc,
                        start: 0,
                        end: split.then_some(FIRST_RANGE),
                        first: split,
                    })
                }
                Work::New(source) => {
                    let mut tally = Tally::default();
                    self.image(&source, &mut tally).and_then(|()| {
                        self.send(RenderEvent::Finished(RenderedDocument {
                            source: source.path.clone(),
                            relative: source.relative.clone(),
                            pages: tally.pages,
                            errors: tally.errors,
                        }))
                    })
                }
                Work::Range(range) => self.range(range),
            };
            if result.is_err() {
                break;
            }
        }
        if let Some(worker) = self.worker.take() {
            worker.shutdown();
        }
    }

    /// Renders one range; the last range of a document to finish reports the document.
    fn range(&mut self, mut range: Range) -> Result<(), Stopped> {
        let mut tally = Tally::default();
        let result = self.pdf(&mut range, &mut tally);
        if range.first {
            // Never learnt its page count (failed to open): it will not split.
            self.shared.opening.fetch_sub(1, Ordering::SeqCst);
        }
        let doc = &range.doc;
        doc.pages.fetch_add(tally.pages, Ordering::SeqCst);
        doc.errors.fetch_add(tally.errors, Ordering::SeqCst);
        result?;
        if doc.outstanding.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.send(RenderEvent::Finished(RenderedDocument {
                source: doc.source.path.clone(),
                relative: doc.source.relative.clone(),
                pages: doc.pages.load(Ordering::SeqCst),
                errors: doc.errors.load(Ordering::SeqCst),
            }))?;
        }
        Ok(())
    }

    /// Splits the pages after the first range of a `count`-page document into ranges for the
    /// other slots.
    fn split(&self, range: &mut Range, count: u32) {
        range.first = false;
        let from = range.end.unwrap_or(count);
        if from < count {
            let workers = self.shared.opts.workers.max(1) as u32;
            let size = (count - from).div_ceil(2 * workers).max(MIN_RANGE);
            let mut start = from;
            while start < count {
                let end = (start + size).min(count);
                range.doc.outstanding.fetch_add(1, Ordering::SeqCst);
                let _ = self.shared.split_tx.send(Range {
                    doc: range.doc.clone(),
                    start,
                    end: Some(end),
                    first: false,
                });
                start = end;
            }
        }
        self.shared.opening.fetch_sub(1, Ordering::SeqCst);
    }

    fn send(&self, event: RenderEvent) -> Result<(), Stopped> {
        self.events.send(event).map_err(|_| Stopped)
    }

    fn error(&self, tally: &mut Tally, error: DocError) -> Result<(), Stopped> {
        tally.errors += 1;
        self.send(RenderEvent::Error(error))
    }

    fn image(&mut self, source: &Source, tally: &mut Tally) -> Result<(), Stopped> {
        let shared = self.shared.clone();
        let opts = &shared.opts;
        let mut stopped = false;
        let mut started = Instant::now();
        let single = source.format != InputFormat::Tiff;
        let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            decode_pages(
                &source.path,
                source.format,
                &opts.image_limits,
                |index, img| {
                    if stopped {
                        return;
                    }
                    let original_px = Some(img.dimensions());
                    let event = match into_budget_size(img, opts.budget, &opts.rule) {
                        Ok(image) => {
                            tally.pages += 1;
                            RenderEvent::Page(Page {
                                source: source.path.clone(),
                                relative: source.relative.clone(),
                                page_index: index,
                                page_count: single.then_some(1),
                                image,
                                original_px,
                                points: None,
                                text_layer: None,
                                render_ms: started.elapsed().as_secs_f64() * 1e3,
                            })
                        }
                        Err(e) => {
                            tally.errors += 1;
                            RenderEvent::Error(
                                DocError::new(&source.path, ErrorKind::BadPageSize, e.to_string())
                                    .on_page(Some(index)),
                            )
                        }
                    };
                    stopped = self.events.send(event).is_err();
                    started = Instant::now();
                },
            )
        }));
        if stopped {
            return Err(Stopped);
        }
        match decoded {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) if e.kind == ErrorKind::NotFound && e.page.is_none() => {
                let error = std::io::Error::from(std::io::ErrorKind::NotFound);
                self.error(tally, vanished_or_io_error(&source.path, &error))
            }
            Ok(Err(e)) => self.error(tally, e),
            Err(_) => self.error(
                tally,
                DocError::new(
                    &source.path,
                    ErrorKind::ImageCorrupt,
                    "the image decoder failed (internal panic) on this file",
                ),
            ),
        }
    }

    fn pdf(&mut self, range: &mut Range, tally: &mut Tally) -> Result<(), Stopped> {
        let doc = range.doc.clone();
        let source = &doc.source;
        let path = &source.path;
        let mut start = range.start;
        let mut failures = 0u32;
        let mut page_count: Option<u32> = None;
        loop {
            // A worker, started if needed.
            let worker = match self.worker.take() {
                Some(w) => w,
                None => match self.start_worker() {
                    Ok(w) => w,
                    Err(e) => {
                        let error = DocError::new(path, ErrorKind::WorkerFailed, e.to_string());
                        return self.error(tally, error);
                    }
                },
            };
            let mut worker = worker;
            let job = RenderJob {
                path: path.clone(),
                password: self.shared.opts.password.clone(),
                budget: self.shared.opts.budget,
                start_page: start,
                end_page: range.end,
            };
            let failure = match worker.send(&job) {
                Err(e) => Some((ErrorKind::WorkerCrashed, worker.died(&format!("{e}")))),
                Ok(()) => loop {
                    match worker.recv(self.shared.opts.page_timeout) {
                        Received::Frame(Reply::Opened { page_count: n }, _) => {
                            page_count = Some(n);
                            if range.first {
                                self.split(range, n);
                            }
                        }
                        Received::Frame(
                            Reply::Page {
                                index,
                                width,
                                height,
                                points,
                                text,
                                char_boxes,
                                render_ms,
                            },
                            mut payload,
                        ) => {
                            start = index + 1;
                            // The pixels, then the text layer's boxes.
                            let rgb = width as usize * height as usize * 3;
                            let boxes = char_boxes as usize * BOX_BYTES;
                            let layer = (payload.len() == rgb + boxes)
                                .then(|| TextLayer::from_wire(text, &payload[rgb..]))
                                .flatten();
                            payload.truncate(rgb);
                            let (Some(image), Some(layer)) =
                                (image::RgbImage::from_raw(width, height, payload), layer)
                            else {
                                break Some((
                                    ErrorKind::WorkerCrashed,
                                    worker.died("sent a page of the wrong size"),
                                ));
                            };
                            tally.pages += 1;
                            self.send(RenderEvent::Page(Page {
                                source: path.clone(),
                                relative: source.relative.clone(),
                                page_index: index,
                                page_count,
                                image,
                                original_px: None,
                                points: Some(points),
                                text_layer: Some(layer),
                                render_ms,
                            }))?;
                        }
                        Received::Frame(
                            Reply::PageError {
                                index,
                                kind,
                                message,
                            },
                            _,
                        ) => {
                            start = index + 1;
                            self.error(
                                tally,
                                DocError::new(path, kind, message).on_page(Some(index)),
                            )?;
                        }
                        Received::Frame(Reply::DocError { kind, message }, _) => {
                            let error = match kind {
                                ErrorKind::NotFound => {
                                    let e = std::io::Error::from(std::io::ErrorKind::NotFound);
                                    vanished_or_io_error(path, &e)
                                }
                                _ => DocError::new(path, kind, message),
                            };
                            self.error(tally, error)?;
                        }
                        Received::Frame(Reply::Done, _) => {
                            self.worker = Some(worker);
                            return Ok(());
                        }
                        Received::Frame(other, _) => {
                            let what = format!("sent an unexpected {other:?}");
                            break Some((ErrorKind::WorkerCrashed, worker.died(&what)));
                        }
                        Received::Timeout => {
                            worker.kill();
                            let secs = self.shared.opts.page_timeout.as_secs_f64();
                            let message = match page_count {
                                Some(_) => format!("PDFium took longer than {secs} s on this page; its worker was killed"),
                                None => format!("PDFium took longer than {secs} s to open the document; its worker was killed"),
                            };
                            break Some((ErrorKind::WorkerTimeout, message));
                        }
                        Received::Died(why) => {
                            break Some((ErrorKind::WorkerCrashed, worker.died(&why)));
                        }
                    }
                },
            };
            let Some((kind, message)) = failure else {
                unreachable!("the loop only ends with a failure or returns")
            };
            failures += 1;
            let Some(count) = page_count.map(|n| range.end.map_or(n, |e| e.min(n))) else {
                // Died while opening: the document failed.
                return self.error(tally, DocError::new(path, kind, message));
            };
            if start >= count {
                // Died after the last page: nothing was lost.
                return Ok(());
            }
            self.error(
                tally,
                DocError::new(path, kind, message).on_page(Some(start)),
            )?;
            start += 1;
            if start >= count {
                return Ok(());
            }
            if failures >= self.shared.opts.max_failures_per_document {
                return self.error(
                    tally,
                    DocError::new(
                        path,
                        kind,
                        format!(
                            "pages {}-{count} skipped after {failures} worker failures on this document",
                            start + 1
                        ),
                    ),
                );
            }
        }
    }

    fn start_worker(&self) -> Result<WorkerProcess, StartError> {
        let command = self
            .shared
            .opts
            .worker
            .as_ref()
            .ok_or(StartError::NoPdfium)?;
        WorkerProcess::start(command, self.shared.opts.start_timeout)
    }
}
