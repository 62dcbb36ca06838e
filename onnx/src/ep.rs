//! Execution providers: an ordered list chosen by the user (`--ep cuda,cpu`), each behind the
//! cargo feature that compiles its `ort` support. A provider that fails to register is an
//! error unless fallback was asked for; either way the session reports what it got.

use ort::ep::ExecutionProviderDispatch;
use ort::session::builder::SessionBuilder;
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provider {
    Cpu,
    Cuda,
    TensorRt,
    CoreMl,
    DirectMl,
    OpenVino,
}

impl Provider {
    pub const ALL: [Provider; 6] = [
        Provider::Cpu,
        Provider::Cuda,
        Provider::TensorRt,
        Provider::CoreMl,
        Provider::DirectMl,
        Provider::OpenVino,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Provider::Cpu => "cpu",
            Provider::Cuda => "cuda",
            Provider::TensorRt => "tensorrt",
            Provider::CoreMl => "coreml",
            Provider::DirectMl => "directml",
            Provider::OpenVino => "openvino",
        }
    }

    /// The cargo feature of `quire-onnx` (and of `quire`) that compiles this provider in.
    pub fn cargo_feature(self) -> Option<&'static str> {
        match self {
            Provider::Cpu => None,
            p => Some(p.name()),
        }
    }

    pub fn compiled_in(self) -> bool {
        match self {
            Provider::Cpu => true,
            Provider::Cuda => cfg!(feature = "cuda"),
            Provider::TensorRt => cfg!(feature = "tensorrt"),
            Provider::CoreMl => cfg!(feature = "coreml"),
            Provider::DirectMl => cfg!(feature = "directml"),
            Provider::OpenVino => cfg!(feature = "openvino"),
        }
    }

    /// Whether this provider needs the GPU build of ONNX Runtime (`onnxruntime-gpu`).
    pub fn needs_gpu_runtime(self) -> bool {
        matches!(self, Provider::Cuda | Provider::TensorRt)
    }

    /// `device_id`: the GPU ordinal, for the providers that take one (CUDA, TensorRT, DirectML).
    fn dispatch(self, device_id: i32) -> Result<ExecutionProviderDispatch, EpError> {
        let _ = device_id; // unused when no GPU provider is compiled in
        if !self.compiled_in() {
            return Err(EpError::NotCompiled {
                provider: self.name(),
                feature: self.cargo_feature().unwrap_or_default(),
            });
        }
        Ok(match self {
            Provider::Cpu => ort::ep::CPU::default().build(),
            #[cfg(feature = "cuda")]
            Provider::Cuda => ort::ep::CUDA::default().with_device_id(device_id).build(),
            #[cfg(feature = "tensorrt")]
            Provider::TensorRt => ort::ep::TensorRT::default()
                .with_device_id(device_id)
                .build(),
            #[cfg(feature = "coreml")]
            Provider::CoreMl => ort::ep::CoreML::default().build(),
            #[cfg(feature = "directml")]
            Provider::DirectMl => ort::ep::DirectML::default()
                .with_device_id(device_id)
                .build(),
            #[cfg(feature = "openvino")]
            Provider::OpenVino => ort::ep::OpenVINO::default().build(),
            #[allow(unreachable_patterns)]
            _ => unreachable!("compiled_in() checked the feature"),
        })
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A provider name that is none of [`Provider::ALL`] (nor `trt`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown execution provider {0:?} (cpu, cuda, tensorrt, coreml, directml, openvino)")]
pub struct ParseProviderError(pub String);

impl FromStr for Provider {
    type Err = ParseProviderError;
    fn from_str(s: &str) -> Result<Self, ParseProviderError> {
        let l = s.trim().to_ascii_lowercase();
        Provider::ALL
            .into_iter()
            .find(|p| p.name() == l || (l == "trt" && *p == Provider::TensorRt))
            .ok_or_else(|| ParseProviderError(s.to_string()))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EpError {
    #[error(
        "execution provider `{provider}` is not compiled into this build: rebuild with \
         `--features {feature}` (cargo feature `{feature}` of quire / quire-onnx)"
    )]
    NotCompiled {
        provider: &'static str,
        feature: &'static str,
    },
    #[error(
        "execution provider `{provider}` failed to register: {reason} \
         (pass --ep-fallback to continue with the next provider)"
    )]
    RegisterFailed {
        provider: &'static str,
        reason: String,
    },
}

/// The user's provider choice: tried in order; CPU always remains as ORT's last resort for
/// nodes no provider takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpConfig {
    pub providers: Vec<Provider>,
    /// Skip a provider that fails to register (logged and reported) instead of failing.
    pub fallback: bool,
    /// The GPU ordinal (`--device-id`) for CUDA, TensorRT and DirectML, and for the decoder's
    /// device-resident KV cache.
    pub device_id: i32,
}

