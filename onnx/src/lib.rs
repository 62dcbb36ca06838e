//! ONNX Runtime provisioning and sessions, execution providers, and the Gemma 4 model.
//! Knows nothing about PDFs or files on disk other than model directories.

pub mod ep;
pub mod gemma4;
pub mod provision;
pub mod runtime;
pub mod session;
