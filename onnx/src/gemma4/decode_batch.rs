//! Continuous batching: sequences join a running decoder batch between steps and leave it when
//! they finish, under a token budget that bounds the KV cache.
//!
//! Every row's attention mask is `[0 … 0, 1 … 1]`: left padding, then the row's real tokens up
//! to the newest column. Joining keeps that shape: a newly prefilled group and the running batch
//! are left-padded to one length (zero KV columns, mask 0) and stacked. That is only sound while
//! every cache tensor is as long as the mask (contract: presents are opaque, sliding layers may
//! be window-truncated), so a batch whose caches are not full length refuses to take new
//! sequences until it has drained: it degrades to static batches.
//!
//! [`Gemma4::generate`] is a static batch on this loop: vision once at prefill, left-padded
//! batches, KV cache carried between steps, finished sequences dropped from the batch.

use super::decoder::KvCache;
use super::error::Error;
use super::generation::{BatchOutput, FinishReason, GenerateOptions, Generation, Request, Timings};
use super::image_processor::ProcessedImage;
use super::model::Gemma4;
use super::sampling::{LogitsProcessor, Sampler};
use super::tensors::stack_kv_left_padded;
use ort::value::DynValue;
use std::borrow::Cow;
use std::time::Instant;

/// What a batch may hold.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// Most sequences decoded together.
    pub max_rows: usize,
    /// Bound on `rows × (cache length + tokens still to generate)`: the most KV positions the
    /// batch can come to hold. A sequence alone is admitted whatever its size.
    pub max_tokens: usize,
}

impl BatchLimits {
    pub const UNBOUNDED: BatchLimits = BatchLimits {
        max_rows: usize::MAX,
        max_tokens: usize::MAX,
    };
}

/// A sequence to admit.
#[derive(Debug, Clone, Copy)]
pub struct NewSequence<'r> {
    /// The caller's id: what the logits processor is called with and what comes back with the
    /// finished generation. Must be unique among the sequences in the batch.
    pub id: usize,
    /// The sampler's RNG stream: the same seed and stream draw the same tokens in any batch.
    pub stream: usize,
    pub request: &'r Request<'r>,
}

/// A sequence that left the batch.
#[derive(Debug, Clone)]
pub struct FinishedSequence {
    pub id: usize,
    pub generation: Generation,
}

/// A failed model call and the sequences it took down: the group being admitted (the running
/// batch is unchanged) or, for a decode step, every sequence of the batch (now empty).
#[derive(Debug)]
pub struct BatchFailure {
    pub ids: Vec<usize>,
    pub error: Error,
}

/// What [`DecodeBatch::admit`] did.
#[derive(Debug)]
pub enum Admission {
    /// The group was prefilled and joined; these of its sequences finished at their first token.
    Joined(Vec<FinishedSequence>),
    /// The group's cache cannot be stacked with the running one (not full length): nothing
    /// changed, and the batch takes no new sequences until it is empty.
    Refused,
}

/// One active sequence.
struct Row {
    id: usize,
    /// Leading masked columns of this row.
    pad: usize,
    /// Position of the last token fed.
    last_pos: i64,
    /// The token sampled but not yet fed.
    next: u32,
    sampler: Sampler,
    out: Generation,
}

/// A decoder batch that sequences join and leave between steps. The model is passed to each
/// call, so the caller can use it (e.g. for prompts) between steps.
pub struct DecodeBatch {
    opts: GenerateOptions,
    stop_ids: Vec<u32>,
    limits: BatchLimits,
    rows: Vec<Row>,
    cache: Option<KvCache>,
    /// Cleared for good once a present tensor came back shorter than the mask.
    caches_full_length: bool,
    /// Accumulated over the batch's life; `batch_size` is the most rows held at once.
    pub timings: Timings,
}

