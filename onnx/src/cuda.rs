//! The CUDA 13 user-space libraries that the CUDA and TensorRT providers of `onnxruntime-gpu`
//! load (cudart, cuBLAS/cuBLASLt, cuRAND, cuFFT, NVRTC, cuDNN), from NVIDIA's wheels on the
//! package index, pinned like the runtimes. [`preload`] loads them by path before a provider is
//! registered: the provider then finds them already in the process, so only the NVIDIA driver
//! (`libcuda.so.1`) must be on the host.
//!
//! The versions are those of CUDA 13.0 Update 2, the CUDA that `onnxruntime-gpu` 1.31.1 was
//! built with (its `cuda` extra asks for `~=13.0`); the oldest driver they need is the one
//! CUDA 13.0 needs. cuDNN 9 is backward compatible within its major version: the newest is
//! pinned.

use crate::provision::{Platform, Provisioner, RuntimeSpec, WheelFile};
use std::path::PathBuf;

const LICENCE: &[&str] = &["License.txt"];

const fn x86_64(pip_platform: &'static str, files: &'static [WheelFile]) -> [Platform; 1] {
    [Platform {
        target: "x86_64-linux",
        pip_platform,
        files,
    }]
}

pub static CUDA_RUNTIME: RuntimeSpec = RuntimeSpec {
    name: "cuda-runtime",
    package: "nvidia-cuda-runtime",
    version: "13.0.96",
    env_var: "QUIRE_CUDART_LIB",
    library: "libcudart.so.13",
    licence_markers: LICENCE,
    platforms: &x86_64(
        "manylinux_2_17_x86_64",
        &[WheelFile {
            member: "nvidia/cu13/lib/libcudart.so.13",
            install_as: "libcudart.so.13",
            sha256: "96c42e418cec19054186b9429c321603cc190bf26a18104e19408117a2a817b0",
        }],
    ),
};

pub static CUBLAS: RuntimeSpec = RuntimeSpec {
    name: "cublas",
    package: "nvidia-cublas",
    version: "13.1.0.3",
    env_var: "QUIRE_CUBLAS_LIB",
    library: "libcublas.so.13",
    licence_markers: LICENCE,
    platforms: &x86_64(
        "manylinux_2_27_x86_64",
        &[
            WheelFile {
                member: "nvidia/cu13/lib/libcublasLt.so.13",
                install_as: "libcublasLt.so.13",
                sha256: "656298c804f5adbb0df930545c17911b9584ab4e5101c0eeb65d1fe881d880f8",
            },
            WheelFile {
                member: "nvidia/cu13/lib/libcublas.so.13",
                install_as: "libcublas.so.13",
                sha256: "e70f38efabe986acd5eb683497c62f0f1730a6176ee291d9d24c6e339d1fbf86",
            },
        ],
    ),
};

pub static CURAND: RuntimeSpec = RuntimeSpec {
    name: "curand",
    package: "nvidia-curand",
    version: "10.4.0.35",
    env_var: "QUIRE_CURAND_LIB",
    library: "libcurand.so.10",
    licence_markers: LICENCE,
    platforms: &x86_64(
        "manylinux_2_27_x86_64",
        &[WheelFile {
            member: "nvidia/cu13/lib/libcurand.so.10",
            install_as: "libcurand.so.10",
            sha256: "b53732a66b302b11926e00f762e2c2ba67058347ff93cf4ae709de45e93e06da",
        }],
    ),
};

pub static CUFFT: RuntimeSpec = RuntimeSpec {
    name: "cufft",
    package: "nvidia-cufft",
    version: "12.0.0.61",
    env_var: "QUIRE_CUFFT_LIB",
    library: "libcufft.so.12",
    licence_markers: LICENCE,
    platforms: &x86_64(
        "manylinux_2_17_x86_64",
        &[WheelFile {
            member: "nvidia/cu13/lib/libcufft.so.12",
            install_as: "libcufft.so.12",
            sha256: "0933f68bb7e3bf90f86d70bc87cd2f69027f7757e89e5de5e19ec33a53fd8d3a",
        }],
    ),
};

