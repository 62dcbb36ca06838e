//! `quire bench`: the Pareto grid on the user's own documents. Each budget × dtype cell is one
//! `quire run` of the inputs in a child process, its outputs kept in its own folder; the cells
//! are scored against a truth file and written as `bench.json`, `bench.csv` and `bench.html`.
//!
//! * [`truth`]: the truth file (JSON Lines keyed by source).
//! * [`metrics`]: field P/R/F1 under normalisation, CER, percentiles, the Pareto frontier.
//! * [`cell`]: one child process, its exit code, wall time and peak memory (`wait4`).
//! * [`grid`]: a cell's command line, its scoring, dtype agreement, the report assembled.
//! * [`compare`]: a reference model behind an OpenAI-compatible endpoint (`--compare`).
//! * [`report`]: the report and its three files (the scatter drawn with plotters' SVG backend).

pub mod cell;
pub mod compare;
pub mod grid;
pub mod metrics;
pub mod report;
pub mod truth;