impl DecodeBatch {
    pub fn new(model: &Gemma4, opts: &GenerateOptions, limits: BatchLimits) -> Self {
        DecodeBatch {
            stop_ids: opts
                .stop_ids
                .clone()
                .unwrap_or_else(|| model.stop_ids.clone()),
            opts: opts.clone(),
            limits: BatchLimits {
                max_rows: limits.max_rows.max(1),
                ..limits
            },
            rows: Vec::new(),
            cache: None,
            caches_full_length: true,
            timings: Timings::default(),
        }
    }

    /// Active sequences.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Ids of the active sequences, in row order.
    pub fn ids(&self) -> impl Iterator<Item = usize> + '_ {
        self.rows.iter().map(|r| r.id)
    }

    /// Mask length of the running batch (0 when empty).
    pub fn cache_len(&self) -> usize {
        self.cache.as_ref().map_or(0, |c| c.past_len)
    }

    /// Whether new sequences with these prompt lengths may join together now: rows within
    /// `max_rows`, and `(rows + k) × (max(T, longest prompt) + max_new_tokens) ≤ max_tokens`
    /// (every row's remaining tokens are at most `max_new_tokens`). An empty batch always takes
    /// one sequence. The bound only falls between admissions (rows leave, T + remaining stays),
    /// so the cache never outgrows it.
    pub fn fits(&self, prompt_lens: &[usize]) -> bool {
        let k = prompt_lens.len();
        if k == 0 {
            return true;
        }
        if self.rows.is_empty() && k == 1 {
            return true;
        }
        if !self.rows.is_empty() && !self.joinable() {
            return false;
        }
        let rows = self.rows.len() + k;
        if rows > self.limits.max_rows {
            return false;
        }
        let longest = prompt_lens.iter().copied().max().unwrap_or(0);
        let t = self.cache_len().max(longest);
        rows.saturating_mul(t + self.opts.max_new_tokens) <= self.limits.max_tokens
    }

    /// New sequences can be stacked with the running cache.
    fn joinable(&self) -> bool {
        self.caches_full_length && self.cache.as_ref().is_none_or(full_length)
    }

    /// Prefills `group` as one left-padded batch, samples each sequence's first token and joins
    /// the rest to the running batch. Check [`DecodeBatch::fits`] first: this does not.
    pub fn admit(
        &mut self,
        model: &mut Gemma4,
        group: &[NewSequence<'_>],
        processor: &mut dyn LogitsProcessor,
    ) -> Result<Admission, BatchFailure> {
        if group.is_empty() {
            return Ok(Admission::Joined(Vec::new()));
        }
        let fail = |error| BatchFailure {
            ids: group.iter().map(|s| s.id).collect(),
            error,
        };
        let requests: Vec<&Request> = group.iter().map(|s| s.request).collect();
        let features = image_features(model, &requests, &mut self.timings).map_err(fail)?;
        let t = Instant::now();
        let (cache, logits) = prefill(model, &requests, &features).map_err(fail)?;
        self.timings.prefill_s += t.elapsed().as_secs_f64();
        self.timings.prompt_tokens += requests.iter().map(|r| r.input_ids.len()).sum::<usize>();
        if !full_length(&cache) {
            self.caches_full_length = false;
            if !self.rows.is_empty() {
                return Ok(Admission::Refused);
            }
        }
        let s = cache.past_len;
        let first = self.rows.len();
        self.rows.extend(group.iter().map(|seq| {
            let len = seq.request.input_ids.len();
            Row {
                id: seq.id,
                pad: s - len,
                last_pos: len as i64 - 1,
                next: 0,
                sampler: Sampler::new(self.opts.sampling, seq.stream),
                out: Generation {
                    generated_ids: Vec::new(),
                    finish_reason: FinishReason::Length,
                    prefill_logits: None,
                },
            }
        }));
        self.join(cache).map_err(|error| {
            self.rows.truncate(first);
            fail(error)
        })?;
        self.timings.batch_size = self.timings.batch_size.max(self.rows.len());
        tracing::debug!(
            "{} sequences joined (prompts up to {s} tokens): {} rows, cache {} columns",
            group.len(),
            self.rows.len(),
            self.cache_len()
        );
        let done = self.sample(model, first, logits, processor);
        if let Err(error) = self.retire(&done) {
            return Err(self.reset(error));
        }
        Ok(Admission::Joined(done))
    }

    /// One decode step for every active sequence; returns those that finished.
    pub fn step(
        &mut self,
        model: &mut Gemma4,
        processor: &mut dyn LogitsProcessor,
    ) -> Result<Vec<FinishedSequence>, BatchFailure> {
        let Some(cache) = self.cache.as_mut() else {
            return Ok(Vec::new());
        };
        let t = Instant::now();
        let n = self.rows.len();
        let total = cache.past_len + 1;
        let next: Vec<i64> = self.rows.iter().map(|r| r.next as i64).collect();
        let mut mask = Vec::with_capacity(n * total);
        for r in &mut self.rows {
            mask.extend((0..total).map(|c| (c >= r.pad) as i64));
            r.last_pos += 1;
        }
        let positions: Vec<i64> = self.rows.iter().map(|r| r.last_pos).collect();
        let logits = step_embeddings(model, next, n)
            .and_then(|(embeds, ple)| model.decoder.step(embeds, ple, 1, mask, positions, cache));
        let logits = match logits {
            Ok(l) => l,
            // The cache went into the failed run: the batch cannot go on.
            Err(error) => return Err(self.reset(error)),
        };
        if !full_length(cache) {
            self.caches_full_length = false;
        }
        let done = self.sample(model, 0, logits, processor);
        if let Err(error) = self.retire(&done) {
            return Err(self.reset(error));
        }
        self.timings.decode_step_s.push(t.elapsed().as_secs_f64());
        Ok(done)
    }

    /// Empties the batch after a failure that left its cache unusable; every sequence in it
    /// (finished ones included) is reported failed.
    fn reset(&mut self, error: Error) -> BatchFailure {
        self.cache = None;
        BatchFailure {
            ids: self.rows.drain(..).map(|r| r.id).collect(),
            error,
        }
    }

    /// Stacks a freshly prefilled cache (rows `self.rows[old..]`) under the running one.
    fn join(&mut self, new: KvCache) -> Result<(), Error> {
        let Some(running) = self.cache.take() else {
            self.cache = Some(new);
            return Ok(());
        };
        let old = running.batch;
        let t = running.past_len.max(new.past_len);
        let (pad_old, pad_new) = (t - running.past_len, t - new.past_len);
        let values = running
            .values
            .iter()
            .zip(&new.values)
            .map(|(a, b)| stack_kv_left_padded(&[(a, pad_old), (b, pad_new)]))
            .collect::<Result<Vec<_>, _>>();
        let values = match values {
            Ok(v) => v,
            Err(e) => {
                self.cache = Some(running);
                return Err(e);
            }
        };
        for (i, r) in self.rows.iter_mut().enumerate() {
            r.pad += if i < old { pad_old } else { pad_new };
        }
        self.cache = Some(KvCache {
            values,
            batch: old + new.batch,
            past_len: t,
        });
        Ok(())
    }

    /// Selects the next token of rows `from..` from their logits (`[rows · vocab]`); returns the
    /// rows that finished (still in `self.rows`, marked by `retire`).
    fn sample(
        &mut self,
        model: &mut Gemma4,
        from: usize,
        mut logits: Vec<f32>,
        processor: &mut dyn LogitsProcessor,
    ) -> Vec<FinishedSequence> {
        let vocab = model.decoder.vocab;
        let mut done = Vec::new();
        for (row, l) in self.rows[from..]
            .iter_mut()
            .zip(logits.chunks_exact_mut(vocab))
        {
            model.cap_logits(l);
            if row.out.generated_ids.is_empty() && self.opts.keep_prefill_logits {
                row.out.prefill_logits = Some(l.to_vec());
            }
            processor.process(row.id, l);
            let tok = row.sampler.select(l);
            row.out.generated_ids.push(tok);
            row.next = tok;
            let stop = processor.on_token(row.id, tok, l);
            let reason = if self.stop_ids.contains(&tok) {
                FinishReason::Stop
            } else if stop {
                FinishReason::Processor
            } else if row.out.generated_ids.len() >= self.opts.max_new_tokens {
                FinishReason::Length
            } else {
                continue;
            };
            row.out.finish_reason = reason;
            done.push(FinishedSequence {
                id: row.id,
                generation: Generation {
                    generated_ids: std::mem::take(&mut row.out.generated_ids),
                    finish_reason: reason,
                    prefill_logits: row.out.prefill_logits.take(),
                },
            });
        }
        done
    }

    /// Drops the rows of `done` from the batch and, when the cache is full length, the leading
    /// columns that are padding in every remaining row.
    fn retire(&mut self, done: &[FinishedSequence]) -> Result<(), Error> {
        if done.is_empty() {
            return Ok(());
        }
        let keep: Vec<usize> = (0..self.rows.len())
            .filter(|&i| !done.iter().any(|f| f.id == self.rows[i].id))
            .collect();
        if keep.is_empty() {
            self.rows.clear();
            self.cache = None;
            return Ok(());
        }
        let cache = self.cache.as_mut().expect("a batch with rows has a cache");
        let lead = keep.iter().map(|&i| self.rows[i].pad).min().unwrap_or(0);
        let trim = if full_length(cache) { lead } else { 0 };
        cache.select(&keep, trim)?;
        let mut rows = std::mem::take(&mut self.rows);
        let mut kept = Vec::with_capacity(keep.len());
        for (i, mut r) in rows.drain(..).enumerate() {
            if keep.contains(&i) {
                r.pad -= trim;
                kept.push(r);
            }
        }
        self.rows = kept;
        Ok(())
    }
}

