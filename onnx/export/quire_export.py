#!/usr/bin/env python3
"""quire ONNX export tooling for Gemma 4 (E2B-style) vision-language models.

Subcommands
-----------
export CHECKPOINT_DIR OUT_DIR [--dtype fp32,fp16[,q4]]
    Export a transformers ``Gemma4ForConditionalGeneration`` checkpoint to the
    onnx-community contract (three graphs: vision_encoder, embed_tokens,
    decoder_model_merged) plus the JSON/tokenizer/template side files.
tiny OUT_DIR
    Build a deterministic tiny random-weight Gemma 4 (every E2B text/vision feature on),
    a tiny tokenizer and template, export it (fp32 + fp16) and write reference.json
    computed with transformers.
quantize OUT_DIR [--dtype q8,q4f16]
    Add q8 (`_quantized`) and q4f16 graphs made from the fp32 / fp16 graphs already there
    (onnx + onnxruntime only, no torch).
verify OUT_DIR
    Re-run the reference cases with onnxruntime and compare with reference.json.
big-vision OUT_DIR
    Random model with the real E2B vision tower dimensions and a small text model,
    exported for vision benchmarking (670 MB; not committed: see compact).
compact IN_DIR OUT_DIR
    The same model directory with every large initializer stored as a small block and a
    `Tile` node that ONNX Runtime constant-folds when the session loads: files of a few MB,
    compute and memory of the full size once loaded (the weights repeat the block).
e2b OUT_DIR [--size e2b|e4b]
    A random model at the real E2B (or E4B) size, compact, straight from torch without ever
    allocating its weights; fp32 graphs and q4 text graphs.
check-compact OUT_DIR
    On the tiny model: the e2b path's graphs and its block-quantized q4 equal the ordinary ones.

See README.md next to this file.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import re
import shutil
import sys
import tempfile
import warnings
from collections import Counter
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SUPPORTED_BUDGETS = (70, 140, 280, 560, 1120)

# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


def _lazy_torch():
    import torch

    return torch


def set_determinism(seed: int = 0):
    import random

    torch = _lazy_torch()
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)


_NUM_LIST = re.compile(r"\[(\s*-?[0-9][0-9.eE+-]*(?:,\s*-?[0-9][0-9.eE+-]*)*\s*)\]")


def write_json(path: Path, obj, indent=2):
    text = json.dumps(obj, indent=indent, ensure_ascii=False, sort_keys=False)
    if indent:
        # keep numeric arrays on one line (the file is mostly logits and token ids)
        text = _NUM_LIST.sub(lambda m: "[" + ",".join(x.strip() for x in m.group(1).split(",")) + "]", text)
    path.write_text(text + "\n", encoding="utf-8")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------------------
# ONNX wrappers (torch modules whose forward is exactly the contract I/O)
# --------------------------------------------------------------------------------------


def _build_wrappers():
    """Defined lazily so that `verify` does not need torch."""
    torch = _lazy_torch()
    from torch import nn

    def mask_value(dtype):
        # Half of finfo.min: masked scores stay finite after adding a (negative) score in
        # fp16, so fully-masked rows (left padding) give a uniform softmax instead of NaN.
        # exp(mask - max) underflows to exactly 0 either way, so real rows are unaffected.
        return torch.finfo(dtype).min / 2

    class VisionEncoder(nn.Module):
        """pixel_values [N, P, 768] f32, pixel_position_ids [N, P, 2] i64 -> image_features [T, H_text].

        Same maths as Gemma4Model.get_image_features + embed_vision, with the pooler written
        so that the patch count P stays symbolic (no int(sqrt()), no F.one_hot)."""

        def __init__(self, model):
            super().__init__()
            self.vt = model.model.vision_tower
            self.embed_vision = model.model.embed_vision
            cfg = self.vt.config
            self.k = cfg.pooling_kernel_size
            self.root = cfg.hidden_size**0.5
            self.standardize = bool(cfg.standardize)

        def forward(self, pixel_values, pixel_position_ids):
            vt = self.vt
            k = self.k
            padding = (pixel_position_ids == -1).all(dim=-1)  # [N, P] True = padding
            hidden = vt.patch_embedder(pixel_values, pixel_position_ids, padding)
            dtype = hidden.dtype
            # bidirectional mask over valid keys, additive, [N, 1, 1, P]
            attn_mask = torch.where(
                padding[:, None, None, :],
                torch.tensor(mask_value(dtype), dtype=dtype),
                torch.tensor(0.0, dtype=dtype),
            )
            pos_emb = vt.encoder.rotary_emb(hidden, pixel_position_ids)
            for layer in vt.encoder.layers:
                hidden = layer(
                    hidden,
                    attention_mask=attn_mask,
                    position_embeddings=pos_emb,
                    position_ids=pixel_position_ids,
                )
            # ---- pooler (Gemma4VisionPooler) ----
            hidden = hidden.masked_fill(padding.unsqueeze(-1), 0.0)
            # L = P // k^2 soft-token slots, built from a strided slice so it stays dynamic
            slots = torch.ones_like(pixel_position_ids[0, :: k * k, 0])  # [L] int64
            slot_ids = torch.cumsum(slots, dim=0) - 1  # arange(L)
            clamped = pixel_position_ids.clamp(min=0)
            max_x = clamped[..., 0].max(dim=-1, keepdim=True)[0] + 1
            kernel = torch.div(clamped, k, rounding_mode="floor")
            kernel = kernel[..., 0] + torch.div(max_x, k, rounding_mode="floor") * kernel[..., 1]  # [N, P]
            weights = (kernel.unsqueeze(-1) == slot_ids.view(1, 1, -1)).float() / float(k * k)  # [N, P, L]
            pooled = weights.transpose(1, 2) @ hidden.float()  # [N, L, D]
            valid = torch.logical_not((weights == 0).all(dim=1))  # [N, L]
            pooled = pooled.to(dtype).float() * self.root
            feats = pooled[valid]  # [T, D] valid soft tokens, image order
            if self.standardize:
                feats = (feats - vt.std_bias.float()) * vt.std_scale.float()
            feats = feats.to(dtype)
            return self.embed_vision(feats)

    class EmbedTokens(nn.Module):
        """input_ids [B, S] -> inputs_embeds [B, S, H], per_layer_inputs [B, S, L, ple].

        Multimodal placeholder ids (image/video/audio token ids from config.json) are mapped
        to pad_token_id inside the graph, exactly like Gemma4Model.forward does before the
        lookups, so feeding raw or pre-padded ids gives the same result."""

        def __init__(self, model):
            super().__init__()
            lm = model.model.language_model
            self.embed = lm.embed_tokens
            self.embed_pl = lm.embed_tokens_per_layer
            cfg = model.config
            tcfg = cfg.get_text_config()
            self.L = tcfg.num_hidden_layers
            self.ple = tcfg.hidden_size_per_layer_input
            self.pad = int(tcfg.pad_token_id)
            self.mm_ids = [int(i) for i in (cfg.image_token_id, cfg.video_token_id, cfg.audio_token_id) if i is not None]

        def forward(self, input_ids):
            mm = torch.zeros_like(input_ids, dtype=torch.bool)
            for t in self.mm_ids:
                mm = mm | (input_ids == t)
            ids = torch.where(mm, torch.full_like(input_ids, self.pad), input_ids)
            inputs_embeds = self.embed(ids)
            pl = self.embed_pl(ids)
            per_layer_inputs = pl.view(pl.shape[0], pl.shape[1], self.L, self.ple)
            return inputs_embeds, per_layer_inputs

    class ExportCache:
        """Minimal stand-in for transformers' Cache: concatenates past with new K/V and
        records the result as the layer's `present` (never truncated; sliding layers are
        masked, not trimmed)."""

        def __init__(self, past):
            self.past = past
            self.present = {}

        def update(self, key_states, value_states, layer_idx, *args, **kwargs):
            pk, pv = self.past[layer_idx]
            k = torch.cat([pk, key_states], dim=2)
            v = torch.cat([pv, value_states], dim=2)
            self.present[layer_idx] = (k, v)
            return k, v

    class Decoder(nn.Module):
        """inputs_embeds, per_layer_inputs, attention_mask, position_ids, num_logits_to_keep,
        past_key_values.{i}.key/value -> logits (soft-capped), present.{i}.key/value."""

        def __init__(self, model):
            super().__init__()
            self.lm = model.model.language_model
            self.lm_head = model.lm_head
            tcfg = model.config.get_text_config()
            self.tcfg = tcfg
            self.layer_types = list(tcfg.layer_types)
            self.kv_layers = [i for i, m in enumerate(tcfg.kv_sharing_modes) if m != "reuse"]
            self.first_shared = tcfg.num_hidden_layers - tcfg.num_kv_shared_layers
            self.window = int(tcfg.sliding_window)
            self.softcap = tcfg.final_logit_softcapping

        def forward(self, inputs_embeds, per_layer_inputs, attention_mask, position_ids, num_logits_to_keep, *past_flat):
            lm = self.lm
            dtype = inputs_embeds.dtype
            past = {}
            for j, li in enumerate(self.kv_layers):
                past[li] = (past_flat[2 * j], past_flat[2 * j + 1])
            cache = ExportCache(past)

            ple = lm.project_per_layer_inputs(inputs_embeds, per_layer_inputs)

            # ---- masks, from tensors only (all dims stay symbolic) ----
            q_ones = torch.ones_like(position_ids[0])  # [S]
            kv_ones = torch.ones_like(attention_mask[0])  # [T] = past + S
            s_len = q_ones.sum()
            t_len = kv_ones.sum()
            q_idx = torch.cumsum(q_ones, 0) - 1 + (t_len - s_len)  # absolute cache index of queries
            kv_idx = torch.cumsum(kv_ones, 0) - 1
            dist = q_idx.view(-1, 1) - kv_idx.view(1, -1)  # [S, T]
            causal = dist >= 0
            sliding = causal & (dist < self.window)
            key_ok = attention_mask.bool()[:, None, None, :]  # [B,1,1,T]
            neg = torch.tensor(mask_value(dtype), dtype=dtype)
            zero = torch.tensor(0.0, dtype=dtype)
            masks = {
                "full_attention": torch.where(causal[None, None] & key_ok, zero, neg),
                "sliding_attention": torch.where(sliding[None, None] & key_ok, zero, neg),
            }

            hidden = inputs_embeds
            pos_emb = {lt: lm.rotary_emb(hidden, position_ids, lt) for lt in sorted(set(self.layer_types))}

            # positions whose logits are returned: last num_logits_to_keep, or all if 0
            keep = num_logits_to_keep
            start = torch.where(keep > 0, torch.clamp(s_len - keep, min=0), torch.zeros_like(s_len))
            sel = torch.nonzero((torch.cumsum(q_ones, 0) - 1) >= start).view(-1)

            def take(h, p, pe, m):
                h = torch.index_select(h, 1, sel)
                p = torch.index_select(p, 1, sel)
                pe = {kk: (torch.index_select(c, 1, sel), torch.index_select(s, 1, sel)) for kk, (c, s) in pe.items()}
                m = {kk: torch.index_select(v, 2, sel) for kk, v in m.items()}
                return h, p, pe, m

            shared = {}
            sliced = False
            for i, layer in enumerate(lm.layers):
                if i == self.first_shared:
                    # KV-shared layers write no cache: only the kept query rows are needed
                    hidden, ple, pos_emb, masks = take(hidden, ple, pos_emb, masks)
                    sliced = True
                lt = self.layer_types[i]
                hidden = layer(
                    hidden,
                    ple[:, :, i, :],
                    shared_kv_states=shared,
                    position_embeddings=pos_emb[lt],
                    attention_mask=masks[lt],
                    position_ids=position_ids,
                    cache=cache,
                )
            if not sliced:
                hidden = torch.index_select(hidden, 1, sel)
            hidden = lm.norm(hidden)
            logits = self.lm_head(hidden)
            if self.softcap is not None:
                logits = torch.tanh(logits / self.softcap) * self.softcap
            outs = [logits]
            for li in self.kv_layers:
                outs.extend(cache.present[li])
            return tuple(outs)

    return VisionEncoder, EmbedTokens, Decoder


# --------------------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------------------

SIDE_FILES = (
    "config.json",
    "generation_config.json",
    "processor_config.json",
    "preprocessor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
)


def load_checkpoint(ckpt_dir, dtype="fp32"):
    """Load with eager attention (the export wrappers call transformers' eager attention).
    dtype="fp16" loads straight to half precision (half the memory, for fp16-only exports)."""
    torch = _lazy_torch()
    from transformers import Gemma4ForConditionalGeneration

    model = Gemma4ForConditionalGeneration.from_pretrained(
        ckpt_dir, dtype=torch.float32 if dtype == "fp32" else torch.float16, attn_implementation="eager"
    )
    model.eval()
    return model


def _finalize_onnx(tmp_path: Path, out_path: Path, external: bool, expect_symbolic: dict):
    """Strip debug metadata, check symbolic dims, save with one external data file."""
    import onnx

    m = onnx.load(str(tmp_path), load_external_data=True)
    for node in m.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
        # deterministic, readable node names are already produced by the exporter
    del m.metadata_props[:]
    m.doc_string = ""
    m.graph.doc_string = ""
    for vi in list(m.graph.input) + list(m.graph.output) + list(m.graph.value_info):
        vi.doc_string = ""
    # check that the dims we declared dynamic really are symbolic
    io = {vi.name: vi for vi in list(m.graph.input) + list(m.graph.output)}
    for name, axes in expect_symbolic.items():
        vi = io[name]
        dims = vi.type.tensor_type.shape.dim
        for ax, sym in axes.items():
            d = dims[ax]
            if d.HasField("dim_value") or not d.dim_param:
                raise RuntimeError(f"{out_path.name}: {name} dim {ax} is not symbolic ({d})")
            if d.dim_param != sym:
                d.dim_param = sym
    data_name = out_path.name + "_data"
    for p in (out_path, out_path.parent / data_name):
        if p.exists():
            p.unlink()
    if external:
        onnx.save_model(
            m,
            str(out_path),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=data_name,
            size_threshold=0,
            convert_attribute=False,
        )
    else:
        onnx.save_model(m, str(out_path))
    onnx.checker.check_model(str(out_path))
    return m


def _io_summary(path: Path):
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    def one(vi):
        tt = vi.type.tensor_type
        dims = [d.dim_param if d.dim_param else d.dim_value for d in tt.shape.dim]
        return {"name": vi.name, "dtype": onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).name, "shape": dims}
    return {"inputs": [one(v) for v in m.graph.input], "outputs": [one(v) for v in m.graph.output]}


def graph_specs(m, tdtype, gen):
    """The three graphs of the torch model `m` (already in `tdtype`) as
    (file base, wrapper module, example args, input names, output names, dynamic axes).
    Example inputs are drawn from `gen` in a fixed order."""
    torch = _lazy_torch()
    VisionEncoder, EmbedTokens, Decoder = _build_wrappers()
    cfg = m.config
    tcfg = cfg.get_text_config()
    vcfg = cfg.vision_config
    H = tcfg.hidden_size
    L = tcfg.num_hidden_layers
    ple = tcfg.hidden_size_per_layer_input
    kv_layers = [i for i, mode in enumerate(tcfg.kv_sharing_modes) if mode != "reuse"]
    per_layer_cfg = tcfg.per_layer_config
    specs = []

    if vcfg is not None:
        k2 = vcfg.pooling_kernel_size**2
        # 2 images, 18 patch slots: image 0 = 3x3 grid + 9 pads, image 1 = 6x3 grid
        pos0 = [[x, y] for y in range(3) for x in range(3)] + [[-1, -1]] * 9
        pos1 = [[x, y] for y in range(3) for x in range(6)]
        pid = torch.tensor([pos0, pos1], dtype=torch.int64)
        pv = torch.rand(2, 2 * k2, 3 * vcfg.patch_size**2, generator=gen, dtype=torch.float32)
        pv[0, 9:] = 0
        specs.append((
            "vision_encoder", VisionEncoder(m).eval(), (pv, pid),
            ["pixel_values", "pixel_position_ids"], ["image_features"],
            {
                "pixel_values": {0: "num_images", 1: "max_patches"},
                "pixel_position_ids": {0: "num_images", 1: "max_patches"},
                "image_features": {0: "total_soft_tokens"},
            },
        ))

    ids = torch.randint(0, tcfg.vocab_size, (2, 3), generator=gen, dtype=torch.int64)
    specs.append((
        "embed_tokens", EmbedTokens(m).eval(), (ids,),
        ["input_ids"], ["inputs_embeds", "per_layer_inputs"],
        {
            "input_ids": {0: "batch_size", 1: "sequence_length"},
            "inputs_embeds": {0: "batch_size", 1: "sequence_length"},
            "per_layer_inputs": {0: "batch_size", 1: "sequence_length"},
        },
    ))

    B, S, P = 2, 3, 5
    emb = torch.randn(B, S, H, generator=gen).to(tdtype)
    pli = torch.randn(B, S, L, ple, generator=gen).to(tdtype)
    am = torch.ones(B, P + S, dtype=torch.int64)
    am[1, :2] = 0
    pos = torch.arange(P, P + S, dtype=torch.int64).unsqueeze(0).repeat(B, 1)
    keep = torch.tensor(2, dtype=torch.int64)
    past = []
    in_names = ["inputs_embeds", "per_layer_inputs", "attention_mask", "position_ids", "num_logits_to_keep"]
    out_names = ["logits"]
    dyn = {
        "inputs_embeds": {0: "batch_size", 1: "sequence_length"},
        "per_layer_inputs": {0: "batch_size", 1: "sequence_length"},
        "attention_mask": {0: "batch_size", 1: "total_sequence_length"},
        "position_ids": {0: "batch_size", 1: "sequence_length"},
        "logits": {0: "batch_size", 1: "num_logits"},
    }
    for li in kv_layers:
        lc = per_layer_cfg[li]
        for kv in ("key", "value"):
            past.append(torch.randn(B, lc.num_key_value_heads, P, lc.head_dim, generator=gen).to(tdtype))
            in_names.append(f"past_key_values.{li}.{kv}")
            out_names.append(f"present.{li}.{kv}")
            dyn[f"past_key_values.{li}.{kv}"] = {0: "batch_size", 2: "past_sequence_length"}
            dyn[f"present.{li}.{kv}"] = {0: "batch_size", 2: "total_sequence_length"}
    specs.append(("decoder_model_merged", Decoder(m).eval(), (emb, pli, am, pos, keep, *past),
                  in_names, out_names, dyn))
    return specs


def export_model(model, out_dir: Path, dtypes=("fp32", "fp16"), external=True, opset=17, log=print):
    """Export the three graphs of `model` (fp32 torch module) for each dtype.
    NOTE: converts `model` in place (fp32 first, then fp16)."""
    torch = _lazy_torch()
    onnx_dir = out_dir / "onnx"
    onnx_dir.mkdir(parents=True, exist_ok=True)
    written = []

    for dt in [d for d in ("fp32", "fp16") if d in dtypes]:
        tdtype = torch.float32 if dt == "fp32" else torch.float16
        suffix = "" if dt == "fp32" else "_fp16"
        # In place (no copy): peak memory stays ~1x the model. fp32 is exported first, so
        # the caller's model ends up in the last exported dtype.
        m = model.to(tdtype).eval()
        gen = torch.Generator().manual_seed(1234)
        for base, wrapper, args, in_names, out_names, dyn in graph_specs(m, tdtype, gen):
            tmp = Path(tempfile.mkdtemp()) / "g.onnx"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    wrapper, args, str(tmp), dynamo=False, opset_version=opset,
                    input_names=in_names, output_names=out_names, dynamic_axes=dyn,
                )
            out = onnx_dir / f"{base}{suffix}.onnx"
            _finalize_onnx(tmp, out, external, dyn)
            shutil.rmtree(tmp.parent)
            written.append(out)
            log(f"  wrote {out}")
    return written


def quantize_q4(out_dir: Path, log=print):
    """Optional: MatMulNBits 4-bit weights (block 32) from the fp32 graphs, `_q4` suffix."""
    import logging

    import onnx
    import onnx.version_converter
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)

    onnx_dir = out_dir / "onnx"
    done = []
    # The vision tower stays fp32 (as in the community q4 loop: fp32 vision + q4 text);
    # 4-bit blocks over its 32/768-wide projections wreck its output on the tiny model.
    for base in ("embed_tokens", "decoder_model_merged"):
        src = onnx_dir / f"{base}.onnx"
        if not src.exists():
            continue
        m = onnx.load(str(src), load_external_data=True)
        # GatherBlockQuantized makes the quantizer bump the default-domain opset to 21,
        # so convert the whole graph first (ReduceMean etc. change form at opset 18).
        m = onnx.version_converter.convert_version(m, 21)
        # MatMul -> MatMulNBits; Gather (embedding tables) -> GatherBlockQuantized, as in
        # the community q4 files. Block 32 (the tiny model's smallest K is 32).
        q = MatMulNBitsQuantizer(
            m, bits=4, block_size=32, is_symmetric=True, accuracy_level=None,
            op_types_to_quantize=("MatMul", "Gather"), quant_axes=(("MatMul", 0), ("Gather", 1)),
        )
        q.process()
        qm = q.model.model
        dst = onnx_dir / f"{base}_q4.onnx"
        tmp = Path(tempfile.mkdtemp()) / "q.onnx"
        onnx.save_model(qm, str(tmp))
        _finalize_onnx(tmp, dst, True, {})
        shutil.rmtree(tmp.parent)
        done.append(dst)
        log(f"  wrote {dst}")
    return done


def quantize_q8(out_dir: Path, log=print):
    """8-bit weights, `_quantized` suffix, from the fp32 graphs, all three graphs: onnxruntime's
    dynamic quantization (`MatMulInteger` + `DynamicQuantizeLinear`, int8 weights, uint8
    activations; embedding tables as int8 + `DequantizeLinear`), the way transformers.js'
    `scripts/quantize.py` makes the community `q8` files (signed weights: no Conv in these graphs)."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger("onnxruntime.quantization").setLevel(logging.WARNING)
    onnx_dir = out_dir / "onnx"
    done = []
    for base in ("vision_encoder", "embed_tokens", "decoder_model_merged"):
        src = onnx_dir / f"{base}.onnx"
        if not src.exists():
            continue
        tmp = Path(tempfile.mkdtemp()) / "q.onnx"
        quantize_dynamic(
            str(src), str(tmp), weight_type=QuantType.QInt8, per_channel=False, reduce_range=False,
            use_external_data_format=True,
            extra_options={"EnableSubgraph": True, "MatMulConstBOnly": True},
        )
        dst = onnx_dir / f"{base}_quantized.onnx"
        _finalize_onnx(tmp, dst, True, {})
        shutil.rmtree(tmp.parent)
        done.append(dst)
        log(f"  wrote {dst}")
    return done


def quantize_q4f16(out_dir: Path, log=print):
    """4-bit weights with fp16 activations, `_q4f16` suffix, all three graphs (the community
    repos ship every graph in q4f16): MatMulNBits (block 32, symmetric) and GatherBlockQuantized
    applied to the **fp16** graphs, so the I/O is exactly that of `_fp16` (fp16 embeddings,
    KV cache and logits; fp32 `pixel_values`)."""
    import logging

    import onnx
    import onnx.version_converter
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)
    onnx_dir = out_dir / "onnx"
    done = []
    for base in ("vision_encoder", "embed_tokens", "decoder_model_merged"):
        src = onnx_dir / f"{base}_fp16.onnx"
        if not src.exists():
            continue
        m = onnx.load(str(src), load_external_data=True)
        m = onnx.version_converter.convert_version(m, 21)
        q = MatMulNBitsQuantizer(
            m, bits=4, block_size=32, is_symmetric=True, accuracy_level=None,
            op_types_to_quantize=("MatMul", "Gather"), quant_axes=(("MatMul", 0), ("Gather", 1)),
        )
        q.process()
        dst = onnx_dir / f"{base}_q4f16.onnx"
        tmp = Path(tempfile.mkdtemp()) / "q.onnx"
        onnx.save_model(q.model.model, str(tmp))
        _finalize_onnx(tmp, dst, True, {})
        shutil.rmtree(tmp.parent)
        done.append(dst)
        log(f"  wrote {dst}")
    return done


