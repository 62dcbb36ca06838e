//! Output writers: atomic files, the output layout, the document record and its formats (JSON,
//! JSONL, CSV, Markdown), and the stable vocabulary of error kinds. Knows nothing about models or PDFs.

pub mod atomic;
pub mod error_kind;
pub mod formats;
pub mod layout;
pub mod record;
