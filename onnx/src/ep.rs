//! Execution providers: an ordered list chosen by the user (`--ep cuda,cpu`). Every provider's
//! `ort` support is compiled in (the library is loaded at run time, so it costs only a little
//! code); whether one can run depends on the loaded library and the machine, which
//! [`EpConfig::resolve`] finds out once per process by creating a tiny session with it. A
//! provider that cannot run is an error unless fallback was asked for; either way the session
//! reports what it got.

use ort::ep::{ExecutionProvider, ExecutionProviderDispatch};
use ort::session::builder::SessionBuilder;
use ort::session::Session;
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

    /// ONNX Runtime's name of the provider (`CUDAExecutionProvider`).
    pub fn ort_name(self) -> &'static str {
        match self {
            Provider::Cpu => ort::ep::CPU::NAME,
            Provider::Cuda => ort::ep::CUDA::NAME,
            Provider::TensorRt => ort::ep::TensorRT::NAME,
            Provider::CoreMl => ort::ep::CoreML::NAME,
            Provider::DirectMl => ort::ep::DirectML::NAME,
            Provider::OpenVino => ort::ep::OpenVINO::NAME,
        }
    }

    /// Whether this provider needs the GPU build of ONNX Runtime (`onnxruntime-gpu`).
    pub fn needs_gpu_runtime(self) -> bool {
        matches!(self, Provider::Cuda | Provider::TensorRt)
    }

    /// Whether the loaded ONNX Runtime library was built with this provider (not whether it can
    /// run: the GPU build says yes on a machine without a GPU). Needs the library loaded.
    pub fn in_library(self) -> bool {
        let available = match self {
            Provider::Cpu => return true,
            Provider::Cuda => ort::ep::CUDA::is_available(),
            Provider::TensorRt => ort::ep::TensorRT::is_available(),
            Provider::CoreMl => ort::ep::CoreML::is_available(),
            Provider::DirectMl => ort::ep::DirectML::is_available(),
            Provider::OpenVino => ort::ep::OpenVINO::is_available(),
        };
        available.unwrap_or(false)
    }

    /// `device_id`: the GPU ordinal, for the providers that take one (CUDA, TensorRT, DirectML);
    /// `cpu_arena`: the CPU provider's memory arena ([`crate::session::SessionSettings`]).
    fn dispatch(self, device_id: i32, cpu_arena: bool) -> ExecutionProviderDispatch {
        match self {
            Provider::Cpu => ort::ep::CPU::default()
                .with_arena_allocator(cpu_arena)
                .build(),
            Provider::Cuda => ort::ep::CUDA::default().with_device_id(device_id).build(),
            Provider::TensorRt => ort::ep::TensorRT::default()
                .with_device_id(device_id)
                .build(),
            Provider::CoreMl => ort::ep::CoreML::default().build(),
            Provider::DirectMl => ort::ep::DirectML::default()
                .with_device_id(device_id)
                .build(),
            Provider::OpenVino => ort::ep::OpenVINO::default().build(),
        }
    }

    /// Registers this provider alone on a session of a one-node graph and creates it: what a
    /// model session would do, so a missing library (the provider's own, cuBLAS, the driver's
    /// `libcuda.so.1`) or a missing device shows here, once, with ONNX Runtime's reason.
    pub fn probe(self, env: &ort::environment::Environment, device_id: i32) -> Result<(), String> {
        if !self.in_library() {
            return Err(format!(
                "the loaded ONNX Runtime library was not built with {}{}",
                self.ort_name(),
                if self.needs_gpu_runtime() {
                    " (use the GPU build: `quire setup --gpu`)"
                } else {
                    ""
                }
            ));
        }
        let mut builder = Session::builder(env).map_err(|e| explain(&e.to_string()))?;
        self.dispatch(device_id, false)
            .register(&mut builder)
            .map_err(|e| explain(&e.to_string()))?;
        let session = builder
            .commit_from_memory(PROBE_MODEL)
            .map_err(|e| explain(&e.to_string()))?;
        drop(session);
        Ok(())
    }
}

/// ONNX Runtime's reason, without its source location, after what it means for the user: which
/// part is missing and where it comes from.
fn explain(ort_message: &str) -> String {
    let said = ort_message
        .rsplit_once("FAIL : ")
        .map_or(ort_message, |(_, rest)| rest)
        .trim();
    let cuda_libs = [
        "libcudart",
        "libcublas",
        "libcurand",
        "libcufft",
        "libnvrtc",
        "libcudnn",
    ];
    let meaning = if said.contains("libcuda.so.1") {
        "the NVIDIA driver is not installed (libcuda.so.1 comes with it)"
    } else if said.contains("libnvinfer") || said.contains("libnvonnxparser") {
        "TensorRT 10 is not installed (quire does not provision it)"
    } else if cuda_libs.iter().any(|l| said.contains(l)) {
        "a CUDA 13 library is missing (`quire setup --gpu` installs them)"
    } else if said.contains("no CUDA-capable device") {
        "no GPU is visible to this process"
    } else {
        return said.to_string();
    };
    format!("{meaning}; ONNX Runtime said: {said}")
}

