//! Gemma 4 (E2B/E4B) from its ONNX export: see `shared/docs/gemma4-onnx-contract.md`.
//!
//! Entry point: [`Gemma4::load`], then [`Gemma4::preprocess`] / [`Gemma4::encode_images`] /
//! [`Gemma4::prompt_ids`] / [`Gemma4::generate`].
//!
//! # Layout
//! * [`model`]: [`Gemma4`] and [`LoadOptions`]: loading a model directory, image preprocessing
//!   and vision features, prompt ids, display text.
//! * [`generation`]: the plain types of generation: [`Request`], [`GenerateOptions`],
//!   [`Generation`], [`FinishReason`], [`Timings`], [`BatchOutput`].
//! * [`decode_batch`]: continuous batching ([`DecodeBatch`], [`BatchLimits`],
//!   [`NewSequence`], [`Admission`], [`FinishedSequence`], [`BatchFailure`]) and
//!   [`Gemma4::generate`], a static batch on that loop.
//! * [`config`], [`model_dir`], [`image_processor`], [`prompt`], [`sampling`]: the model
//!   directory's files, the image processor, the chat template, token selection.
//! * [`vision_encoder`], [`embed_tokens`], [`decoder`]: the three graphs.
//!
//! Imports go one way: `decode_batch` uses `model` and `generation`, which use the file and
//! graph modules, which use `error`; nothing uses `decode_batch` but these re-exports.

pub mod config;
pub mod decode_batch;
pub mod decoder;
pub mod embed_tokens;
pub mod error;
pub mod generation;
pub mod image_processor;
pub mod model;
pub mod model_dir;
pub mod prompt;
pub mod sampling;
mod tensors;
pub mod vision_encoder;

pub use decode_batch::{
    Admission, BatchFailure, BatchLimits, DecodeBatch, FinishedSequence, NewSequence,
};
pub use error::Error;
pub use generation::{BatchOutput, FinishReason, GenerateOptions, Generation, Request, Timings};
pub use image_processor::{Budget, ImageProcessor, ProcessedImage, Rgb8};
pub use model::{Gemma4, LoadOptions};
pub use model_dir::{Dtype, DtypeSelection};
pub use prompt::{Content, Message, Part};
pub use sampling::{LogitsProcessor, NoProcessor, Sampling};
