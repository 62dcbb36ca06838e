//! A document's outputs: each finished sequence's tokens (loop-guard cut, warnings), then the
//! document's data (extract: decoded, validated, per-page results merged) or text (ocr, prompt).

use super::super::document::Document;
use super::super::extraction::{self, Extraction, Fields};
use super::super::fault::{self, Stage};
use super::super::settings::RunSettings;
use super::super::task::Task;
use super::confidence::{self, ScoredToken};
use super::processor::SequenceState;
use super::prompts::Prompt;
use crate::text_layer;
use quire_constrained::JsonConstraint;
use quire_exporters::record::ErrorKind;
use quire_onnx::gemma4::{FinishReason, Gemma4, Generation};
use serde_json::Value;

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
    // The thought channel leads a constrained output: not part of it.
    ids.drain(..state.thought_tokens.min(ids.len()));
    Output {
        ids,
        error: state.error,
        complete,
        probabilities: state.probabilities,
    }
}

/// What one sequence gave.
pub(super) struct Output {
    pub ids: Vec<u32>,
    /// The constraint's error, if any.
    pub error: Option<String>,
    /// Whether the output is complete (a closed JSON object; free text that stopped by itself).
    pub complete: bool,
    /// Per token of a constrained output: see [`SequenceState::probabilities`].
    pub probabilities: Vec<Option<f64>>,
}

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
            let mut extractions = Vec::with_capacity(outputs.len());
            for (output, prompt) in outputs.into_iter().zip(prompts) {
                // A failure names its page when the document had several prompts.
                let page =
                    (prompts.len() > 1 || doc.part.is_some()).then(|| page_number(doc, prompt));
                if let Some(e) = output.error {
                    return doc.fail(ErrorKind::ConstraintFailed, e, page);
                }
                if !output.complete {
                    return doc.fail(
                        ErrorKind::IncompleteOutput,
                        format!(
                            "generation ended before the JSON object was complete ({} tokens)",
                            output.ids.len()
                        ),
                        page,
                    );
                }
                let tokenizer = constraint.tokenizer();
                let text = String::from_utf8_lossy(&tokenizer.decode(&output.ids)).into_owned();
                let data = match constraint.validate(&text) {
                    Ok(value) => value,
                    Err(e) => return doc.fail(ErrorKind::InvalidOutput, e.to_string(), page),
                };
                let scored: Vec<ScoredToken> = output
                    .ids
                    .iter()
                    .zip(output.probabilities.iter().chain(std::iter::repeat(&None)))
                    .map(|(&id, &probability)| ScoredToken {
                        bytes: tokenizer.decode(&[id]),
                        probability,
                    })
                    .collect();
                // A one-page prompt (or document) knows its page.
                let known_page = (prompt.pages.len() == 1 || doc.pages.len() == 1)
                    .then(|| page_number(doc, prompt));
                let mut fields = confidence::fields(&scored, &text, known_page);
                locate_fields(doc, prompt, &data, &mut fields);
                extractions.push(Extraction { fields, data });
            }
            let mut warnings = Vec::new();
            let mut extraction = extraction::merge_valid(extractions, constraint, &mut warnings);
            if let Some(threshold) = settings.null_below {
                extraction::null_below(&mut extraction, threshold, constraint, &mut warnings);
            }
            doc.warnings.extend(warnings);
            doc.data = Some(extraction.data);
            doc.fields = extraction.fields;
        }
        _ => {
            let mut parts = Vec::with_capacity(outputs.len());
            for (output, prompt) in outputs.into_iter().zip(prompts) {
                let decoded = match fault::injected(Stage::Decode) {
                    Some(error) => Err(error),
                    None => model.decode_text(&output.ids),
                };
                match decoded {
                    Ok(text) => parts.push((page_number(doc, prompt), text.trim().to_string())),
                    Err(e) => {
                        let page = page_number(doc, prompt);
                        return doc.fail(ErrorKind::DecodeFailed, e.to_string(), Some(page));
                    }
                }
            }
            // Pages skipped as blank keep their marker, so the page numbers stay as they are.
            let skipped = doc.pages.iter().filter(|p| p.skipped);
            parts.extend(skipped.map(|p| (p.record.index, String::new())));
            parts.sort_by_key(|&(i, _)| i);
            let joined = parts
                .iter()
                .map(|(i, text)| {
                    let marker = format!("<!-- page {} -->", i + 1);
                    if text.is_empty() {
                        marker
                    } else {
                        format!("{marker}\n\n{text}")
                    }
                })
                .collect::<Vec<_>>()
                .join("\n\n");
            doc.text = Some(joined);
        }
    }
}

