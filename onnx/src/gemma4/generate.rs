//! The model as one object (files, sessions, tokenizer, template) and the generation loop:
//! vision once at prefill, left-padded batches, KV cache carried between steps, finished
//! sequences dropped from the batch.

use super::config::{read_json, GenerationConfig, ImageProcessorConfig, ModelConfig};
use super::decoder::{Decoder, KvCache};
use super::embed_tokens::EmbedTokens;
use super::error::Error;
use super::image_processor::{Budget, ImageProcessor, ProcessedImage, Rgb8};
use super::model_dir::{DtypeSelection, Graph, ModelDir};
use super::prompt::{Message, PromptBuilder, SpecialTokens, Tokenizer};
use super::sampling::{soft_cap, LogitsProcessor, Sampler, Sampling};
use super::vision_encoder::VisionEncoder;
use crate::ep::{EpConfig, EpReport};
use crate::session::LoadedSession;
use serde::Serialize;
use std::path::Path;
use std::time::Instant;

/// How to load a model directory.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    pub dtype: DtypeSelection,
    pub eps: EpConfig,
    /// Skip the vision encoder (text-only use).
    pub text_only: bool,
}

/// A loaded Gemma 4 model directory.
pub struct Gemma4 {
    pub dir: ModelDir,
    pub config: ModelConfig,
    pub generation: GenerationConfig,
    pub processor: ImageProcessor,
    pub tokenizer: Tokenizer,
    pub prompt: PromptBuilder,
    pub vision: Option<VisionEncoder>,
    pub embed: EmbedTokens,
    pub decoder: Decoder,
    /// Stop ids from `generation_config.json` (else `config.json`).
    pub stop_ids: Vec<u32>,
    pub pad_id: u32,
    /// `(<|channel>, <channel|>)` ids when the tokenizer has them: thought spans are hidden.
    pub channel_ids: Option<(u32, u32)>,
    /// Set once logits above the soft-cap were seen: the graph does not cap, quire does.
    softcap_in_rust: bool,
}

/// One sequence to generate: its prompt ids and the images its image tokens stand for.
#[derive(Debug, Clone, Default)]
pub struct Request<'a> {
    pub input_ids: Vec<u32>,
    pub images: Vec<&'a ProcessedImage>,
    /// Features already computed with [`Gemma4::encode_images`] (`[Σ soft tokens · hidden]`);
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

impl Gemma4 {
    /// Reads the directory's files, creates the three sessions and checks them against the
    /// contract; any mismatch is an error naming the graph and the input/output.
    pub fn load(
        env: &ort::environment::Environment,
        dir: impl AsRef<Path>,
        opts: &LoadOptions,
    ) -> Result<Self, Error> {
        let dir = ModelDir::new(dir.as_ref())?;
        let config: ModelConfig = read_json(&dir.file("config.json", "model config")?)?;
        let generation: GenerationConfig = match dir.file("generation_config.json", "stop ids") {
            Ok(p) => read_json(&p)?,
            Err(_) => GenerationConfig::default(),
        };
        let ip_cfg = ImageProcessorConfig::load(&dir.root)?;
        let processor = ImageProcessor::from_config(&ip_cfg).map_err(Error::Config)?;
        let tokenizer = Tokenizer::from_file(&dir.file("tokenizer.json", "tokenizer")?)?;
        let special = special_tokens(&dir, &config, &generation, &tokenizer)?;
        let prompt =
            PromptBuilder::from_file(&dir.file("chat_template.jinja", "chat template")?, special)?;

        let t = &config.text_config;
        if t.layer_types.len() != t.num_hidden_layers {
            return Err(Error::Config(format!(
                "text_config.layer_types has {} entries for {} layers",
                t.layer_types.len(),
                t.num_hidden_layers
            )));
        }
        // Resolve all paths first so a missing graph is reported before any slow load.
        let paths: Vec<_> = Graph::ALL
            .into_iter()
            .filter(|g| !(opts.text_only && *g == Graph::VisionEncoder))
            .map(|g| dir.graph(g, opts.dtype.get(g)).map(|p| (g, p)))
            .collect::<Result<_, _>>()?;
        opts.eps.check_compiled()?;
        let mut vision = None;
        let mut embed = None;
        let mut decoder = None;
        for (g, path) in paths {
            let s = LoadedSession::load(env, &path, &opts.eps)?;
            match g {
                Graph::VisionEncoder => {
                    vision = Some(VisionEncoder::new(s, &config, processor.patch_dim())?)
                }
                Graph::EmbedTokens => embed = Some(EmbedTokens::new(s, &config)?),
                Graph::Decoder => decoder = Some(Decoder::new(s, &config)?),
            }
        }
        let embed = embed.expect("embed_tokens loaded");
        let decoder = decoder.expect("decoder loaded");
        if embed.out_ty != decoder.session.require_input("inputs_embeds")?.ty {
            tracing::info!("embed_tokens and decoder float types differ; converting between them");
        }

        let stop_ids = generation
            .eos_token_id
            .as_ref()
            .or(config.eos_token_id.as_ref())
            .map(|e| e.to_vec())
            .unwrap_or_default();
        if stop_ids.is_empty() {
            tracing::warn!("no eos_token_id in generation_config.json or config.json: generation stops only at max_new_tokens");
        }
        let pad_id = generation.pad_token_id.or(t.pad_token_id).unwrap_or(0);
        let channel_ids = match (
            tokenizer.token_id("<|channel>"),
            tokenizer.token_id("<channel|>"),
        ) {
            (Some(a), Some(b)) => Some((a, b)),
            _ => None,
        };
        Ok(Gemma4 {
            dir,
            config,
            generation,
            processor,
            tokenizer,
            prompt,
            vision,
            embed,
            decoder,
            stop_ids,
            pad_id,
            channel_ids,
            softcap_in_rust: false,
        })
    }

