//! The stable vocabulary of failures: every error record, from any stage, names one of these
//! kinds (`snake_case` in JSON). The README lists them; scripts may match on them, so a kind is
//! never renamed, only added.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! error_kinds {
    ($($(#[doc = $doc:literal])* $variant:ident => $name:literal,)*) => {
        /// What went wrong with a document (or one page of it).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum ErrorKind {
            $($(#[doc = $doc])* #[serde(rename = $name)] $variant,)*
        }

        impl ErrorKind {
            /// Every kind, in the README's order.
            pub const ALL: &'static [ErrorKind] = &[$(ErrorKind::$variant,)*];

            /// The kind as written in records.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorKind::$variant => $name,)*
                }
            }

            /// The README's one-line description of the kind.
            pub fn description(self) -> &'static str {
                match self {
                    $(ErrorKind::$variant => concat!($($doc),*).trim_ascii(),)*
                }
            }
        }
    };
}

error_kinds! {
    // Finding and reading inputs.
    /// The input path does not exist.
    NotFound => "not_found",
    /// The file or folder could not be read (permissions, I/O error, symlink loop).
    Io => "io",
    /// A file of zero bytes.
    EmptyFile => "empty_file",
    /// Not a PDF, PNG, JPEG, TIFF or WebP by its content.
    UnsupportedFormat => "unsupported_format",
    /// Two inputs would write the same output files.
    DuplicateOutput => "duplicate_output",
    // Rendering (PDFium in worker processes) and image decoding.
    /// PDFium could not parse the file (truncated, damaged, not really a PDF).
    PdfCorrupt => "pdf_corrupt",
    /// The PDF is encrypted and no password was given.
    PdfEncrypted => "pdf_encrypted",
    /// The PDF is encrypted and the given password is wrong.
    PdfWrongPassword => "pdf_wrong_password",
    /// The PDF parses but has no pages.
    PdfNoPages => "pdf_no_pages",
    /// PDFium could not load or render one page.
    PageFailed => "page_failed",
    /// The page or image has a size the resize rule cannot handle (zero, negative, not finite).
    BadPageSize => "bad_page_size",
    /// The image decoder rejected the file (corrupt, truncated, unsupported variant).
    ImageCorrupt => "image_corrupt",
    /// The image is larger than the decoder limits allow (decompression bomb guard).
    ImageTooLarge => "image_too_large",
    /// The PDFium worker process died (crash, abort, out of memory) on this document.
    WorkerCrashed => "worker_crashed",
    /// The PDFium worker took longer than the per-page timeout and was killed.
    WorkerTimeout => "worker_timeout",
    /// The PDFium worker could not be started or PDFium could not be loaded.
    WorkerFailed => "worker_failed",
    /// The document has no pages to give the model.
    EmptyDocument => "empty_document",
    // Preprocess, vision, generate.
    /// A page is too thin or too small for the image processor at this budget.
    ImageTooThin => "image_too_thin",
    /// The model directory has no vision graph loaded, so pages cannot be encoded.
    ModelIncomplete => "model_incomplete",
    /// The vision encoder failed on the document's pages.
    VisionFailed => "vision_failed",
    /// A page's prompt does not fit the model's context with --max-new-tokens.
    PromptTooLong => "prompt_too_long",
    /// The decoder failed while generating the document's output.
    GenerationFailed => "generation_failed",
    /// The schema constraint rejected a token (constrained decoding could not go on).
    ConstraintFailed => "constraint_failed",
    /// Generation ended (--max-new-tokens) before the JSON object was complete.
    IncompleteOutput => "incomplete_output",
    /// The output does not validate against the schema (checked independently of decoding).
    InvalidOutput => "invalid_output",
    /// The generated tokens could not be decoded to text.
    DecodeFailed => "decode_failed",
    // Outputs and the state store.
    /// Writing the outputs failed.
    OutputFailed => "output_failed",
    /// The document failed, or its attempts did not finish (its process was killed), more often than --retries allows; it is not tried again.
    RetriesExhausted => "retries_exhausted",
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_serialize_as_their_names_and_back() {
        for &kind in ErrorKind::ALL {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
            assert_eq!(serde_json::from_str::<ErrorKind>(&json).unwrap(), kind);
            assert!(!kind.description().is_empty(), "{kind}");
        }
        let names: std::collections::HashSet<_> =
            ErrorKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(names.len(), ErrorKind::ALL.len(), "names are unique");
    }
}
