//! Output writers: atomic files, the output layout, the document record and its formats (JSON,
//! JSONL, CSV, Markdown). Knows nothing about models or PDFs.

pub mod atomic;
pub mod formats;
pub mod layout;
pub mod record;
