//! The per-batch logits processor of the generate stage: schema constraints for `extract`,
//! the loop guard for free text.

use super::loop_guard::{LoopGuard, LoopGuardConfig};
use quire_onnx::constrained::{JsonConstraint, SequenceMatcher};
use quire_onnx::gemma4::LogitsProcessor;

/// One sequence's state.
pub struct SequenceState {
    pub matcher: Option<SequenceMatcher>,
    pub guard: Option<LoopGuard>,
    /// Set when the constraint failed; the sequence was stopped.
    pub error: Option<String>,
}

pub struct BatchProcessor {
    pub sequences: Vec<SequenceState>,
}

impl BatchProcessor {
    /// `constraint`: every sequence follows it (extract); else every sequence has a loop guard.
    pub fn new(batch: usize, constraint: Option<&JsonConstraint>, guard: LoopGuardConfig) -> Self {
        let sequences = (0..batch)
            .map(|_| match constraint {
                Some(c) => SequenceState {
                    matcher: Some(c.matcher()),
                    guard: None,
                    error: None,
                },
                None => SequenceState {
                    matcher: None,
                    guard: Some(LoopGuard::new(guard)),
                    error: None,
                },
            })
            .collect();
        BatchProcessor { sequences }
    }
}

impl LogitsProcessor for BatchProcessor {
    fn process(&mut self, seq: usize, logits: &mut [f32]) {
        let state = &mut self.sequences[seq];
        if let Some(matcher) = &mut state.matcher {
            if state.error.is_none() {
                if let Err(e) = matcher.mask_logits(logits) {
                    state.error = Some(e.to_string());
                }
            }
        }
    }

    fn on_token(&mut self, seq: usize, token: u32) -> bool {
        let state = &mut self.sequences[seq];
        if state.error.is_some() {
            return true;
        }
        if let Some(matcher) = &mut state.matcher {
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
