//! Pages of a list of inputs through the worker pool, as an iterator. The staged pipeline uses
//! [`crate::render::pool::Pool::spawn`] directly with its own bounded channels.

use crate::render::pool::{Event, Pool, PoolOptions};
use crate::sources::Source;
use crossbeam_channel::Receiver;

/// The events of rendering `sources`: pages, error records, and one `Finished` per document.
/// Documents interleave across workers; a document's pages come in page order unless
/// `opts.split_long_documents` lets several workers share a long PDF (then sort by
/// `page_index`). Its `Finished` comes after all its pages and errors. Dropping the iterator
/// stops the workers.
pub struct Ingest {
    events: Receiver<Event>,
    pool: Option<Pool>,
    feeder: Option<std::thread::JoinHandle<()>>,
}

/// Starts rendering `sources` with `opts`.
pub fn ingest(sources: Vec<Source>, opts: PoolOptions) -> Ingest {
    ingest_while(sources, opts, || true)
}

/// [`ingest`], starting each next document only while `keep_going()`: once it says no, the
/// documents already started finish and the rest are never rendered.
pub fn ingest_while(
    sources: Vec<Source>,
    opts: PoolOptions,
    keep_going: impl Fn() -> bool + Send + 'static,
) -> Ingest {
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
    Ingest {
        events,
        pool: Some(pool),
        feeder: Some(feeder),
    }
}

impl Iterator for Ingest {
    type Item = Event;
    fn next(&mut self) -> Option<Event> {
        self.events.recv().ok()
    }
}

impl Drop for Ingest {
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
