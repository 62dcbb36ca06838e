//! `embed_tokens*.onnx`: token ids to `inputs_embeds` (scaled) and `per_layer_inputs`.

use super::config::{ModelConfig, TextConfig};
use super::error::{ort_err, Error};
use super::tensors::{i64_tensor, to_f32};
use crate::session::{LoadedSession, TensorInfo, FLOATS};
use ort::memory::MemoryInfo;
use ort::session::IoBinding;
use ort::value::{DynValue, TensorElementType};

/// The `inputs_embeds` / `per_layer_inputs` pair that `embed_tokens` produces and the decoder
/// takes: floats shaped `[B, S, hidden]` and `[B, S, layers, hidden_size_per_layer_input]`.
pub(super) fn check_embeddings(
    session: &LoadedSession,
    e: &TensorInfo,
    p: &TensorInfo,
    t: &TextConfig,
) -> Result<(), Error> {
    session.check(e, &FLOATS, 3)?;
    session.check_dim(e, 2, t.hidden_size, "text_config.hidden_size")?;
    session.check(p, &FLOATS, 4)?;
    session.check_dim(p, 2, t.num_hidden_layers, "text_config.num_hidden_layers")?;
    session.check_dim(
        p,
        3,
        t.hidden_size_per_layer_input,
        "text_config.hidden_size_per_layer_input",
    )
}

pub struct EmbedTokens {
    pub session: LoadedSession,
    pub hidden: usize,
    /// `num_hidden_layers · hidden_size_per_layer_input` values per token.
    pub ple: usize,
    pub out_ty: TensorElementType,
    /// Element type of `per_layer_inputs`.
    pub ple_ty: TensorElementType,
    /// For [`EmbedTokens::run_bound`]; cleared after each run.
    binding: Option<IoBinding>,
}

impl EmbedTokens {
    /// Checks the graph against contract §9.1.
    pub fn new(session: LoadedSession, cfg: &ModelConfig) -> Result<Self, Error> {
        let t = &cfg.text_config;
        let ids = session.require_input("input_ids")?;
        session.check(ids, &[TensorElementType::Int64], 2)?;
        if let Some(extra) = session.inputs.iter().find(|i| i.name != "input_ids") {
            return Err(Error::contract(
                &session.graph,
                format!("unexpected input `{}` (only input_ids is fed)", extra.name),
            ));
        }
        let e = session.require_output("inputs_embeds")?;
        let p = session.require_output("per_layer_inputs")?;
        check_embeddings(&session, e, p, t)?;
        let (out_ty, ple_ty) = (e.ty, p.ty);
        Ok(EmbedTokens {
            session,
            hidden: t.hidden_size,
            ple: t.num_hidden_layers * t.hidden_size_per_layer_input,
            out_ty,
            ple_ty,
            binding: None,
        })
    }

    /// `(inputs_embeds [B·S·H], per_layer_inputs [B·S·L·P])` as f32 for ids `[batch, seq]`.
    pub fn run(
        &mut self,
        ids: Vec<i64>,
        batch: usize,
        seq: usize,
    ) -> Result<(Vec<f32>, Vec<f32>), Error> {
        let graph = self.session.graph.clone();
        let inputs = vec![("input_ids", i64_tensor(vec![batch, seq], ids)?)];
        let out = self
            .session
            .session
            .run(inputs)
            .map_err(ort_err(format!("{graph}: run")))?;
        let (_, e) = to_f32(&out["inputs_embeds"], "inputs_embeds")?;
        let (_, p) = to_f32(&out["per_layer_inputs"], "per_layer_inputs")?;
        if e.len() != batch * seq * self.hidden || p.len() != batch * seq * self.ple {
            return Err(Error::contract(
                &graph,
                "output sizes do not match [batch, seq, ...] of the config",
            ));
        }
        Ok((e, p))
    }

    /// `(inputs_embeds, per_layer_inputs)` for ids `[batch, seq]` as values in `memory` (the
    /// decoder's), for a decode step that feeds them on without the host seeing them.
    pub fn run_bound(
        &mut self,
        ids: Vec<i64>,
        batch: usize,
        seq: usize,
        memory: &MemoryInfo,
    ) -> Result<(DynValue, DynValue), Error> {
        let graph = self.session.graph.clone();
        let ids = i64_tensor(vec![batch, seq], ids)?;
        let binding = match &mut self.binding {
            Some(b) => b,
            None => self.binding.insert(
                self.session
                    .session
                    .create_binding()
                    .map_err(ort_err(format!("{graph}: binding")))?,
            ),
        };
        let result = (|| {
            binding.bind_input("input_ids", &ids)?;
            binding.bind_output_to_device("inputs_embeds", memory)?;
            binding.bind_output_to_device("per_layer_inputs", memory)?;
            let mut out = self.session.session.run_binding(binding)?;
            Ok((out.remove("inputs_embeds"), out.remove("per_layer_inputs")))
        })();
        binding.clear();
        let (Some(e), Some(p)) = result.map_err(ort_err(format!("{graph}: run")))? else {
            return Err(Error::contract(&graph, "run returned no inputs_embeds"));
        };
        let rows = |v: &DynValue, per: usize| {
            v.dtype()
                .tensor_shape()
                .map(|s| s.iter().product::<i64>() as usize)
                == Some(batch * seq * per)
        };
        if !rows(&e, self.hidden) || !rows(&p, self.ple) {
            return Err(Error::contract(
                &graph,
                "output sizes do not match [batch, seq, ...] of the config",
            ));
        }
        Ok((e, p))
    }
}
