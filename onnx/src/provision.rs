//! Native runtime libraries (ONNX Runtime, PDFium), provisioned from the Python wheels that carry
//! them. The machine's own `python3 -m pip download` fetches them, so a user's index settings
//! (a corporate mirror) apply; every extracted file is checked against a pinned sha256 and
//! unpacked into a versioned per-user cache. One mechanism serves both libraries: each one is a
//! [`RuntimeSpec`].

use sha2::{Digest, Sha256};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A file taken out of a wheel and checked against its pinned hash.
#[derive(Debug, Clone, Copy)]
pub struct WheelFile {
    pub member: &'static str,
    pub install_as: &'static str,
    pub sha256: &'static str,
}

/// The wheel of one platform.
#[derive(Debug, Clone, Copy)]
pub struct Platform {
    /// `"x86_64-linux"`: `std::env::consts::ARCH` + `-` + `OS`.
    pub target: &'static str,
    /// pip's `--platform` tag.
    pub pip_platform: &'static str,
    pub files: &'static [WheelFile],
}

/// A pinned native runtime.
#[derive(Debug, Clone, Copy)]
pub struct RuntimeSpec {
    /// Short name used in messages and the cache folder: `onnxruntime`, `pdfium`.
    pub name: &'static str,
    /// The pip package that carries it and its pinned version.
    pub package: &'static str,
    pub version: &'static str,
    /// Environment variable that points at an existing library instead.
    pub env_var: &'static str,
    /// `install_as` of the library to load.
    pub library: &'static str,
    /// Wheel members whose path contains one of these are licence texts shipped beside the library.
    pub licence_markers: &'static [&'static str],
    pub platforms: &'static [Platform],
}

impl RuntimeSpec {
    pub fn platform(&self) -> Result<&'static Platform, ProvisionError> {
        let target = current_target();
        self.platforms.iter().find(|p| p.target == target).ok_or(
            ProvisionError::UnsupportedPlatform {
                runtime: self.name,
                target,
                env_var: self.env_var,
            },
        )
    }
}

fn current_target() -> String {
    format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS)
}

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error(
        "{runtime} is not installed and downloads are forbidden (--offline / QUIRE_OFFLINE=1). \
         Provide it with one of: `{env_var}=/path/to/library`; `quire setup --from DIR` with the \
         `{package}=={version}` wheel copied into DIR; or run `quire setup` without --offline"
    )]
    Offline {
        runtime: &'static str,
        env_var: &'static str,
        package: &'static str,
        version: &'static str,
    },
    #[error(
        "{runtime}: no pinned wheel for platform {target}; point {env_var} at an existing library"
    )]
    UnsupportedPlatform {
        runtime: &'static str,
        target: String,
        env_var: &'static str,
    },
    #[error("{env_var}={path}: no such file")]
    EnvPathMissing {
        env_var: &'static str,
        path: PathBuf,
    },
    #[error("could not run `{command}`: {source}")]
    PipSpawn {
        command: String,
        source: std::io::Error,
    },
    #[error("`{command}` failed: {stderr}")]
    PipFailed { command: String, stderr: String },
    #[error("no {package}=={version} wheel for {pip_platform} in {dir}")]
    WheelNotFound {
        package: &'static str,
        version: &'static str,
        pip_platform: &'static str,
        dir: PathBuf,
    },
    #[error("{wheel}: not a readable wheel: {reason}")]
    BadWheel { wheel: PathBuf, reason: String },
    #[error("{wheel}: has no member {member}")]
    MissingMember {
        wheel: PathBuf,
        member: &'static str,
    },
    #[error("{file}: sha256 {actual} does not match the pinned {expected}")]
    HashMismatch {
        file: String,
        expected: &'static str,
        actual: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ProvisionError + '_ {
    move |source| ProvisionError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where a runtime library was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The user's environment variable.
    EnvVar,
    /// quire's cache, installed earlier.
    Cache,
    /// Installed just now.
    Installed,
}

#[derive(Debug, Clone)]
pub struct Located {
    pub runtime: &'static str,
    pub version: &'static str,
    pub library: PathBuf,
    pub origin: Origin,
}

/// Finds and installs runtimes in one cache folder.
#[derive(Debug, Clone)]
pub struct Provisioner {
    pub cache_root: PathBuf,
    pub offline: bool,
}

