//! What to ask the model: the tasks, their prompts (files in `pipeline/prompts/`), the text
//! anchor.

use serde_json::Value;

const OCR_PROMPT: &str = include_str!("../../prompts/ocr.txt");
const EXTRACT_PROMPT: &str = include_str!("../../prompts/extract.txt");

/// The prompt files' text: part of every document's fingerprint, so that a changed prompt
/// redoes the documents it would change.
pub fn prompt_files() -> String {
    format!("{OCR_PROMPT}\0{EXTRACT_PROMPT}")
}

/// Longest text layer given to the model per page, in characters: an anchor, not the document.
pub const MAX_ANCHOR_CHARS_PER_PAGE: usize = 4000;

#[derive(Debug, Clone)]
pub enum Task {
    /// Markdown transcription, one generation per page, joined per document.
    Ocr,
    /// One JSON object per document conforming to `schema`.
    Extract { schema: Value },
    /// A custom instruction, free text, one generation per page.
    Prompt { text: String },
}

impl Task {
    pub fn name(&self) -> &'static str {
        match self {
            Task::Ocr => "ocr",
            Task::Extract { .. } => "extract",
            Task::Prompt { .. } => "prompt",
        }
    }

    /// The user instruction for `pages` page images, with their text layers as anchor.
    pub fn instruction(&self, pages: usize, anchor: Option<&str>) -> String {
        let env = minijinja::Environment::new();
        let ctx = |schema: Option<String>| {
            minijinja::context! {
                pages => pages,
                schema => schema,
                text_anchor => anchor.filter(|a| !a.trim().is_empty()),
            }
        };
        let rendered = match self {
            Task::Ocr => env.render_str(OCR_PROMPT, ctx(None)),
            Task::Extract { schema } => env.render_str(
                EXTRACT_PROMPT,
                ctx(Some(
                    serde_json::to_string(schema).expect("schema serializes"),
                )),
            ),
            Task::Prompt { text } => return text.clone(),
        };
        rendered
            .expect("prompt templates are valid (tested)")
            .trim()
            .to_string()
    }
}

/// The text layers of `pages` as one anchor, each page cut to `max_chars` characters.
pub fn text_anchor<'a>(
    pages: impl IntoIterator<Item = Option<&'a str>>,
    max_chars: usize,
) -> Option<String> {
    if max_chars == 0 {
        return None;
    }
    let parts: Vec<String> = pages
        .into_iter()
        .enumerate()
        .filter_map(|(i, text)| {
            let text = text?.trim();
            if text.is_empty() {
                return None;
            }
            let cut: String = text.chars().take(max_chars).collect();
            Some(format!("[page {}]\n{cut}", i + 1))
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join("\n\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn prompts_render_with_and_without_anchor() {
        let extract = Task::Extract {
            schema: json!({"type": "object"}),
        };
        let one = extract.instruction(1, None);
        assert!(one.contains("this document page"), "{one}");
        assert!(one.contains(r#"{"type":"object"}"#));
        assert!(!one.contains("text_layer"));
        let two = extract.instruction(2, Some("Invoice 42"));
        assert!(two.contains("these 2 document pages"));
        assert!(
            two.contains("<text_layer>\nInvoice 42\n</text_layer>"),
            "{two}"
        );
        let ocr = Task::Ocr.instruction(1, Some("   "));
        assert!(ocr.starts_with("Transcribe") && !ocr.contains("text_layer"));
    }

    #[test]
    fn anchors_skip_empty_pages_and_cut_long_ones() {
        let long = "x".repeat(MAX_ANCHOR_CHARS_PER_PAGE + 10);
        let anchor = text_anchor(
            [Some("first"), None, Some(" "), Some(long.as_str())],
            MAX_ANCHOR_CHARS_PER_PAGE,
        )
        .unwrap();
        assert!(anchor.starts_with("[page 1]\nfirst\n\n[page 4]\n"));
        assert_eq!(anchor.matches('x').count(), MAX_ANCHOR_CHARS_PER_PAGE);
        assert_eq!(text_anchor([None, Some("")], 10), None);
        assert_eq!(text_anchor([Some("text")], 0), None);
    }
}