impl Default for EpConfig {
    fn default() -> Self {
        EpConfig {
            providers: vec![Provider::Cpu],
            fallback: false,
            device_id: 0,
        }
    }
}

impl EpConfig {
    /// Parses `"cuda,cpu"`.
    pub fn parse_list(s: &str) -> Result<Vec<Provider>, ParseProviderError> {
        s.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::parse)
            .collect()
    }

    /// Fails early, before any session exists, for providers that are not compiled in.
    pub fn check_compiled(&self) -> Result<(), EpError> {
        for p in &self.providers {
            if !p.compiled_in() {
                p.dispatch(self.device_id)?;
            }
        }
        Ok(())
    }

    pub fn needs_gpu_runtime(&self) -> bool {
        self.providers.iter().any(|p| p.needs_gpu_runtime())
    }

    /// Registers the providers on `builder` in order, returning what happened to each.
    pub fn register(&self, builder: &mut SessionBuilder) -> Result<EpReport, EpError> {
        let mut report = EpReport::default();
        for &p in &self.providers {
            let dispatch = match p.dispatch(self.device_id) {
                Ok(d) => d,
                Err(e) if self.fallback => {
                    tracing::warn!("{e}; skipping it");
                    report.failed.push((p, e.to_string()));
                    continue;
                }
                Err(e) => return Err(e),
            };
            // A non-CPU provider the library was not built with is a registration failure
            // too; ORT would otherwise only log it.
            let result = if p != Provider::Cpu && !ort_has(&dispatch) {
                Err(format!(
                    "the loaded ONNX Runtime library was not built with {} (use the GPU build: `quire setup --gpu`)",
                    dispatch.name()
                ))
            } else {
                dispatch.register(builder).map_err(|e| e.to_string())
            };
            match result {
                Ok(()) => report.registered.push(p),
                Err(reason) if self.fallback => {
                    tracing::warn!(
                        "execution provider {p} failed to register, falling back: {reason}"
                    );
                    report.failed.push((p, reason));
                }
                Err(reason) => {
                    return Err(EpError::RegisterFailed {
                        provider: p.name(),
                        reason,
                    })
                }
            }
        }
        Ok(report)
    }
}

/// Whether the loaded library was built with this provider (not whether it can run).
fn ort_has(dispatch: &ExecutionProviderDispatch) -> bool {
    #[allow(unused_imports)]
    use ort::ep::ExecutionProvider;
    let name = dispatch.name();
    let check: Option<ort::Result<bool>> = match name {
        #[cfg(feature = "cuda")]
        n if n == ort::ep::CUDA::NAME => Some(ort::ep::CUDA::is_available()),
        #[cfg(feature = "tensorrt")]
        n if n == ort::ep::TensorRT::NAME => Some(ort::ep::TensorRT::is_available()),
        #[cfg(feature = "coreml")]
        n if n == ort::ep::CoreML::NAME => Some(ort::ep::CoreML::is_available()),
        #[cfg(feature = "directml")]
        n if n == ort::ep::DirectML::NAME => Some(ort::ep::DirectML::is_available()),
        #[cfg(feature = "openvino")]
        n if n == ort::ep::OpenVINO::NAME => Some(ort::ep::OpenVINO::is_available()),
        _ => None,
    };
    check.and_then(Result::ok).unwrap_or(true)
}

/// Which providers one session got.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EpReport {
    pub registered: Vec<Provider>,
    pub failed: Vec<(Provider, String)>,
}

impl EpReport {
    /// The provider that runs the graph's nodes first: the first registered, else ORT's CPU.
    pub fn primary(&self) -> Provider {
        self.registered.first().copied().unwrap_or(Provider::Cpu)
    }
}

impl fmt::Display for EpReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let reg: Vec<&str> = self.registered.iter().map(|p| p.name()).collect();
        if reg.is_empty() {
            f.write_str("cpu (default)")?;
        } else {
            f.write_str(&reg.join(" > "))?;
        }
        for (p, why) in &self.failed {
            write!(f, " [{p} failed: {why}]")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsing_and_features() {
        assert_eq!(
            EpConfig::parse_list("cuda, cpu").unwrap(),
            vec![Provider::Cuda, Provider::Cpu]
        );
        assert!(EpConfig::parse_list("tpu")
            .unwrap_err()
            .to_string()
            .contains("unknown execution provider"));
        if !cfg!(feature = "openvino") {
            let cfg = EpConfig {
                providers: vec![Provider::OpenVino],
                ..Default::default()
            };
            let err = cfg.check_compiled().unwrap_err().to_string();
            assert!(err.contains("--features openvino"), "{err}");
        }
    }
}
