//! Model benchmarks (not tests): vision encoder time per visual token budget and per-token
//! decode time, on the committed tiny model and, when present, on a random model with the real
//! E2B vision tower (`python onnx/export/quire_export.py big-vision DIR`, then
//! `QUIRE_BIG_VISION=DIR`).
//!
//! Run with `cargo bench --bench model`. Environment:
//! * `QUIRE_BIG_VISION=DIR` — also time the E2B-sized vision tower.
//! * `QUIRE_BENCH_BUDGETS=70,140,280` — budgets for the big tower (default 70,140,280; 560 and
//!   1120 take minutes per image on 2 cores).
//! * `QUIRE_BENCH_RUNS=N` — timed runs per point (median reported; default 5, 2 for the big tower).

use quire_onnx::gemma4::{
    Budget, Gemma4, GenerateOptions, LoadOptions, Message, NoProcessor, ProcessedImage, Request,
    Rgb8,
};
use std::path::{Path, PathBuf};
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn runs(default: usize) -> usize {
    std::env::var("QUIRE_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn vision_per_budget(m: &mut Gemma4, img: &Rgb8, budgets: &[Budget], n: usize, label: &str) {
    println!(
        "\n{label}: vision encoder, one {}x{} image",
        img.width, img.height
    );
    println!("| budget | soft tokens | preprocess ms | vision ms |");
    println!("|---|---|---|---|");
    for &b in budgets {
        let t = Instant::now();
        let p: ProcessedImage = m.preprocess(img, Some(b)).unwrap();
        let pre = t.elapsed().as_secs_f64();
        m.encode_images(&[&p]).unwrap(); // warm-up
        let times: Vec<f64> = (0..n)
            .map(|_| {
                let t = Instant::now();
                m.encode_images(&[&p]).unwrap();
                t.elapsed().as_secs_f64()
            })
            .collect();
        println!(
            "| {b} | {} | {:.1} | {:.1} |",
            p.num_soft_tokens,
            pre * 1e3,
            median(times) * 1e3
        );
    }
}

fn decode(m: &mut Gemma4, img: &Rgb8, n: usize) {
    println!(
        "\ntiny model: decode, image prompt at budget 70, 64 new tokens (greedy, EOS ignored)"
    );
    println!("| batch | prefill ms | decode ms/step | ms/token (per sequence) |");
    println!("|---|---|---|---|");
    let p = m
        .preprocess(img, Some(Budget::try_from(70).unwrap()))
        .unwrap();
    let ids = m
        .prompt_ids(
            &[Message::user_with_images(1, "Describe this image.")],
            &[&p],
            false,
        )
        .unwrap();
    let feats = m.encode_images(&[&p]).unwrap();
    let opts = GenerateOptions {
        max_new_tokens: 64,
        stop_ids: Some(vec![]),
        ..Default::default()
    };
    for batch in [1usize, 4] {
        let reqs: Vec<Request> = (0..batch)
            .map(|_| Request {
                input_ids: ids.clone(),
                images: vec![],
                image_features: Some(feats.clone()),
            })
            .collect();
        m.generate(&reqs, &opts, &mut NoProcessor).unwrap();
        let mut pre = Vec::new();
        let mut step = Vec::new();
        for _ in 0..n {
            let out = m.generate(&reqs, &opts, &mut NoProcessor).unwrap();
            pre.push(out.timings.prefill_s);
            step.push(out.timings.decode_mean_s());
        }
        let s = median(step);
        println!(
            "| {batch} | {:.2} | {:.3} | {:.3} |",
            median(pre) * 1e3,
            s * 1e3,
            s * 1e3 / batch as f64
        );
    }
}

fn main() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let prov = quire_onnx::provision::Provisioner::from_env(false);
    let (env, located) = quire_onnx::runtime::environment(&prov, false).expect("ONNX Runtime");
    let load = |dir: &Path| -> Gemma4 {
        Gemma4::load(env, dir, &LoadOptions::default())
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
    };
    println!(
        "ONNX Runtime: {} (CPU EP, {} threads available)",
        located.library.display(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    let tiny = repo.join("samples/models/tiny-gemma4");
    let img = Rgb8::from_image(&image::open(tiny.join("images/grad_640x480.png")).unwrap());
    let mut m = load(&tiny);
    let all: Vec<Budget> = Budget::all().collect();
    vision_per_budget(&mut m, &img, &all, runs(5), "tiny model");
    decode(&mut m, &img, runs(5));

    if let Ok(dir) = std::env::var("QUIRE_BIG_VISION") {
        let budgets: Vec<Budget> = std::env::var("QUIRE_BENCH_BUDGETS")
            .unwrap_or_else(|_| "70,140,280".into())
            .split(',')
            .map(|s| s.parse().expect("budget"))
            .collect();
        let mut big = load(Path::new(&dir));
        vision_per_budget(
            &mut big,
            &img,
            &budgets,
            runs(2),
            "E2B-sized vision tower (random weights)",
        );
    } else {
        println!("\n(set QUIRE_BIG_VISION=DIR to time the E2B-sized vision tower)");
    }
}