impl Gemma4 {
    /// Generates for several sequences in one batch: one prefill, then decode steps until all
    /// have finished. `processor` sees every step of every sequence before selection, with the
    /// sequence's index in `requests`.
    pub fn generate(
        &mut self,
        requests: &[Request<'_>],
        opts: &GenerateOptions,
        processor: &mut dyn LogitsProcessor,
    ) -> Result<BatchOutput, Error> {
        let mut batch = DecodeBatch::new(self, opts, BatchLimits::UNBOUNDED);
        let group: Vec<NewSequence> = requests
            .iter()
            .enumerate()
            .map(|(i, request)| NewSequence {
                id: i,
                stream: i,
                request,
            })
            .collect();
        let mut out: Vec<Option<Generation>> = vec![None; requests.len()];
        let mut finished = match batch.admit(self, &group, processor).map_err(|f| f.error)? {
            Admission::Joined(done) => done,
            Admission::Refused => unreachable!("an empty batch takes any group"),
        };
        loop {
            for f in finished.drain(..) {
                out[f.id] = Some(f.generation);
            }
            if batch.is_empty() {
                break;
            }
            finished = batch.step(self, processor).map_err(|f| f.error)?;
        }
        Ok(BatchOutput {
            sequences: out
                .into_iter()
                .map(|g| g.expect("every sequence finishes"))
                .collect(),
            timings: batch.timings,
        })
    }
}

/// Whether every cache tensor's time axis equals the mask length (nothing window-truncated),
/// which makes trimming and padding columns safe.
pub(super) fn full_length(cache: &KvCache) -> bool {
    cache.values.iter().all(|v| {
        v.dtype()
            .tensor_shape()
            .and_then(|s| s.get(2))
            .map(|&d| d as usize)
            == Some(cache.past_len)
    })
}

/// Image features per request: given ones borrowed as they are, the others from one vision run.
fn image_features<'r>(
    model: &mut Gemma4,
    requests: &[&'r Request],
    timings: &mut Timings,
) -> Result<Vec<Cow<'r, [f32]>>, Error> {
    let hidden = model.config.text_config.hidden_size;
    let image_id = model.config.image_token_id;
    let t = Instant::now();
    let pending: Vec<&ProcessedImage> = requests
        .iter()
        .filter(|r| r.image_features.is_none())
        .flat_map(|r| r.images.iter().copied())
        .collect();
    let all = model.encode_images(&pending)?;
    if !pending.is_empty() {
        timings.vision_s += t.elapsed().as_secs_f64();
    }
    let mut offset = 0;
    let mut features = Vec::with_capacity(requests.len());
    for (i, r) in requests.iter().enumerate() {
        let f = match &r.image_features {
            Some(f) => Cow::Borrowed(f.as_slice()),
            None => {
                let n = r.images.iter().map(|i| i.num_soft_tokens).sum::<usize>() * hidden;
                offset += n;
                Cow::Owned(all[offset - n..offset].to_vec())
            }
        };
        let slots = r.input_ids.iter().filter(|&&t| t == image_id).count();
        if slots * hidden != f.len() {
            return Err(Error::Invalid(format!(
                "sequence {i}: {slots} image tokens in the prompt but {} image feature rows",
                f.len() / hidden
            )));
        }
        features.push(f);
    }
    Ok(features)
}

