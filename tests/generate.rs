//! `quire generate` end to end on the committed tiny model: the binary's greedy ids equal the
//! transformers reference, and a bad provider or model directory is a clear error.

use std::path::{Path, PathBuf};
use std::process::Command;

fn tiny() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/models/tiny-gemma4")
}

fn quire() -> Command {
    Command::new(env!("CARGO_BIN_EXE_quire"))
}

fn reference() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(tiny().join("reference.json")).unwrap()).unwrap()
}

#[test]
fn generate_json_matches_reference_greedy_tokens() {
    let r = reference();
    let case = &r["generation"][0];
    assert_eq!(case["name"], "image_prompt");
    let image = tiny().join(case["images"][0][0].as_str().unwrap());
    let text = case["messages"][0][0]["content"][1]["text"]
        .as_str()
        .unwrap();
    let out = quire()
        .args([
            "generate",
            "--json",
            "--ignore-eos",
            "--max-new-tokens",
            "32",
            "--budget",
            "70",
        ])
        .arg("--model")
        .arg(tiny())
        .arg("--image")
        .arg(&image)
        .args(["--prompt", text])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let o: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(o["input_ids"], case["input_ids"][0]);
    assert_eq!(o["generated_ids"], case["greedy_tokens"][0]);
    assert!(o["text"].is_string());
    for k in ["vision_s", "prefill_s", "decode_s_per_token"] {
        assert!(o["timings"][k].as_f64().is_some(), "timings.{k}");
    }
    assert_eq!(o["providers"]["decoder_model_merged.onnx"], "cpu");
}

#[test]
fn stops_at_a_stop_id_by_default() {
    let out = quire()
        .args([
            "generate",
            "--json",
            "--max-new-tokens",
            "40",
            "--prompt",
            "Hello",
        ])
        .arg("--model")
        .arg(tiny())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let o: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids = o["generated_ids"].as_array().unwrap();
    assert!(!ids.is_empty() && ids.len() <= 40);
    let stops = [1u64, 106, 50];
    let n_stops = ids
        .iter()
        .filter(|i| stops.contains(&i.as_u64().unwrap()))
        .count();
    match o["finish_reason"].as_str().unwrap() {
        "stop" => assert!(n_stops == 1 && stops.contains(&ids.last().unwrap().as_u64().unwrap())),
        "length" => assert_eq!((ids.len(), n_stops), (40, 0)),
        other => panic!("finish_reason {other}"),
    }
}

#[test]
fn provider_the_library_lacks_is_an_error_naming_it() {
    let out = quire()
        .args(["generate", "--prompt", "hi", "--ep", "openvino,cpu"])
        .arg("--model")
        .arg(tiny())
        .env_remove("QUIRE_EP_FALLBACK")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "execution provider `openvino` cannot run here: the loaded ONNX Runtime library \
             was not built with OpenVINOExecutionProvider"
        ),
        "{err}"
    );
}

#[test]
fn missing_model_dir_is_an_error() {
    let out = quire()
        .args([
            "generate",
            "--prompt",
            "hi",
            "--model",
            "/nonexistent/model",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/model"));
}