def cmd_quantize(out_dir, dtypes, log=print):
    """q8 / q4f16 graphs from the fp32 / fp16 graphs already in OUT_DIR (onnx + onnxruntime only)."""
    out_dir = Path(out_dir)
    for d in dtypes:
        if d == "q8":
            quantize_q8(out_dir, log=log)
        elif d == "q4f16":
            quantize_q4f16(out_dir, log=log)
        elif d == "q4":
            quantize_q4(out_dir, log=log)
        else:
            raise SystemExit(f"quantize: unknown dtype {d!r} (q8, q4f16, q4)")
    add_transformersjs_config(out_dir)
    if (out_dir / "MANIFEST.json").exists():
        write_manifest(out_dir)


def add_transformersjs_config(out_dir: Path):
    cfg_path = out_dir / "config.json"
    if not cfg_path.exists():
        return
    cfg = json.loads(cfg_path.read_text())
    ext = {}
    for p in sorted((out_dir / "onnx").glob("*.onnx")):
        chunks = len(list((out_dir / "onnx").glob(p.name + "_data*")))
        if chunks:
            ext[p.name] = chunks
    cfg["transformers.js_config"] = {
        "use_external_data_format": ext,
        "kv_cache_dtype": {"fp32": "float32", "fp16": "float16", "q4": "float32", "q4f16": "float16", "q8": "float32"},
    }
    write_json(cfg_path, cfg)


