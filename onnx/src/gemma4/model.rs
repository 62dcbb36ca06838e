//! The model as one object (files, sessions, tokenizer, template): loading it, image
//! preprocessing and vision features, prompt ids and display text. The generation loop,
//! [`Gemma4::generate`], is in `decode_batch.rs`; its plain types are in `generation.rs`.

use super::config::{read_json, GenerationConfig, ImageProcessorConfig, ModelConfig};
use super::decoder::Decoder;
use super::embed_tokens::EmbedTokens;
use super::error::Error;
use super::image_processor::{Budget, ImageProcessor, ProcessedImage, Rgb8};
use super::model_dir::{Dtype, DtypeSelection, Graph, ModelDir};
use super::prompt::{Message, PromptBuilder, SpecialTokens, Tokenizer};
use super::sampling::soft_cap;
use super::vision_encoder::VisionEncoder;
use crate::ep::{EpConfig, EpReport};
use crate::session::{LoadedSession, SessionSettings};
use std::path::Path;

/// How to load a model directory.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    pub dtype: DtypeSelection,
    pub eps: EpConfig,
    /// Skip the vision encoder (text-only use).
    pub text_only: bool,
    /// Threads and memory of the sessions.
    pub session: SessionSettings,
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
        let processor = ImageProcessor::from_config(&ip_cfg)?;
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
        let mut vision = None;
        let mut embed = None;
        let mut decoder = None;
        for (g, path) in paths {
            let s = LoadedSession::load(env, &path, &opts.eps, &opts.session)?;
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

    /// Loads one graph of `dir` on the CPU and checks it against the contract, as [`Gemma4::load`]
    /// does, without loading the rest (`quire model list`).
    pub fn check_graph(
        env: &ort::environment::Environment,
        dir: &ModelDir,
        graph: Graph,
        dtype: Dtype,
    ) -> Result<(), Error> {
        let config: ModelConfig = read_json(&dir.file("config.json", "model config")?)?;
        let path = dir.graph(graph, dtype)?;
        let s = LoadedSession::load(
            env,
            &path,
            &EpConfig::default(),
            &SessionSettings::default(),
        )?;
        match graph {
            Graph::VisionEncoder => {
                let processor =
                    ImageProcessor::from_config(&ImageProcessorConfig::load(&dir.root)?)?;
                VisionEncoder::new(s, &config, processor.patch_dim()).map(drop)
            }
            Graph::EmbedTokens => EmbedTokens::new(s, &config).map(drop),
            Graph::Decoder => Decoder::new(s, &config).map(drop),
        }
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

    /// Final logit soft-capping, here when the graph's logits show it does not cap itself.
    pub(super) fn cap_logits(&mut self, logits: &mut [f32]) {
        let Some(cap) = self
            .config
            .text_config
            .final_logit_softcapping
            .filter(|c| *c > 0.0)
        else {
            return;
        };
        if !self.softcap_in_rust && logits.iter().any(|v| v.abs() > cap * (1.0 + 1e-4)) {
            tracing::info!(
                "logits exceed the soft-cap {cap}: the graph does not cap, applying it here"
            );
            self.softcap_in_rust = true;
        }
        if self.softcap_in_rust {
            soft_cap(logits, cap);
        }
    }
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
