//! Gemma 4 (E2B/E4B) from its ONNX export: see `shared/docs/gemma4-onnx-contract.md`.
//!
//! Entry point: [`Gemma4::load`], then [`Gemma4::preprocess`] / [`Gemma4::encode_images`] /
//! [`Gemma4::prompt_ids`] / [`Gemma4::generate`].

pub mod config;
pub mod continuous;
pub mod decoder;
pub mod embed_tokens;
pub mod error;
pub mod generate;
pub mod image_processor;
pub mod model_dir;
pub mod prompt;
pub mod sampling;
mod tensors;
pub mod vision_encoder;

pub use continuous::{Admission, BatchFailure, BatchLimits, DecodeBatch, Finished, NewSequence};
pub use error::Error;
pub use generate::{
    BatchOutput, FinishReason, Gemma4, GenerateOptions, Generation, LoadOptions, Request, Timings,
};
pub use image_processor::{Budget, ImageProcessor, ProcessedImage, Rgb8};
pub use model_dir::{Dtype, DtypeSelection};
pub use prompt::{Content, Message, Part};
pub use sampling::{LogitsProcessor, NoProcessor, Sampling};
