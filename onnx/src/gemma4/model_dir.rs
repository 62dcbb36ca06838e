//! A Gemma 4 ONNX model directory: side files and the `onnx/<graph><suffix>.onnx` variants.
//! Sessions are created from the file path so ORT finds the `.onnx_data*` sidecars itself.

use super::error::Error;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Weight/activation variant, named by file suffix as in transformers.js `dtypes.js`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dtype {
    Fp32,
    Fp16,
    Q4,
    Q4f16,
    Q8,
}

impl Dtype {
    pub const ALL: [Dtype; 5] = [Dtype::Fp32, Dtype::Fp16, Dtype::Q4, Dtype::Q4f16, Dtype::Q8];

    pub fn suffix(self) -> &'static str {
        match self {
            Dtype::Fp32 => "",
            Dtype::Fp16 => "_fp16",
            Dtype::Q4 => "_q4",
            Dtype::Q4f16 => "_q4f16",
            Dtype::Q8 => "_quantized",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Dtype::Fp32 => "fp32",
            Dtype::Fp16 => "fp16",
            Dtype::Q4 => "q4",
            Dtype::Q4f16 => "q4f16",
            Dtype::Q8 => "q8",
        }
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A dtype or dtype selection that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseDtypeError {
    #[error("unknown dtype {0:?} (fp32, fp16, q4, q4f16, q8)")]
    UnknownDtype(String),
    #[error("unknown graph {0:?} in dtype (vision, embed, decoder)")]
    UnknownGraph(String),
}

impl FromStr for Dtype {
    type Err = ParseDtypeError;
    fn from_str(s: &str) -> Result<Self, ParseDtypeError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "fp32" | "" => Ok(Dtype::Fp32),
            "fp16" => Ok(Dtype::Fp16),
            "q4" => Ok(Dtype::Q4),
            "q4f16" => Ok(Dtype::Q4f16),
            "q8" | "quantized" => Ok(Dtype::Q8),
            other => Err(ParseDtypeError::UnknownDtype(other.to_string())),
        }
    }
}

/// The three graphs quire runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Graph {
    VisionEncoder,
    EmbedTokens,
    Decoder,
}

impl Graph {
    pub const ALL: [Graph; 3] = [Graph::VisionEncoder, Graph::EmbedTokens, Graph::Decoder];

    pub fn base_name(self) -> &'static str {
        match self {
            Graph::VisionEncoder => "vision_encoder",
            Graph::EmbedTokens => "embed_tokens",
            Graph::Decoder => "decoder_model_merged",
        }
    }

    /// The short name used in dtype selections: `vision`, `embed`, `decoder`.
    pub fn key(self) -> &'static str {
        match self {
            Graph::VisionEncoder => "vision",
            Graph::EmbedTokens => "embed",
            Graph::Decoder => "decoder",
        }
    }

    /// A graph by its short or file base name (`vision` / `vision_encoder`, ...).
    pub fn from_key(key: &str) -> Option<Graph> {
        Graph::ALL
            .into_iter()
            .find(|g| g.key() == key || g.base_name() == key)
    }
}

/// Which variant each graph uses. `"q4"` sets all three; `"vision=fp32,decoder=q4f16"` (or
/// `"q4,vision=fp32"`) sets them one by one, because the community repos do not ship every
/// graph in every variant (e.g. no `vision_encoder_q4`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DtypeSelection {
    pub vision: Dtype,
    pub embed: Dtype,
    pub decoder: Dtype,
}

impl DtypeSelection {
    pub fn uniform(d: Dtype) -> Self {
        DtypeSelection {
            vision: d,
            embed: d,
            decoder: d,
        }
    }

    pub fn get(&self, g: Graph) -> Dtype {
        match g {
            Graph::VisionEncoder => self.vision,
            Graph::EmbedTokens => self.embed,
            Graph::Decoder => self.decoder,
        }
    }
}

impl Default for DtypeSelection {
    fn default() -> Self {
        DtypeSelection::uniform(Dtype::Fp32)
    }
}