def cmd_export(ckpt_dir, out_dir, dtypes, log=print):
    ckpt_dir = Path(ckpt_dir)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    set_determinism(0)
    if "q4" in dtypes and "fp32" not in dtypes:
        raise SystemExit("q4 is quantized from the fp32 graphs: pass --dtype fp32,q4")
    need_fp32 = "fp32" in dtypes
    model = load_checkpoint(ckpt_dir, "fp32" if need_fp32 else "fp16")
    export_model(model, out_dir, dtypes=[d for d in dtypes if d in ("fp32", "fp16")], log=log)
    del model
    for name in SIDE_FILES:
        src = ckpt_dir / name
        if src.exists() and src.resolve() != (out_dir / name).resolve():
            shutil.copyfile(src, out_dir / name)
    if "q4" in dtypes:
        quantize_q4(out_dir, log=log)
    add_transformersjs_config(out_dir)
    return out_dir


# --------------------------------------------------------------------------------------
# tiny model: config, weights, tokenizer, template, side files
# --------------------------------------------------------------------------------------

# token layout of the tiny tokenizer (vocab 1024). Real Gemma 4 ids where they fit.
SPECIAL_FIXED = {
    0: "<pad>", 1: "<eos>", 2: "<bos>", 3: "<unk>", 4: "<mask>",
    46: "<|tool>", 47: "<tool|>", 48: "<|tool_call>", 49: "<tool_call|>",
    50: "<|tool_response>", 51: "<tool_response|>", 52: '<|"|>',
    98: "<|think|>", 100: "<|channel>", 101: "<channel|>",
    105: "<|turn>", 106: "<turn|>",
}
NEWLINE_TOKENS = {107: "\n", 108: "\n\n"}
TINY_VOCAB = 1024
# multimodal tokens at the top of the vocab (real ids 255999, 256000, 258880..258884)
MM_TOKENS = {
    1017: "<|image>",   # boi_token_id (real 255999)
    1018: "<|audio>",   # boa_token_id (real 256000)
    1019: "<|image|>",  # image_token_id (real 258880)
    1020: "<|audio|>",  # audio_token_id (real 258881)
    1021: "<image|>",   # eoi_token_id (real 258882)
    1022: "<audio|>",   # eoa_token_index (real 258883)
    1023: "<|video|>",  # video_token_id (real 258884)
}
BYTE_BASE = 109  # <0x00> .. <0xFF> at 109..364
PIECE_BASE = BYTE_BASE + 256  # 365: '▁', then printable ASCII, then merges

TRAIN_CORPUS = """
Describe this image. What is in this picture? Hello, how are you today?
The quick brown fox jumps over the lazy dog. A document pipeline reads scanned pages,
finds tables, headings and figures, and writes the text of every page in reading order.
Invoices, receipts, contracts, letters and forms are common documents.
The model answers questions about the image: the colour, the shape, the number of objects,
the position of the text and the language of the document.
user model system Hello world! This is a test of the tokenizer. Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 100 2024.
Please summarise the document in one sentence. Extract the total amount and the date.
The image shows a gradient with a circle in the middle and a pattern of squares.
There is a red area on the left, a green area at the bottom and a blue pattern.
"""


def train_bpe(text: str, n_merges: int, alphabet: set[str]):
    norm = text.replace(" ", "▁")
    words = re.findall(r"▁?[^▁\n]+|\n+|▁+", norm)
    counts = Counter(words)
    seqs = {w: list(w) for w in counts}
    merges: list[tuple[str, str]] = []
    known = set(alphabet)
    for _ in range(n_merges):
        pairs = Counter()
        for w, c in counts.items():
            s = seqs[w]
            for a, b in zip(s, s[1:]):
                if a in known and b in known:
                    pairs[(a, b)] += c
        if not pairs:
            break
        best = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[0]
        merged = best[0] + best[1]
        merges.append(best)
        known.add(merged)
        for w in counts:
            s = seqs[w]
            i = 0
            out = []
            while i < len(s):
                if i + 1 < len(s) and s[i] == best[0] and s[i + 1] == best[1]:
                    out.append(merged)
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            seqs[w] = out
    return merges


def build_tiny_tokenizer(out_dir: Path, vocab_size: int = TINY_VOCAB):
    """The tiny BPE tokenizer; a larger `vocab_size` pads it with plain `<unusedN>` pieces
    (decodable, never produced by encoding) so that every logit has a token."""
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import BPE

    vocab: dict[str, int] = {}
    for i in range(TINY_VOCAB):
        if i in SPECIAL_FIXED:
            vocab[SPECIAL_FIXED[i]] = i
        elif i in NEWLINE_TOKENS:
            vocab[NEWLINE_TOKENS[i]] = i
        elif i in MM_TOKENS:
            vocab[MM_TOKENS[i]] = i
    unused = 0
    for i in range(BYTE_BASE):
        if i not in SPECIAL_FIXED and i not in NEWLINE_TOKENS:
            vocab[f"<unused{unused}>"] = i
            unused += 1
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = BYTE_BASE + b
    base_chars = ["▁"] + [chr(c) for c in range(33, 127)]
    nxt = PIECE_BASE
    for ch in base_chars:
        vocab[ch] = nxt
        nxt += 1
    n_merges = min(MM_TOKENS) - nxt
    alphabet = set(base_chars) | {"\n"}
    merges = train_bpe(TRAIN_CORPUS, n_merges + 64, alphabet)
    # "\n"+"\n" must map to the fixed id 108; keep other merges until the vocab is full
    final_merges = []
    for a, b in merges:
        tok = a + b
        if tok in vocab:
            final_merges.append((a, b))
            continue
        if nxt >= min(MM_TOKENS):
            break
        vocab[tok] = nxt
        nxt += 1
        final_merges.append((a, b))
    if ("\n", "\n") not in final_merges:
        final_merges.insert(0, ("\n", "\n"))
    # fill any remaining slot (keeps ids contiguous)
    while nxt < min(MM_TOKENS):
        vocab[f"<unused{unused}>"] = nxt
        unused += 1
        nxt += 1
    assert sorted(vocab.values()) == list(range(TINY_VOCAB)), "vocab ids must be 0..1023"
    for i in range(TINY_VOCAB, vocab_size):
        vocab[f"<unused{unused}>"] = i
        unused += 1

    tok = Tokenizer(BPE(vocab=vocab, merges=final_merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True,
                        dropout=None))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.pre_tokenizer = pre_tokenizers.Split(" ", behavior="merged_with_previous", invert=False)
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    specials = []
    id_to_tok = {v: k for k, v in vocab.items()}
    for i in range(TINY_VOCAB):
        t = id_to_tok[i]
        if i in SPECIAL_FIXED or i in MM_TOKENS or t.startswith("<unused"):
            specials.append(AddedToken(t, special=True, normalized=False, lstrip=False, rstrip=False, single_word=False))
    tok.add_special_tokens(specials)
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", 2)]
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    # re-serialise through json with sorted keys for byte stability
    data = json.loads(tok.to_str())
    (out_dir / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")

    tok_cfg = {
        "tokenizer_class": "GemmaTokenizer",
        "processor_class": "Gemma4Processor",
        "bos_token": "<bos>",
        "eos_token": "<eos>",
        "pad_token": "<pad>",
        "unk_token": "<unk>",
        "mask_token": "<mask>",
        "image_token": "<|image|>",
        "boi_token": "<|image>",
        "eoi_token": "<image|>",
        "audio_token": "<|audio|>",
        "boa_token": "<|audio>",
        "eoa_token": "<audio|>",
        "padding_side": "left",
        "add_bos_token": True,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 131072,
    }
    write_json(out_dir / "tokenizer_config.json", tok_cfg)
    return vocab


def tiny_config(text_overrides=None):
    from transformers import Gemma4Config

    text_config = dict(
        vocab_size=TINY_VOCAB,
        vocab_size_per_layer_input=TINY_VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=5,
        layer_types=["sliding_attention", "sliding_attention", "full_attention", "sliding_attention", "full_attention"],
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=16,
        global_head_dim=32,
        sliding_window=16,
        hidden_size_per_layer_input=16,
        num_kv_shared_layers=2,
        use_double_wide_mlp=True,
        final_logit_softcapping=30.0,
        max_position_embeddings=4096,
        rms_norm_eps=1e-6,
        hidden_activation="gelu_pytorch_tanh",
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=1,
        tie_word_embeddings=True,
        rope_parameters={
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
            "full_attention": {"rope_type": "proportional", "partial_rotary_factor": 0.25, "rope_theta": 1000000.0},
        },
    )
    text_config.update(text_overrides or {})
    vision_config = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=16,
        patch_size=16,
        pooling_kernel_size=3,
        position_embedding_size=1024,
        use_clipped_linears=True,
        standardize=True,
        rms_norm_eps=1e-6,
        hidden_activation="gelu_pytorch_tanh",
        rope_parameters={"rope_type": "axial", "rope_theta": 100.0},
    )
    cfg = Gemma4Config(
        text_config=text_config,
        vision_config=vision_config,
        audio_config=None,
        boi_token_id=1017,
        boa_token_id=1018,
        image_token_id=1019,
        audio_token_id=1020,
        eoi_token_id=1021,
        eoa_token_index=1022,
        video_token_id=1023,
        tie_word_embeddings=True,
    )
    return cfg


POST_NORM_SCALE = 2.0
EMBED_STD = 0.15
QK_NORM_SCALE = 0.5


def _param_values(name: str, shape, gen, draw=None):
    """Random values for the parameter `name` of `shape` (the rules below); `draw` (a
    smaller shape) draws only that many values with the same distribution."""
    torch = _lazy_torch()
    draw = tuple(shape) if draw is None else tuple(draw)
    if name.endswith("norm.weight") or "layernorm" in name or "_norm" in name:
        w = torch.rand(draw, generator=gen) + 0.5  # U(0.5, 1.5)
        # Scale choices keep the random model out of the "copy the last token"
        # regime of tied embeddings; the final soft-cap still matters (|logit|
        # up to ~5, capping moves the top logit by ~0.05): post-sublayer norms x2 (see POST_NORM_SCALE).
        if "post_" in name:
            w = w * POST_NORM_SCALE
        if "q_norm" in name or "k_norm" in name:
            # attention scaling is 1.0 in Gemma 4: keep q.k moderate so the softmax is
            # not so sharp that fp32 kernel differences (torch vs onnxruntime) grow
            # past the 1e-5 / 1e-4 parity tolerances
            w = w * QK_NORM_SCALE
        if name == "model.language_model.norm.weight":
            w = w * 1.0
        return w
    if "position_embedding_table" in name:
        return torch.randn(draw, generator=gen) * 0.5
    if "embed_tokens_per_layer" in name:
        return torch.randn(draw, generator=gen) * 0.5
    if "embed_tokens" in name:
        return torch.randn(draw, generator=gen) * EMBED_STD
    if len(shape) == 2:
        return torch.randn(draw, generator=gen) / math.sqrt(shape[1])
    return torch.randn(draw, generator=gen) * 0.1


