//! The plain types of generation: what a sequence asks for ([`Request`], [`GenerateOptions`])
//! and what comes back ([`Generation`], [`FinishReason`], [`Timings`], [`BatchOutput`]).

use super::image_processor::ProcessedImage;
use super::sampling::Sampling;
use serde::Serialize;

/// One sequence to generate: its prompt ids and the images its image tokens stand for.
#[derive(Debug, Clone, Default)]
pub struct Request<'a> {
    pub input_ids: Vec<u32>,
    pub images: Vec<&'a ProcessedImage>,
    /// Features already computed with
    /// [`Gemma4::encode_images`](super::Gemma4::encode_images) (`[Σ soft tokens · hidden]`);
    /// when set, `images` is ignored.
    pub image_features: Option<Vec<f32>>,
}

#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    pub sampling: Sampling,
    /// `None`: the model's stop ids. `Some(vec![])`: never stop on a token.
    pub stop_ids: Option<Vec<u32>>,
    /// Keep each sequence's prefill logits (after soft-cap) in the output.
    pub keep_prefill_logits: bool,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_new_tokens: 256,
            sampling: Sampling::Greedy,
            stop_ids: None,
            keep_prefill_logits: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// A stop id was generated (it is the last generated id).
    Stop,
    /// `max_new_tokens` reached.
    Length,
    /// The logits processor asked to stop.
    Processor,
}

#[derive(Debug, Clone, Serialize)]
pub struct Generation {
    pub generated_ids: Vec<u32>,
    pub finish_reason: FinishReason,
    #[serde(skip)]
    pub prefill_logits: Option<Vec<f32>>,
}

/// Wall-clock seconds of the phases of one `generate` call.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timings {
    pub vision_s: f64,
    pub prefill_s: f64,
    /// One entry per decode step (all active sequences together).
    pub decode_step_s: Vec<f64>,
    pub prompt_tokens: usize,
    pub batch_size: usize,
}

impl Timings {
    pub fn decode_mean_s(&self) -> f64 {
        if self.decode_step_s.is_empty() {
            0.0
        } else {
            self.decode_step_s.iter().sum::<f64>() / self.decode_step_s.len() as f64
        }
    }
}

#[derive(Debug, Clone)]
pub struct BatchOutput {
    pub sequences: Vec<Generation>,
    pub timings: Timings,
}
