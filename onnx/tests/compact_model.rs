//! The committed compact model (`samples/models/e2b-vision-compact`, made by
//! `quire_export.py compact` from a random model with the real E2B vision tower): 4 MB of files
//! that ONNX Runtime unfolds at load to the real tower's weights, so quire runs real-size vision
//! compute without a 670 MB download. One test in its own binary, so the memory counted is its own.

mod common;
use common::*;
use quire_onnx::gemma4::{Budget, Gemma4, LoadOptions};
use std::path::Path;

fn compact_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/models/e2b-vision-compact")
}

/// Resident memory of this process in bytes (VmRSS of /proc/self/status).
fn rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[test]
fn the_compact_model_unfolds_to_the_real_vision_tower() {
    let dir = compact_dir();
    let on_disk: u64 = std::fs::read_dir(dir.join("onnx"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(on_disk < 8 << 20, "graphs take {on_disk} bytes on disk");

    let env = env();
    let before = rss();
    let mut m = Gemma4::load(env, &dir, &LoadOptions::default()).unwrap();
    let grown = rss().zip(before).map(|(a, b)| a.saturating_sub(b));
    // The tower's 115 large initializers hold 669,656,832 bytes once tiled (compact.json).
    if let Some(grown) = grown {
        assert!(
            grown > 600 << 20,
            "loading grew the process by {grown} bytes: the tiles were not unfolded"
        );
    }
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let vision = &config["vision_config"];
    assert_eq!(
        (&vision["hidden_size"], &vision["num_hidden_layers"]),
        (&serde_json::json!(768), &serde_json::json!(16)),
        "E2B's vision tower"
    );

    let img = load_image("images/grad_640x480.png");
    let p = m
        .preprocess(&img, Some(Budget::try_from(70).unwrap()))
        .unwrap();
    assert_eq!(
        m.processor.patch_dim(),
        16 * 16 * 3,
        "E2B patches are 16x16"
    );
    let features = m.encode_images(&[&p]).unwrap();
    let text_width = m.config.text_config.hidden_size;
    assert_eq!(features.len(), p.num_soft_tokens * text_width);
    assert!(features.iter().all(|x| x.is_finite()));
    assert!(
        features.iter().any(|x| *x != 0.0),
        "the features are not all zero"
    );
}
