//! `decoder_model_merged*.onnx`: one step of the language model with its KV cache. The cache is
//! carried by name (`present.X` → `past_key_values.X`) and otherwise treated as opaque.
//!
//! Device-resident decoding (the default, [`Decoder::device_resident`]): each step runs through
//! an ONNX Runtime IoBinding whose `present.*` outputs are bound to the memory of the session's
//! provider (GPU memory for CUDA/TensorRT/DirectML, host memory otherwise) and fed back as the
//! next step's `past_key_values.*` as they are, so the cache never crosses to the host between
//! steps. A decode step's embeddings come from `embed_tokens` bound to the same memory. What
//! crosses per step: the next ids, mask and positions up, and `logits` down (bound to host
//! memory; one row per sequence when the graph takes `num_logits_to_keep`, else prefill brings
//! every position's row down once and the last is kept). Still copied: joins and leaves build
//! a new cache (rows selected, columns padded or trimmed; through the host when it lives on a
//! device, once per join or leave, see `tensors.rs`), and prefill embeddings, which are merged
//! with image features on the host.
//!
//! Always on: it is correct on every provider and, on the CPU provider, does the same work as
//! a plain `Session::run` (outputs land in host memory either way; the bench `model` measures
//! both). Plain `Session::run` (`device_resident = false`) is kept for comparison: on a GPU it
//! copies every output, the whole cache included, to the host each step and back the next.