/// Runs `requests` as one left-padded batch from an empty cache: pads are masked out and get
/// position 0 (as HF generate). Returns the cache and the last position's logits per row.
fn prefill(
    model: &mut Gemma4,
    requests: &[&Request],
    features: &[Cow<[f32]>],
) -> Result<(KvCache, Vec<f32>), Error> {
    if requests.iter().any(|r| r.input_ids.is_empty()) {
        return Err(Error::Invalid("empty prompt".into()));
    }
    let hidden = model.config.text_config.hidden_size;
    let image_id = model.config.image_token_id;
    let pad_id = model.pad_id;
    let b = requests.len();
    let s = requests
        .iter()
        .map(|r| r.input_ids.len())
        .max()
        .unwrap_or(0);
    let mm: Vec<u32> = [
        Some(image_id),
        model.config.audio_token_id,
        model.config.video_token_id,
    ]
    .into_iter()
    .flatten()
    .collect();
    let mut ids = vec![pad_id as i64; b * s];
    let mut mask = vec![0i64; b * s];
    let mut positions = vec![0i64; b * s];
    for (r, req) in requests.iter().enumerate() {
        let pad = s - req.input_ids.len();
        for (j, &t) in req.input_ids.iter().enumerate() {
            // Multimodal placeholders are looked up as pad, as HF does (contract §4).
            ids[r * s + pad + j] = if mm.contains(&t) { pad_id } else { t } as i64;
            mask[r * s + pad + j] = 1;
            positions[r * s + pad + j] = j as i64;
        }
    }
    let (mut embeds, ple) = model.embed.run(ids, b, s)?;
    for (r, req) in requests.iter().enumerate() {
        let pad = s - req.input_ids.len();
        let image_rows = req
            .input_ids
            .iter()
            .enumerate()
            .filter(|(_, &t)| t == image_id);
        for ((j, _), f) in image_rows.zip(features[r].chunks_exact(hidden)) {
            let dst = (r * s + pad + j) * hidden;
            embeds[dst..dst + hidden].copy_from_slice(f);
        }
    }
    let (embeds, ple) = model.decoder.host_embeddings(embeds, ple, b, s)?;
    let mut cache = model.decoder.empty_cache(b)?;
    let logits = model
        .decoder
        .step(embeds, ple, s, mask, positions, &mut cache)?;
    Ok((cache, logits))
}

/// The embeddings of a decode step's ids (`[rows, 1]`): left in the decoder's memory when
/// decoding is device-resident and the two graphs' float types agree, else through the host.
fn step_embeddings(
    model: &mut Gemma4,
    ids: Vec<i64>,
    rows: usize,
) -> Result<(DynValue, DynValue), Error> {
    if model.decoder.device_resident && model.decoder.takes_embeddings_of(&model.embed) {
        let memory = model.decoder.kv_memory().clone();
        return model.embed.run_bound(ids, rows, 1, &memory);
    }
    let (embeds, ple) = model.embed.run(ids, rows, 1)?;
    model.decoder.host_embeddings(embeds, ple, rows, 1)
}
