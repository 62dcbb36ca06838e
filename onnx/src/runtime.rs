//! ONNX Runtime: the pinned builds quire provisions, and loading one into this process.

use crate::ep::{EpConfig, EpError, Provider};
use crate::provision::{Located, Platform, ProvisionError, Provisioner, RuntimeSpec, WheelFile};
pub use ort::environment::Environment;
use std::path::Path;
use std::sync::OnceLock;

/// The CPU build, from the `onnxruntime` wheel. 1.32.0 rather than 1.31.1 (the GPU build's
/// version; `onnxruntime-gpu` has no 1.32 on the index): 1.31.1 took 7.3–9.0 s to load the
/// E2B-sized vision tower that 1.32.0 loads in 1.1–1.7 s (external data; with or without
/// graph optimisation), and ort's `api-31` runs on both.
pub static ONNXRUNTIME: RuntimeSpec = RuntimeSpec {
    name: "onnxruntime",
    package: "onnxruntime",
    version: "1.32.0",
    env_var: "QUIRE_ORT_LIB",
    library: "libonnxruntime.so.1.32.0",
    licence_markers: &["LICENSE", "ThirdPartyNotices"],
    platforms: &[
        Platform {
            target: "x86_64-linux",
            pip_platform: "manylinux_2_28_x86_64",
            files: &[
                WheelFile {
                    member: "onnxruntime/capi/libonnxruntime.so.1.32.0",
                    install_as: "libonnxruntime.so.1.32.0",
                    sha256: "6c1585d1bbf45b0712ea4a21b705c5fcb4ba04ff2e30f1fbf81a49faf658638f",
                },
                WheelFile {
                    member: "onnxruntime/capi/libonnxruntime_providers_shared.so",
                    install_as: "libonnxruntime_providers_shared.so",
                    sha256: "8ef51f6bf2c621fc129f625b22241fa6f9a5870bc08eaf2fdd279169ec40d09a",
                },
            ],
        },
        Platform {
            target: "aarch64-linux",
            pip_platform: "manylinux_2_28_aarch64",
            files: &[
                WheelFile {
                    member: "onnxruntime/capi/libonnxruntime.so.1.32.0",
                    install_as: "libonnxruntime.so.1.32.0",
                    sha256: "49852228a93995158b2a813d4df487d47a1b76b0eaa894507ef49e91b6d7954a",
                },
                WheelFile {
                    member: "onnxruntime/capi/libonnxruntime_providers_shared.so",
                    install_as: "libonnxruntime_providers_shared.so",
                    sha256: "f91fa2b0a2b8dba9cbc319254d342fa8201fd94b5912b9ce717f82e2207ee3d5",
                },
            ],
        },
    ],
};

/// The CUDA 13 build (CUDA and TensorRT providers), from the `onnxruntime-gpu` wheel. The CUDA
/// libraries themselves (cuBLAS, cuDNN, cudart) come from NVIDIA's wheels ([`crate::cuda`]) or
/// the system.
pub static ONNXRUNTIME_GPU: RuntimeSpec = RuntimeSpec {
    name: "onnxruntime-gpu",
    package: "onnxruntime-gpu",
    version: "1.31.1",
    env_var: "QUIRE_ORT_LIB",
    library: "libonnxruntime.so.1.31.1",
    licence_markers: &["LICENSE", "ThirdPartyNotices"],
    platforms: &[Platform {
        target: "x86_64-linux",
        pip_platform: "manylinux_2_28_x86_64",
        files: &[
            WheelFile {
                member: "onnxruntime/capi/libonnxruntime.so.1.31.1",
                install_as: "libonnxruntime.so.1.31.1",
                sha256: "5104254339ecadae808da771bd0b63b240f0dbd466514234905e54372435c303",
            },
            WheelFile {
                member: "onnxruntime/capi/libonnxruntime_providers_shared.so",
                install_as: "libonnxruntime_providers_shared.so",
                sha256: "086ec1d5388f64153d9c63470d126693db9a182c8ce236d3a1119068471b8a0d",
            },
            WheelFile {
                member: "onnxruntime/capi/libonnxruntime_providers_cuda.so",
                install_as: "libonnxruntime_providers_cuda.so",
                sha256: "d5290158115fa5569a3fe8f1f4037ee9b0e86658a96e52f852bbb7039aa88137",
            },
            WheelFile {
                member: "onnxruntime/capi/libonnxruntime_providers_tensorrt.so",
                install_as: "libonnxruntime_providers_tensorrt.so",
                sha256: "1882ee49fdb0e6fc2d272b00cfaf9a3310bf8580a34385c0eec4d82014ea172e",
            },
        ],
    }],
};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Provision(#[from] ProvisionError),
    #[error("could not load ONNX Runtime from {path}: {reason}")]
    Load { path: String, reason: String },
    #[error("ONNX Runtime environment: {0}")]
    Environment(String),
    #[error(transparent)]
    Provider(#[from] EpError),
}

/// The runtime quire wants: the GPU build when asked for, else the CPU build.
pub fn spec(gpu: bool) -> &'static RuntimeSpec {
    if gpu {
        &ONNXRUNTIME_GPU
    } else {
        &ONNXRUNTIME
    }
}