/// Where each value is printed, from the text layers of the prompt's pages (born-digital PDF
/// pages): its box, and its page where the prompt had several. Strings are looked up as they
/// are, numbers as JSON writes them; a value not printed verbatim gets no box.
fn locate_fields(doc: &Document, prompt: &Prompt, data: &Value, fields: &mut Fields) {
    for (ptr, field) in fields.iter_mut() {
        let needle = match data.pointer(ptr) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => continue,
        };
        let pages: Vec<usize> = match field.page {
            Some(page) => prompt
                .pages
                .iter()
                .copied()
                .filter(|&i| doc.pages[i].record.index == page)
                .collect(),
            None => prompt.pages.clone(),
        };
        let layers = pages.iter().map(|&i| doc.pages[i].text_layer.as_ref());
        if let Some((at, bbox)) = text_layer::locate_in_pages(layers, &needle) {
            field.page = Some(doc.pages[pages[at]].record.index);
            field.bbox = Some(bbox);
        }
    }
}

/// The 0-based page number (in the whole document) of a prompt's first page.
fn page_number(doc: &Document, prompt: &Prompt) -> u32 {
    doc.pages[prompt.pages[0]].record.index
}

/// The failures of an `extract` output that constrained decoding keeps out of end-to-end runs
/// (the schema's bounds make a complete object always fit `--max-new-tokens`, and the mask only
/// offers tokens the schema allows), produced here through the sequence processor and
/// [`finish_doc`] with the tiny model's tokenizer.
#[cfg(test)]
mod tests {
    use super::super::processor::SequenceProcessor;
    use super::super::prompts::Prompt;
    use super::*;
    use crate::page::Page;
    use quire_constrained::JsonConstraint;
    use quire_exporters::record::ErrorRecord;
    use quire_onnx::gemma4::{Budget, LoadOptions, LogitsProcessor, Sampling};
    use quire_onnx::provision::Provisioner;
    use serde_json::json;
    use std::path::PathBuf;

    fn model() -> Gemma4 {
        let provisioner = Provisioner::from_env(false);
        let (env, _) = quire_onnx::runtime::environment(&provisioner, false).expect("ONNX Runtime");
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../samples/models/tiny-gemma4");
        let opts = LoadOptions {
            text_only: true,
            ..Default::default()
        };
        Gemma4::load(env, dir, &opts).expect("tiny model")
    }

    fn schema() -> serde_json::Value {
        json!({"type": "object", "properties": {"title": {"type": "string", "maxLength": 8}},
               "required": ["title"]})
    }

    fn settings() -> RunSettings {
        RunSettings {
            task: Task::Extract { schema: schema() },
            budget: Budget::try_from(70).unwrap(),
            max_new_tokens: 64,
            sampling: Sampling::Greedy,
            text_anchor: false,
            skip_blank_pages: true,
            batch_size: 1,
            batch_tokens: 16384,
            vision_patches: 20160,
            max_pages_per_prompt: 8,
            null_below: None,
            review_below: None,
            thinking: false,
            ignore_eos: false,
            model_id: "tiny-gemma4".into(),
            dtype: "fp32".into(),
            execution_provider: "cpu".into(),
            schema_name: None,
            loop_guard: Default::default(),
            fingerprint: String::new(),
        }
    }