use super::config::ModelConfig;
use super::embed_tokens::EmbedTokens;
use super::error::{ort_err, Error};
use super::tensors::{float_tensor, i64_tensor, select_kv, to_f32};
use crate::ep::Provider;
use crate::session::{LoadedSession, FLOATS};
use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};
use ort::session::{IoBinding, SessionInputValue};
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
    /// Run steps through IoBinding with the KV cache left in the provider's memory (default:
    /// on). Off: plain `Session::run`, outputs in host memory (the earlier path, for comparison).
    pub device_resident: bool,
    /// Where the presents are bound: the memory of the session's first provider.
    kv_memory: MemoryInfo<'static>,
    host_memory: MemoryInfo<'static>,
    /// Created on the first bound step and cleared after each, so it holds no cache between steps.
    binding: Option<IoBinding>,
    /// Steps run through IoBinding (so tests can tell the path was taken).
    pub bound_steps: usize,
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
        let kv_memory = provider_memory(session.providers.primary(), session.device_id)
            .map_err(ort_err(format!("{g}: memory info")))?;
        let host_memory = host_memory().map_err(ort_err(format!("{g}: memory info")))?;
        Ok(Decoder {
            device_resident: true,
            kv_memory,
            host_memory,
            binding: None,
            bound_steps: 0,
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

    /// Host embeddings (`[batch · seq · hidden]`, `[batch · seq · layers · per-layer]`) as the
    /// values [`Decoder::step`] takes, in the graph's float types.
    pub fn host_embeddings(
        &self,
        embeds: Vec<f32>,
        ple: Vec<f32>,
        batch: usize,
        seq: usize,
    ) -> Result<(DynValue, DynValue), Error> {
        debug_assert_eq!(embeds.len(), batch * seq * self.hidden);
        Ok((
            float_tensor(self.embeds_ty, vec![batch, seq, self.hidden], embeds)?,
            float_tensor(
                self.ple_ty,
                vec![batch, seq, self.ple_shape.0, self.ple_shape.1],
                ple,
            )?,
        ))
    }

    /// Whether `embed_tokens`' outputs can be fed to this graph as they are (same float types),
    /// so a device-resident step can leave them in the provider's memory.
    pub fn takes_embeddings_of(&self, embed: &EmbedTokens) -> bool {
        embed.out_ty == self.embeds_ty && embed.ple_ty == self.ple_ty
    }

    /// Where device-resident steps keep the cache (and their embeddings).
    pub fn kv_memory(&self) -> &MemoryInfo<'static> {
        &self.kv_memory
    }

    /// Runs one step over `seq` new positions per row and returns the last position's logits
    /// per row (`[batch · vocab]`). `embeds`/`ple` come from [`Decoder::host_embeddings`] or
    /// [`EmbedTokens::run_bound`]; `mask` is `[batch, past_len + seq]`.
    #[allow(clippy::too_many_arguments)]
    pub fn step(
        &mut self,
        embeds: DynValue,
        ple: DynValue,
        seq: usize,
        mask: Vec<i64>,
        positions: Vec<i64>,
        cache: &mut KvCache,
    ) -> Result<Vec<f32>, Error> {
        let b = cache.batch;
        let total = cache.past_len + seq;
        debug_assert_eq!(mask.len(), b * total);
        let mut inputs: Vec<(Cow<'static, str>, DynValue)> = vec![
            ("inputs_embeds".into(), embeds),
            ("per_layer_inputs".into(), ple),
            ("attention_mask".into(), i64_tensor(vec![b, total], mask)?),
            ("position_ids".into(), i64_tensor(vec![b, seq], positions)?),
        ];
        if self.has_logits_to_keep {
            let keep = Tensor::from_array((Vec::<i64>::new(), vec![1i64]))
                .map_err(ort_err("num_logits_to_keep"))?;
            inputs.push(("num_logits_to_keep".into(), keep.into_dyn()));
        }
        if self.has_cache_branch {
            let v = Tensor::from_array((vec![1i64], vec![cache.past_len > 0]))
                .map_err(ort_err("use_cache_branch"))?;
            inputs.push(("use_cache_branch".into(), v.into_dyn()));
        }
        let past = std::mem::take(&mut cache.values);
        for (slot, v) in self.slots.iter().zip(past) {
            inputs.push((Cow::Owned(slot.past.clone()), v));
        }
        let graph = self.session.graph.clone();
        let outputs = if self.device_resident {
            self.run_bound(inputs)
        } else {
            self.run_host(inputs)
        }
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
        let logits = logits.ok_or_else(|| Error::contract(&graph, "run returned no `logits`"))?;
        cache.values = presents.into_iter().map(|p| p.expect("checked")).collect();
        cache.past_len = total;
        let (shape, data) = to_f32(&logits, "logits")?;
        // [B, kept, V]: take the last kept position of each row (all of it when one is kept, as
        // with `num_logits_to_keep` and in every decode step).
        let (kept, v) = (shape[1], shape[2]);
        if kept == 1 {
            return Ok(data);
        }
        let mut last = Vec::with_capacity(b * v);
        for r in 0..b {
            let off = (r * kept + kept - 1) * v;
            last.extend_from_slice(&data[off..off + v]);
        }
        Ok(last)
    }

    /// One run with a plain `Session::run`: every output in host memory.
    fn run_host(
        &mut self,
        inputs: Vec<(Cow<'static, str>, DynValue)>,
    ) -> ort::Result<Vec<(String, DynValue)>> {
        let inputs: Vec<(Cow<'static, str>, SessionInputValue<'static>)> =
            inputs.into_iter().map(|(n, v)| (n, v.into())).collect();
        let outputs = self.session.session.run(inputs)?;
        Ok(outputs
            .into_iter()
            .map(|(n, v)| (n.to_string(), v))
            .collect())
    }

    /// One run through IoBinding: `present.*` bound to the provider's memory (fresh buffers each
    /// run: the bound pasts may not alias them), `logits` to host memory. The binding is cleared
    /// afterwards, so it keeps neither the old pasts nor the new presents alive.
    fn run_bound(
        &mut self,
        inputs: Vec<(Cow<'static, str>, DynValue)>,
    ) -> ort::Result<Vec<(String, DynValue)>> {
        let binding = match &mut self.binding {
            Some(b) => b,
            None => self.binding.insert(self.session.session.create_binding()?),
        };
        let result = (|| {
            for (name, value) in &inputs {
                binding.bind_input(name.as_ref(), value)?;
            }
            drop(inputs);
            binding.bind_output_to_device("logits", &self.host_memory)?;
            for slot in &self.slots {
                binding.bind_output_to_device(slot.present.as_str(), &self.kv_memory)?;
            }
            let outputs = self.session.session.run_binding(binding)?;
            Ok(outputs
                .into_iter()
                .map(|(n, v)| (n.to_string(), v))
                .collect())
        })();
        binding.clear();
        self.bound_steps += result.is_ok() as usize;
        result
    }
}

/// The memory a provider's sessions compute in: the GPU `device_id` for CUDA and TensorRT
/// (CUDA memory) and DirectML; host memory for the CPU and for CoreML and OpenVINO, whose
/// inputs and outputs live in host memory.
fn provider_memory(p: Provider, device_id: i32) -> ort::Result<MemoryInfo<'static>> {
    let device = match p {
        Provider::Cuda | Provider::TensorRt => AllocationDevice::CUDA,
        Provider::DirectMl => AllocationDevice::DIRECTML,
        Provider::Cpu | Provider::CoreMl | Provider::OpenVino => return host_memory(),
    };
    MemoryInfo::new(
        device,
        device_id,
        AllocatorType::Device,
        MemoryType::Default,
    )
}

fn host_memory() -> ort::Result<MemoryInfo<'static>> {
    MemoryInfo::new(
        AllocationDevice::CPU,
        0,
        AllocatorType::Device,
        MemoryType::CPUOutput,
    )
}
