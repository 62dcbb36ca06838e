//! Test hook of the model stages, next to the render workers' `QUIRE_TEST_CRASH_ON` and
//! `QUIRE_TEST_HANG_ON`: `QUIRE_TEST_FAIL_STAGE=vision`, `generate` or `decode` (several may be
//! given, comma-separated) makes that stage treat its model call as failed with an "injected test
//! fault" error, at the very place where a real ONNX Runtime (or tokenizer) failure is handled:
//! the vision encoder run (`vision_failed`), the admission (prefill) of sequences into the decoder
//! batch (`generation_failed`), the decoding of generated tokens to text (`decode_failed`). The
//! tests use it to check that such failures become the documents' error records. The variable is
//! read once per process; unset, nothing changes.

use quire_onnx::gemma4::Error;
use std::sync::OnceLock;

/// The environment variable.
pub const VAR: &str = "QUIRE_TEST_FAIL_STAGE";

/// A model call the hook can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// The vision encoder (vision stage).
    Vision,
    /// Prefill of sequences joining the decoder batch (generate stage).
    Generate,
    /// Generated tokens to text (generate stage, `ocr` and `prompt`).
    Decode,
}

impl Stage {
    fn name(self) -> &'static str {
        match self {
            Stage::Vision => "vision",
            Stage::Generate => "generate",
            Stage::Decode => "decode",
        }
    }
}

/// The error to treat `stage`'s model call as having returned, when the hook asks for one.
pub(crate) fn injected(stage: Stage) -> Option<Error> {
    static STAGES: OnceLock<Vec<Stage>> = OnceLock::new();
    let stages = STAGES.get_or_init(|| parse(std::env::var(VAR).ok().as_deref()));
    stages.contains(&stage).then(|| {
        Error::Invalid(format!(
            "injected test fault ({VAR}={}): the {} model call failed",
            stage.name(),
            stage.name()
        ))
    })
}

fn parse(value: Option<&str>) -> Vec<Stage> {
    let Some(value) = value else {
        return Vec::new();
    };
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .filter_map(|name| {
            let stage = [Stage::Vision, Stage::Generate, Stage::Decode]
                .into_iter()
                .find(|s| s.name() == name);
            if stage.is_none() {
                tracing::warn!("{VAR}: unknown stage {name:?} (vision, generate, decode)");
            }
            stage
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_are_parsed_from_a_comma_separated_list() {
        assert_eq!(parse(None), []);
        assert_eq!(parse(Some("")), []);
        assert_eq!(parse(Some("vision")), [Stage::Vision]);
        assert_eq!(
            parse(Some(" generate , decode,nonsense")),
            [Stage::Generate, Stage::Decode]
        );
    }
}
