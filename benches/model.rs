//! Model benchmarks (not tests): vision encoder time per visual token budget and per-token
//! decode time, on the committed tiny model and, when present, on a random model with the real
//! E2B vision tower (`QUIRE_BIG_VISION=samples/models/e2b-vision-compact`, committed, or a
//! directory made by `python onnx/export/quire_export.py big-vision DIR`).
//!
//! Run with `cargo bench --bench model`. Environment:
//! * `QUIRE_BIG_VISION=DIR` — also time the E2B-sized vision tower.
//! * `QUIRE_BENCH_BUDGETS=70,140,280` — budgets for the big tower (default 70,140,280; 560 and
//!   1120 take minutes per image on 2 cores).
//! * `QUIRE_BENCH_RUNS=N` — timed runs per point (median reported; default 5, 2 for the big tower).
//!
//! The decode-path table compares device-resident decoding (IoBinding, the default) with the
//! plain `Session::run` loop: decode steps only, both paths alternating, medians of the runs.

use quire_onnx::gemma4::{
    Admission, BatchLimits, Budget, DecodeBatch, Gemma4, GenerateOptions, LoadOptions, Message,
    NewSequence, NoProcessor, ProcessedImage, Request, Rgb8,
};
use quire_onnx::session::SessionSettings;
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