impl FromStr for DtypeSelection {
    type Err = ParseDtypeError;
    fn from_str(s: &str) -> Result<Self, ParseDtypeError> {
        let mut sel = DtypeSelection::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.split_once('=') {
                None => sel = DtypeSelection::uniform(part.parse()?),
                Some((k, v)) => {
                    let d: Dtype = v.parse()?;
                    match Graph::from_key(k.trim()) {
                        Some(Graph::VisionEncoder) => sel.vision = d,
                        Some(Graph::EmbedTokens) => sel.embed = d,
                        Some(Graph::Decoder) => sel.decoder = d,
                        None => return Err(ParseDtypeError::UnknownGraph(k.trim().to_string())),
                    }
                }
            }
        }
        Ok(sel)
    }
}

impl fmt::Display for DtypeSelection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.vision == self.embed && self.embed == self.decoder {
            write!(f, "{}", self.vision)
        } else {
            write!(
                f,
                "vision={},embed={},decoder={}",
                self.vision, self.embed, self.decoder
            )
        }
    }
}

/// Paths of a model directory. Nothing is read here but the file listing.
#[derive(Debug, Clone)]
pub struct ModelDir {
    pub root: PathBuf,
}

impl ModelDir {
    pub fn new(root: impl Into<PathBuf>) -> Result<Self, Error> {
        let root = root.into();
        if !root.is_dir() {
            return Err(Error::MissingFile {
                path: root,
                why: "model directory",
            });
        }
        Ok(ModelDir { root })
    }

    /// A side file that must exist.
    pub fn file(&self, name: &str, why: &'static str) -> Result<PathBuf, Error> {
        let p = self.root.join(name);
        if p.is_file() {
            Ok(p)
        } else {
            Err(Error::MissingFile { path: p, why })
        }
    }

    fn graph_path(&self, g: Graph, d: Dtype) -> PathBuf {
        // The community repos keep graphs under onnx/; accept them at the top level too.
        let name = format!("{}{}.onnx", g.base_name(), d.suffix());
        let nested = self.root.join("onnx").join(&name);
        if nested.exists() || !self.root.join(&name).exists() {
            nested
        } else {
            self.root.join(name)
        }
    }

    /// Variants of `g` present in the directory.
    pub fn variants(&self, g: Graph) -> Vec<Dtype> {
        Dtype::ALL
            .into_iter()
            .filter(|d| self.graph_path(g, *d).is_file())
            .collect()
    }

    /// The `.onnx` file of `g` in variant `d`, or an error naming the file and the variants present.
    pub fn graph(&self, g: Graph, d: Dtype) -> Result<PathBuf, Error> {
        let p = self.graph_path(g, d);
        if p.is_file() {
            return Ok(p);
        }
        Err(Error::MissingGraph {
            path: p,
            available: self
                .variants(g)
                .into_iter()
                .map(|d| format!("{}={}", g.key(), d))
                .collect(),
        })
    }

    /// External data files that belong to `graph` (`<file>_data`, `<file>_data_1`, ...).
    pub fn sidecars(graph: &Path) -> Vec<PathBuf> {
        let Some(name) = graph.file_name().and_then(|n| n.to_str()) else {
            return Vec::new();
        };
        let prefix = format!("{name}_data");
        let mut out: Vec<PathBuf> = graph
            .parent()
            .and_then(|d| std::fs::read_dir(d).ok())
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n == prefix || n.starts_with(&format!("{prefix}_")))
            })
            .collect();
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtype_selection_parsing() {
        let s: DtypeSelection = "q4".parse().unwrap();
        assert_eq!(s, DtypeSelection::uniform(Dtype::Q4));
        let s: DtypeSelection = "q4,vision=fp32".parse().unwrap();
        assert_eq!(s.vision, Dtype::Fp32);
        assert_eq!(s.decoder, Dtype::Q4);
        assert_eq!(s.to_string(), "vision=fp32,embed=q4,decoder=q4");
        assert!("q3".parse::<DtypeSelection>().is_err());
        assert!("audio=fp16".parse::<DtypeSelection>().is_err());
        assert_eq!(Dtype::Q8.suffix(), "_quantized");
    }
}
