//! `decoder_model_merged*.onnx`: one step of the language model with its KV cache. The cache is
//! carried by name (`present.X` → `past_key_values.X`) and otherwise treated as opaque.

use super::config::ModelConfig;
use super::error::{ort_err, Error};
use super::tensors::{float_tensor, i64_tensor, select_kv, to_f32};
use crate::session::{LoadedSession, FLOATS};
use ort::session::SessionInputValue;
use ort::value::{DynValue, Tensor, TensorElementType};
use std::borrow::Cow;

/// One cache tensor: its input and output names and static dims.
#[derive(Debug, Clone)]
pub struct KvSlot {
    pub past: String,
    pub present: String,
    pub heads: usize,
    pub head_dim: usize,
}

pub struct Decoder {
    pub session: LoadedSession,
    pub slots: Vec<KvSlot>,
    pub kv_ty: TensorElementType,
    embeds_ty: TensorElementType,
    ple_ty: TensorElementType,
    /// `num_logits_to_keep` is declared by the graph.
    pub has_logits_to_keep: bool,
    has_cache_branch: bool,
    pub vocab: usize,
    hidden: usize,
    /// `(num_hidden_layers, hidden_size_per_layer_input)`.
    ple_shape: (usize, usize),
}

/// The KV cache of a batch: one value per slot, `[B, heads, past_len, head_dim]`.
pub struct KvCache {
    pub values: Vec<DynValue>,
    pub batch: usize,
    pub past_len: usize,
}

impl KvCache {
    /// Keeps batch rows `rows` (in that order) and drops the first `trim` time steps, which
    /// must be padding in every kept row. Presents that are not `[B, h, T, d]` with T equal
    /// to the mask length are left untrimmed by the caller.
    pub fn select(&mut self, rows: &[usize], trim: usize) -> Result<(), Error> {
        for v in &mut self.values {
            *v = select_kv(v, rows, trim)?;
        }
        self.batch = rows.len();
        self.past_len -= trim;
        Ok(())
    }
}

impl Decoder {
    /// Checks the graph against contract §9.3.
    pub fn new(session: LoadedSession, cfg: &ModelConfig) -> Result<Self, Error> {
        let t = &cfg.text_config;
        let g = session.graph.clone();
        let e = session.require_input("inputs_embeds")?;
        let p = session.require_input("per_layer_inputs")?;
        super::embed_tokens::check_embeddings(&session, e, p, t)?;
        for name in ["attention_mask", "position_ids"] {
            let i = session.require_input(name)?;
            session.check(i, &[TensorElementType::Int64], 2)?;
        }
        let logits = session.require_output("logits")?;
        session.check(logits, &FLOATS, 3)?;
        session.check_dim(logits, 2, t.vocab_size, "text_config.vocab_size")?;

        let mut slots = Vec::new();
        let mut kv_ty = None;
        for layer in t.kv_layers() {
            let (heads, head_dim) = t.kv_shape(layer);
            let kind = if t.is_full_attention(layer) {
                "full_attention: global_head_dim"
            } else {
                "sliding_attention: head_dim"
            };
            for part in ["key", "value"] {
                let past = format!("past_key_values.{layer}.{part}");
                let present = format!("present.{layer}.{part}");
                let i = session.require_input(&past)?;
                session.check(i, &FLOATS, 4)?;
                session.check_dim(i, 1, heads, "KV heads")?;
                session.check_dim(
                    i,
                    3,
                    head_dim,
                    &format!("KV head dim of layer {layer}, {kind}"),
                )?;
                let o = session.require_output(&present)?;
                session.check(o, &[i.ty], 4)?;
                session.check_dim(
                    o,
                    3,
                    head_dim,
                    &format!("KV head dim of layer {layer}, {kind}"),
                )?;
                match kv_ty {
                    None => kv_ty = Some(i.ty),
                    Some(ty) if ty != i.ty => {
                        return Err(Error::contract(
                            &g,
                            format!("`{past}` is {:?} but other KV inputs are {ty:?}", i.ty),
                        ))
                    }
                    _ => {}
                }
                slots.push(KvSlot {
                    past,
                    present,
                    heads,
                    head_dim,
                });
            }
        }
        let known = |n: &str| {
            matches!(
                n,
                "inputs_embeds"
                    | "per_layer_inputs"
                    | "attention_mask"
                    | "position_ids"
                    | "num_logits_to_keep"
                    | "use_cache_branch"
            ) || slots.iter().any(|s| s.past == n)
        };
        if let Some(extra) = session.inputs.iter().find(|i| !known(&i.name)) {
            let hint = if extra.name.starts_with("past_key_values.") {
                format!(
                    " (config.json expects caches for layers {:?}: num_hidden_layers - num_kv_shared_layers)",
                    t.kv_layers()
                )
            } else {
                String::new()
            };
            return Err(Error::contract(
                &g,
                format!("unexpected input `{}`{hint}", extra.name),
            ));
        }
        let has_logits_to_keep = match session.input("num_logits_to_keep") {
            Some(i) => {
                if i.ty != TensorElementType::Int64 {
                    return Err(Error::contract(&g, "`num_logits_to_keep` must be int64"));
                }
                true
            }
            None => false,
        };
        let has_cache_branch = session.input("use_cache_branch").is_some();
        Ok(Decoder {
            embeds_ty: e.ty,
            ple_ty: p.ty,
            kv_ty: kv_ty.unwrap_or(TensorElementType::Float32),
            slots,
            has_logits_to_keep,
            has_cache_branch,
            vocab: t.vocab_size,
            hidden: t.hidden_size,
            ple_shape: (t.num_hidden_layers, t.hidden_size_per_layer_input),
            session,
        })
    }

