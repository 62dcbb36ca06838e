//! What the stages of a run need to know besides the model: the task, the budgets, the
//! sampling, and what every record says about how it was made.

use super::generate::loop_guard::LoopGuardConfig;
use super::task::Task;
use quire_onnx::gemma4::{Budget, Sampling};

/// Default [`RunSettings::batch_size`]. A decode step costs far less per row in a fuller batch
/// (E2B q4 decoder, plain onnxruntime, 2 cores, cache of 300: 183 ms for 1 row, 446 ms for 4,
/// 603 ms for 8, 934 ms for 16), and the vision stage fills 8 rows in seconds at budget 70.
pub const DEFAULT_BATCH_SIZE: usize = 8;
/// Default [`RunSettings::batch_tokens`].
pub const DEFAULT_BATCH_TOKENS: usize = 16384;
/// Default [`RunSettings::vision_patches`] on a GPU (or another device provider): 4 pages at the
/// default budget of 560 soft tokens (9 patches each).
pub const DEFAULT_VISION_PATCHES: usize = 4 * 560 * 9;
/// Default [`RunSettings::vision_patches`] on the CPU: one page at budget 280 (four at 70; a
/// larger page runs alone). On 2 cores, `quire run` of 300 pages with the tiny model was as fast
/// as with 20160 (budget 280: 48.9–52.5 s against 47.1–52.9 s; budget 70: within 3%) and
/// peaked at a third of the memory (620 MiB against 1.8 GiB at budget 280): a CPU gains little
/// from batching images, and every image in a run holds its activations at once.
pub const DEFAULT_VISION_PATCHES_CPU: usize = 280 * 9;

/// Everything a run needs besides the model sessions.
#[derive(Debug, Clone)]
pub struct RunSettings {
    pub task: Task,
    pub budget: Budget,
    pub max_new_tokens: usize,
    pub sampling: Sampling,
    /// Give the PDF text layer to the model as an anchor.
    pub text_anchor: bool,
    /// `ocr`: skip blank pages (no text layer, nothing on the rendered page) with a page
    /// warning instead of transcribing them.
    pub skip_blank_pages: bool,
    /// Most sequences decoded together.
    pub batch_size: usize,
    /// Token budget of the decoder batch: sequences join while `rows × (cache length + new
    /// tokens to come)` stays within it (a sequence alone always runs). Bounds the KV cache.
    pub batch_tokens: usize,
    /// Patch budget of one vision encoder run (pages of one or more documents; a page larger
    /// than the budget runs alone).
    pub vision_patches: usize,
    /// Most page images in one extraction prompt; longer documents are extracted per page
    /// and merged ([`super::extraction::merge_valid`]).
    pub max_pages_per_prompt: usize,
    /// Values whose confidence is below this become `null` where the schema allows it.
    pub null_below: Option<f64>,
    /// Values whose confidence is below this go to the review queue (`review.jsonl`).
    pub review_below: Option<f64>,
    /// The model may think first, in its thought channel (never part of the output).
    pub thinking: bool,
    /// Generate `max_new_tokens` per prompt whatever the model's stop ids (benchmarks).
    pub ignore_eos: bool,
    /// Model id, dtype and provider as recorded in outputs.
    pub model_id: String,
    pub dtype: String,
    pub execution_provider: String,
    pub schema_name: Option<String>,
    pub loop_guard: LoopGuardConfig,
    /// The job's settings fingerprint, recorded in every output ([`crate::job`] sets it).
    pub fingerprint: String,
}

impl RunSettings {
    /// The most tokens a sequence generates: `max_new_tokens`, and for `extract` with thinking
    /// as many again for the thought channel before the JSON.
    pub fn generated_tokens_limit(&self) -> usize {
        match (&self.task, self.thinking) {
            (Task::Extract { .. }, true) => self.max_new_tokens * 2,
            _ => self.max_new_tokens,
        }
    }
}
