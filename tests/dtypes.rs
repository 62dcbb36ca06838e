//! Every published dtype of the tiny model runs, alone and mixed per graph: `quire generate`
//! gives 32 greedy tokens per reference case, compared with the fp32 transformers reference
//! (agreement printed: the numbers in the README), and `quire run --task extract` writes
//! schema-valid JSON with each selection.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn tiny() -> PathBuf {
    root().join("samples/models/tiny-gemma4")
}

/// The selections checked: each published dtype (q4 with the fp32 vision encoder, as the
/// community q4 loop runs it) and two per-graph mixes, one of which feeds an fp32 embedding
/// graph into an fp16-activation decoder.
const SELECTIONS: [&str; 7] = [
    "fp32",
    "fp16",
    "q8",
    "q4,vision=fp32",
    "q4f16",
    "q4f16,vision=fp16",
    "q8,decoder=q4f16",
];

fn reference() -> Value {
    serde_json::from_slice(&std::fs::read(tiny().join("reference.json")).unwrap()).unwrap()
}

fn generate(dtype: &str, case: &Value) -> Vec<u64> {
    let image = tiny().join(case["images"][0][0].as_str().unwrap());
    let prompt = case["messages"][0][0]["content"][1]["text"]
        .as_str()
        .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_quire"))
        .args([
            "generate",
            "--json",
            "--ignore-eos",
            "--max-new-tokens",
            "32",
        ])
        .args(["--budget", "70", "--dtype", dtype, "--model"])
        .arg(tiny())
        .arg("--image")
        .arg(&image)
        .args(["--prompt", prompt])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "--dtype {dtype}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let o: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(o["input_ids"], case["input_ids"][0], "--dtype {dtype}");
    assert!(o["text"].is_string());
    o["generated_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect()
}

#[test]
fn every_dtype_and_mix_generates_and_agreement_with_fp32_is_reported() {
    let r = reference();
    // The two single-image cases of the reference (640×480 and 300×1000 images).
    let cases: Vec<&Value> = r["generation"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["batch_size"] == 1 && c["images"][0].as_array().is_some_and(|i| i.len() == 1))
        .collect();
    assert_eq!(cases.len(), 2);
    for dtype in SELECTIONS {
        let (mut same, mut prefix, mut total) = (0, 0, 0);
        for case in &cases {
            let reference: Vec<u64> = case["greedy_tokens"][0]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap())
                .collect();
            let got = generate(dtype, case);
            assert_eq!(
                got.len(),
                32,
                "--dtype {dtype}: --ignore-eos gives all 32 tokens"
            );
            if dtype == "fp32" {
                assert_eq!(got, reference, "fp32 is the reference's own tokens");
            }
            same += got.iter().zip(&reference).filter(|(a, b)| a == b).count();
            prefix += got
                .iter()
                .zip(&reference)
                .take_while(|(a, b)| a == b)
                .count();
            total += reference.len();
        }
        eprintln!(
            "agreement {dtype:<18} identical tokens {same}/{total} ({:.0}%), identical prefix {prefix}/{total}",
            100.0 * same as f64 / total as f64
        );
    }
}

#[test]
fn quire_run_extracts_schema_valid_json_with_every_dtype() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::copy(
        root().join("samples/receipt.jpg"),
        input.join("receipt.jpg"),
    )
    .unwrap();
    let schema_path = root().join("samples/schemas/invoice.schema.json");
    let schema: Value = serde_json::from_slice(&std::fs::read(&schema_path).unwrap()).unwrap();
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap();
    let mut fp32_data = None;
    for dtype in SELECTIONS {
        let out_dir = tmp.path().join(dtype.replace([',', '='], "_"));
        let out = Command::new(env!("CARGO_BIN_EXE_quire"))
            .arg("run")
            .arg(&input)
            .arg("--out")
            .arg(&out_dir)
            .arg("--model")
            .arg(tiny())
            .args([
                "--dtype",
                dtype,
                "--budget",
                "70",
                "--max-new-tokens",
                "2048",
            ])
            .arg("--schema")
            .arg(&schema_path)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "--dtype {dtype}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let record: Value = read(&out_dir.join("receipt.jpg.json"));
        assert!(
            record["error"].is_null(),
            "--dtype {dtype}: {}",
            record["error"]
        );
        let data = &record["data"];
        let errors: Vec<String> = validator.iter_errors(data).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "--dtype {dtype}: {errors:?}\n{data}");
        let fp32 = fp32_data.get_or_insert_with(|| data.clone());
        let (fields, equal) = match (fp32.as_object(), data.as_object()) {
            (Some(a), Some(b)) => (
                a.len(),
                a.iter().filter(|(k, v)| b.get(*k) == Some(v)).count(),
            ),
            _ => (0, 0),
        };
        eprintln!("extract {dtype:<18} top-level fields equal to fp32: {equal}/{fields}");
    }
}

fn read(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| panic!("{path:?}: {e}")))
        .unwrap()
}
