//! Gemma 4 (E2B/E4B) from its ONNX export: see `shared/docs/gemma4-onnx-contract.md`.

pub mod image_processor;