    /// A one-page document, as the render stage hands it on.
    fn document() -> Document {
        let page = Page {
            source: PathBuf::from("doc.png"),
            relative: PathBuf::from("doc.png"),
            page_index: 0,
            page_count: Some(1),
            image: image::RgbImage::from_pixel(48, 48, image::Rgb([255, 255, 255])),
            original_px: None,
            points: None,
            text_layer: None,
            render_ms: 0.0,
        };
        Document::rendered(0, "0".repeat(64), Ok(vec![page]), 0.0)
    }

    /// Feeds `text`'s tokens to a sequence of the generate stage's processor as if the model
    /// had chosen them, ends the sequence with `reason` and finishes the document.
    fn extract(
        model: &Gemma4,
        constraint: &JsonConstraint,
        text: &str,
        reason: FinishReason,
    ) -> ErrorRecord {
        let settings = settings();
        let ids = model.tokenizer.encode(text).unwrap();
        let mut processor = SequenceProcessor::new(Some(constraint), settings.loop_guard);
        processor.start(0);
        let mut generated = Vec::new();
        for &id in &ids {
            generated.push(id);
            if processor.on_token(0, id, &[]) {
                break;
            }
        }
        let state = processor.finish(0).expect("started");
        let generation = Generation {
            generated_ids: generated,
            finish_reason: reason,
            prefill_logits: None,
        };
        let mut doc = document();
        let prompt = Prompt {
            pages: vec![0],
            input_ids: Vec::new(),
        };
        let output = finish_sequence(&settings, &mut doc, &prompt, generation, state);
        finish_doc(
            model,
            Some(constraint),
            &settings,
            &mut doc,
            &[prompt],
            vec![output],
        );
        assert!(doc.data.is_none(), "{:?}", doc.data);
        doc.error.expect("the document failed")
    }

