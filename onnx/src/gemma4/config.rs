//! The model directory's JSON files: `config.json`, `generation_config.json` and
//! `processor_config.json`. Only the fields the runtime needs; everything else is ignored.

use super::error::Error;
use serde::Deserialize;
use std::path::Path;

/// `config.json` (`Gemma4Config`).
#[derive(Debug, Clone, Deserialize)]
pub struct ModelConfig {
    pub text_config: TextConfig,
    #[serde(default)]
    pub vision_config: Option<VisionConfig>,
    pub image_token_id: u32,
    pub boi_token_id: u32,
    pub eoi_token_id: u32,
    #[serde(default)]
    pub audio_token_id: Option<u32>,
    #[serde(default)]
    pub video_token_id: Option<u32>,
    #[serde(default)]
    pub eos_token_id: Option<TokenIds>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TextConfig {
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_key_value_heads: usize,
    #[serde(default)]
    pub num_global_key_value_heads: Option<usize>,
    pub head_dim: usize,
    #[serde(default)]
    pub global_head_dim: Option<usize>,
    pub layer_types: Vec<String>,
    #[serde(default)]
    pub num_kv_shared_layers: usize,
    #[serde(default)]
    pub hidden_size_per_layer_input: usize,
    #[serde(default)]
    pub final_logit_softcapping: Option<f32>,
    #[serde(default)]
    pub sliding_window: Option<usize>,
    pub vocab_size: usize,
    #[serde(default)]
    pub pad_token_id: Option<u32>,
    #[serde(default)]
    pub max_position_embeddings: Option<usize>,
    /// Per-layer overrides by layer index (newer transformers write `{"2": {"head_dim": 32}}`
    /// here instead of `global_head_dim`, with the index zero-padded to the width of the
    /// largest: `"04"` in a 35-layer model).
    #[serde(default, deserialize_with = "layer_keyed")]
    pub per_layer_config: std::collections::BTreeMap<usize, PerLayerConfig>,
}

fn layer_keyed<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<std::collections::BTreeMap<usize, PerLayerConfig>, D::Error> {
    let by_name = std::collections::BTreeMap::<String, PerLayerConfig>::deserialize(d)?;
    by_name
        .into_iter()
        .map(|(key, layer)| match key.parse::<usize>() {
            Ok(index) => Ok((index, layer)),
            Err(_) => Err(serde::de::Error::custom(format!(
                "per_layer_config: {key:?} is not a layer index"
            ))),
        })
        .collect()
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct PerLayerConfig {
    #[serde(default)]
    pub head_dim: Option<usize>,
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
}

impl TextConfig {
    /// Layers that own a KV cache (`past_key_values.{i}.*`): the first
    /// `num_hidden_layers - num_kv_shared_layers`; the others reuse them inside the graph.
    pub fn kv_layers(&self) -> std::ops::Range<usize> {
        0..self
            .num_hidden_layers
            .saturating_sub(self.num_kv_shared_layers)
    }

    pub fn is_full_attention(&self, layer: usize) -> bool {
        self.layer_types.get(layer).map(String::as_str) == Some("full_attention")
    }

    /// `(kv_heads, head_dim)` the cache of `layer` must have.
    pub fn kv_shape(&self, layer: usize) -> (usize, usize) {
        let (heads, dim) = self.kv_shape_by_type(layer);
        match self.per_layer_config.get(&layer) {
            Some(o) => (
                o.num_key_value_heads.unwrap_or(heads),
                o.head_dim.unwrap_or(dim),
            ),
            None => (heads, dim),
        }
    }

    fn kv_shape_by_type(&self, layer: usize) -> (usize, usize) {
        if self.is_full_attention(layer) {
            (
                self.num_global_key_value_heads
                    .unwrap_or(self.num_key_value_heads),
                self.global_head_dim.unwrap_or(self.head_dim),
            )
        } else {
            (self.num_key_value_heads, self.head_dim)
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct VisionConfig {
    #[serde(default)]
    pub patch_size: Option<u32>,
    #[serde(default)]
    pub pooling_kernel_size: Option<u32>,
}

/// A token id or a list of them (`eos_token_id` is either in the HF files).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum TokenIds {
    One(u32),
    Many(Vec<u32>),
}

impl TokenIds {
    pub fn to_vec(&self) -> Vec<u32> {
        match self {
            TokenIds::One(id) => vec![*id],
            TokenIds::Many(ids) => ids.clone(),
        }
    }
}

/// `generation_config.json`: stop ids and sampling defaults.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct GenerationConfig {
    #[serde(default)]
    pub eos_token_id: Option<TokenIds>,
    #[serde(default)]
    pub pad_token_id: Option<u32>,
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    #[serde(default)]
    pub do_sample: Option<bool>,
    #[serde(default)]
    pub temperature: Option<f32>,
    #[serde(default)]
    pub top_k: Option<usize>,
    #[serde(default)]
    pub top_p: Option<f32>,
}

/// `processor_config.json` → `image_processor` (or a flat `preprocessor_config.json`).
#[derive(Debug, Clone, Deserialize)]
pub struct ImageProcessorConfig {
    #[serde(default = "default_patch")]
    pub patch_size: u32,
    #[serde(default = "default_pool")]
    pub pooling_kernel_size: u32,
    #[serde(default = "default_budget")]
    pub max_soft_tokens: u32,
    #[serde(default = "default_true")]
    pub do_rescale: bool,
    #[serde(default = "default_rescale")]
    pub rescale_factor: f64,
    #[serde(default)]
    pub do_normalize: bool,
    #[serde(default)]
    pub image_mean: Option<Vec<f32>>,
    #[serde(default)]
    pub image_std: Option<Vec<f32>>,
    #[serde(default)]
    pub resample: Option<u32>,
}

fn default_patch() -> u32 {
    16
}
fn default_pool() -> u32 {
    3
}
fn default_budget() -> u32 {
    280
}
fn default_true() -> bool {
    true
}
fn default_rescale() -> f64 {
    1.0 / 255.0
}

pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    serde_json::from_str(&text).map_err(|e| Error::Json {
        path: path.to_path_buf(),
        source: e,
    })
}

impl ImageProcessorConfig {
    /// Reads `processor_config.json["image_processor"]`, else a flat `preprocessor_config.json`
    /// that carries `patch_size` (older exports).
    pub fn load(dir: &Path) -> Result<Self, Error> {
        let proc = dir.join("processor_config.json");
        if proc.exists() {
            let v: serde_json::Value = read_json(&proc)?;
            if let Some(ip) = v.get("image_processor") {
                return serde_json::from_value(ip.clone()).map_err(|e| Error::Json {
                    path: proc,
                    source: e,
                });
            }
        }
        let pre = dir.join("preprocessor_config.json");
        if pre.exists() {
            let v: serde_json::Value = read_json(&pre)?;
            if v.get("patch_size").is_some() {
                return serde_json::from_value(v).map_err(|e| Error::Json {
                    path: pre,
                    source: e,
                });
            }
        }
        Err(Error::MissingFile {
            path: proc,
            why: "needed for the image processor (image_processor block)",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text_config(per_layer: serde_json::Value) -> Result<TextConfig, serde_json::Error> {
        serde_json::from_value(serde_json::json!({
            "hidden_size": 1536, "num_hidden_layers": 12, "num_key_value_heads": 1, "head_dim": 256,
            "layer_types": ["sliding_attention", "sliding_attention", "sliding_attention",
                            "sliding_attention", "full_attention", "sliding_attention",
                            "sliding_attention", "sliding_attention", "sliding_attention",
                            "full_attention", "sliding_attention", "sliding_attention"],
            "vocab_size": 262144, "per_layer_config": per_layer,
        }))
    }

    #[test]
    fn per_layer_keys_are_layer_indices_padded_or_not() {
        // transformers 5.24 pads the keys of a model with 10 or more layers: "04", "09"
        let padded =
            text_config(serde_json::json!({"04": {"head_dim": 512}, "09": {"head_dim": 512}}))
                .unwrap();
        let plain =
            text_config(serde_json::json!({"4": {"head_dim": 512}, "9": {"head_dim": 512}}))
                .unwrap();
        for config in [&padded, &plain] {
            assert_eq!(config.kv_shape(4), (1, 512));
            assert_eq!(config.kv_shape(9), (1, 512));
            assert_eq!(config.kv_shape(3), (1, 256));
        }
        let bad = text_config(serde_json::json!({"four": {"head_dim": 512}})).unwrap_err();
        assert!(
            bad.to_string().contains("\"four\" is not a layer index"),
            "{bad}"
        );
    }
}
