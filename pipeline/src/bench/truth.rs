//! The truth a bench scores against: JSON Lines, one document per line,
//! `{"source": "invoice.pdf", "data": {...}, "text": "..."}`. `source` is the document's path
//! relative to the input it was found under, as records name it (`sub/invoice.pdf` for a file
//! in a subfolder of an input folder; the file name for a file given directly); `data` is the
//! expected extraction (scored for `--task extract`), `text` the reference text (scored for
//! `--task ocr`); a line needs at least one of them. Blank lines are skipped.

use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What each document should give.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Truth {
    pub data: BTreeMap<String, Value>,
    pub text: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TruthError {
    #[error("cannot read the truth file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Line {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    source: String,
    #[serde(default)]
    data: Option<Value>,
    #[serde(default)]
    text: Option<String>,
}

impl Truth {
    pub fn load(path: &Path) -> Result<Truth, TruthError> {
        let content = std::fs::read_to_string(path).map_err(|source| TruthError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Truth::parse(&content).map_err(|(line, message)| TruthError::Line {
            path: path.to_path_buf(),
            line,
            message,
        })
    }

    /// The truth in `content`, or the 1-based line number and what is wrong with it.
    pub fn parse(content: &str) -> Result<Truth, (usize, String)> {
        let mut truth = Truth::default();
        for (i, raw) in content.lines().enumerate() {
            let number = i + 1;
            if raw.trim().is_empty() {
                continue;
            }
            let line: Line = serde_json::from_str(raw).map_err(|e| {
                (
                    number,
                    format!(
                        "not a truth line ({e}); expected {{\"source\": ..., \"data\": ...}} or \
                         {{\"source\": ..., \"text\": ...}}"
                    ),
                )
            })?;
            if line.data.is_none() && line.text.is_none() {
                return Err((
                    number,
                    format!("{:?} has neither \"data\" nor \"text\"", line.source),
                ));
            }
            if truth.data.contains_key(&line.source) || truth.text.contains_key(&line.source) {
                return Err((number, format!("{:?} is listed twice", line.source)));
            }
            if let Some(data) = line.data {
                truth.data.insert(line.source.clone(), data);
            }
            if let Some(text) = line.text {
                truth.text.insert(line.source, text);
            }
        }
        Ok(truth)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lines_give_data_and_text_by_source() {
        let t = Truth::parse(
            "{\"source\": \"a.pdf\", \"data\": {\"total\": 5}}\n\n\
             {\"source\": \"sub/b.png\", \"text\": \"hello\", \"data\": {}}\n",
        )
        .unwrap();
        assert_eq!(t.data["a.pdf"], json!({"total": 5}));
        assert_eq!(t.data["sub/b.png"], json!({}));
        assert_eq!(t.text["sub/b.png"], "hello");
        assert!(!t.text.contains_key("a.pdf"));
    }

    #[test]
    fn bad_lines_are_named() {
        let (line, message) =
            Truth::parse("{\"source\": \"a.pdf\", \"text\": \"x\"}\nnot json\n").unwrap_err();
        assert_eq!(line, 2);
        assert!(message.starts_with("not a truth line"), "{message}");
        let (line, message) = Truth::parse("{\"source\": \"a.pdf\"}").unwrap_err();
        assert_eq!(
            (line, message.as_str()),
            (1, "\"a.pdf\" has neither \"data\" nor \"text\"")
        );
        let (line, message) = Truth::parse(
            "{\"source\": \"a.pdf\", \"text\": \"x\"}\n{\"source\": \"a.pdf\", \"data\": {}}",
        )
        .unwrap_err();
        assert_eq!((line, message.as_str()), (2, "\"a.pdf\" is listed twice"));
        let (_, message) = Truth::parse("{\"file\": \"a.pdf\", \"text\": \"x\"}").unwrap_err();
        assert!(message.contains("file"), "{message}");
    }
}