/// `y = x + x` on a float tensor of shape `[1]` (ONNX IR 8, opset 13): the smallest graph every
/// provider takes. Written by `onnx.helper` (`make_node("Add", ["x", "x"], ["y"])`, graph
/// `probe`, producer `quire`) and checked by `onnx.checker`.
const PROBE_MODEL: &[u8] = include_bytes!("probe.onnx");

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
        "execution provider `{provider}` cannot run here: {reason} \
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
    /// Skip a provider that cannot run (a warning says why) instead of failing.
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

    pub fn needs_gpu_runtime(&self) -> bool {
        self.providers.iter().any(|p| p.needs_gpu_runtime())
    }

    /// Drops `provider` because of `reason`, or fails when fallback was not asked for. Said
    /// once here, so that each session of a model does not repeat it.
    pub fn skip(&mut self, provider: Provider, reason: String) -> Result<(), EpError> {
        if !self.fallback {
            return Err(EpError::RegisterFailed {
                provider: provider.name(),
                reason,
            });
        }
        self.providers.retain(|p| *p != provider);
        let next = self.providers.first().copied().unwrap_or(Provider::Cpu);
        tracing::warn!(
            "execution provider {provider} cannot run here, continuing with {next}: {reason}"
        );
        Ok(())
    }

    /// The providers that can run with the loaded library on this machine ([`Provider::probe`]),
    /// in order: one that cannot is an error, or with fallback left out with a warning.
    pub fn resolve(mut self, env: &ort::environment::Environment) -> Result<EpConfig, EpError> {
        for p in self.providers.clone() {
            if p == Provider::Cpu {
                continue;
            }
            if let Err(reason) = p.probe(env, self.device_id) {
                self.skip(p, reason)?;
            }
        }
        Ok(self)
    }

    /// Registers the providers on `builder` in order, returning what happened to each.
    /// [`EpConfig::resolve`] has found out beforehand which can run.
    pub fn register(
        &self,
        builder: &mut SessionBuilder,
        cpu_arena: bool,
    ) -> Result<EpReport, EpError> {
        let mut report = EpReport::default();
        for &p in &self.providers {
            match p.dispatch(self.device_id, cpu_arena).register(builder) {
                Ok(()) => report.registered.push(p),
                Err(e) if self.fallback => {
                    tracing::warn!("execution provider {p} failed to register, falling back: {e}");
                    report.failed.push((p, e.to_string()));
                }
                Err(e) => {
                    return Err(EpError::RegisterFailed {
                        provider: p.name(),
                        reason: e.to_string(),
                    })
                }
            }
        }
        Ok(report)
    }
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
    fn parsing() {
        assert_eq!(
            EpConfig::parse_list("cuda, TRT,cpu").unwrap(),
            vec![Provider::Cuda, Provider::TensorRt, Provider::Cpu]
        );
        assert!(EpConfig::parse_list("tpu")
            .unwrap_err()
            .to_string()
            .contains("unknown execution provider \"tpu\""));
    }

    #[test]
    fn skipping_a_provider_fails_without_fallback_and_drops_it_with() {
        let mut strict = EpConfig {
            providers: vec![Provider::Cuda, Provider::Cpu],
            fallback: false,
            device_id: 0,
        };
        let err = strict.skip(Provider::Cuda, "libcuda.so.1 missing".into());
        assert_eq!(
            err.unwrap_err().to_string(),
            "execution provider `cuda` cannot run here: libcuda.so.1 missing \
             (pass --ep-fallback to continue with the next provider)"
        );
        assert_eq!(strict.providers, vec![Provider::Cuda, Provider::Cpu]);
        let mut lenient = EpConfig {
            fallback: true,
            ..strict
        };
        lenient
            .skip(Provider::Cuda, "libcuda.so.1 missing".into())
            .unwrap();
        assert_eq!(lenient.providers, vec![Provider::Cpu]);
    }

    #[test]
    fn onnx_runtime_reasons_are_explained() {
        // As ONNX Runtime 1.31.1 (GPU build) words it on a machine without the driver.
        let said = "Failed to load library /c/libonnxruntime_providers_cuda.so with error: \
                    libcuda.so.1: cannot open shared object file: No such file or directory";
        let ort = format!(
            "/onnxruntime_src/onnxruntime/core/session/provider_bridge_ort.cc:2043 \
             onnxruntime::Provider& onnxruntime::ProviderLibrary::Get() [ONNXRuntimeError] : 1 \
             : FAIL : {said}\n"
        );
        assert_eq!(
            explain(&ort),
            format!(
                "the NVIDIA driver is not installed (libcuda.so.1 comes with it); ONNX Runtime \
                 said: {said}"
            )
        );
        assert!(
            explain("... libcublasLt.so.13: cannot open shared object file")
                .starts_with("a CUDA 13 library is missing (`quire setup --gpu` installs them); ")
        );
        assert!(explain("FAIL : libnvinfer.so.10: cannot open")
            .starts_with("TensorRT 10 is not installed"));
        assert_eq!(explain("something else"), "something else");
    }
}
