//! Creating ONNX Runtime sessions from model files and reading their I/O metadata, so the model
//! code can check a graph against the contract before running it.

use crate::ep::{EpConfig, EpReport};
use crate::gemma4::error::{ort_err, Error};
use ort::session::builder::SessionBuilder;
use ort::session::Session;
use ort::value::{TensorElementType, ValueType};
use std::path::Path;

/// How ONNX Runtime runs each graph: threads and memory. One value for the three sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionSettings {
    /// Intra-op threads of each session; 0 lets ONNX Runtime choose (one per physical core).
    pub intra_threads: usize,
    /// The CPU provider's memory arena. On, buffers are kept and reused between runs; off, every
    /// buffer is a fresh allocation, and each large one a fresh mapping faulted in page by page
    /// (ort registers the CPU provider with the arena off unless told).
    pub cpu_arena: bool,
    /// Whether idle intra-op threads spin before sleeping. Spinning lowers latency when one
    /// session owns the cores, and steals them when vision and decoding overlap.
    pub spinning: bool,
}

impl Default for SessionSettings {
    fn default() -> Self {
        SessionSettings {
            intra_threads: 0,
            cpu_arena: true,
            spinning: true,
        }
    }
}

impl SessionSettings {
    /// The settings for a pipeline whose vision and decoding sessions run at the same time: idle
    /// threads sleep instead of spinning, so neither session's pool burns the cores the other
    /// is computing on (`quire run`, 8 pages at budget 280 on 2 cores: 124 and 128 s against
    /// 151 and 132 s spinning, user time 0.91×).
    pub fn for_overlapping_stages(self) -> Self {
        SessionSettings {
            spinning: false,
            ..self
        }
    }

    fn apply(&self, builder: SessionBuilder) -> ort::Result<SessionBuilder> {
        let builder = builder.with_intra_op_spinning(self.spinning)?;
        if self.intra_threads == 0 {
            Ok(builder)
        } else {
            Ok(builder.with_intra_threads(self.intra_threads)?)
        }
    }
}

/// One input or output as the graph declares it. Dynamic dims are -1.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub ty: TensorElementType,
    pub shape: Vec<i64>,
}

impl TensorInfo {
    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// The static size of axis `i`, `None` when symbolic.
    pub fn dim(&self, i: usize) -> Option<i64> {
        self.shape.get(i).copied().filter(|d| *d >= 0)
    }
}

fn infos(outlets: &[ort::value::Outlet]) -> Vec<TensorInfo> {
    outlets
        .iter()
        .filter_map(|o| match o.dtype() {
            ValueType::Tensor { ty, shape, .. } => Some(TensorInfo {
                name: o.name().to_string(),
                ty: *ty,
                shape: shape.iter().copied().collect(),
            }),
            _ => None,
        })
        .collect()
}

/// A session plus its declared I/O and the providers it got.
pub struct LoadedSession {
    pub session: Session,
    pub graph: String,
    pub inputs: Vec<TensorInfo>,
    pub outputs: Vec<TensorInfo>,
    pub providers: EpReport,
    /// The GPU ordinal the providers were given (`EpConfig::device_id`).
    pub device_id: i32,
}

impl LoadedSession {
    /// Creates a session from the `.onnx` path (its external data is found beside it).
    pub fn load(
        env: &ort::environment::Environment,
        path: &Path,
        eps: &EpConfig,
        settings: &SessionSettings,
    ) -> Result<Self, Error> {
        let graph = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut builder = Session::builder(env)
            .and_then(|b| settings.apply(b))
            .map_err(ort_err(format!("{graph}: session options")))?;
        let providers = eps.register(&mut builder, settings.cpu_arena)?;
        let session = builder
            .commit_from_file(path)
            .map_err(ort_err(format!("{graph}: loading {}", path.display())))?;
        let inputs = infos(session.inputs());
        let outputs = infos(session.outputs());
        tracing::info!("{graph}: execution providers {providers}");
        Ok(LoadedSession {
            session,
            graph,
            inputs,
            outputs,
            providers,
            device_id: eps.device_id,
        })
    }

    pub fn input(&self, name: &str) -> Option<&TensorInfo> {
        self.inputs.iter().find(|i| i.name == name)
    }

    pub fn output(&self, name: &str) -> Option<&TensorInfo> {
        self.outputs.iter().find(|i| i.name == name)
    }

    fn names(list: &[TensorInfo]) -> String {
        list.iter()
            .map(|i| i.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The input `name`, or an error that lists what the graph has instead.
    pub fn require_input(&self, name: &str) -> Result<&TensorInfo, Error> {
        self.input(name).ok_or_else(|| {
            Error::contract(
                &self.graph,
                format!(
                    "missing input `{name}` (graph inputs: {})",
                    Self::names(&self.inputs)
                ),
            )
        })
    }

    pub fn require_output(&self, name: &str) -> Result<&TensorInfo, Error> {
        self.output(name).ok_or_else(|| {
            Error::contract(
                &self.graph,
                format!(
                    "missing output `{name}` (graph outputs: {})",
                    Self::names(&self.outputs)
                ),
            )
        })
    }

    /// Checks element type and rank; `types` lists the accepted element types.
    pub fn check(
        &self,
        t: &TensorInfo,
        types: &[TensorElementType],
        rank: usize,
    ) -> Result<(), Error> {
        if !types.contains(&t.ty) {
            return Err(Error::contract(
                &self.graph,
                format!(
                    "`{}` has element type {:?}, expected one of {:?}",
                    t.name, t.ty, types
                ),
            ));
        }
        if t.rank() != rank {
            return Err(Error::contract(
                &self.graph,
                format!(
                    "`{}` has rank {} (shape {:?}), expected rank {rank}",
                    t.name,
                    t.rank(),
                    t.shape
                ),
            ));
        }
        Ok(())
    }

    /// Checks that axis `axis` of `t` is `expected` (a symbolic axis passes).
    pub fn check_dim(
        &self,
        t: &TensorInfo,
        axis: usize,
        expected: usize,
        what: &str,
    ) -> Result<(), Error> {
        match t.dim(axis) {
            Some(d) if d as usize != expected => Err(Error::contract(
                &self.graph,
                format!(
                    "`{}` axis {axis} is {d} but the model config says {expected} ({what}); shape {:?}",
                    t.name, t.shape
                ),
            )),
            _ => Ok(()),
        }
    }
}

pub const FLOATS: [TensorElementType; 2] = [TensorElementType::Float32, TensorElementType::Float16];