pub static NVRTC: RuntimeSpec = RuntimeSpec {
    name: "nvrtc",
    package: "nvidia-cuda-nvrtc",
    version: "13.0.88",
    env_var: "QUIRE_NVRTC_LIB",
    library: "libnvrtc.so.13",
    licence_markers: LICENCE,
    platforms: &x86_64(
        "manylinux_2_12_x86_64",
        &[
            // NVRTC opens its builtins by name and has no run path: preloaded first.
            WheelFile {
                member: "nvidia/cu13/lib/libnvrtc-builtins.so.13.0",
                install_as: "libnvrtc-builtins.so.13.0",
                sha256: "91dcd944d01da9c0f08fff5d779db136a47f6d62bdb63bae900d2f481e92c3a2",
            },
            WheelFile {
                member: "nvidia/cu13/lib/libnvrtc.so.13",
                install_as: "libnvrtc.so.13",
                sha256: "a49e67e8e74590f1e98de55c39c6287efd3f59e3c3797464d7bbe0fe01349b11",
            },
        ],
    ),
};

/// cuDNN: `libcudnn.so.9` opens its sub-libraries itself, from its own folder (`$ORIGIN`).
pub static CUDNN: RuntimeSpec = RuntimeSpec {
    name: "cudnn",
    package: "nvidia-cudnn-cu13",
    version: "9.28.1.4",
    env_var: "QUIRE_CUDNN_LIB",
    library: "libcudnn.so.9",
    licence_markers: LICENCE,
    platforms: &x86_64(
        "manylinux_2_27_x86_64",
        &[
            WheelFile {
                member: "nvidia/cudnn/lib/libcudnn.so.9",
                install_as: "libcudnn.so.9",
                sha256: "f756cabeed9b481134769fdbc0c2ae022cf52ac39aab08be26ea990a56da2efc",
            },
            WheelFile {
                member: "nvidia/cudnn/lib/libcudnn_adv.so.9",
                install_as: "libcudnn_adv.so.9",
                sha256: "d69ed7d8adc4524ddb6cbf5e10211e35f580d14e40924692f0cdf1b78cf23ab2",
            },
            WheelFile {
                member: "nvidia/cudnn/lib/libcudnn_cnn.so.9",
                install_as: "libcudnn_cnn.so.9",
                sha256: "2512f47e6e33000e12be5b2e59ac71eb8f5805a548561e7637e4413d1b7cdeb7",
            },
            WheelFile {
                member: "nvidia/cudnn/lib/libcudnn_engines_precompiled.so.9",
                install_as: "libcudnn_engines_precompiled.so.9",
                sha256: "51bd1d25591ae2994120aac5c5be172e31b973e0fdeba43a50647949096ee40a",
            },
            WheelFile {
                member: "nvidia/cudnn/lib/libcudnn_engines_runtime_compiled.so.9",
                install_as: "libcudnn_engines_runtime_compiled.so.9",
                sha256: "738655d1b9441a752fde9b9911780635e60fe96113f2b06c1af6d70458ef5174",
            },
            WheelFile {
                member: "nvidia/cudnn/lib/libcudnn_engines_tensor_ir.so.9",
                install_as: "libcudnn_engines_tensor_ir.so.9",
                sha256: "ff088c803f896fd9a92c0ab861026ff3b7ee5a4222713c3dd8221e1c843e74ec",
            },
            WheelFile {
                member: "nvidia/cudnn/lib/libcudnn_ext.so.9",
                install_as: "libcudnn_ext.so.9",
                sha256: "46c273e178b7733ffa5d56bd9719f378a20b94e07d2ccf23c4078e22bced0652",
            },
            WheelFile {
                member: "nvidia/cudnn/lib/libcudnn_graph.so.9",
                install_as: "libcudnn_graph.so.9",
                sha256: "06c28f04f028466cf33461a7d645210146015d425a0dae6c7dc7e60c07c4d973",
            },
            WheelFile {
                member: "nvidia/cudnn/lib/libcudnn_heuristic.so.9",
                install_as: "libcudnn_heuristic.so.9",
                sha256: "7738da4dd6fee9597680ff595863743b2bc4bd5b0ec3edb4e8e9d28a2b5e629d",
            },
            WheelFile {
                member: "nvidia/cudnn/lib/libcudnn_ops.so.9",
                install_as: "libcudnn_ops.so.9",
                sha256: "e849b0a7353eec5bb5c9f75d841d075d786e205d84f8fd07b092770554674e48",
            },
        ],
    ),
};