/// Vision encoder time and minor page faults per image under each session setting, the settings
/// alternating run by run so that a noisy machine affects them alike.
fn session_settings(
    load: impl Fn(&Path, SessionSettings) -> Gemma4,
    dir: &Path,
    img: &Rgb8,
    budget: Budget,
    n: usize,
) {
    let before = SessionSettings {
        cpu_arena: false,
        ..SessionSettings::default()
    };
    let variants = [
        ("arena off (ort's default before)", before),
        ("arena on (default)", SessionSettings::default()),
        (
            "arena on, 1 thread",
            SessionSettings {
                intra_threads: 1,
                ..SessionSettings::default()
            },
        ),
        (
            "arena on, no spinning",
            SessionSettings {
                spinning: false,
                ..SessionSettings::default()
            },
        ),
    ];
    let mut models: Vec<Gemma4> = variants
        .iter()
        .map(|(_, session)| load(dir, *session))
        .collect();
    let p = models[0].preprocess(img, Some(budget)).unwrap();
    let mut secs = vec![Vec::new(); models.len()];
    let mut faults = vec![Vec::new(); models.len()];
    for round in 0..=n {
        for (i, m) in models.iter_mut().enumerate() {
            let f0 = minor_faults();
            let t = Instant::now();
            m.encode_images(&[&p]).unwrap();
            let dt = t.elapsed().as_secs_f64();
            if round > 0 {
                secs[i].push(dt);
                if let (Some(a), Some(b)) = (f0, minor_faults()) {
                    faults[i].push((b - a) as f64);
                }
            }
        }
    }
    println!(
        "\n{}: session settings, vision encoder at budget {budget}, median of {n} alternating runs",
        dir.display()
    );
    println!("| setting | vision ms | minor faults per image |");
    println!("|---|---|---|");
    for (i, (name, _)) in variants.iter().enumerate() {
        println!(
            "| {name} | {:.1} | {} |",
            median(secs[i].clone()) * 1e3,
            fault_cell(&faults[i])
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

/// Minor page faults of this process so far (field 10 of `/proc/self/stat`; Linux only).
/// The median of `v`, or n/a where faults could not be read.
fn fault_cell(v: &[f64]) -> String {
    if v.is_empty() {
        "n/a".to_string()
    } else {
        format!("{:.1}", median(v.to_vec()))
    }
}

fn minor_faults() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after_comm = &stat[stat.rfind(')')? + 2..];
    after_comm.split(' ').nth(7)?.parse().ok()
}

/// Decode steps only (prefill excluded) of one batch: mean seconds and minor faults per step.
fn decode_steps(m: &mut Gemma4, reqs: &[Request], opts: &GenerateOptions) -> (f64, Option<f64>) {
    let mut batch = DecodeBatch::new(m, opts, BatchLimits::UNBOUNDED);
    let group: Vec<NewSequence> = reqs
        .iter()
        .enumerate()
        .map(|(i, request)| NewSequence {
            id: i,
            stream: i,
            request,
        })
        .collect();
    match batch.admit(m, &group, &mut NoProcessor).unwrap() {
        Admission::Joined(_) => {}
        Admission::Refused => unreachable!("an empty batch takes any group"),
    }
    let faults = minor_faults();
    let t = Instant::now();
    let mut steps = 0;
    while !batch.is_empty() {
        batch.step(m, &mut NoProcessor).unwrap();
        steps += 1;
    }
    let secs = t.elapsed().as_secs_f64() / steps as f64;
    let faults = faults
        .zip(minor_faults())
        .map(|(a, b)| (b - a) as f64 / steps as f64);
    (secs, faults)
}

/// The decode loop through IoBinding with the cache left where the session put it (the
/// default) against plain `Session::run` (every output in host memory), alternating.
fn decode_paths(m: &mut Gemma4, img: &Rgb8, n: usize) {
    println!(
        "\ntiny model: decode path, image prompt at budget 70, 32 new tokens, {n} runs per point, alternating"
    );
    println!("| batch | host run ms/step | bound ms/step | ratio | host minor faults/step | bound minor faults/step |");
    println!("|---|---|---|---|---|---|");
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
        max_new_tokens: 32,
        stop_ids: Some(vec![]),
        ..Default::default()
    };
    for batch in [1usize, 4, 16] {
        let reqs: Vec<Request> = (0..batch)
            .map(|_| Request {
                input_ids: ids.clone(),
                images: vec![],
                image_features: Some(feats.clone()),
            })
            .collect();
        // [host, bound]: seconds and faults per step, per run.
        let mut secs = [Vec::new(), Vec::new()];
        let mut faults = [Vec::new(), Vec::new()];
        for run in 0..=n {
            let order = if run % 2 == 0 { [0, 1] } else { [1, 0] };
            for path in order {
                m.decoder.device_resident = path == 1;
                let (s, f) = decode_steps(m, &reqs, &opts);
                if run > 0 {
                    // run 0 warms both paths up
                    secs[path].push(s);
                    faults[path].extend(f);
                }
            }
        }
        m.decoder.device_resident = true;
        let (host, bound) = (median(secs[0].clone()), median(secs[1].clone()));
        println!(
            "| {batch} | {:.3} | {:.3} | {:.2} | {} | {} |",
            host * 1e3,
            bound * 1e3,
            bound / host,
            fault_cell(&faults[0]),
            fault_cell(&faults[1])
        );
    }
}

fn main() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let prov = quire_onnx::provision::Provisioner::from_env(false);
    let (env, located) = quire_onnx::runtime::environment(&prov, false).expect("ONNX Runtime");
    let load_with = |dir: &Path, session: SessionSettings| -> Gemma4 {
        let opts = LoadOptions {
            session,
            ..LoadOptions::default()
        };
        Gemma4::load(env, dir, &opts).unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
    };
    let load = |dir: &Path| load_with(dir, SessionSettings::default());
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
    session_settings(
        load_with,
        &tiny,
        &img,
        Budget::try_from(280).unwrap(),
        runs(5),
    );
    decode(&mut m, &img, runs(5));
    decode_paths(&mut m, &img, runs(5));

    if let Ok(dir) = std::env::var("QUIRE_BIG_VISION") {
        let budgets: Vec<Budget> = std::env::var("QUIRE_BENCH_BUDGETS")
            .unwrap_or_else(|_| "70,140,280".into())
            .split(',')
            .map(|s| s.parse().expect("budget"))
            .collect();
        session_settings(load_with, Path::new(&dir), &img, budgets[0], runs(2));
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
