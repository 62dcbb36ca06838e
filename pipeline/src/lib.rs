//! quire's document pipeline: sources, rendering in worker processes, the stages of `quire run`,
//! jobs and their state. See `docs/ARCHITECTURE.md`.
//!
//! * [`sources::collect`]: files and folders → [`sources::Source`]s (sniffed, deterministic).
//! * [`render::render`]: sources → [`render::RenderEvent`]s ([`page::Page`]s at the model's
//!   pixel size, [`error::DocError`] records, one `Finished` per document).
//! * [`run::run`]: the stages (render → preprocess → vision → generate → export) over a batch.
//! * [`job::Job`]: plans a batch against the state store, runs it, marks each document.
//! * [`record`]: the document records, built in one place.
//! * [`text_layer`]: a PDF page's text with its characters' boxes: where a value is on the page.
//! * [`bench`]: `quire bench`, the budget × dtype grid scored against a truth.
//! * [`settings`]: the settings of the commands (flags, `QUIRE_*` variables, config file) and
//!   the job they open.

pub mod bench;
pub mod error;
pub mod images;
pub mod job;
pub mod merge;
pub mod page;
pub mod pdfium;
pub mod record;
pub mod render;
pub mod run;
pub mod settings;
pub mod shard;
pub mod sniff;
pub mod sources;
pub mod stage;
pub mod state;
pub mod text_layer;
pub mod watch;

pub use error::{DocError, ErrorKind};
pub use page::Page;
pub use render::{PoolOptions, RenderEvent, RenderedDocument, WorkerCommand};
pub use sources::{collect, Source};
