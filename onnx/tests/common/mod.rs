//! Shared helpers of the model tests: the tiny model, its reference file, ONNX Runtime.
#![allow(dead_code)]

use quire_onnx::gemma4::{Gemma4, LoadOptions, Rgb8};
use serde_json::Value;
use std::path::{Path, PathBuf};

pub fn tiny_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/models/tiny-gemma4")
}

pub fn reference() -> Value {
    let text = std::fs::read_to_string(tiny_dir().join("reference.json")).expect("reference.json");
    serde_json::from_str(&text).expect("reference.json parses")
}

/// Raw little-endian array of a `{"file", "dtype", "shape"}` entry.
pub fn bin_bytes(entry: &Value) -> (Vec<usize>, Vec<u8>) {
    let shape = entry["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect();
    let bytes = std::fs::read(tiny_dir().join(entry["file"].as_str().unwrap())).unwrap();
    (shape, bytes)
}

pub fn bin_f32(entry: &Value) -> (Vec<usize>, Vec<f32>) {
    let (s, b) = bin_bytes(entry);
    (
        s,
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect(),
    )
}

pub fn bin_i64(entry: &Value) -> (Vec<usize>, Vec<i64>) {
    let (s, b) = bin_bytes(entry);
    (
        s,
        b.chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect(),
    )
}

pub fn load_image(rel: &str) -> Rgb8 {
    let img = image::open(tiny_dir().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    Rgb8::from_image(&img)
}

pub fn env() -> &'static ort::environment::Environment {
    let p = quire_onnx::provision::Provisioner::from_env(false);
    &quire_onnx::runtime::environment(&p, false)
        .expect("ONNX Runtime provisioned")
        .0
}

pub fn load_tiny() -> Gemma4 {
    load_dir(&tiny_dir())
}

pub fn load_dir(dir: &Path) -> Gemma4 {
    Gemma4::load(env(), dir, &LoadOptions::default())
        .unwrap_or_else(|e| panic!("loading {}: {e}", dir.display()))
}

pub fn u32s(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

pub fn f32s(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The Rust preprocessing of `rel` at `budget` (bit-exact with PIL, see
/// image_processor_parity.rs), as the model tests feed it.
pub fn preprocess_for_model(
    m: &Gemma4,
    rel: &str,
    budget: Option<quire_onnx::gemma4::Budget>,
) -> quire_onnx::gemma4::ProcessedImage {
    m.preprocess(&load_image(rel), budget).unwrap()
}
