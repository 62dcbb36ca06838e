//! Rendering: sources → pages exactly as the model will see them (PDF pages rasterized by
//! PDFium in worker processes at the budget's pixel size, images decoded and resized), as a
//! stream of [`RenderEvent`]s. `quire render` writes them out; `quire run` groups them into
//! documents ([`crate::run::render`]).
//!
//! * [`pool`]: scheduling: slots, page ranges of long PDFs, image decoding.
//! * [`process`]: one worker process, parent side (start, timeouts, kill, reap).
//! * [`worker`]: the worker process itself (`quire pdf-worker`), child side.
//! * [`protocol`]: what they say to each other.

pub mod pool;
pub mod process;
pub mod protocol;
pub mod worker;

pub use pool::{PoolOptions, RenderEvent, RenderedDocument};
pub use process::WorkerCommand;

use crate::sources::Source;
use crossbeam_channel::Receiver;
use pool::Pool;

/// The events of rendering `sources`: pages, error records, and one `Finished` per document.
/// Documents interleave across workers; a document's pages come in page order unless
/// `opts.split_long_documents` lets several workers share a long PDF (then sort by
/// `page_index`). Its `Finished` comes after all its pages and errors. Dropping the iterator
/// stops the workers.
pub struct Rendering {
    events: Receiver<RenderEvent>,
    pool: Option<Pool>,
    feeder: Option<std::thread::JoinHandle<()>>,
}

/// Starts rendering `sources` with `opts`.
pub fn render(sources: Vec<Source>, opts: PoolOptions) -> Rendering {
    render_while(sources, opts, || true)
}

/// [`render`], starting each next document only while `keep_going()`: once it says no, the
/// documents already started finish and the rest are never rendered.
pub fn render_while(
    sources: Vec<Source>,
    opts: PoolOptions,
    keep_going: impl Fn() -> bool + Send + 'static,
) -> Rendering {
    let workers = opts.workers.max(1);
    let (source_tx, source_rx) = crossbeam_channel::bounded(workers);
    let (event_tx, events) = crossbeam_channel::bounded(workers * 2);
    let pool = Pool::spawn(opts, source_rx, event_tx);
    let feeder = std::thread::spawn(move || {
        for source in sources {
            if !keep_going() || source_tx.send(source).is_err() {
                break;
            }
        }
    });
    Rendering {
        events,
        pool: Some(pool),
        feeder: Some(feeder),
    }
}

impl Iterator for Rendering {
    type Item = RenderEvent;
    fn next(&mut self) -> Option<RenderEvent> {
        self.events.recv().ok()
    }
}

impl Drop for Rendering {
    fn drop(&mut self) {
        // Disconnect first so blocked slots and the feeder wake up and end.
        self.events = crossbeam_channel::never();
        if let Some(pool) = self.pool.take() {
            pool.join();
        }
        if let Some(feeder) = self.feeder.take() {
            let _ = feeder.join();
        }
    }
}