static ENVIRONMENT: OnceLock<(ort::environment::Environment, Located)> = OnceLock::new();

/// Loads ONNX Runtime into this process (once) and returns its environment. The library is
/// provisioned first if needed. Later calls return the first environment whatever they ask.
pub fn environment(
    provisioner: &Provisioner,
    gpu: bool,
) -> Result<&'static (ort::environment::Environment, Located), RuntimeError> {
    if let Some(env) = ENVIRONMENT.get() {
        return Ok(env);
    }
    let located = provisioner.ensure(spec(gpu))?;
    let env = load_library(&located.library)?;
    let _ = ENVIRONMENT.set((env, located));
    Ok(ENVIRONMENT.get().expect("just set"))
}

/// A loaded runtime and the execution providers that can run with it.
pub struct Loaded {
    pub env: &'static ort::environment::Environment,
    pub located: &'static Located,
    /// The providers asked for, less those that cannot run here (with `--ep-fallback`).
    pub eps: EpConfig,
}

/// Loads the runtime `eps` needs and finds out, once, which of its providers can run here
/// ([`EpConfig::resolve`]). The GPU build is used when a provider needs it and it is installed
/// (`quire setup --gpu`, or `QUIRE_ORT_LIB`); it is never downloaded here, being with its CUDA
/// libraries about 2 GB. Its CUDA libraries are preloaded first ([`crate::cuda::preload`]).
/// A provider that cannot run is an error naming what is missing, or with fallback a warning,
/// and the run goes on with the next.
pub fn environment_for(provisioner: &Provisioner, eps: EpConfig) -> Result<Loaded, RuntimeError> {
    let mut eps = eps;
    let mut gpu = eps.needs_gpu_runtime();
    if gpu {
        let gpu_providers: Vec<Provider> = eps
            .providers
            .iter()
            .copied()
            .filter(|p| p.needs_gpu_runtime())
            .collect();
        let problem = match provisioner.locate(&ONNXRUNTIME_GPU)? {
            None => Some(format!(
                "it needs the GPU build of ONNX Runtime ({} {}) and the CUDA 13 libraries, \
                 which are not installed: run `quire setup --gpu`",
                ONNXRUNTIME_GPU.package, ONNXRUNTIME_GPU.version
            )),
            Some(_) => match crate::cuda::preload(provisioner) {
                Ok(done) => {
                    for spec in &done.not_installed {
                        tracing::info!(
                            "{} not installed by `quire setup --gpu`: left to the system's library path",
                            spec.name
                        );
                    }
                    None
                }
                Err(e) => Some(e.to_string()),
            },
        };
        if let Some(reason) = problem {
            for p in gpu_providers {
                eps.skip(p, reason.clone())?;
            }
            gpu = false;
        }
    }
    let (env, located) = environment(provisioner, gpu)?;
    let eps = eps.resolve(env)?;
    Ok(Loaded { env, located, eps })
}

/// The variable that keeps ONNX Runtime's built-in telemetry (Microsoft's 1DS client) from
/// starting: without it, building the environment writes a device id and an event database
/// under `$XDG_CACHE_HOME/Microsoft/DeveloperTools/.onnxruntime/` and a session file
/// `$TMPDIR/.ses`, and resolves the collector's host name, whatever `with_telemetry(false)`
/// says afterwards.
pub const DISABLE_TELEMETRY_VAR: &str = "ORT_DISABLE_TELEMETRY";
pub const DISABLE_TELEMETRY_VALUE: &str = "1";

/// Loads the library at `path` and builds the process's one environment, telemetry off.
///
/// The library reads [`DISABLE_TELEMETRY_VAR`] when the environment is built. Programs should
/// set it at the start of `main`, before any thread exists (the `quire` binary does): changing
/// the environment while another thread reads it is undefined behaviour in C. For callers that
/// did not (tests, benches), it is set here if missing; they load the runtime before starting
/// threads of their own that touch the environment.
pub fn load_library(path: &Path) -> Result<ort::environment::Environment, RuntimeError> {
    if std::env::var_os(DISABLE_TELEMETRY_VAR).is_none_or(|v| v != DISABLE_TELEMETRY_VALUE) {
        std::env::set_var(DISABLE_TELEMETRY_VAR, DISABLE_TELEMETRY_VALUE);
    }
    let builder = ort::init_from(path).map_err(|e| RuntimeError::Load {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    builder
        .with_name("quire")
        // The API's switch for telemetry events: kept, but it only acts once the environment,
        // and with it the telemetry client, exists; the variable above keeps the client off.
        .with_telemetry(false)
        .build()
        .map_err(|e| RuntimeError::Environment(e.to_string()))
}

/// The build string the loaded library reports (branch, commit, flags).
pub fn loaded_version() -> String {
    ort::info().to_string()
}
