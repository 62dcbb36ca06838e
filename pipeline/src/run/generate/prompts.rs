//! Prompt building: which pages go into which prompt (all pages of an extraction in one prompt
//! while they fit, else one per page), the instruction with its text anchor, and the check
//! against the model's context.

use super::super::document::Document;
use super::super::settings::RunSettings;
use super::super::task::{self, Task};
use quire_onnx::gemma4::{Gemma4, Message, ProcessedImage};

/// Why a document has no prompts (`prompt_too_long`).
#[derive(Debug, thiserror::Error)]
pub(super) enum PromptError {
    /// The chat template or the image placeholders failed.
    #[error("{0}")]
    Model(#[from] quire_onnx::gemma4::Error),
    #[error(
        "prompt of {prompt} tokens + {new} new tokens exceeds the model's context of {limit}; \
         lower --max-new-tokens or --budget"
    )]
    TooLong {
        prompt: usize,
        new: usize,
        limit: usize,
    },
    /// 1-based page number.
    #[error("page {page}: {source}")]
    Page {
        page: usize,
        source: Box<PromptError>,
    },
}

/// One prompt: which pages it shows, and its tokens.
pub(super) struct Prompt {
    pub pages: Vec<usize>,
    pub input_ids: Vec<u32>,
}

/// The prompts of a document: `extract` shows all pages in one prompt while they fit the page
/// limit and the context, else one prompt per page (merged later); free text is per page, and
/// so is every part of a long document.
pub(super) fn prompts(
    model: &Gemma4,
    settings: &RunSettings,
    doc: &mut Document,
) -> Result<Vec<Prompt>, PromptError> {
    let n = doc.pages.len();
    // A part of a long document: the document has more pages than one prompt takes.
    let whole = doc.part.is_none();
    if matches!(settings.task, Task::Extract { .. })
        && whole
        && n > 1
        && n <= settings.max_pages_per_prompt
    {
        let pages: Vec<usize> = (0..n).collect();
        let input_ids = prompt_ids(
            model,
            settings,
            doc,
            &pages,
            task::MAX_ANCHOR_CHARS_PER_PAGE,
        )?;
        if fits(model, settings, &input_ids).is_ok() {
            return Ok(vec![Prompt { pages, input_ids }]);
        }
        doc.warnings.push(format!(
            "the {n} pages do not fit one prompt ({} tokens): extracted page by page and merged",
            input_ids.len()
        ));
    }
    let mut prompts = Vec::with_capacity(n);
    // Pages skipped as blank get no prompt (their text is empty).
    let skipped: Vec<bool> = doc.pages.iter().map(|p| p.skipped).collect();
    for i in (0..n).filter(|&i| !skipped[i]) {
        // A long text layer is cut (halved until it fits) before a page is given up.
        let mut anchor_chars = task::MAX_ANCHOR_CHARS_PER_PAGE;
        loop {
            let input_ids = prompt_ids(model, settings, doc, &[i], anchor_chars)?;
            match fits(model, settings, &input_ids) {
                Ok(()) => {
                    if anchor_chars < task::MAX_ANCHOR_CHARS_PER_PAGE {
                        doc.pages[i].record.warnings.push(format!(
                            "text layer cut to {anchor_chars} characters to fit the context"
                        ));
                    }
                    prompts.push(Prompt {
                        pages: vec![i],
                        input_ids,
                    });
                    break;
                }
                Err(_) if settings.text_anchor && anchor_chars > 0 => {
                    anchor_chars = if anchor_chars > 250 {
                        anchor_chars / 2
                    } else {
                        0
                    };
                }
                Err(e) => {
                    return Err(PromptError::Page {
                        page: doc.pages[i].record.index as usize + 1,
                        source: Box::new(e),
                    })
                }
            }
        }
    }
    Ok(prompts)
}

fn prompt_ids(
    model: &Gemma4,
    settings: &RunSettings,
    doc: &Document,
    pages: &[usize],
    anchor_chars: usize,
) -> Result<Vec<u32>, PromptError> {
    let anchor = if settings.text_anchor {
        task::text_anchor(
            pages.iter().map(|&i| doc.pages[i].text_layer.as_deref()),
            anchor_chars,
        )
    } else {
        None
    };
    let instruction = settings.task.instruction(pages.len(), anchor.as_deref());
    let images: Vec<&ProcessedImage> = pages
        .iter()
        .filter_map(|&i| doc.pages[i].image.as_ref())
        .collect();
    let messages = [Message::user_with_images(images.len(), &instruction)];
    Ok(model.prompt_ids(&messages, &images, settings.thinking)?)
}

/// The prompt and `max_new_tokens` within the model's context.
fn fits(model: &Gemma4, settings: &RunSettings, input_ids: &[u32]) -> Result<(), PromptError> {
    let limit = model
        .config
        .text_config
        .max_position_embeddings
        .unwrap_or(usize::MAX);
    if input_ids.len() + settings.generated_tokens_limit() > limit {
        return Err(PromptError::TooLong {
            prompt: input_ids.len(),
            new: settings.generated_tokens_limit(),
            limit,
        });
    }
    Ok(())
}
