//! A document's outputs: each finished sequence's tokens (loop-guard cut, warnings), then the
//! document's data (extract: decoded, validated, per-page results merged) or text (ocr, prompt).

use super::super::document::Document;
use super::super::settings::RunSettings;
use super::super::task::{self, Task};
use super::processor::SequenceState;
use super::prompts::Prompt;
use quire_constrained::JsonConstraint;
use quire_exporters::record::ErrorKind;
use quire_onnx::gemma4::{FinishReason, Gemma4, Generation};

/// A finished sequence's output: loop-guard cut, warnings, token count.
pub(super) fn finish_sequence(
    settings: &RunSettings,
    doc: &mut Document,
    prompt: &Prompt,
    generation: Generation,
    state: SequenceState,
) -> Output {
    let mut ids = generation.generated_ids;
    doc.tokens.generated += ids.len() as u64;
    let first_page = prompt.pages[0];
    let complete = match (&state.matcher, generation.finish_reason) {
        (Some(m), _) => m.is_finished(),
        (None, reason) => reason != FinishReason::Length,
    };
    if let Some(cut) = state.guard.as_ref().and_then(|g| g.cut_at()) {
        ids.truncate(cut);
        doc.pages[first_page].record.warnings.push(format!(
            "output started repeating itself; cut after {cut} tokens"
        ));
    } else if state.matcher.is_none() && !complete {
        doc.pages[first_page].record.warnings.push(format!(
            "output reached --max-new-tokens ({}) and may be incomplete",
            settings.max_new_tokens
        ));
    }
    (ids, state.error, complete)
}

/// Generated ids, the constraint's error if any, and whether the output is complete.
pub(super) type Output = (Vec<u32>, Option<String>, bool);

pub(super) fn finish_doc(
    model: &Gemma4,
    constraint: Option<&JsonConstraint>,
    settings: &RunSettings,
    doc: &mut Document,
    prompts: &[Prompt],
    outputs: Vec<Output>,
) {
    match (&settings.task, constraint) {
        (Task::Extract { .. }, Some(constraint)) => {
            let mut values = Vec::with_capacity(outputs.len());
            for ((ids, error, complete), prompt) in outputs.into_iter().zip(prompts) {
                let page = (prompts.len() > 1).then_some(prompt.pages[0] as u32);
                if let Some(e) = error {
                    return doc.fail(ErrorKind::ConstraintFailed, e, page);
                }
                if !complete {
                    return doc.fail(
                        ErrorKind::IncompleteOutput,
                        format!(
                            "generation ended before the JSON object was complete ({} tokens)",
                            ids.len()
                        ),
                        page,
                    );
                }
                let text =
                    String::from_utf8_lossy(&constraint.tokenizer().decode(&ids)).into_owned();
                match constraint.validate(&text) {
                    Ok(value) => values.push(value),
                    Err(e) => return doc.fail(ErrorKind::InvalidOutput, e.to_string(), page),
                }
            }
            let merged = task::merge_pages(&values);
            if values.len() > 1 {
                // Merging can break bounds (e.g. maxItems): validate the merge too.
                if let Err(e) = constraint.validate(&merged.to_string()) {
                    return doc.fail(ErrorKind::InvalidOutput, format!("merged pages: {e}"), None);
                }
            }
            doc.data = Some(merged);
        }
        _ => {
            let mut parts = Vec::with_capacity(outputs.len());
            for ((ids, _, _), prompt) in outputs.into_iter().zip(prompts) {
                match model.decode_text(&ids) {
                    Ok(text) => parts.push((prompt.pages[0], text.trim().to_string())),
                    Err(e) => {
                        return doc.fail(
                            ErrorKind::DecodeFailed,
                            e.to_string(),
                            Some(prompt.pages[0] as u32),
                        )
                    }
                }
            }
            let joined = parts
                .iter()
                .map(|(i, text)| format!("<!-- page {} -->\n\n{text}", i + 1))
                .collect::<Vec<_>>()
                .join("\n\n");
            doc.text = Some(joined);
        }
    }
}