def _randomize_buffers(model, gen):
    torch = _lazy_torch()
    for name, b in sorted(model.named_buffers(), key=lambda kv: kv[0]):
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "layer_scalar":
            b.copy_(torch.rand(b.shape, generator=gen) * 0.5 + 0.5)
        elif leaf in ("input_min", "output_min"):
            b.copy_(-(torch.rand(b.shape, generator=gen) * 1.5 + 1.0))  # [-2.5, -1.0]
        elif leaf in ("input_max", "output_max"):
            b.copy_(torch.rand(b.shape, generator=gen) * 1.5 + 1.0)
        elif leaf == "std_bias":
            b.copy_(torch.randn(b.shape, generator=gen) * 0.5)
        elif leaf == "std_scale":
            b.copy_(torch.rand(b.shape, generator=gen) + 0.5)


def randomize_model(model, seed: int):
    """Deterministically randomise every parameter and every persistent buffer that
    transformers initialises to a constant (norm weights, layer scalars, 2-D position
    table, clip bounds, standardize bias/scale). Derived buffers (rope inv_freq,
    embed_scale) are left alone."""
    torch = _lazy_torch()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        seen = set()
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            if id(p) in seen:
                continue
            seen.add(id(p))
            p.copy_(_param_values(name, p.shape, gen))
        _randomize_buffers(model, gen)
    return model


def processor_config(max_soft_tokens=280):
    return {
        "image_processor": {
            "do_convert_rgb": True,
            "do_normalize": False,
            "do_rescale": True,
            "do_resize": True,
            "image_mean": [0.0, 0.0, 0.0],
            "image_std": [1.0, 1.0, 1.0],
            "image_processor_type": "Gemma4ImageProcessorPil",
            "image_seq_length": max_soft_tokens,
            "max_soft_tokens": max_soft_tokens,
            "patch_size": 16,
            "pooling_kernel_size": 3,
            "resample": 3,
            "rescale_factor": 0.00392156862745098,
        },
        "image_seq_length": max_soft_tokens,
        "audio_seq_length": 750,
        "audio_ms_per_token": 40,
        "processor_class": "Gemma4Processor",
    }


def generation_config():
    return {
        "bos_token_id": 2,
        "do_sample": True,
        "eos_token_id": [1, 106, 50],
        "pad_token_id": 0,
        "temperature": 1.0,
        "top_k": 64,
        "top_p": 0.95,
    }


def write_side_files(d: Path):
    write_json(d / "processor_config.json", processor_config())
    write_json(d / "preprocessor_config.json", {"processor_class": "Gemma4Processor"})
    write_json(d / "generation_config.json", generation_config())
    shutil.copyfile(HERE / "chat_template.jinja", d / "chat_template.jinja")


# --------------------------------------------------------------------------------------
# synthetic images
# --------------------------------------------------------------------------------------

IMAGE_SPECS = [
    # name, width, height
    ("grad_640x480", 640, 480),
    ("grad_612x408", 612, 408),
    ("grad_224x224", 224, 224),
    ("grad_1280x640", 1280, 640),
    ("tall_300x1000", 300, 1000),
    ("extreme_50x400", 50, 400),
    ("strip_2000x24", 2000, 24),  # hits the "height rounds to 0" branch at budget 70
]