    /// The execution providers each session got, by graph file.
    pub fn providers(&self) -> Vec<(String, EpReport)> {
        let mut out = Vec::new();
        if let Some(v) = &self.vision {
            out.push((v.session.graph.clone(), v.session.providers.clone()));
        }
        out.push((
            self.embed.session.graph.clone(),
            self.embed.session.providers.clone(),
        ));
        out.push((
            self.decoder.session.graph.clone(),
            self.decoder.session.providers.clone(),
        ));
        out
    }

    /// Whether soft-capping is done here because the graph's logits exceeded the cap.
    pub fn softcap_in_rust(&self) -> bool {
        self.softcap_in_rust
    }

    /// Budget `None` uses `max_soft_tokens` of `processor_config.json`.
    pub fn preprocess(
        &self,
        image: &Rgb8,
        budget: Option<Budget>,
    ) -> Result<ProcessedImage, Error> {
        let budget = budget.unwrap_or(self.processor.default_budget);
        self.processor
            .preprocess(image, budget)
            .map_err(|e| Error::Image(e.to_string()))
    }

    /// Vision features of `images` in order, `[Σ soft tokens · hidden]`.
    pub fn encode_images(&mut self, images: &[&ProcessedImage]) -> Result<Vec<f32>, Error> {
        if images.is_empty() {
            return Ok(Vec::new());
        }
        let v = self.vision.as_mut().ok_or_else(|| {
            Error::Invalid("the model was loaded without its vision encoder".into())
        })?;
        v.encode(images)
    }

    /// Prompt ids for `messages` whose image parts stand for `images` in order: the chat
    /// template, placeholder expansion, tokenization without added special tokens.
    pub fn prompt_ids(
        &self,
        messages: &[Message],
        images: &[&ProcessedImage],
        enable_thinking: bool,
    ) -> Result<Vec<u32>, Error> {
        let text = self.prompt.render(messages, true, enable_thinking)?;
        let counts: Vec<usize> = images.iter().map(|i| i.num_soft_tokens).collect();
        let text = self.prompt.expand_images(&text, &counts)?;
        self.tokenizer.encode(&text)
    }

    /// Display text of generated ids: stop ids and thought-channel spans removed, special
    /// tokens skipped.
    pub fn decode_text(&self, ids: &[u32]) -> Result<String, Error> {
        let mut kept = Vec::with_capacity(ids.len());
        let mut in_channel = false;
        for &id in ids {
            match self.channel_ids {
                Some((open, _)) if id == open => in_channel = true,
                Some((_, close)) if id == close => in_channel = false,
                _ if in_channel || self.stop_ids.contains(&id) => {}
                _ => kept.push(id),
            }
        }
        self.tokenizer.decode(&kept, true)
    }

