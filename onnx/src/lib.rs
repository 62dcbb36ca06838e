//! ONNX Runtime provisioning and sessions, execution providers, and the Gemma 4 model.
//! Knows nothing about PDFs or files on disk other than model directories.
//!
//! * [`provision`], [`runtime`]: finding or installing the ONNX Runtime library and creating
//!   its environment; [`cuda`]: the CUDA libraries of the GPU build, preloaded.
//! * [`ep`]: execution providers; [`session`]: sessions and their declared inputs/outputs.
//! * [`gemma4`]: the model: loading, preprocessing, prompts, continuous-batching generation.
//! * [`hub`], [`manifest`]: pulling a model repository from a Hugging Face hub (or mirror) and
//!   the hash manifest that `quire model verify` checks.
//!
//! Schema-constrained decoding is the `quire-constrained` crate (no ONNX Runtime in it); it
//! steers generation through [`gemma4::LogitsProcessor`].

pub mod cuda;
pub mod ep;
pub mod gemma4;
pub mod hub;
pub mod manifest;
pub mod provision;
pub mod runtime;
pub mod session;