    /// Zero-length caches for prefill: `[batch, heads, 0, head_dim]`.
    pub fn empty_cache(&self, batch: usize) -> Result<KvCache, Error> {
        let values = self
            .slots
            .iter()
            .map(|s| float_tensor(self.kv_ty, vec![batch, s.heads, 0, s.head_dim], Vec::new()))
            .collect::<Result<_, _>>()?;
        Ok(KvCache {
            values,
            batch,
            past_len: 0,
        })
    }

    /// Runs one step over `seq` new positions per row and returns the last position's logits
    /// per row (`[batch · vocab]`). `mask` is `[batch, past_len + seq]`.
    #[allow(clippy::too_many_arguments)]
    pub fn step(
        &mut self,
        embeds: Vec<f32>,
        ple: Vec<f32>,
        seq: usize,
        mask: Vec<i64>,
        positions: Vec<i64>,
        cache: &mut KvCache,
    ) -> Result<Vec<f32>, Error> {
        let b = cache.batch;
        let total = cache.past_len + seq;
        debug_assert_eq!(embeds.len(), b * seq * self.hidden);
        debug_assert_eq!(mask.len(), b * total);
        let mut inputs: Vec<(Cow<'static, str>, SessionInputValue<'static>)> = vec![
            (
                "inputs_embeds".into(),
                float_tensor(self.embeds_ty, vec![b, seq, self.hidden], embeds)?.into(),
            ),
            (
                "per_layer_inputs".into(),
                float_tensor(
                    self.ple_ty,
                    vec![b, seq, self.ple_shape.0, self.ple_shape.1],
                    ple,
                )?
                .into(),
            ),
            (
                "attention_mask".into(),
                i64_tensor(vec![b, total], mask)?.into(),
            ),
            (
                "position_ids".into(),
                i64_tensor(vec![b, seq], positions)?.into(),
            ),
        ];
        if self.has_logits_to_keep {
            let keep = Tensor::from_array((Vec::<i64>::new(), vec![1i64]))
                .map_err(ort_err("num_logits_to_keep"))?;
            inputs.push(("num_logits_to_keep".into(), keep.into_dyn().into()));
        }
        if self.has_cache_branch {
            let v = Tensor::from_array((vec![1i64], vec![cache.past_len > 0]))
                .map_err(ort_err("use_cache_branch"))?;
            inputs.push(("use_cache_branch".into(), v.into_dyn().into()));
        }
        let past = std::mem::take(&mut cache.values);
        for (slot, v) in self.slots.iter().zip(past) {
            inputs.push((Cow::Owned(slot.past.clone()), v.into()));
        }
        let graph = self.session.graph.clone();
        let outputs = self
            .session
            .session
            .run(inputs)
            .map_err(ort_err(format!("{graph}: run")))?;
        let mut logits = None;
        let mut presents: Vec<Option<DynValue>> = (0..self.slots.len()).map(|_| None).collect();
        for (name, value) in outputs {
            if name == "logits" {
                logits = Some(value);
            } else if let Some(i) = self.slots.iter().position(|s| s.present == name) {
                presents[i] = Some(value);
            }
        }
        for (slot, p) in self.slots.iter().zip(&presents) {
            if p.is_none() {
                return Err(Error::contract(
                    &graph,
                    format!("run returned no `{}`", slot.present),
                ));
            }
        }
        cache.values = presents.into_iter().map(|p| p.expect("checked")).collect();
        cache.past_len = total;
        let (shape, data) = to_f32(&logits.expect("logits is a declared output"), "logits")?;
        // [B, kept, V]: take the last kept position of each row.
        let (kept, v) = (shape[1], shape[2]);
        let mut last = Vec::with_capacity(b * v);
        for r in 0..b {
            let off = (r * kept + kept - 1) * v;
            last.extend_from_slice(&data[off..off + v]);
        }
        Ok(last)
    }
}