    /// Generates for several sequences in one batch. `processor` sees every step of every
    /// sequence before selection.
    pub fn generate(
        &mut self,
        requests: &[Request<'_>],
        opts: &GenerateOptions,
        processor: &mut dyn LogitsProcessor,
    ) -> Result<BatchOutput, Error> {
        let b = requests.len();
        let mut timings = Timings {
            batch_size: b,
            ..Default::default()
        };
        if b == 0 {
            return Ok(BatchOutput {
                sequences: Vec::new(),
                timings,
            });
        }
        let hidden = self.config.text_config.hidden_size;
        let image_id = self.config.image_token_id;
        let stop_ids = opts
            .stop_ids
            .clone()
            .unwrap_or_else(|| self.stop_ids.clone());

        // Vision: one run over every image of every request that has no features yet.
        let t0 = Instant::now();
        let pending: Vec<&ProcessedImage> = requests
            .iter()
            .filter(|r| r.image_features.is_none())
            .flat_map(|r| r.images.iter().copied())
            .collect();
        let all = self.encode_images(&pending)?;
        timings.vision_s = if pending.is_empty() {
            0.0
        } else {
            t0.elapsed().as_secs_f64()
        };
        let mut offset = 0;
        let mut features: Vec<Vec<f32>> = Vec::with_capacity(b);
        for r in requests {
            match &r.image_features {
                Some(f) => features.push(f.clone()),
                None => {
                    let n: usize =
                        r.images.iter().map(|i| i.num_soft_tokens).sum::<usize>() * hidden;
                    features.push(all[offset..offset + n].to_vec());
                    offset += n;
                }
            }
        }
        for (i, (r, f)) in requests.iter().zip(&features).enumerate() {
            let slots = r.input_ids.iter().filter(|&&t| t == image_id).count();
            if slots * hidden != f.len() {
                return Err(Error::Invalid(format!(
                    "sequence {i}: {slots} image tokens in the prompt but {} image feature rows",
                    f.len() / hidden
                )));
            }
        }

        // Prefill, left-padded: pads are masked out and get position 0 (as HF generate).
        let t1 = Instant::now();
        let s = requests
            .iter()
            .map(|r| r.input_ids.len())
            .max()
            .unwrap_or(0);
        if s == 0 {
            return Err(Error::Invalid("empty prompt".into()));
        }
        timings.prompt_tokens = requests.iter().map(|r| r.input_ids.len()).sum();
        let mm: Vec<u32> = [
            Some(image_id),
            self.config.audio_token_id,
            self.config.video_token_id,
        ]
        .into_iter()
        .flatten()
        .collect();
        let mut ids = vec![self.pad_id as i64; b * s];
        let mut mask = vec![0i64; b * s];
        let mut positions = vec![0i64; b * s];
        let mut last_pos = vec![0i64; b];
        for (r, req) in requests.iter().enumerate() {
            let pad = s - req.input_ids.len();
            for (j, &t) in req.input_ids.iter().enumerate() {
                // Multimodal placeholders are looked up as pad, as HF does (contract §4).
                ids[r * s + pad + j] = if mm.contains(&t) { self.pad_id } else { t } as i64;
                mask[r * s + pad + j] = 1;
                positions[r * s + pad + j] = j as i64;
            }
            last_pos[r] = req.input_ids.len() as i64 - 1;
        }
        let (mut embeds, ple) = self.embed.run(ids, b, s)?;
        for (r, req) in requests.iter().enumerate() {
            let pad = s - req.input_ids.len();
            let mut k = 0;
            for (j, &t) in req.input_ids.iter().enumerate() {
                if t == image_id {
                    let dst = (r * s + pad + j) * hidden;
                    embeds[dst..dst + hidden]
                        .copy_from_slice(&features[r][k * hidden..(k + 1) * hidden]);
                    k += 1;
                }
            }
        }
        let mut cache = self.decoder.empty_cache(b)?;
        let mut logits = self
            .decoder
            .step(embeds, ple, s, mask.clone(), positions, &mut cache)?;
        timings.prefill_s = t1.elapsed().as_secs_f64();

        // Per active row: request index and its attention mask.
        let mut active: Vec<usize> = (0..b).collect();
        let mut masks: Vec<Vec<i64>> = mask.chunks(s).map(|c| c.to_vec()).collect();
        let mut samplers: Vec<Sampler> = (0..b).map(|i| Sampler::new(opts.sampling, i)).collect();
        let mut out: Vec<Generation> = (0..b)
            .map(|_| Generation {
                generated_ids: Vec::new(),
                finish_reason: FinishReason::Length,
                prefill_logits: None,
            })
            .collect();
        let vocab = self.decoder.vocab;
        let cap = self
            .config
            .text_config
            .final_logit_softcapping
            .filter(|c| *c > 0.0);
        let mut first = true;
        loop {
            let mut next = Vec::with_capacity(active.len());
            let mut keep = Vec::with_capacity(active.len());
            for (row, &seq) in active.iter().enumerate() {
                let l = &mut logits[row * vocab..(row + 1) * vocab];
                if let Some(cap) = cap {
                    if !self.softcap_in_rust && l.iter().any(|v| v.abs() > cap * (1.0 + 1e-4)) {
                        tracing::info!("logits exceed the soft-cap {cap}: the graph does not cap, applying it here");
                        self.softcap_in_rust = true;
                    }
                    if self.softcap_in_rust {
                        soft_cap(l, cap);
                    }
                }
                if first && opts.keep_prefill_logits {
                    out[seq].prefill_logits = Some(l.to_vec());
                }
                processor.process(seq, l);
                let tok = samplers[seq].select(l);
                out[seq].generated_ids.push(tok);
                let stop = processor.on_token(seq, tok);
                if stop_ids.contains(&tok) {
                    out[seq].finish_reason = FinishReason::Stop;
                } else if stop {
                    out[seq].finish_reason = FinishReason::Processor;
                } else if out[seq].generated_ids.len() >= opts.max_new_tokens {
                    out[seq].finish_reason = FinishReason::Length;
                } else {
                    keep.push(row);
                    next.push(tok as i64);
                    continue;
                }
            }
            first = false;
            if keep.is_empty() {
                break;
            }
            let t2 = Instant::now();
            if keep.len() != active.len() {
                // Finished rows leave the batch; leading columns that are padding in every
                // remaining row go too, when the cache is as long as the mask.
                let kept_masks: Vec<Vec<i64>> = keep.iter().map(|&r| masks[r].clone()).collect();
                let lead = kept_masks
                    .iter()
                    .map(|m| m.iter().take_while(|&&v| v == 0).count())
                    .min()
                    .unwrap_or(0);
                let trim = if cache_len_matches(&cache, masks[0].len()) {
                    lead
                } else {
                    0
                };
                cache.select(&keep, trim)?;
                masks = kept_masks.into_iter().map(|m| m[trim..].to_vec()).collect();
                active = keep.iter().map(|&r| active[r]).collect();
                last_pos = keep.iter().map(|&r| last_pos[r]).collect();
            }
            let n = active.len();
            for m in &mut masks {
                m.push(1);
            }
            for p in &mut last_pos {
                *p += 1;
            }
            let (embeds, ple) = self.embed.run(next, n, 1)?;
            let flat_mask: Vec<i64> = masks.iter().flatten().copied().collect();
            logits = self
                .decoder
                .step(embeds, ple, 1, flat_mask, last_pos.clone(), &mut cache)?;
            timings.decode_step_s.push(t2.elapsed().as_secs_f64());
        }
        Ok(BatchOutput {
            sequences: out,
            timings,
        })
    }
}

/// Whether every cache tensor's time axis equals the mask length (i.e. nothing was
/// window-truncated), which makes trimming columns safe.
fn cache_len_matches(cache: &KvCache, mask_len: usize) -> bool {
    cache.past_len == mask_len
        && cache.values.iter().all(|v| {
            v.dtype()
                .tensor_shape()
                .and_then(|s| s.get(2))
                .map(|&d| d as usize)
                == Some(mask_len)
        })
}

fn special_tokens(
    dir: &ModelDir,
    config: &ModelConfig,
    generation: &GenerationConfig,
    tok: &Tokenizer,
) -> Result<SpecialTokens, Error> {
    // bos: tokenizer_config.json's bos_token, else the id from generation_config.json.
    let mut bos = None;
    if let Ok(p) = dir.file("tokenizer_config.json", "tokenizer settings") {
        let v: serde_json::Value = read_json(&p)?;
        bos = match v.get("bos_token") {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(o) => o
                .get("content")
                .and_then(|c| c.as_str())
                .map(str::to_string),
            None => None,
        };
    }
    let bos = match (bos, generation.bos_token_id) {
        (Some(b), _) => b,
        (None, Some(id)) => tok.token(id, "bos_token_id")?,
        (None, None) => {
            return Err(Error::Config(
                "no bos token: neither tokenizer_config.json bos_token nor generation_config.json bos_token_id".into(),
            ))
        }
    };
    let eos = generation
        .eos_token_id
        .as_ref()
        .and_then(|e| e.to_vec().first().copied())
        .and_then(|id| tok.token(id, "eos_token_id").ok());
    Ok(SpecialTokens {
        bos,
        eos,
        image: tok.token(config.image_token_id, "image_token_id")?,
        boi: tok.token(config.boi_token_id, "boi_token_id")?,
        eoi: tok.token(config.eoi_token_id, "eoi_token_id")?,
    })
}
