//! The logits processor of the generate stage: schema constraints for `extract`,
//! the loop guard for free text.

use super::confidence;
use super::loop_guard::{LoopGuard, LoopGuardConfig};
use quire_constrained::{
    BoundOptions, ConstraintError, ConstraintTokenizer, JsonConstraint, SchemaError,
    SequenceMatcher,
};
use quire_onnx::gemma4::{Gemma4, LogitsProcessor};
use serde_json::Value;
use std::collections::HashMap;

/// Why an `extract` schema cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    // Each its own message, once (not again as the source).
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error("tokenizer for constrained decoding")]
    Tokenizer(#[source] ConstraintError),
}

/// The schema constraint of an `extract` run, compiled before any document is touched: an
/// unsupported schema is an error here, naming the keyword.
pub fn compile_constraint(
    model: &Gemma4,
    schema: &Value,
    max_new_tokens: usize,
) -> Result<JsonConstraint, CompileError> {
    let vocab = model.decoder.vocab;
    let tokenizer = ConstraintTokenizer::from_file(
        model.dir.root.join("tokenizer.json"),
        &model.stop_ids,
        Some(vocab),
    )
    .map_err(CompileError::Tokenizer)?;
    Ok(JsonConstraint::new(
        &tokenizer,
        schema,
        &BoundOptions::new(max_new_tokens),
    )?)
}

/// The thought channel of a constrained sequence (`--thinking`): the model may open it with
/// its first token, think freely (stop tokens aside) for at most `budget` tokens, and must close
/// it before the JSON, which the constraint then takes as if the thought had not been.
#[derive(Debug, Clone, Copy)]
pub struct Thinking {
    /// `<|channel>`, `<channel|>`.
    pub open: u32,
    pub close: u32,
    pub budget: usize,
}

/// Where a constrained sequence is.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// First token: the thought channel may open.
    Start,
    /// Inside the thought channel, after this many thought tokens.
    Thought(usize),
    /// The JSON.
    Answer,
}

fn eos_tokens(constraint: Option<&JsonConstraint>) -> &[u32] {
    constraint.map_or(&[], |c| c.tokenizer().eos_tokens())
}

/// One sequence's state.
pub struct SequenceState {
    pub matcher: Option<SequenceMatcher>,
    pub guard: Option<LoopGuard>,
    /// Set when the constraint failed; the sequence was stopped.
    pub error: Option<String>,
    /// Tokens the constraint allowed at the last step of the JSON (thought tokens get no
    /// probability).
    allowed: usize,
    /// Per generated token (constrained sequences): the probability the model gave it among
    /// the allowed tokens, `None` where only one was allowed.
    pub probabilities: Vec<Option<f64>>,
    phase: Phase,
    /// Leading generated ids that are the thought channel (`<|channel>` … `<channel|>`): not
    /// part of the output.
    pub thought_tokens: usize,
}

/// The states of the sequences in the decoder batch, by sequence id: a sequence's state is
/// added when it is admitted and taken back when it finishes, whatever else joins or leaves.
pub struct SequenceProcessor<'c> {
    constraint: Option<&'c JsonConstraint>,
    guard: LoopGuardConfig,
    thinking: Option<Thinking>,
    sequences: HashMap<usize, SequenceState>,
}

impl<'c> SequenceProcessor<'c> {
    /// `constraint`: every sequence follows it (extract); else every sequence has a loop guard.
    pub fn new(constraint: Option<&'c JsonConstraint>, guard: LoopGuardConfig) -> Self {
        SequenceProcessor {
            constraint,
            guard,
            thinking: None,
            sequences: HashMap::new(),
        }
    }

    /// Constrained sequences may think first (see [`Thinking`]).
    pub fn with_thinking(mut self, thinking: Option<Thinking>) -> Self {
        self.thinking = thinking;
        self
    }

    /// A fresh state for sequence `id`.
    pub fn start(&mut self, id: usize) {
        let state = match self.constraint {
            Some(c) => SequenceState {
                matcher: Some(c.matcher()),
                guard: None,
                error: None,
                allowed: 0,
                probabilities: Vec::new(),
                phase: if self.thinking.is_some() {
                    Phase::Start
                } else {
                    Phase::Answer
                },
                thought_tokens: 0,
            },
            None => SequenceState {
                matcher: None,
                guard: Some(LoopGuard::new(self.guard)),
                error: None,
                allowed: 0,
                probabilities: Vec::new(),
                phase: Phase::Answer,
                thought_tokens: 0,
            },
        };
        self.sequences.insert(id, state);
    }

    /// The state of a sequence that left the batch.
    pub fn finish(&mut self, id: usize) -> Option<SequenceState> {
        self.sequences.remove(&id)
    }
}

impl LogitsProcessor for SequenceProcessor<'_> {
    fn process(&mut self, seq: usize, logits: &mut [f32]) {
        let Some(state) = self.sequences.get_mut(&seq) else {
            return;
        };
        if let Some(matcher) = &mut state.matcher {
            if state.error.is_some() {
                return;
            }
            match (state.phase, self.thinking) {
                (Phase::Thought(n), Some(thinking)) if n >= thinking.budget => {
                    // Out of thought budget: close the channel.
                    for (i, l) in logits.iter_mut().enumerate() {
                        if i != thinking.close as usize {
                            *l = f32::NEG_INFINITY;
                        }
                    }
                }
                (Phase::Thought(_), _) => {
                    // Free text, but the sequence may not stop inside its thought.
                    for &t in eos_tokens(self.constraint) {
                        if let Some(l) = logits.get_mut(t as usize) {
                            *l = f32::NEG_INFINITY;
                        }
                    }
                }
                (phase, thinking) => {
                    let open = thinking.and_then(|t| logits.get(t.open as usize).copied());
                    match matcher.mask_logits(logits) {
                        Ok(allowed) => state.allowed = allowed,
                        Err(e) => state.error = Some(e.to_string()),
                    }
                    if let (Phase::Start, Some(open), Some(t)) = (phase, open, thinking) {
                        logits[t.open as usize] = open;
                        state.allowed += 1;
                    }
                }
            }
        }
    }

    fn on_token(&mut self, seq: usize, token: u32, logits: &[f32]) -> bool {
        let Some(state) = self.sequences.get_mut(&seq) else {
            return false;
        };
        if state.error.is_some() {
            return true;
        }
        if let Some(matcher) = &mut state.matcher {
            if let Some(thinking) = self.thinking {
                let thought = match state.phase {
                    Phase::Start if token == thinking.open => Some(Phase::Thought(0)),
                    Phase::Thought(_) if token == thinking.close => Some(Phase::Answer),
                    Phase::Thought(n) => Some(Phase::Thought(n + 1)),
                    _ => None,
                };
                if let Some(next) = thought {
                    state.phase = next;
                    state.thought_tokens += 1;
                    return false;
                }
                state.phase = Phase::Answer;
            }
            // The logits are masked: the probability is among the allowed tokens.
            state
                .probabilities
                .push((state.allowed > 1).then(|| confidence::probability(logits, token)));
            if let Err(e) = matcher.consume(token) {
                state.error = Some(e.to_string());
                return true;
            }
            // The grammar never offers EOS: the closing bracket ends the sequence.
            return matcher.is_finished();
        }
        state.guard.as_mut().is_some_and(|g| g.push(token))
    }
}