def make_image(w: int, h: int, variant: int) -> np.ndarray:
    """Integer-only deterministic RGB pattern: gradients, a disc, a blocky xor texture."""
    y, x = np.mgrid[0:h, 0:w].astype(np.int64)
    r = (x * 255) // max(w - 1, 1)
    g = (y * 255) // max(h - 1, 1)
    b = (((x // (5 + variant)) ^ (y // (7 + variant))) * 37) % 256
    cx, cy, rad = w // 2, h // 3, max(min(w, h) // 4, 2)
    disc = (x - cx) ** 2 + (y - cy) ** 2 <= rad * rad
    r = np.where(disc, 255 - r, r)
    g = np.where(disc, (g + 96) % 256, g)
    stripes = ((x + 2 * y) // 9) % 2 == 0
    b = np.where(stripes & ~disc, b // 2, b)
    return np.stack([r, g, b], axis=-1).astype(np.uint8)


def write_images(d: Path):
    from PIL import Image

    d.mkdir(parents=True, exist_ok=True)
    paths = {}
    for i, (name, w, h) in enumerate(IMAGE_SPECS):
        arr = make_image(w, h, i)
        p = d / f"{name}.png"
        Image.fromarray(arr, "RGB").save(p, format="PNG", optimize=False, compress_level=9)
        paths[name] = p
    return paths


# --------------------------------------------------------------------------------------
# reference (transformers) generation
# --------------------------------------------------------------------------------------


def _image_processor():
    from transformers.models.gemma4.image_processing_pil_gemma4 import Gemma4ImageProcessorPil

    return Gemma4ImageProcessorPil()


def load_processor(d: Path):
    """transformers' Gemma4Processor from the directory, with the PIL image backend
    (AutoProcessor picks the torchvision backend when torchvision is installed; the Rust
    side implements PIL-style bicubic)."""
    from transformers import AutoProcessor
    from transformers.models.gemma4.image_processing_pil_gemma4 import Gemma4ImageProcessorPil

    proc = AutoProcessor.from_pretrained(str(d))
    cfg = json.loads((d / "processor_config.json").read_text())["image_processor"]
    kw = {k: cfg[k] for k in ("max_soft_tokens", "patch_size", "pooling_kernel_size") if k in cfg}
    proc.image_processor = Gemma4ImageProcessorPil(**kw)
    return proc


class BinWriter:
    def __init__(self, root: Path, sub="reference"):
        self.root = root
        self.dir = root / sub
        self.sub = sub
        self.dir.mkdir(parents=True, exist_ok=True)

    def put(self, name: str, arr: np.ndarray):
        arr = np.ascontiguousarray(arr)
        dt = {np.dtype("float32"): "f32", np.dtype("uint8"): "u8", np.dtype("int64"): "i64"}[arr.dtype]
        fn = f"{name}.{dt}.bin"
        (self.dir / fn).write_bytes(arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes())
        return {"file": f"{self.sub}/{fn}", "dtype": dt, "shape": list(arr.shape)}


def f32list(a) -> list:
    """float32 values as the shortest decimal that parses back to the same float32."""
    return [float(str(v)) for v in np.asarray(a, dtype=np.float32).reshape(-1)]


def hf_position_ids(attention_mask):
    """HF generate(): cumsum(mask) - 1, padded slots set to 0."""
    torch = _lazy_torch()
    pos = attention_mask.long().cumsum(-1) - 1
    return pos.masked_fill(attention_mask == 0, 0)


def make_reference(out_dir: Path, model, n_steps=32, log=print):
    torch = _lazy_torch()
    from PIL import Image

    set_determinism(0)
    bw = BinWriter(out_dir)
    proc = load_processor(out_dir)
    ip = proc.image_processor
    assert type(ip).__name__ == "Gemma4ImageProcessorPil", type(ip)
    tv_ip = None
    try:
        from transformers.models.gemma4.image_processing_gemma4 import Gemma4ImageProcessor as _TV

        tv_ip = _TV()
    except Exception:  # pragma: no cover - torchvision missing
        pass
    ref = {
        "format": "quire-gemma4-reference/1",
        "generated_by": "onnx/export/quire_export.py tiny",
        "library_versions": _versions(),
        "notes": [
            "All arrays in *.bin files are raw little-endian, row-major; see each entry's dtype/shape.",
            "pixel_values = float32(pixel_u8) / 255.0f (correctly rounded; equals transformers' PIL backend "
            "bit for bit. Multiplying by float32(1/255) instead is off by 1 ulp for some values).",
            "Logits are after final_logit_softcapping (30.0), which is inside the decoder graph.",
            "Greedy decoding: argmax of the last-position logits; EOS ids are NOT used to stop "
            "(the random model may emit them); 'first_eos_step' tells where a stop would have happened.",
            "position_ids follow transformers generate(): cumsum(attention_mask)-1 with padded slots = 0; "
            "each decode step uses last position + 1.",
        ],
        "image_processor": {
            "class": type(ip).__name__,
            "backend": "pil",
            "note": "torchvision_backend_max_abs_u8_diff in each entry = max |torchvision-backend pixel*255 - PIL u8| (informational)",
            "resample": "PIL BICUBIC (resample=3) on uint8 RGB, then rescale 1/255; no normalization",
            "patch_size": 16, "pooling_kernel_size": 3,
        },
    }

    # ------------------------------------------------------------------ preprocessing
    images = {}
    for name, w, h in IMAGE_SPECS:
        images[name] = Image.open(out_dir / "images" / f"{name}.png").convert("RGB")
    full_cases = {("grad_640x480", 70), ("tall_300x1000", 70), ("grad_224x224", 140)}
    pre = []
    for name, w, h in IMAGE_SPECS:
        for budget in SUPPORTED_BUDGETS:
            bf = ip(images[name], max_soft_tokens=budget, return_tensors="np")
            pv = bf["pixel_values"][0]
            pid = bf["image_position_ids"][0]
            n_soft = int(bf["num_soft_tokens_per_image"][0])
            valid = int((pid[:, 0] >= 0).sum())
            ph = int(pid[:valid, 1].max()) + 1
            pw = int(pid[:valid, 0].max()) + 1
            u8f = pv[:valid] * 255.0
            u8 = np.rint(u8f).astype(np.int64)
            assert np.abs(u8f - u8).max() < 1e-3, "pixel values are not k/255"
            assert np.array_equal(u8.astype(np.float32) / np.float32(255.0), pv[:valid]), \
                "pixel_values != float32(u8) / 255"
            entry = {
                "image": f"images/{name}.png",
                "input_width": w, "input_height": h,
                "max_soft_tokens": budget,
                "max_patches": int(pv.shape[0]),
                "resized_height": ph * 16, "resized_width": pw * 16,
                "patches_h": ph, "patches_w": pw,
                "num_patches": valid,
                "num_soft_tokens": n_soft,
                "pixel_u8_sum": int(u8.sum()),
                "pixel_u8_sq_sum": int((u8 * u8).sum()),
                "pixel_row_u8_sums_first64": [int(v) for v in u8.sum(axis=1)[:64]],
                "pixel_first_row_u8": [int(v) for v in u8[0]],
                "pixel_values_mean": float(pv.astype(np.float64).mean()),
                "first_pad_row": valid if valid < pv.shape[0] else None,
            }
            # positions: (x=col, y=row), row-major, then (-1,-1)
            exp_pos = np.stack(np.meshgrid(np.arange(pw), np.arange(ph), indexing="xy"), -1).reshape(-1, 2)
            assert np.array_equal(pid[:valid], exp_pos) and (pid[valid:] == -1).all()
            if tv_ip is not None:
                tv = tv_ip(images[name], max_soft_tokens=budget, return_tensors="np")["pixel_values"][0][:valid]
                entry["torchvision_backend_max_abs_u8_diff"] = float(np.abs(tv * 255.0 - u8).max())
            if (name, budget) in full_cases:
                entry["pixel_u8"] = bw.put(f"pixels_{name}_{budget}", u8.astype(np.uint8))
                entry["image_position_ids"] = bw.put(f"positions_{name}_{budget}", pid.astype(np.int64))
            pre.append(entry)
    ref["preprocessing"] = pre

    # ------------------------------------------------------------------ vision features
    vis_imgs = ["grad_640x480", "tall_300x1000"]
    bf = ip([images[n] for n in vis_imgs], max_soft_tokens=70, return_tensors="pt")
    with torch.no_grad():
        out = model.get_image_features(
            pixel_values=bf["pixel_values"], image_position_ids=bf["image_position_ids"], return_dict=True
        )
    feats = torch.cat(out.pooler_output, dim=0).float().numpy()
    ref["vision"] = {
        "images": [f"images/{n}.png" for n in vis_imgs],
        "max_soft_tokens": 70,
        "max_patches": int(bf["pixel_values"].shape[1]),
        "num_soft_tokens": [int(v) for v in bf["num_soft_tokens_per_image"]],
        "image_features": bw.put("vision_features", feats.astype(np.float32)),
        "note": "one vision_encoder call with both images stacked ([2, 630, 768]); features concatenated in image order",
    }

    # ------------------------------------------------------------------ template golden cases
    tmpl_cases = []
    golden_msgs = [
        ("hello", [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}], {}),
        ("hello_string_content", [{"role": "user", "content": "Hello"}], {}),
        ("image_then_text", [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe this image."}]}], {}),
        ("system_and_thinking", [
            {"role": "system", "content": "You read documents."},
            {"role": "user", "content": [{"type": "text", "text": "  What is the total?  "}]},
        ], {"enable_thinking": True}),
        ("multi_turn", [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "<|channel>thought\nhmm<channel|>Hello! How can I help?"},
            {"role": "user", "content": [{"type": "text", "text": "Read this."}, {"type": "image"}]},
        ], {}),
        ("developer_and_tools", [
            {"role": "developer", "content": "Use tools when needed."},
            {"role": "user", "content": "Total?"},
        ], {"tools": [{"type": "function", "function": {"name": "get_total", "description": "Sum an invoice"}}]}),
        ("strip_two_thought_spans", [
            {"role": "user", "content": "Q"},
            {"role": "assistant", "content": "A<|channel>x<channel|>B<|channel>y<channel|>C"},
            {"role": "user", "content": "Again"},
        ], {}),
        ("thinking_no_system", [{"role": "user", "content": "Think."}], {"enable_thinking": True}),
    ]
    for cname, msgs, kw in golden_msgs:
        rendered = proc.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False, **kw)
        ids = proc.tokenizer(rendered, add_special_tokens=False)["input_ids"]
        tmpl_cases.append({"name": cname, "messages": msgs, "add_generation_prompt": True, **kw,
                           "rendered": rendered, "input_ids": ids})
    ref["template_cases"] = tmpl_cases

    # ------------------------------------------------------------------ generation cases
    def run_case(cname, msgs_list, budget=70):
        texts = [proc.apply_chat_template(m, add_generation_prompt=True, tokenize=False) for m in msgs_list]
        imgs = []
        for m in msgs_list:
            per = []
            for turn in m:
                if isinstance(turn["content"], list):
                    for it in turn["content"]:
                        if it["type"] == "image":
                            per.append(images[it["image_name"]])
            imgs.append(per)
        has_img = any(len(p) for p in imgs)
        # the template already emits <bos>: no second one (HF apply_chat_template does the same)
        kwargs = dict(text=texts, return_tensors="pt", padding=True, add_special_tokens=False)
        if has_img:
            kwargs["images"] = imgs
            kwargs["images_kwargs"] = {"max_soft_tokens": budget}
        inputs = proc(**kwargs)
        input_ids = inputs["input_ids"]
        am = inputs["attention_mask"]
        assert int((input_ids == 2).sum()) == len(texts), "exactly one <bos> per prompt"
        fwd = dict(input_ids=input_ids, attention_mask=am, position_ids=hf_position_ids(am))
        if has_img:
            fwd["pixel_values"] = inputs["pixel_values"]
            fwd["image_position_ids"] = inputs["image_position_ids"]
        with torch.no_grad():
            logits = model(**fwd, use_cache=False).logits[:, -1, :].float().numpy()
            gen_kwargs = dict(input_ids=input_ids, attention_mask=am, do_sample=False, max_new_tokens=n_steps,
                              min_new_tokens=0, eos_token_id=None, pad_token_id=0,
                              output_scores=True, return_dict_in_generate=True)
            if has_img:
                gen_kwargs["pixel_values"] = inputs["pixel_values"]
                gen_kwargs["image_position_ids"] = inputs["image_position_ids"]
            g = model.generate(**gen_kwargs)
        seqs = g.sequences[:, input_ids.shape[1]:].numpy()
        scores = torch.stack(g.scores, dim=1).float().numpy()  # [B, steps, V]
        case = {
            "name": cname,
            "batch_size": len(texts),
            "messages": [_strip_names(m) for m in msgs_list],
            "rendered_prompts": texts,
            "max_soft_tokens": budget if has_img else None,
            "images": [[f"images/{it['image_name']}.png" for turn in m if isinstance(turn["content"], list)
                        for it in turn["content"] if it["type"] == "image"] for m in msgs_list],
            "input_ids": input_ids.numpy().tolist(),
            "attention_mask": am.numpy().tolist(),
            "position_ids": hf_position_ids(am).numpy().tolist(),
            "prefill_last_logits": [f32list(r) for r in logits],
            "greedy_tokens": seqs.tolist(),
            "step_max_logits": [f32list(scores[b].max(axis=-1)) for b in range(len(texts))],
            "last_step_logits": [f32list(scores[b, -1]) for b in range(len(texts))],
            "first_eos_step": [next((i for i, t in enumerate(row) if t in (1, 106, 50)), None) for row in seqs.tolist()],
        }
        if has_img:
            flat = [im for per in imgs for im in per]
            case["num_soft_tokens"] = [int(v) for v in ip(flat, max_soft_tokens=budget)["num_soft_tokens_per_image"]]
            case["image_token_count"] = [int(v) for v in (input_ids == model.config.image_token_id).sum(1)]
        # check HF prefill logits == generate's first-step scores (same maths, different path)
        d = float(np.abs(scores[:, 0, :] - logits).max())
        case["hf_forward_vs_generate_first_step_max_abs_diff"] = d
        return case

    msgA = [{"role": "user", "content": [{"type": "image", "image_name": "grad_640x480"},
                                          {"type": "text", "text": "Describe this image."}]}]
    msgB = [{"role": "user", "content": [{"type": "image", "image_name": "tall_300x1000"},
                                          {"type": "text", "text": "Extract the total amount and the date from this document, please."}]}]
    msgT = [{"role": "user", "content": [{"type": "text", "text": "Hello, please summarise the document in one sentence."}]}]
    cases = []
    cases.append(run_case("image_prompt", [msgA]))
    cases.append(run_case("text_prompt", [msgT]))
    cases.append(run_case("image_prompt_b", [msgB]))
    batch = run_case("batch2_left_padded", [msgA, msgB])
    # batched greedy must equal the unbatched runs
    batch["unbatched_greedy_tokens"] = [cases[0]["greedy_tokens"][0], cases[2]["greedy_tokens"][0]]
    batch["batched_equals_unbatched"] = batch["greedy_tokens"] == batch["unbatched_greedy_tokens"]
    cases.append(batch)
    ref["generation"] = cases
    write_json(out_dir / "reference.json", ref, indent=1)
    log(f"  wrote {out_dir / 'reference.json'}")
    if not batch["batched_equals_unbatched"]:
        log("WARNING: batched greedy tokens differ from unbatched ones")
    return ref


def _strip_names(msgs):
    out = []
    for m in msgs:
        c = m["content"]
        if isinstance(c, list):
            c = [{"type": "image", "image": f"images/{it['image_name']}.png"} if it["type"] == "image" else it for it in c]
        out.append({"role": m["role"], "content": c})
    return out


def _versions():
    v = {}
    for mod in ("torch", "transformers", "onnx", "onnxruntime", "tokenizers", "PIL", "numpy"):
        try:
            v[mod] = __import__(mod).__version__
        except Exception:  # pragma: no cover
            pass
    return v


def cmd_tiny(out_dir, seed=20260517, dtypes=("fp32", "fp16"), log=print):
    torch = _lazy_torch()
    from transformers import Gemma4ForConditionalGeneration

    out_dir = Path(out_dir)
    if out_dir.exists():
        for p in ("onnx", "reference", "images"):
            if (out_dir / p).exists():
                shutil.rmtree(out_dir / p)
    out_dir.mkdir(parents=True, exist_ok=True)
    set_determinism(0)
    cfg = tiny_config()
    cfg._attn_implementation = "eager"
    model = Gemma4ForConditionalGeneration(cfg)
    randomize_model(model, seed)
    model.eval()
    assert model.lm_head.weight.data_ptr() == model.model.language_model.embed_tokens.weight.data_ptr()

    with tempfile.TemporaryDirectory() as ck:
        ck = Path(ck)
        model.save_pretrained(ck)
        build_tiny_tokenizer(ck)
        write_side_files(ck)
        write_json(ck / "generation_config.json", generation_config())
        log("exporting tiny model")
        cmd_export(ck, out_dir, list(dtypes), log=log)
        exported = load_checkpoint(ck)  # fresh fp32 copy (export converted its model to fp16)
    # config.json: drop volatile keys
    write_images(out_dir / "images")
    log("writing reference (transformers)")
    make_reference(out_dir, exported, log=log)
    if "q4" in dtypes:
        # q8 and q4f16 from the graphs just written (the same as `quantize OUT_DIR` afterwards).
        cmd_quantize(out_dir, ["q8", "q4f16"], log=log)
    write_manifest(out_dir)


def write_manifest(out_dir: Path):
    files = {}
    for p in sorted(out_dir.rglob("*")):
        if p.is_file() and p.name != "MANIFEST.json":
            files[str(p.relative_to(out_dir))] = {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
    write_json(out_dir / "MANIFEST.json", files)


# --------------------------------------------------------------------------------------
# verify (onnxruntime vs reference.json)
# --------------------------------------------------------------------------------------


class OrtModel:
    def __init__(self, d: Path, variant: str = ""):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        suf = "" if variant in ("", "fp32") else f"_{variant}"
        self.dir = d
        vpath = d / "onnx" / f"vision_encoder{suf}.onnx"
        if not vpath.exists():  # q4 sets keep the fp32 vision tower
            vpath = d / "onnx" / "vision_encoder.onnx"
        self.vision = ort.InferenceSession(str(vpath), so, providers=["CPUExecutionProvider"])
        self.embed = ort.InferenceSession(str(d / "onnx" / f"embed_tokens{suf}.onnx"), so, providers=["CPUExecutionProvider"])
        self.decoder = ort.InferenceSession(str(d / "onnx" / f"decoder_model_merged{suf}.onnx"), so, providers=["CPUExecutionProvider"])
        self.cfg = json.loads((d / "config.json").read_text())
        self.past_inputs = [i for i in self.decoder.get_inputs() if i.name.startswith("past_key_values.")]
        self.float_dtype = np.float16 if self.embed.get_outputs()[0].type == "tensor(float16)" else np.float32

    def image_features(self, pixel_values, positions):
        return self.vision.run(["image_features"], {"pixel_values": pixel_values.astype(np.float32),
                                                     "pixel_position_ids": positions.astype(np.int64)})[0]

    def generate(self, input_ids, attention_mask, image_features=None, n_steps=32):
        """Greedy loop exactly as the Rust side should do it. Returns (prefill_logits, tokens, step_logits)."""
        ids = np.asarray(input_ids, dtype=np.int64)
        am = np.asarray(attention_mask, dtype=np.int64)
        B = ids.shape[0]
        pos = np.cumsum(am, -1) - 1
        pos[am == 0] = 0
        emb, pli = self.embed.run(None, {"input_ids": ids})
        if image_features is not None:
            mask = ids == self.cfg["image_token_id"]
            assert mask.sum() == image_features.shape[0], (mask.sum(), image_features.shape)
            emb = emb.copy()
            emb[mask] = image_features.astype(emb.dtype)
        past = {}
        for inp in self.past_inputs:
            dt = np.float16 if inp.type == "tensor(float16)" else np.float32
            past[inp.name] = np.zeros((B, inp.shape[1], 0, inp.shape[3]), dtype=dt)
        has_keep = any(i.name == "num_logits_to_keep" for i in self.decoder.get_inputs())
        out_names = [o.name for o in self.decoder.get_outputs()]
        tokens = [[] for _ in range(B)]
        step_logits = []
        cur_emb, cur_pli, cur_pos = emb, pli, pos
        prefill = None
        for step in range(n_steps):
            feed = {"inputs_embeds": cur_emb, "per_layer_inputs": cur_pli, "attention_mask": am, "position_ids": cur_pos}
            if has_keep:
                feed["num_logits_to_keep"] = np.array(1, dtype=np.int64)
            feed.update(past)
            outs = self.decoder.run(None, feed)
            res = dict(zip(out_names, outs))
            logits = res["logits"][:, -1, :].astype(np.float32)
            if prefill is None:
                prefill = logits
            step_logits.append(logits)
            nxt = logits.argmax(-1)
            for b in range(B):
                tokens[b].append(int(nxt[b]))
            past = {n.replace("present.", "past_key_values."): v for n, v in res.items() if n.startswith("present.")}
            cur_emb, cur_pli = self.embed.run(None, {"input_ids": nxt[:, None].astype(np.int64)})
            am = np.concatenate([am, np.ones((B, 1), dtype=np.int64)], axis=1)
            cur_pos = cur_pos[:, -1:] + 1
        return prefill, tokens, np.stack(step_logits, 1)


def _load_bin(d: Path, entry):
    dt = {"f32": "<f4", "u8": "u1", "i64": "<i8"}[entry["dtype"]]
    return np.fromfile(d / entry["file"], dtype=dt).reshape(entry["shape"])


def _pixels_for(d: Path, ref, image_rel: str, budget: int):
    for e in ref["preprocessing"]:
        if e["image"] == image_rel and e["max_soft_tokens"] == budget and "pixel_u8" in e:
            u8 = _load_bin(d, e["pixel_u8"])
            pv = np.zeros((e["max_patches"], 768), dtype=np.float32)
            pv[: u8.shape[0]] = u8.astype(np.float32) / np.float32(255.0)
            pos = _load_bin(d, e["image_position_ids"])
            return pv, pos
    raise KeyError((image_rel, budget))


def cmd_verify(out_dir, variants=("fp32", "fp16", "q4"), log=print, strict=True):
    d = Path(out_dir)
    ref = json.loads((d / "reference.json").read_text())
    report = {}
    ok = True
    tol = {"fp32": {"features": 1e-5, "logits": 1e-4}}
    for var in variants:
        suf = "" if var == "fp32" else f"_{var}"
        if not (d / "onnx" / f"decoder_model_merged{suf}.onnx").exists():
            continue
        m = OrtModel(d, var)
        r = {}
        # ---- vision
        v = ref["vision"]
        pvs, poss = zip(*[_pixels_for(d, ref, im, v["max_soft_tokens"]) for im in v["images"]])
        feats = m.image_features(np.stack(pvs), np.stack(poss)).astype(np.float32)
        exp = _load_bin(d, v["image_features"])
        assert feats.shape == exp.shape, (feats.shape, exp.shape)
        r["vision_features_max_abs_diff"] = float(np.abs(feats - exp).max())
        r["vision_features_max_abs"] = float(np.abs(exp).max())
        # ---- generation cases
        for case in ref["generation"]:
            imfeat = None
            imgs = [im for row in case["images"] for im in row]
            if imgs:
                pvs, poss = zip(*[_pixels_for(d, ref, im, case["max_soft_tokens"]) for im in imgs])
                imfeat = m.image_features(np.stack(pvs), np.stack(poss))
            n = len(case["greedy_tokens"][0])
            prefill, toks, steps = m.generate(case["input_ids"], case["attention_mask"], imfeat, n_steps=n)
            exp_prefill = np.array(case["prefill_last_logits"], dtype=np.float32)
            exp_last = np.array(case["last_step_logits"], dtype=np.float32)
            exp_stepmax = np.array(case["step_max_logits"], dtype=np.float32)
            cr = {
                "prefill_logits_max_abs_diff": float(np.abs(prefill - exp_prefill).max()),
                "last_step_logits_max_abs_diff": float(np.abs(steps[:, -1] - exp_last).max()),
                "step_max_logits_max_abs_diff": float(np.abs(steps.max(-1) - exp_stepmax).max()),
                "tokens_identical": toks == case["greedy_tokens"],
                "steps": n,
            }
            if not cr["tokens_identical"]:
                first = [next((i for i, (a, b) in enumerate(zip(x, y)) if a != b), None)
                         for x, y in zip(toks, case["greedy_tokens"])]
                cr["first_token_mismatch"] = first
            r[case["name"]] = cr
        report[var] = r
        if var == "fp32":
            t = tol["fp32"]
            if r["vision_features_max_abs_diff"] > t["features"]:
                ok = False
            for case in ref["generation"]:
                cr = r[case["name"]]
                if cr["prefill_logits_max_abs_diff"] > t["logits"] or cr["last_step_logits_max_abs_diff"] > t["logits"] \
                        or not cr["tokens_identical"]:
                    ok = False
    log(json.dumps(report, indent=2))
    log("VERIFY " + ("PASSED" if ok else "FAILED") + " (fp32 tolerances: features 1e-5, logits 1e-4, identical tokens; "
        "fp16/q4 numbers are informational)")
    if strict and not ok:
        raise SystemExit(1)
    return report, ok


def cmd_check_dynamic(out_dir, seed=20260517, log=print):
    """Extra check of the committed tiny model against transformers (needs torch): the vision
    graph at every budget with 1 and 3 images, decoder num_logits_to_keep 0 / 3, and a prefill
    split in two chunks across the sliding window. The transformers model is rebuilt from code
    (same seed), so this also proves the committed graphs match the code."""
    torch = _lazy_torch()
    from PIL import Image
    from transformers import Gemma4ForConditionalGeneration

    d = Path(out_dir)
    set_determinism(0)
    cfg = tiny_config()
    cfg._attn_implementation = "eager"
    m = Gemma4ForConditionalGeneration(cfg)
    randomize_model(m, seed)
    m.eval()
    o = OrtModel(d, "fp32")
    ip = load_processor(d).image_processor
    res = {}
    worst = 0.0
    for budget in SUPPORTED_BUDGETS:
        for names in (["grad_1280x640"], ["tall_300x1000", "grad_224x224", "strip_2000x24"]):
            ims = [Image.open(d / "images" / f"{n}.png").convert("RGB") for n in names]
            bf = ip(ims, max_soft_tokens=budget, return_tensors="pt")
            with torch.no_grad():
                hf = torch.cat(m.get_image_features(pixel_values=bf["pixel_values"],
                                                    image_position_ids=bf["image_position_ids"],
                                                    return_dict=True).pooler_output).numpy()
            ox = o.image_features(bf["pixel_values"].numpy(), bf["image_position_ids"].numpy())
            diff = float(np.abs(ox - hf).max())
            worst = max(worst, diff)
            res[f"vision_{budget}_{len(names)}img"] = {"shape": list(ox.shape), "max_abs_diff": diff}
    ids = torch.tensor([[2, 105, 708, 107, 518, 106, 107, 105, 534, 107] + list(range(400, 430))])
    am = torch.ones_like(ids)
    with torch.no_grad():
        full = m(input_ids=ids, attention_mask=am).logits.numpy()
    emb, pli = o.embed.run(None, {"input_ids": ids.numpy()})
    names = [x.name for x in o.decoder.get_outputs()]

    def run(e, p, a, pos, keep, past):
        r = dict(zip(names, o.decoder.run(None, {"inputs_embeds": e, "per_layer_inputs": p, "attention_mask": a,
                                                   "position_ids": pos, "num_logits_to_keep": np.array(keep, np.int64),
                                                   **past})))
        return r["logits"], {k.replace("present.", "past_key_values."): v for k, v in r.items() if k.startswith("present.")}

    past = {i.name: np.zeros((1, i.shape[1], 0, i.shape[3]), np.float32) for i in o.past_inputs}
    S = ids.shape[1]
    amn = am.numpy()
    lg, _ = run(emb, pli, amn, np.arange(S)[None], 0, past)
    res["decoder_keep0_all_positions"] = float(np.abs(lg - full).max())
    lg3, _ = run(emb, pli, amn, np.arange(S)[None], 3, past)
    res["decoder_keep3"] = float(np.abs(lg3 - full[:, -3:]).max())
    c = 17
    l1, pk = run(emb[:, :c], pli[:, :c], amn[:, :c], np.arange(c)[None], 0, past)
    l2, pk = run(emb[:, c:], pli[:, c:], amn, np.arange(c, S)[None], 0, pk)
    res["decoder_chunked_prefill_17_23"] = float(np.abs(np.concatenate([l1, l2], 1) - full).max())
    log(json.dumps(res, indent=1))
    ok = worst <= 1e-5 and max(res["decoder_keep0_all_positions"], res["decoder_keep3"],
                                res["decoder_chunked_prefill_17_23"]) <= 1e-4
    log("CHECK-DYNAMIC " + ("PASSED" if ok else "FAILED"))
    if not ok:
        raise SystemExit(1)


# --------------------------------------------------------------------------------------
# big-vision (benchmark model)
# --------------------------------------------------------------------------------------


def big_vision_config():
    cfg = tiny_config()
    v = cfg.vision_config
    v.hidden_size = 768
    v.intermediate_size = 3072
    v.num_hidden_layers = 16
    v.num_attention_heads = 12
    v.num_key_value_heads = 12
    v.head_dim = 64
    v.patch_size = 16
    v.pooling_kernel_size = 3
    v.position_embedding_size = 10240
    v.use_clipped_linears = True
    v.standardize = False
    return cfg


def cmd_big_vision(out_dir, seed=7, dtypes=("fp32",), log=print):
    from transformers import Gemma4Config, Gemma4ForConditionalGeneration

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    set_determinism(0)
    cfg = big_vision_config()
    cfg = Gemma4Config.from_dict(cfg.to_dict())
    cfg._attn_implementation = "eager"
    model = Gemma4ForConditionalGeneration(cfg)
    randomize_model(model, seed)
    model.eval()
    with tempfile.TemporaryDirectory() as ck:
        ck = Path(ck)
        model.save_pretrained(ck)
        build_tiny_tokenizer(ck)
        write_side_files(ck)
        cmd_export(ck, out_dir, list(dtypes), log=log)
    log(f"big-vision model written to {out_dir}")


# --------------------------------------------------------------------------------------
# compact (real-size graphs in small files)
# --------------------------------------------------------------------------------------

COMPACT_MIN_ELEMENTS = 1 << 16  # smaller initializers stay as they are
COMPACT_BLOCK = 64  # most elements per axis of a block


def _block_dim(d: int) -> int:
    """The largest divisor of d that is at most COMPACT_BLOCK."""
    return max(b for b in range(1, min(d, COMPACT_BLOCK) + 1) if d % b == 0)


def _tiled(name: str, shape, dtype, rng, mean=0.0, std=1e-3, sample=None):
    """A seeded block of `dtype` (values N(mean, std), or drawn from `sample` for integer
    weights) and the `Tile` node that makes the initializer `name` of `shape` from it:
    (block initializer, repeats initializer, node)."""
    from onnx import helper, numpy_helper

    block_shape = tuple(_block_dim(d) for d in shape)
    if sample is None:
        block = rng.normal(mean, std or 1e-3, size=block_shape).astype(dtype)
    else:  # packed quantized weights (uint8 nibbles, int8): a sample of the original's bytes
        block = rng.choice(sample, size=block_shape).astype(dtype)
    repeats = np.array([d // b for d, b in zip(shape, block_shape)], dtype=np.int64)
    return (numpy_helper.from_array(block, name + "__block"),
            numpy_helper.from_array(repeats, name + "__repeats"),
            helper.make_node("Tile", [name + "__block", name + "__repeats"], [name], name=name + "__tile"))


def _save_compact(model, tiles, kept, dst: Path):
    g = model.graph
    del g.initializer[:]
    g.initializer.extend(kept)
    nodes = list(g.node)
    del g.node[:]
    g.node.extend(tiles + nodes)
    dst.parent.mkdir(parents=True, exist_ok=True)
    for stale in (dst, dst.with_name(dst.name + "_data")):
        stale.unlink(missing_ok=True)
    import onnx

    onnx.save(model, str(dst))


def compact_graph(src: Path, dst: Path, seed: int = 0, log=print) -> dict:
    """Writes `src` to `dst` with each initializer of at least COMPACT_MIN_ELEMENTS elements
    replaced by a seeded block (its own dtype, values drawn like the original's: same mean and
    spread) tiled to the full shape. Returns {initializers, bytes_before, bytes_after}."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src), load_external_data=True)
    g = model.graph
    rng = np.random.default_rng(seed)
    consumers = {n for node in g.node for n in node.input}
    graph_inputs = {i.name for i in g.input}
    kept, tiles, before, after, n = [], [], 0, 0, 0
    for init in g.initializer:
        arr = numpy_helper.to_array(init)
        before += arr.nbytes
        if arr.size < COMPACT_MIN_ELEMENTS or init.name in graph_inputs or init.name not in consumers:
            kept.append(init)
            after += arr.nbytes
            continue
        if arr.dtype.kind == "f":
            flat = arr.astype(np.float64).reshape(-1)
            block, repeats, tile = _tiled(init.name, arr.shape, arr.dtype, rng, flat.mean(), flat.std())
        else:
            block, repeats, tile = _tiled(init.name, arr.shape, arr.dtype, rng, sample=arr.reshape(-1))
        kept += [block, repeats]
        tiles.append(tile)
        after += numpy_helper.to_array(block).nbytes + numpy_helper.to_array(repeats).nbytes
        n += 1
    _save_compact(model, tiles, kept, dst)
    log(f"  {src.name}: {n} initializers tiled, {before / 2**20:.1f} MiB -> {after / 2**20:.2f} MiB")
    return {"initializers": n, "bytes_before": before, "bytes_after": after}


def optimized_op_counts(path: Path) -> Counter:
    """Node op types of the graph as ONNX Runtime runs it on the CPU (all optimisations)."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        so.add_session_config_entry("session.optimized_model_external_initializers_file_name", "optimized.data")
        ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        m = onnx.load(str(Path(tmp) / "optimized.onnx"), load_external_data=False)
        return Counter(n.op_type for n in m.graph.node)


def cmd_compact(in_dir, out_dir, log=print):
    """Copies the model directory `in_dir` to `out_dir` with compact graphs, and checks that
    ONNX Runtime runs each compact graph with exactly the node types and counts of the original
    (the tiles folded away at load)."""
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for f in in_dir.iterdir():
        if f.is_file():
            shutil.copy2(f, out_dir / f.name)
    report = {}
    for src in sorted((in_dir / "onnx").glob("*.onnx")):
        dst = out_dir / "onnx" / src.name
        report[src.name] = compact_graph(src, dst, log=log)
        original, compact = optimized_op_counts(src), optimized_op_counts(dst)
        if original != compact:
            raise SystemExit(f"{src.name}: the compact graph runs other nodes than the original:\n"
                             f"  original {sorted(original.items())}\n  compact  {sorted(compact.items())}")
        report[src.name]["optimized_nodes"] = sum(original.values())
        log(f"  {src.name}: same {sum(original.values())} nodes after optimisation "
            f"({len(original)} op types), no Tile left")
    write_json(out_dir / "compact.json", report)
    log(f"compact model written to {out_dir}")


# --------------------------------------------------------------------------------------
# real size straight from torch (full-size weights never in memory nor on disk)
# --------------------------------------------------------------------------------------

E2B_VOCAB = 262144


# The real text dimensions (shared/docs/gemma4-onnx-contract.md section 7).
REAL_TEXT = {
    "e2b": dict(hidden_size=1536, intermediate_size=6144, use_double_wide_mlp=True, num_hidden_layers=35,
                layer_types=(["sliding_attention"] * 4 + ["full_attention"]) * 7,
                num_key_value_heads=1, num_kv_shared_layers=20),
    "e4b": dict(hidden_size=2560, intermediate_size=10240, use_double_wide_mlp=False, num_hidden_layers=42,
                layer_types=(["sliding_attention"] * 5 + ["full_attention"]) * 7,
                num_key_value_heads=2, num_kv_shared_layers=18),
}


def real_size_config(size="e2b"):
    """The real E2B (or E4B) text dimensions and the real vision tower (big_vision_config,
    the same in both); the tiny model's special token ids and tokenizer, padded to the real
    vocabulary."""
    from transformers import Gemma4Config

    cfg = tiny_config(text_overrides=dict(
        vocab_size=E2B_VOCAB,
        vocab_size_per_layer_input=E2B_VOCAB,
        num_attention_heads=8,
        head_dim=256,
        global_head_dim=512,
        sliding_window=512,
        hidden_size_per_layer_input=256,
        max_position_embeddings=131072,
        **REAL_TEXT[size],
    ))
    vision = big_vision_config().vision_config.to_dict()
    cfg = cfg.to_dict()
    cfg["vision_config"] = vision
    return Gemma4Config.from_dict(cfg)


@contextlib.contextmanager
def params_on_meta():
    """Modules built inside get their parameters on the meta device (no memory); buffers
    (rope frequencies, layer scalars, clip bounds) stay real."""
    from torch import nn

    register = nn.Module.register_parameter

    def on_meta(self, name, param):
        if param is not None and param.device.type != "meta":
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register(self, name, param)

    nn.Module.register_parameter = on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = register


def _distinct(t):
    """The values of `t` without its stride-0 (expanded) axes."""
    return t[tuple(slice(0, 1) if st == 0 and n > 1 else slice(None) for n, st in zip(t.shape, t.stride()))]


def cheap_random_params(model, gen, min_elements=COMPACT_MIN_ELEMENTS):
    """Real parameters for a model built under params_on_meta: small ones get
    randomize_model's values; large ones one random row (same distribution) expanded to the
    full shape, which costs no memory. Only their mean and spread reach a compact graph."""
    torch = _lazy_torch()
    from torch import nn

    names = {id(p): n for n, p in model.named_parameters()}
    made = {}
    with torch.no_grad():
        for module in model.modules():
            for key, p in list(module._parameters.items()):
                if p is None:
                    continue
                if id(p) not in made:
                    shape = tuple(p.shape)
                    if math.prod(shape) < min_elements:
                        v = _param_values(names[id(p)], shape, gen)
                    else:
                        v = _param_values(names[id(p)], shape, gen, draw=shape[-1:]).expand(shape)
                    made[id(p)] = nn.Parameter(v, requires_grad=False)
                module._parameters[key] = made[id(p)]
        _randomize_buffers(model, gen)
    return model


def export_compact_graphs(model, out_dir: Path, opset=17, seed=0, min_elements=COMPACT_MIN_ELEMENTS, log=print):
    """The fp32 graphs of `model`, written compact without ever holding full-size weights:
    torch exports each graph without its weights (export_params=False) while we keep the
    tensors it would have stored (after its constant folding, which leaves expanded weights
    as views); each becomes an initializer (small) or a seeded block and a Tile (large), as
    in compact_graph. Returns {graph file: {initializers, bytes_after}}."""
    torch = _lazy_torch()
    import onnx
    from onnx import numpy_helper

    onnx_dir = out_dir / "onnx"
    onnx_dir.mkdir(parents=True, exist_ok=True)
    stored = {}
    dedup = torch._C._jit_pass_onnx_deduplicate_initializers

    def keep_params(graph, params, training):
        out = dedup(graph, params, training)
        stored.clear()
        stored.update(out)
        return out

    report = {}
    torch._C._jit_pass_onnx_deduplicate_initializers = keep_params
    try:
        gen = torch.Generator().manual_seed(1234)
        for base, wrapper, args, in_names, out_names, dyn in graph_specs(model, torch.float32, gen):
            tmp = Path(tempfile.mkdtemp())
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    wrapper, args, str(tmp / "g.onnx"), dynamo=False, opset_version=opset, export_params=False,
                    input_names=in_names, output_names=out_names, dynamic_axes=dyn,
                )
            m = onnx.load(str(tmp / "g.onnx"))
            rng = np.random.default_rng(seed)
            inputs, kept, tiles, after = [], [], [], 0
            for vi in m.graph.input:
                t = stored.get(vi.name)
                if t is None:
                    inputs.append(vi)
                elif t.numel() < min_elements:
                    kept.append(numpy_helper.from_array(t.contiguous().numpy(), vi.name))
                    after += t.numel() * t.element_size()
                else:
                    values = _distinct(t)  # the expanded weights' distinct values: their mean and spread
                    d = values.double()
                    block, repeats, tile = _tiled(vi.name, tuple(t.shape), values.numpy().dtype, rng,
                                                  d.mean().item(), d.std(unbiased=False).item())
                    kept += [block, repeats]
                    tiles.append(tile)
                    after += numpy_helper.to_array(block).nbytes + 8 * len(t.shape)
            del m.graph.input[:]
            m.graph.input.extend(inputs)
            _save_compact(m, tiles, kept, tmp / "compact.onnx")
            out = onnx_dir / f"{base}.onnx"
            _finalize_onnx(tmp / "compact.onnx", out, False, dyn)
            shutil.rmtree(tmp)
            report[out.name] = {"initializers": len(tiles), "bytes_after": after}
            log(f"  wrote {out}: {len(tiles)} initializers tiled, {after / 2**20:.2f} MiB")
    finally:
        torch._C._jit_pass_onnx_deduplicate_initializers = dedup
    return report


def _tile_inputs(model):
    """{weight name: (block initializer, repeats)} of the graph's `__tile` nodes."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    return {n.output[0]: (inits[n.input[0]], numpy_helper.to_array(inits[n.input[1]]))
            for n in model.graph.node if n.op_type == "Tile" and n.name.endswith("__tile")}


def _without_tiles(model, names):
    """The graph's nodes and initializers less the `__tile` nodes making `names` and their
    block and repeats initializers."""
    drop = {n.name for n in model.graph.node if n.op_type == "Tile" and n.output[0] in names}
    drop_inits = {i for n in model.graph.node if n.name in drop for i in n.input}
    return ([n for n in model.graph.node if n.name not in drop],
            [i for i in model.graph.initializer if i.name not in drop_inits])


def _q4_quantizer(model):
    """onnxruntime's 4-bit quantizer, as quantize_q4 runs it."""
    import logging

    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)
    return MatMulNBitsQuantizer(
        model, bits=4, block_size=32, is_symmetric=True, accuracy_level=None,
        op_types_to_quantize=("MatMul", "Gather"), quant_axes=(("MatMul", 0), ("Gather", 1)),
    )


def quantize_compact_q4(src: Path, dst: Path, log=print) -> int:
    """The q4 graph (as quantize_q4 makes it) of a compact fp32 graph, without full-size
    weights: each tiled weight is replaced by its block, onnxruntime's quantizer quantizes
    the blocks, and each quantized block and its scales are tiled like the weight. The
    quantizer works in blocks of 32 along K (MatMul) or along the embedding (Gather); a
    tiled block spans a whole number of them, so the tiled quantized block is exactly the
    quantization of the tiled weight (check-compact verifies this). Tables become packed
    uint8 (GatherBlockQuantized bits=4), because Tile has no uint4 kernel."""
    import onnx
    import onnx.version_converter
    from onnx import helper, numpy_helper

    m = onnx.load(str(src))
    # shapes as the converter infers them on the full graph (the quantizer keeps them)
    full_value_info = list(onnx.version_converter.convert_version(m, 21).graph.value_info)
    g = m.graph
    tiled = _tile_inputs(m)
    # the axis quantized in blocks of 32: K of a MatMul weight [K, N], the embedding of a table
    quant_axis = {n.input[1]: 0 for n in g.node if n.op_type == "MatMul"}
    quant_axis.update({n.input[0]: 1 for n in g.node if n.op_type == "Gather"})
    untiled = {name for name, (block, reps) in tiled.items()
               if name in quant_axis and reps[quant_axis[name]] > 1 and block.dims[quant_axis[name]] % 32}
    tiled_q = {name: v for name, v in tiled.items() if name not in untiled}
    full = {name: [int(d) * int(r) for d, r in zip(block.dims, reps)] for name, (block, reps) in tiled_q.items()}
    kept_nodes, inits = _without_tiles(m, tiled)
    for name, (block, reps) in tiled.items():
        if name in untiled:  # blocks of 32 would straddle the tiles: quantize the full weight
            inits.append(numpy_helper.from_array(np.tile(numpy_helper.to_array(block), reps), name))
            continue
        b = onnx.TensorProto()
        b.CopyFrom(block)
        b.name = name
        inits.append(b)
    del g.node[:]
    g.node.extend(kept_nodes)
    del g.initializer[:]
    g.initializer.extend(inits)
    m = onnx.version_converter.convert_version(m, 21)
    q = _q4_quantizer(m)
    q.process()
    qm = q.model.model
    qg = qm.graph
    qinits = {i.name: i for i in qg.initializer}
    replace, tiles, done = {}, [], set()

    def tile(name, arr, repeats):
        replace[name] = [numpy_helper.from_array(arr, name + "__block"),
                         numpy_helper.from_array(np.array(repeats, dtype=np.int64), name + "__repeats")]
        tiles.append(helper.make_node("Tile", [name + "__block", name + "__repeats"], [name], name=name + "__tile"))

    for node in qg.node:
        attrs = {a.name: a for a in node.attribute}
        if node.op_type == "MatMulNBits" and node.input[1].endswith("_Q4"):
            weight = node.input[1][: -len("_Q4")]
            if weight not in full:
                continue
            K, N = full[weight]
            Kb, Nb = attrs["K"].i, attrs["N"].i
            attrs["K"].i, attrs["N"].i = K, N
            tile(node.input[1], numpy_helper.to_array(qinits[node.input[1]]), [N // Nb, K // Kb, 1])
            tile(node.input[2], numpy_helper.to_array(qinits[node.input[2]]), [N // Nb, K // Kb])
            done.add(weight)
        elif node.op_type == "GatherBlockQuantized" and node.input[0].endswith("_Q4"):
            weight = node.input[0][: -len("_Q4")]
            if weight not in full:
                continue
            V, D = full[weight]
            # int4 values in [-8, 7]; as uint8 nibbles with GatherBlockQuantized's default zero point 8
            nibbles = (numpy_helper.to_array(qinits[node.input[0]]).astype(np.int16) + 8).astype(np.uint8)
            Vb, Db = nibbles.shape
            packed = nibbles[:, 0::2] | (nibbles[:, 1::2] << 4)
            node.attribute.append(helper.make_attribute("bits", 4))
            tile(node.input[0], packed, [V // Vb, D // Db])
            tile(node.input[2], numpy_helper.to_array(qinits[node.input[2]]), [V // Vb, D // Db])
            done.add(weight)
    # weights the quantizer left alone stay tiled fp32 blocks
    tiled = tiled_q
    for name, (block, reps) in tiled.items():
        if name not in done:
            tile(name, numpy_helper.to_array(block), reps.tolist())
    new_inits = []
    for i in qg.initializer:
        if i.name in replace:
            new_inits += replace[i.name]
        elif i.name not in done:
            new_inits.append(i)
    nodes = list(qg.node)
    del qg.node[:]
    qg.node.extend(tiles + nodes)
    del qg.initializer[:]
    qg.initializer.extend(new_inits)
    produced = {o for n in qg.node for o in n.output}
    del qg.value_info[:]  # shapes inferred on the blocks
    qg.value_info.extend(vi for vi in full_value_info if vi.name in produced)
    dst.unlink(missing_ok=True)
    onnx.save(qm, str(dst))
    onnx.checker.check_model(str(dst))
    log(f"  wrote {dst}: {len(done)} tiled weights quantized, {len(tiled) - len(done)} left fp32, "
        f"{len(untiled)} quantized at full size")
    return len(done)


ORT_FOLD_LIMIT = 1 << 30  # onnxruntime does not constant-fold an output of 1 GiB or more (measured, 1.32)


def store_large_tiles(path: Path, limit=ORT_FOLD_LIMIT, log=print) -> int:
    """Rewrites the graph at `path` with every tiled weight of `limit` bytes or more stored as
    an ordinary initializer in `<graph>.onnx_data`, written band by band (never whole in
    memory): onnxruntime would leave such a Tile in the graph and run it on every call."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(path))
    tiled = _tile_inputs(m)
    large = {name: (numpy_helper.to_array(block), reps) for name, (block, reps) in tiled.items()
             if numpy_helper.to_array(block).nbytes * int(np.prod(reps)) >= limit}
    if not large:
        return 0
    nodes, inits = _without_tiles(m, large)
    data = path.with_name(path.name + "_data")
    offset = 0
    with open(data, "wb") as f:
        for name, (block, reps) in large.items():
            band = np.tile(block, (1, *reps[1:]))  # block rows across the full width
            for _ in range(int(reps[0])):
                f.write(band.tobytes())
            length = band.nbytes * int(reps[0])
            t = onnx.TensorProto()
            t.name = name
            t.data_type = onnx.helper.np_dtype_to_tensor_dtype(block.dtype)
            t.dims.extend(int(d) * int(r) for d, r in zip(block.shape, reps))
            t.data_location = onnx.TensorProto.EXTERNAL
            for k, v in (("location", data.name), ("offset", str(offset)), ("length", str(length))):
                e = t.external_data.add()
                e.key, e.value = k, v
            inits.append(t)
            offset += length
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    del m.graph.initializer[:]
    m.graph.initializer.extend(inits)
    onnx.save(m, str(path))
    log(f"  {path.name}: {len(large)} weights of 1 GiB or more stored whole ({offset / 2**30:.2f} GiB in {data.name})")
    return len(large)


def materialize(src: Path, dst: Path):
    """The ordinary graph of a compact one: every __tile node replaced by its full weight
    (uint8-packed GatherBlockQuantized tables stay packed)."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(src))
    tiled = _tile_inputs(m)
    nodes, inits = _without_tiles(m, tiled)
    inits += [numpy_helper.from_array(np.tile(numpy_helper.to_array(b), r), name) for name, (b, r) in tiled.items()]
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    del m.graph.initializer[:]
    m.graph.initializer.extend(inits)
    onnx.save(m, str(dst))


def _random_feeds(path: Path, seed=0):
    """Inputs for the graph at `path`: ids in range, a full attention mask, positions 0.., a
    short past, random floats."""
    import onnxruntime as ort

    rng = np.random.default_rng(seed)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    B, S, P = 1, 3, 2
    feeds = {}
    for i in sess.get_inputs():
        dims = [d if isinstance(d, int) else None for d in i.shape]
        if i.name == "input_ids":
            feeds[i.name] = rng.integers(0, 1024, (B, S), dtype=np.int64)
        elif i.name == "attention_mask":
            feeds[i.name] = np.ones((B, P + S), dtype=np.int64)
        elif i.name == "position_ids":
            feeds[i.name] = np.arange(P, P + S, dtype=np.int64)[None]
        elif i.name == "num_logits_to_keep":
            feeds[i.name] = np.array(0, dtype=np.int64)
        elif i.name.startswith("past_key_values"):
            feeds[i.name] = rng.standard_normal((B, dims[1], P, dims[3])).astype(np.float32)
        else:
            shape = [B, S] + [d for d in dims[2:]]
            feeds[i.name] = rng.standard_normal(shape).astype(np.float32)
    return sess, feeds


def cmd_check_compact(out_dir, log=print):
    """On the tiny model, with every weight of 1,024 elements or more tiled: (1) the compact
    graphs written straight from torch run the same nodes as the ordinary export; (2) the
    block-quantized q4 graphs equal onnxruntime's quantizer run on the full weights: the same
    nodes after optimisation and the same outputs, bit for bit."""
    import onnx
    import onnx.version_converter
    import onnxruntime as ort
    from transformers import Gemma4Config, Gemma4ForConditionalGeneration

    out_dir = Path(out_dir)
    set_determinism(0)
    cfg = Gemma4Config.from_dict(tiny_config().to_dict())
    cfg._attn_implementation = "eager"
    model = randomize_model(Gemma4ForConditionalGeneration(cfg), 20260517).eval()
    export_model(model, out_dir / "ordinary", dtypes=("fp32",), log=log)
    export_compact_graphs(model, out_dir / "compact", min_elements=1024, log=log)
    for base in ("vision_encoder", "embed_tokens", "decoder_model_merged"):
        a = optimized_op_counts(out_dir / "ordinary" / "onnx" / f"{base}.onnx")
        b = optimized_op_counts(out_dir / "compact" / "onnx" / f"{base}.onnx")
        if a != b:
            raise SystemExit(f"{base}: compact-from-torch runs other nodes:\n  {sorted(a.items())}\n  {sorted(b.items())}")
        log(f"  {base}: compact from torch runs the ordinary export's {sum(a.values())} nodes")
    for base in ("embed_tokens", "decoder_model_merged"):
        d = out_dir / "compact" / "onnx"
        quantize_compact_q4(d / f"{base}.onnx", d / f"{base}_q4.onnx", log=log)
        materialize(d / f"{base}.onnx", d / f"{base}_full.onnx")
        m = onnx.version_converter.convert_version(onnx.load(str(d / f"{base}_full.onnx")), 21)
        q = _q4_quantizer(m)
        q.process()
        onnx.save(q.model.model, str(d / f"{base}_full_q4.onnx"))
        a, b = optimized_op_counts(d / f"{base}_full_q4.onnx"), optimized_op_counts(d / f"{base}_q4.onnx")
        if a != b:
            raise SystemExit(f"{base} q4: block-quantized runs other nodes:\n  {sorted(a.items())}\n  {sorted(b.items())}")
        ref, feeds = _random_feeds(d / f"{base}_full_q4.onnx")
        ours = ort.InferenceSession(str(d / f"{base}_q4.onnx"), providers=["CPUExecutionProvider"])
        for name, x, y in zip([o.name for o in ref.get_outputs()], ref.run(None, feeds), ours.run(None, feeds)):
            if not np.array_equal(x, y):
                raise SystemExit(f"{base} q4: {name} differs, max {np.abs(x - y).max()}")
        log(f"  {base} q4: block-quantized = quantized full weights ({sum(a.values())} nodes, outputs bit-identical)")


def cmd_e2b(out_dir, seed=7, size="e2b", log=print):
    """A random Gemma 4 at the real E2B dimensions, compact: fp32 graphs straight from torch
    and q4 text graphs from them; once loaded, the compute and memory of E2B (fp32 text ~20 GB,
    q4 text ~3 GB). Graphs of a few MB, except the weights of 1 GiB or more, which
    onnxruntime would not fold (store_large_tiles): 11.8 GiB of fp32 tables and lm_head, and
    the 1.1 GiB q4 per-layer table, in `*.onnx_data` files."""
    torch = _lazy_torch()
    from transformers import Gemma4ForConditionalGeneration

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    set_determinism(0)
    cfg = real_size_config(size)
    cfg._attn_implementation = "eager"
    with params_on_meta():
        model = Gemma4ForConditionalGeneration(cfg)
    cheap_random_params(model, torch.Generator().manual_seed(seed)).eval()
    cfg.save_pretrained(out_dir)
    build_tiny_tokenizer(out_dir, vocab_size=E2B_VOCAB)
    write_side_files(out_dir)
    report = export_compact_graphs(model, out_dir, log=log)
    d = out_dir / "onnx"
    for base in ("embed_tokens", "decoder_model_merged"):
        report[f"{base}_q4.onnx"] = {"initializers": quantize_compact_q4(d / f"{base}.onnx", d / f"{base}_q4.onnx", log=log)}
    for graph in sorted(d.glob("*.onnx")):
        report[graph.name]["stored_whole"] = store_large_tiles(graph, log=log)
    write_json(out_dir / "compact.json", report)
    add_transformersjs_config(out_dir)
    log(f"{size.upper()}-size compact model written to {out_dir}")


# --------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("export", help="export a Gemma4ForConditionalGeneration checkpoint")
    p.add_argument("checkpoint_dir")
    p.add_argument("out_dir")
    p.add_argument("--dtype", default="fp32,fp16", help="comma list of fp32, fp16, q4")
    p = sub.add_parser("tiny", help="build + export the tiny test model with reference.json")
    p.add_argument("out_dir")
    p.add_argument("--no-q4", action="store_true")
    p = sub.add_parser("quantize", help="q8 / q4f16 (/ q4) graphs from the fp32 / fp16 graphs in OUT_DIR")
    p.add_argument("out_dir")
    p.add_argument("--dtype", default="q8,q4f16")
    p = sub.add_parser("verify", help="compare onnxruntime with reference.json")
    p.add_argument("out_dir")
    p.add_argument("--variants", default="fp32,fp16,q4")
    p = sub.add_parser("check-dynamic", help="tiny model: all budgets / keep / chunked prefill vs transformers")
    p.add_argument("out_dir")
    p = sub.add_parser("big-vision", help="random model with real E2B vision dims, for benchmarks")
    p.add_argument("out_dir")
    p.add_argument("--dtype", default="fp32")
    p = sub.add_parser("compact", help="large initializers as tiled blocks (real size in small files)")
    p.add_argument("in_dir")
    p.add_argument("out_dir")
    p = sub.add_parser("e2b", help="random model at the real E2B (or E4B) size, compact (fp32 + q4)")
    p.add_argument("out_dir")
    p.add_argument("--size", choices=sorted(REAL_TEXT), default="e2b")
    p = sub.add_parser("check-compact", help="tiny model: compact-from-torch and block q4 equal the ordinary graphs")
    p.add_argument("out_dir")
    a = ap.parse_args(argv)
    if a.cmd == "export":
        cmd_export(a.checkpoint_dir, a.out_dir, a.dtype.split(","))
    elif a.cmd == "tiny":
        cmd_tiny(a.out_dir, dtypes=("fp32", "fp16") if a.no_q4 else ("fp32", "fp16", "q4"))
    elif a.cmd == "quantize":
        cmd_quantize(a.out_dir, a.dtype.split(","))
    elif a.cmd == "verify":
        cmd_verify(a.out_dir, variants=a.variants.split(","))
    elif a.cmd == "check-dynamic":
        cmd_check_dynamic(a.out_dir)
    elif a.cmd == "big-vision":
        cmd_big_vision(a.out_dir, dtypes=a.dtype.split(","))
    elif a.cmd == "compact":
        cmd_compact(a.in_dir, a.out_dir)
    elif a.cmd == "e2b":
        cmd_e2b(a.out_dir, size=a.size)
    elif a.cmd == "check-compact":
        cmd_check_compact(a.out_dir)


if __name__ == "__main__":
    main()
