//! PDFium: the pinned build quire provisions (from the `pypdfium2` wheel) through the same
//! mechanism as ONNX Runtime.

use quire_onnx::provision::{Platform, RuntimeSpec, WheelFile};

pub static PDFIUM: RuntimeSpec = RuntimeSpec {
    name: "pdfium",
    package: "pypdfium2",
    version: "5.15.2",
    env_var: "QUIRE_PDFIUM_LIB",
    library: "libpdfium.so",
    licence_markers: &["dist-info/licenses/", "pypdfium2_raw/version.json"],
    platforms: &[
        Platform {
            target: "x86_64-linux",
            pip_platform: "manylinux_2_17_x86_64",
            files: &[WheelFile {
                member: "pypdfium2_raw/libpdfium.so",
                install_as: "libpdfium.so",
                sha256: "c76dc0f7839644bfa7c3e3107a6068df714e339c861bb7d4519907b821d427f9",
            }],
        },
        Platform {
            target: "aarch64-linux",
            pip_platform: "manylinux_2_17_aarch64",
            files: &[WheelFile {
                member: "pypdfium2_raw/libpdfium.so",
                install_as: "libpdfium.so",
                sha256: "4378615ad9710397c96c112611be9018629bbfe38805d91a2663a534b99c28ca",
            }],
        },
    ],
};

/// PDFium could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("could not load PDFium from {}: {reason}", path.display())]
pub struct BindError {
    pub path: std::path::PathBuf,
    pub reason: String,
}

/// Binds the PDFium library at `path` into this process (once per process; PDFium allows no
/// second binding).
pub fn bind(path: &std::path::Path) -> Result<pdfium_render::prelude::Pdfium, BindError> {
    // pdfium-render wants a path with a separator.
    let path = if path.is_relative() {
        std::path::Path::new(".").join(path)
    } else {
        path.to_path_buf()
    };
    let bindings =
        pdfium_render::prelude::Pdfium::bind_to_library(&path).map_err(|e| BindError {
            reason: format!("{e:?}"),
            path: path.clone(),
        })?;
    Ok(pdfium_render::prelude::Pdfium::new(bindings))
}
