//! Errors of the Gemma 4 model: loading, contract checks and running.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: invalid JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("model directory is missing {path} ({why})")]
    MissingFile { path: PathBuf, why: &'static str },
    #[error("model directory has no graph {path}{}", available_note(.available))]
    MissingGraph {
        path: PathBuf,
        available: Vec<String>,
    },
    #[error("{path}: tokenizer: {message}")]
    Tokenizer { path: PathBuf, message: String },
    #[error("chat template: {0}")]
    Template(String),
    /// The graph does not fit the runtime contract (gemma4-onnx-contract.md §9).
    #[error("{graph}: {message}")]
    Contract { graph: String, message: String },
    #[error("config: {0}")]
    Config(String),
    #[error("{context}: {source}")]
    Ort {
        context: String,
        #[source]
        source: ort::Error,
    },
    #[error("execution provider: {0}")]
    Ep(#[from] crate::ep::EpError),
    #[error("image: {0}")]
    Image(String),
    #[error("{0}")]
    Invalid(String),
}

fn available_note(available: &[String]) -> String {
    if available.is_empty() {
        String::new()
    } else {
        format!("; variants present: {}", available.join(", "))
    }
}

impl Error {
    pub(crate) fn contract(graph: &str, message: impl Into<String>) -> Self {
        Error::Contract {
            graph: graph.to_string(),
            message: message.into(),
        }
    }
}

/// `map_err` helper for ORT calls: `.map_err(ort_err("decoder run"))`.
pub(crate) fn ort_err<R>(context: impl Into<String>) -> impl FnOnce(ort::Error<R>) -> Error {
    let context = context.into();
    move |e| Error::Ort {
        context,
        source: ort::Error::new(e.message().to_string()),
    }
}
