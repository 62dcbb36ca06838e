//! quire's document pipeline: sources, PDF rendering in worker processes, images, stages.
//!
//! * [`sources::collect`]: files and folders → [`sources::Source`]s (sniffed, deterministic).
//! * [`ingest::ingest`]: sources → [`render::pool::Event`]s ([`page::Page`]s at the model's
//!   pixel size, [`error::DocError`] records, one `Finished` per document).
//! * [`images::resize_for_budget`]: the one resize for the model.
//! * [`settings`]: the settings of the commands (flags, `QUIRE_*` variables, config file) and
//!   the job they open.

pub mod error;
pub mod images;
pub mod ingest;
pub mod job;
pub mod page;
pub mod pdfium;
pub mod render;
pub mod run;
pub mod settings;
pub mod sniff;
pub mod sources;
pub mod stage;
pub mod state;
pub mod watch;

pub use error::{DocError, ErrorKind};
pub use ingest::{ingest, ingest_while, Ingest};
pub use page::Page;
pub use render::pool::{Event, Finished, PoolOptions, WorkerCommand};
pub use sources::{collect, Source};
pub mod merge;
pub mod shard;
