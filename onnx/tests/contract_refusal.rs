//! A model directory that does not fit the contract is refused at load with an error that
//! names the graph and the missing or mismatched input/output. Broken variants are built from
//! the tiny model in a tempdir: a graph removed, an input or output renamed inside the ONNX
//! protobuf (same-length byte edit, so the file stays valid), a KV head dim that disagrees
//! with config.json.

mod common;
use common::*;
use quire_onnx::gemma4::{Dtype, DtypeSelection, Gemma4, LoadOptions};
use std::path::Path;

/// Copies the tiny model's side files and fp32 graphs.
fn copy_tiny(dst: &Path) {
    let src = tiny_dir();
    std::fs::create_dir_all(dst.join("onnx")).unwrap();
    for e in std::fs::read_dir(&src).unwrap().flatten() {
        if e.path().is_file() && e.file_name() != "reference.json" {
            std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
        }
    }
    for g in ["vision_encoder", "embed_tokens", "decoder_model_merged"] {
        for ext in [".onnx", ".onnx_data"] {
            let name = format!("{g}{ext}");
            std::fs::copy(src.join("onnx").join(&name), dst.join("onnx").join(&name)).unwrap();
        }
    }
}

/// Replaces every occurrence of `from` with `to` (same length) in a file.
fn rename_in(path: &Path, from: &str, to: &str) {
    assert_eq!(from.len(), to.len());
    let mut bytes = std::fs::read(path).unwrap();
    let (f, t) = (from.as_bytes(), to.as_bytes());
    let mut n = 0;
    let mut i = 0;
    while i + f.len() <= bytes.len() {
        if &bytes[i..i + f.len()] == f {
            bytes[i..i + f.len()].copy_from_slice(t);
            n += 1;
            i += f.len();
        } else {
            i += 1;
        }
    }
    assert!(n > 0, "{from} not found in {}", path.display());
    std::fs::write(path, bytes).unwrap();
}

fn load_err(dir: &Path, opts: &LoadOptions) -> String {
    match Gemma4::load(env(), dir, opts) {
        Ok(_) => panic!("{} loaded but should have been refused", dir.display()),
        Err(e) => e.to_string(),
    }
}

fn broken(edit: impl FnOnce(&Path)) -> (tempfile::TempDir, String) {
    let tmp = tempfile::tempdir().unwrap();
    copy_tiny(tmp.path());
    edit(tmp.path());
    let err = load_err(tmp.path(), &LoadOptions::default());
    eprintln!("refused: {err}");
    (tmp, err)
}

#[test]
fn the_unbroken_copy_loads() {
    let tmp = tempfile::tempdir().unwrap();
    copy_tiny(tmp.path());
    load_dir(tmp.path());
}

#[test]
fn missing_graph_is_named() {
    let (_t, err) = broken(|d| std::fs::remove_file(d.join("onnx/embed_tokens.onnx")).unwrap());
    assert!(err.contains("embed_tokens.onnx"), "{err}");
    assert!(err.contains("no graph"), "{err}");
}

#[test]
fn missing_dtype_variant_lists_what_is_there() {
    let tmp = tempfile::tempdir().unwrap();
    copy_tiny(tmp.path());
    let opts = LoadOptions {
        dtype: DtypeSelection::uniform(Dtype::Q4f16),
        ..Default::default()
    };
    let err = load_err(tmp.path(), &opts);
    assert!(err.contains("vision_encoder_q4f16.onnx"), "{err}");
    assert!(err.contains("vision=fp32"), "{err}");
}

#[test]
fn renamed_vision_input_is_named() {
    let (_t, err) = broken(|d| {
        rename_in(
            &d.join("onnx/vision_encoder.onnx"),
            "pixel_position_ids",
            "pixel_position_idz",
        )
    });
    assert!(err.contains("vision_encoder.onnx"), "{err}");
    assert!(err.contains("missing input `pixel_position_ids`"), "{err}");
    assert!(
        err.contains("pixel_position_idz"),
        "the message lists what the graph has: {err}"
    );
}

#[test]
fn renamed_decoder_input_is_named() {
    let (_t, err) = broken(|d| {
        rename_in(
            &d.join("onnx/decoder_model_merged.onnx"),
            "attention_mask",
            "attention_masq",
        )
    });
    assert!(err.contains("decoder_model_merged.onnx"), "{err}");
    assert!(err.contains("missing input `attention_mask`"), "{err}");
}

#[test]
fn renamed_present_output_is_named() {
    let (_t, err) = broken(|d| {
        rename_in(
            &d.join("onnx/decoder_model_merged.onnx"),
            "present.1.value",
            "present.1.valuf",
        )
    });
    assert!(err.contains("missing output `present.1.value`"), "{err}");
}

#[test]
fn renamed_embed_output_is_named() {
    let (_t, err) = broken(|d| {
        rename_in(
            &d.join("onnx/embed_tokens.onnx"),
            "per_layer_inputs",
            "per_layer_inputz",
        )
    });
    assert!(err.contains("embed_tokens.onnx"), "{err}");
    assert!(err.contains("missing output `per_layer_inputs`"), "{err}");
}

#[test]
fn wrong_kv_head_dim_is_named() {
    // config.json says the full-attention layer 2 caches 64-wide heads; the graph has 32.
    let (_t, err) = broken(|d| {
        let p = d.join("config.json");
        let mut cfg: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        cfg["text_config"]["per_layer_config"]["2"]["head_dim"] = 64.into();
        std::fs::write(&p, serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
    });
    assert!(err.contains("past_key_values.2.key"), "{err}");
    assert!(err.contains("axis 3 is 32"), "{err}");
    assert!(err.contains("64"), "{err}");
}

#[test]
fn too_few_kv_layers_in_config_is_refused() {
    // One more KV-shared layer in config.json: the graph's past_key_values.2.* is unexpected.
    let (_t, err) = broken(|d| {
        let p = d.join("config.json");
        let mut cfg: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        cfg["text_config"]["num_kv_shared_layers"] = 3.into();
        std::fs::write(&p, serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
    });
    assert!(err.contains("unexpected input `past_key_values.2"), "{err}");
}

#[test]
fn missing_tokenizer_is_named() {
    let (_t, err) = broken(|d| std::fs::remove_file(d.join("tokenizer.json")).unwrap());
    assert!(err.contains("tokenizer.json"), "{err}");
}