const MARKER: &str = "installed.json";

impl Provisioner {
    /// The cache is `$QUIRE_CACHE_DIR` or the XDG cache dir + `quire`; offline when asked or when
    /// `QUIRE_OFFLINE` is set to anything but `0`/empty.
    pub fn from_env(offline: bool) -> Self {
        let cache_root = std::env::var_os("QUIRE_CACHE_DIR")
            .map(PathBuf::from)
            .or_else(|| dirs::cache_dir().map(|d| d.join("quire")))
            .unwrap_or_else(|| std::env::temp_dir().join("quire-cache"));
        let env_offline = std::env::var("QUIRE_OFFLINE")
            .map(|v| !v.is_empty() && v != "0")
            .unwrap_or(false);
        Provisioner {
            cache_root,
            offline: offline || env_offline,
        }
    }

    /// The versioned folder a runtime is installed into.
    pub fn install_dir(&self, spec: &RuntimeSpec) -> PathBuf {
        self.cache_root.join("runtimes").join(format!(
            "{}-{}-{}",
            spec.name,
            spec.version,
            current_target()
        ))
    }

    /// The library from the environment variable or the cache, without installing anything.
    pub fn locate(&self, spec: &RuntimeSpec) -> Result<Option<Located>, ProvisionError> {
        if let Some(path) = std::env::var_os(spec.env_var).filter(|p| !p.is_empty()) {
            let path = PathBuf::from(path);
            if !path.is_file() {
                return Err(ProvisionError::EnvPathMissing {
                    env_var: spec.env_var,
                    path,
                });
            }
            return Ok(Some(Located {
                runtime: spec.name,
                version: spec.version,
                library: path,
                origin: Origin::EnvVar,
            }));
        }
        let dir = self.install_dir(spec);
        let library = dir.join(spec.library);
        if dir.join(MARKER).is_file() && library.is_file() {
            return Ok(Some(Located {
                runtime: spec.name,
                version: spec.version,
                library,
                origin: Origin::Cache,
            }));
        }
        Ok(None)
    }

    /// The library, installed with pip first if it is missing and downloads are allowed.
    pub fn ensure(&self, spec: &RuntimeSpec) -> Result<Located, ProvisionError> {
        if let Some(found) = self.locate(spec)? {
            return Ok(found);
        }
        if self.offline {
            return Err(ProvisionError::Offline {
                runtime: spec.name,
                env_var: spec.env_var,
                package: spec.package,
                version: spec.version,
            });
        }
        let platform = spec.platform()?;
        fs::create_dir_all(&self.cache_root).map_err(io_err(&self.cache_root))?;
        let download = tempfile::Builder::new()
            .prefix("download-")
            .tempdir_in(&self.cache_root)
            .map_err(io_err(&self.cache_root))?;
        pip_download(spec, platform, download.path())?;
        self.install_from_dir(spec, download.path())
    }

    /// Installs from a folder holding the runtime's wheel (copied in by hand on air-gapped sites).
    pub fn install_from_dir(
        &self,
        spec: &RuntimeSpec,
        dir: &Path,
    ) -> Result<Located, ProvisionError> {
        let platform = spec.platform()?;
        let wheel = find_wheel(spec, platform, dir)?;
        self.install_wheel(spec, platform, &wheel)
    }