/// Every CUDA library `quire setup --gpu` installs, with the files [`preload`] loads from each,
/// in order: a library's dependencies come before it (cuBLASLt before cuBLAS).
pub static CUDA_LIBRARIES: [(&RuntimeSpec, &[&str]); 6] = [
    (&CUDA_RUNTIME, &["libcudart.so.13"]),
    (&CUBLAS, &["libcublasLt.so.13", "libcublas.so.13"]),
    (&CURAND, &["libcurand.so.10"]),
    (&CUFFT, &["libcufft.so.12"]),
    (&NVRTC, &["libnvrtc-builtins.so.13.0", "libnvrtc.so.13"]),
    (&CUDNN, &["libcudnn.so.9"]),
];

#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    #[error(transparent)]
    Provision(#[from] crate::provision::ProvisionError),
    #[error("could not preload {}: {reason}", path.display())]
    Preload { path: PathBuf, reason: String },
}

/// What [`preload`] did.
#[derive(Debug, Default)]
pub struct Preloaded {
    /// The files loaded, in order.
    pub loaded: Vec<PathBuf>,
    /// Libraries neither installed nor named by their variable: the providers look for them on
    /// the system's library path instead.
    pub not_installed: Vec<&'static RuntimeSpec>,
}

/// Loads the installed CUDA libraries into this process by path (they stay loaded), so that a
/// provider library opened later finds them by name. Those not installed are left to the
/// system; one that is installed but cannot be loaded is an error naming it.
pub fn preload(provisioner: &Provisioner) -> Result<Preloaded, CudaError> {
    let mut done = Preloaded::default();
    for (spec, files) in &CUDA_LIBRARIES {
        let Some(found) = provisioner.locate(spec)? else {
            done.not_installed.push(spec);
            continue;
        };
        // The variable names one library; the others of its wheel sit beside it.
        let dir = found
            .library
            .parent()
            .map(PathBuf::from)
            .unwrap_or_default();
        for file in *files {
            let path = dir.join(file);
            ort::util::preload_dylib(&path).map_err(|e| CudaError::Preload {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            done.loaded.push(path);
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preloaded_file_is_an_installed_file_of_its_wheel() {
        for (spec, files) in &CUDA_LIBRARIES {
            let platform = &spec.platforms[0];
            assert_eq!(platform.target, "x86_64-linux", "{}", spec.name);
            let installed: Vec<&str> = platform.files.iter().map(|f| f.install_as).collect();
            assert!(installed.contains(&spec.library), "{}", spec.name);
            for f in *files {
                assert!(installed.contains(f), "{}: {f} is not installed", spec.name);
            }
            for f in platform.files {
                assert_eq!(f.sha256.len(), 64, "{}", f.member);
                assert!(f.sha256.bytes().all(|b| b.is_ascii_hexdigit()));
                assert!(f.member.ends_with(f.install_as), "{}", f.member);
            }
        }
    }

    #[test]
    fn nothing_installed_preloads_nothing() {
        let cache = tempfile::tempdir().unwrap();
        let p = Provisioner {
            cache_root: cache.path().to_path_buf(),
            offline: true,
        };
        let done = preload(&p).unwrap();
        assert!(done.loaded.is_empty());
        let names: Vec<&str> = done.not_installed.iter().map(|s| s.name).collect();
        assert_eq!(
            names,
            [
                "cuda-runtime",
                "cublas",
                "curand",
                "cufft",
                "nvrtc",
                "cudnn"
            ]
        );
    }

    #[test]
    fn a_wheel_whose_library_differs_from_the_pin_is_refused() {
        use std::io::Write;
        let wheels = tempfile::tempdir().unwrap();
        let wheel = wheels.path().join(
            "nvidia_cuda_runtime-13.0.96-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
        );
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&wheel).unwrap());
        zip.start_file(
            "nvidia/cu13/lib/libcudart.so.13",
            zip::write::SimpleFileOptions::default(),
        )
        .unwrap();
        zip.write_all(b"not the real cudart").unwrap();
        zip.finish().unwrap();
        let cache = tempfile::tempdir().unwrap();
        let p = Provisioner {
            cache_root: cache.path().to_path_buf(),
            offline: true,
        };
        let err = p
            .install_from_dir(&CUDA_RUNTIME, wheels.path())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}!nvidia/cu13/lib/libcudart.so.13: sha256 {} does not match the pinned \
                 96c42e418cec19054186b9429c321603cc190bf26a18104e19408117a2a817b0",
                wheel.display(),
                crate::provision::sha256_hex(b"not the real cudart")
            )
        );
        assert!(
            p.locate(&CUDA_RUNTIME).unwrap().is_none(),
            "nothing installed"
        );
    }
}
