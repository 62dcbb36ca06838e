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
    #[error("unsupported schema: {0}")]
    Schema(#[from] SchemaError),
    #[error("tokenizer for constrained decoding: {0}")]
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

/// One sequence's state.
pub struct SequenceState {
    pub matcher: Option<SequenceMatcher>,
    pub guard: Option<LoopGuard>,
    /// Set when the constraint failed; the sequence was stopped.
    pub error: Option<String>,
    /// Tokens the constraint allowed at the last step.
    allowed: usize,
    /// Per generated token (constrained sequences): the probability the model gave it among
    /// the allowed tokens, `None` where only one was allowed.
    pub probabilities: Vec<Option<f64>>,
}

/// The states of the sequences in the decoder batch, by sequence id: a sequence's state is
/// added when it is admitted and taken back when it finishes, whatever else joins or leaves.
pub struct SequenceProcessor<'c> {
    constraint: Option<&'c JsonConstraint>,
    guard: LoopGuardConfig,
    sequences: HashMap<usize, SequenceState>,
}

impl<'c> SequenceProcessor<'c> {
    /// `constraint`: every sequence follows it (extract); else every sequence has a loop guard.
    pub fn new(constraint: Option<&'c JsonConstraint>, guard: LoopGuardConfig) -> Self {
        SequenceProcessor {
            constraint,
            guard,
            sequences: HashMap::new(),
        }
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
            },
            None => SequenceState {
                matcher: None,
                guard: Some(LoopGuard::new(self.guard)),
                error: None,
                allowed: 0,
                probabilities: Vec::new(),
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
            if state.error.is_none() {
                match matcher.mask_logits(logits) {
                    Ok(allowed) => state.allowed = allowed,
                    Err(e) => state.error = Some(e.to_string()),
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