    fn install_wheel(
        &self,
        spec: &RuntimeSpec,
        platform: &Platform,
        wheel: &Path,
    ) -> Result<Located, ProvisionError> {
        let bad = |reason: String| ProvisionError::BadWheel {
            wheel: wheel.to_path_buf(),
            reason,
        };
        let file = fs::File::open(wheel).map_err(io_err(wheel))?;
        let mut archive = zip::ZipArchive::new(file).map_err(|e| bad(e.to_string()))?;

        // Unpack into a sibling temporary folder and rename it into place: a killed install
        // never leaves a half-filled runtime folder that looks complete.
        let dest = self.install_dir(spec);
        let parent = dest.parent().expect("install dir has a parent");
        fs::create_dir_all(parent).map_err(io_err(parent))?;
        let staging = tempfile::Builder::new()
            .prefix(".staging-")
            .tempdir_in(parent)
            .map_err(io_err(parent))?;

        for wanted in platform.files {
            let mut entry =
                archive
                    .by_name(wanted.member)
                    .map_err(|_| ProvisionError::MissingMember {
                        wheel: wheel.to_path_buf(),
                        member: wanted.member,
                    })?;
            let mut bytes = Vec::with_capacity(entry.size() as usize);
            entry
                .read_to_end(&mut bytes)
                .map_err(|e| bad(e.to_string()))?;
            let actual = sha256_hex(&bytes);
            if actual != wanted.sha256 {
                return Err(ProvisionError::HashMismatch {
                    file: format!("{}!{}", wheel.display(), wanted.member),
                    expected: wanted.sha256,
                    actual,
                });
            }
            let out = staging.path().join(wanted.install_as);
            write_file(&out, &bytes)?;
        }

        let licence_dir = staging.path().join("licenses");
        for i in 0..archive.len() {
            let mut entry = archive.by_index(i).map_err(|e| bad(e.to_string()))?;
            let name = entry.name().to_string();
            if entry.is_dir() || !spec.licence_markers.iter().any(|m| name.contains(m)) {
                continue;
            }
            let mut bytes = Vec::new();
            entry
                .read_to_end(&mut bytes)
                .map_err(|e| bad(e.to_string()))?;
            // Flatten to one folder; member names are wheel-internal and never contain `..`.
            let flat = name.replace('/', "__");
            write_file(&licence_dir.join(flat), &bytes)?;
        }

        let marker = serde_json::json!({
            "runtime": spec.name,
            "package": spec.package,
            "version": spec.version,
            "wheel": wheel.file_name().map(|n| n.to_string_lossy().into_owned()),
            "files": platform.files.iter().map(|f| serde_json::json!({"file": f.install_as, "sha256": f.sha256})).collect::<Vec<_>>(),
        });
        write_file(
            &staging.path().join(MARKER),
            serde_json::to_string_pretty(&marker)
                .expect("json")
                .as_bytes(),
        )?;

        // A stale folder without a marker is an interrupted install: replace it. One with a
        // marker was completed meanwhile by another process: keep it, drop ours.
        if dest.exists() && !dest.join(MARKER).is_file() {
            fs::remove_dir_all(&dest).map_err(io_err(&dest))?;
        }
        if !dest.exists() {
            let staged = staging.keep();
            if let Err(e) = fs::rename(&staged, &dest) {
                let _ = fs::remove_dir_all(&staged);
                if !dest.join(MARKER).is_file() {
                    return Err(io_err(&dest)(e));
                }
            }
        }
        Ok(Located {
            runtime: spec.name,
            version: spec.version,
            library: dest.join(spec.library),
            origin: Origin::Installed,
        })
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), ProvisionError> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    let mut f = fs::File::create(path).map_err(io_err(path))?;
    f.write_all(bytes).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn pip_download(spec: &RuntimeSpec, platform: &Platform, dir: &Path) -> Result<(), ProvisionError> {
    let python = std::env::var("QUIRE_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let requirement = format!("{}=={}", spec.package, spec.version);
    let args = [
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        "--only-binary=:all:",
        "--python-version",
        "3.11",
        "--implementation",
        "cp",
        "--platform",
        platform.pip_platform,
        "--dest",
    ];
    let command = format!(
        "{python} {} {} {requirement}",
        args.join(" "),
        dir.display()
    );
    tracing::info!(runtime = spec.name, %command, "downloading runtime wheel");
    let out = Command::new(&python)
        .args(args)
        .arg(dir)
        .arg(&requirement)
        .output()
        .map_err(|source| ProvisionError::PipSpawn {
            command: command.clone(),
            source,
        })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        return Err(ProvisionError::PipFailed {
            command,
            stderr: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        });
    }
    Ok(())
}

/// The first `{package}-{version}-*.whl` in `dir` whose platform tag names the platform's arch.
fn find_wheel(
    spec: &RuntimeSpec,
    platform: &'static Platform,
    dir: &Path,
) -> Result<PathBuf, ProvisionError> {
    let prefix = format!("{}-{}-", spec.package.replace('-', "_"), spec.version);
    // Wheels of other Python versions carry byte-identical libraries; the hashes decide.
    let arch = platform.target.split('-').next().unwrap_or_default();
    let mut candidates: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(io_err(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
            name.is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".whl") && n.contains(arch))
        })
        .collect();
    candidates.sort();
    candidates
        .into_iter()
        .next()
        .ok_or_else(|| ProvisionError::WheelNotFound {
            package: spec.package,
            version: spec.version,
            pip_platform: platform.pip_platform,
            dir: dir.to_path_buf(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    static FILES: &[WheelFile] = &[WheelFile {
        member: "pkg/lib.so",
        install_as: "lib.so",
        // sha256("library bytes")
        sha256: "e0f3c3a4f1b0ff8a2fb2c0b87c5e0b52b78e2d24e3bcc0e22b03b9a1ad8c9b3b",
    }];

    fn spec(files: &'static [WheelFile]) -> RuntimeSpec {
        let target: &'static str = Box::leak(current_target().into_boxed_str());
        let platforms: &'static [Platform] = Box::leak(Box::new([Platform {
            target,
            pip_platform: "manylinux_2_28_x86_64",
            files,
        }]));
        RuntimeSpec {
            name: "testlib",
            package: "test-lib",
            version: "1.0",
            env_var: "QUIRE_TEST_LIB_THAT_IS_NEVER_SET",
            library: "lib.so",
            licence_markers: &["LICENSE"],
            platforms,
        }
    }

    fn make_wheel(dir: &Path, content: &[u8]) -> PathBuf {
        let path = dir.join("test_lib-1.0-py3-none-manylinux_2_28_x86_64.whl");
        let mut zip = zip::ZipWriter::new(fs::File::create(&path).unwrap());
        let opts = zip::write::SimpleFileOptions::default();
        zip.start_file("pkg/lib.so", opts).unwrap();
        zip.write_all(content).unwrap();
        zip.start_file("pkg/LICENSE", opts).unwrap();
        zip.write_all(b"licence text").unwrap();
        zip.finish().unwrap();
        path
    }

    #[test]
    fn installs_from_dir_and_checks_hashes() {
        let content = b"library bytes";
        let hash = sha256_hex(content);
        let files: &'static [WheelFile] = Box::leak(Box::new([WheelFile {
            member: "pkg/lib.so",
            install_as: "lib.so",
            sha256: Box::leak(hash.into_boxed_str()),
        }]));
        let spec = spec(files);
        let wheels = tempfile::tempdir().unwrap();
        make_wheel(wheels.path(), content);
        let cache = tempfile::tempdir().unwrap();
        let p = Provisioner {
            cache_root: cache.path().to_path_buf(),
            offline: true,
        };
        assert!(p.locate(&spec).unwrap().is_none());
        let err = p.ensure(&spec).unwrap_err();
        assert!(matches!(err, ProvisionError::Offline { .. }), "{err}");
        assert!(err.to_string().contains("QUIRE_TEST_LIB_THAT_IS_NEVER_SET"));

        let installed = p.install_from_dir(&spec, wheels.path()).unwrap();
        assert_eq!(installed.origin, Origin::Installed);
        assert_eq!(fs::read(&installed.library).unwrap(), content);
        let licence = p.install_dir(&spec).join("licenses/pkg__LICENSE");
        assert_eq!(fs::read(licence).unwrap(), b"licence text");
        let again = p.ensure(&spec).unwrap();
        assert_eq!(again.origin, Origin::Cache);
        assert_eq!(again.library, installed.library);
    }

    #[test]
    fn refuses_a_wheel_whose_library_hash_differs() {
        let spec = spec(FILES);
        let wheels = tempfile::tempdir().unwrap();
        make_wheel(wheels.path(), b"tampered bytes");
        let cache = tempfile::tempdir().unwrap();
        let p = Provisioner {
            cache_root: cache.path().to_path_buf(),
            offline: true,
        };
        let err = p.install_from_dir(&spec, wheels.path()).unwrap_err();
        assert!(matches!(err, ProvisionError::HashMismatch { .. }), "{err}");
        assert!(p.locate(&spec).unwrap().is_none(), "nothing half-installed");
    }

    #[test]
    fn missing_wheel_names_package_and_folder() {
        let spec = spec(FILES);
        let empty = tempfile::tempdir().unwrap();
        let p = Provisioner {
            cache_root: empty.path().join("cache"),
            offline: true,
        };
        let err = p.install_from_dir(&spec, empty.path()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("test-lib==1.0"), "{msg}");
        assert!(msg.contains(&empty.path().display().to_string()), "{msg}");
    }
}