    #[test]
    fn outputs_of_the_generate_stage_fail_with_their_kinds() {
        let model = model();
        let constraint = crate::run::compile_constraint(&model, &schema(), 64).unwrap();

        // A token the schema does not allow: the constraint stops the sequence.
        let error = extract(&model, &constraint, "Sure! {", FinishReason::Processor);
        assert_eq!(error.kind, ErrorKind::ConstraintFailed, "{error:?}");
        assert_eq!(error.page, None);

        // A valid beginning, then --max-new-tokens reached.
        let error = extract(&model, &constraint, r#"{"title":"ab"#, FinishReason::Length);
        assert_eq!(error.kind, ErrorKind::IncompleteOutput, "{error:?}");
        assert!(error
            .message
            .contains("before the JSON object was complete"));

        // The same object completed is a result: the failures above are the outputs' own.
        let finish_complete = |text: &str| {
            let ids = model.tokenizer.encode(text).unwrap();
            let mut doc = document();
            let prompt = Prompt {
                pages: vec![0],
                input_ids: Vec::new(),
            };
            let outputs = vec![Output {
                ids,
                error: None,
                complete: true,
                probabilities: Vec::new(),
            }];
            finish_doc(
                &model,
                Some(&constraint),
                &settings(),
                &mut doc,
                &[prompt],
                outputs,
            );
            doc
        };
        let doc = finish_complete(r#"{"title":"ab"}"#);
        assert_eq!(doc.error, None);
        assert_eq!(doc.data, Some(json!({"title": "ab"})));

        // A complete object that the independent validation rejects (too long a string).
        let doc = finish_complete(r#"{"title":"far too long"}"#);
        let error = doc.error.expect("failed");
        assert_eq!(error.kind, ErrorKind::InvalidOutput, "{error:?}");
    }

    /// Records the logits every step sees before the constraint, then lets the stage's
    /// processor do its work.
    struct Recording<'a, 'c> {
        inner: &'a mut SequenceProcessor<'c>,
        seen: Vec<Vec<f32>>,
    }

    impl LogitsProcessor for Recording<'_, '_> {
        fn process(&mut self, seq: usize, logits: &mut [f32]) {
            self.seen.push(logits.to_vec());
            self.inner.process(seq, logits);
        }
        fn on_token(&mut self, seq: usize, token: u32, logits: &[f32]) -> bool {
            self.inner.on_token(seq, token, logits)
        }
    }

    /// A forced choice between two values: the reported confidence is the probability the
    /// model gave its choice, computed here from the raw logits and the two possible outputs
    /// alone (no grammar engine): at each step the allowed tokens are those whose bytes keep
    /// the output a prefix of `{"answer":"yes"}` or `{"answer":"no"}`.
    #[test]
    fn confidence_of_a_forced_choice_is_the_models_probability() {
        let mut model = model();
        let schema = json!({"type": "object", "properties": {"answer": {"enum": ["yes", "no"]}},
                            "required": ["answer"]});
        let constraint = crate::run::compile_constraint(&model, &schema, 64).unwrap();
        let tokenizer = constraint.tokenizer().clone();
        let settings = RunSettings {
            task: Task::Extract {
                schema: schema.clone(),
            },
            ..settings()
        };
        let completions = [r#"{"answer":"yes"}"#, r#"{"answer":"no"}"#];
        let mut checked = 0;
        for question in [
            "Is this paid?",
            "Answer yes or no.",
            "Q",
            "Signed?",
            "Valid?",
        ] {
            let mut processor = SequenceProcessor::new(Some(&constraint), settings.loop_guard);
            processor.start(0);
            let mut recording = Recording {
                inner: &mut processor,
                seen: Vec::new(),
            };
            let input_ids = model.tokenizer.encode(question).unwrap();
            let opts = quire_onnx::gemma4::GenerateOptions {
                max_new_tokens: 64,
                ..Default::default()
            };
            let request = quire_onnx::gemma4::Request {
                input_ids,
                ..Default::default()
            };
            let out = model.generate(&[request], &opts, &mut recording).unwrap();
            let seen = recording.seen;
            let generation = out.sequences.into_iter().next().unwrap();
            let state = processor.finish(0).unwrap();

            // Independently: each step's probability among the tokens that fit a completion.
            let ids = generation.generated_ids.clone();
            let mut prefix: Vec<u8> = Vec::new();
            let mut expected: Vec<(usize, usize, Option<f64>)> = Vec::new();
            for (step, &id) in ids.iter().enumerate() {
                let logits = &seen[step];
                let allowed: Vec<usize> = (0..tokenizer.vocab_size())
                    .filter(|&t| !tokenizer.is_excluded(t as u32))
                    .filter(|&t| {
                        let mut next = prefix.clone();
                        next.extend(tokenizer.decode(&[t as u32]));
                        next.len() > prefix.len()
                            && completions.iter().any(|c| c.as_bytes().starts_with(&next))
                    })
                    .collect();
                assert!(allowed.contains(&(id as usize)), "step {step}");
                let max = allowed.iter().map(|&t| logits[t]).fold(f32::MIN, f32::max);
                let total: f64 = allowed
                    .iter()
                    .map(|&t| ((logits[t] - max) as f64).exp())
                    .sum();
                let p = ((logits[id as usize] - max) as f64).exp() / total;
                let start = prefix.len();
                prefix.extend(tokenizer.decode(&[id]));
                // Byte-fallback tokens (`<0x6E>`) spell what ordinary ones do: a choice is
                // between different spellings.
                let spellings: std::collections::HashSet<Vec<u8>> = allowed
                    .iter()
                    .map(|&t| tokenizer.decode(&[t as u32]))
                    .collect();
                expected.push((start, prefix.len(), (spellings.len() > 1).then_some(p)));
            }
            let text = String::from_utf8(prefix).unwrap();
            assert!(completions.contains(&text.as_str()), "{text}");
            let value_start = text.find(":\"").unwrap() + 1;
            let value_end = text.len() - 1;
            let want = expected
                .iter()
                .filter(|(s, e, _)| *s < value_end && *e > value_start)
                .filter_map(|(_, _, p)| *p)
                .fold(1.0, f64::min);

            let output = finish_sequence(
                &settings,
                &mut document(),
                &Prompt {
                    pages: vec![0],
                    input_ids: Vec::new(),
                },
                generation,
                state,
            );
            let mut doc = document();
            let prompt = Prompt {
                pages: vec![0],
                input_ids: Vec::new(),
            };
            finish_doc(
                &model,
                Some(&constraint),
                &settings,
                &mut doc,
                &[prompt],
                vec![output],
            );
            assert_eq!(doc.error, None);
            let field = &doc.fields["/answer"];
            assert!(
                (field.confidence - want).abs() <= 0.5e-4,
                "{question}: reported {} vs computed {want} ({text})",
                field.confidence
            );
            assert_eq!(field.page, Some(0));
            if want < 1.0 {
                checked += 1;
            }
        }
        // The model had a real choice in at least one case.
        assert!(checked > 0);
    }

    /// `--thinking` for extract: the sequence may open the thought channel first, think
    /// freely, must close it within its budget, and the JSON after it is the output alone.
    #[test]
    fn the_thought_channel_never_reaches_the_extraction() {
        let model = model();
        let (open, close) = model
            .channel_ids
            .expect("the tiny model has a thought channel");
        let constraint = crate::run::compile_constraint(&model, &schema(), 64).unwrap();
        let settings = RunSettings {
            thinking: true,
            ignore_eos: false,
            ..settings()
        };
        let thinking = Some(super::super::processor::Thinking {
            open,
            close,
            budget: 3,
        });
        let mut processor =
            SequenceProcessor::new(Some(&constraint), settings.loop_guard).with_thinking(thinking);
        processor.start(0);
        let width = model.decoder.vocab;
        // First step: the channel may open, beside what the JSON allows.
        let mut logits = vec![0.0f32; width];
        processor.process(0, &mut logits);
        assert!(logits[open as usize].is_finite());
        let mut ids = vec![open];
        assert!(!processor.on_token(0, open, &logits));
        // Thinking: any token but a stop token, until the budget is spent.
        let thought = model.tokenizer.encode("the title").unwrap();
        for &t in thought.iter().take(3) {
            let mut logits = vec![0.0f32; width];
            processor.process(0, &mut logits);
            assert!(logits[t as usize].is_finite());
            for &eos in constraint.tokenizer().eos_tokens() {
                assert_eq!(logits[eos as usize], f32::NEG_INFINITY);
            }
            assert!(!processor.on_token(0, t, &logits));
            ids.push(t);
        }
        // Budget spent: only the closing token.
        let mut logits = vec![0.0f32; width];
        processor.process(0, &mut logits);
        let allowed: Vec<usize> = (0..width).filter(|&i| logits[i].is_finite()).collect();
        assert_eq!(allowed, [close as usize]);
        assert!(!processor.on_token(0, close, &logits));
        ids.push(close);
        // Then the JSON under the constraint.
        let json = model.tokenizer.encode(r#"{"title":"ab"}"#).unwrap();
        for &t in &json {
            let mut logits = vec![0.0f32; width];
            processor.process(0, &mut logits);
            assert!(logits[t as usize].is_finite());
            ids.push(t);
            if processor.on_token(0, t, &logits) {
                break;
            }
        }
        let state = processor.finish(0).unwrap();
        assert_eq!(state.thought_tokens, 5);
        let generation = Generation {
            generated_ids: ids.clone(),
            finish_reason: FinishReason::Processor,
            prefill_logits: None,
        };
        let mut doc = document();
        let prompt = Prompt {
            pages: vec![0],
            input_ids: Vec::new(),
        };
        let output = finish_sequence(&settings, &mut doc, &prompt, generation, state);
        assert_eq!(output.ids, json);
        finish_doc(
            &model,
            Some(&constraint),
            &settings,
            &mut doc,
            &[prompt],
            vec![output],
        );
        assert_eq!(doc.error, None);
        assert_eq!(doc.data, Some(json!({"title": "ab"})));
        assert_eq!(doc.tokens.generated, ids.len() as u64);
        assert_eq!(doc.fields.keys().collect::<Vec<_>>(), ["/title"]);
    }
}
