//! Device-resident decoding (IoBinding, the KV cache left in the session's memory between steps)
//! against the plain `Session::run` loop on the CPU provider, tiny model: the same tokens, and
//! the same logits handed to `on_token`, at batch 1, batch 4 and with sequences joining and
//! leaving a running batch.

mod common;
use common::*;
use quire_onnx::gemma4::{
    Admission, BatchLimits, Budget, DecodeBatch, Dtype, DtypeSelection, Gemma4, GenerateOptions,
    LoadOptions, LogitsProcessor, Message, NewSequence, ProcessedImage, Request,
};
use std::collections::HashMap;

const MAX_NEW: usize = 16;

fn opts() -> GenerateOptions {
    GenerateOptions {
        max_new_tokens: MAX_NEW,
        stop_ids: Some(vec![]), // run to the length limit or the processor's stop
        ..Default::default()
    }
}

/// Three text prompts of different lengths and one image prompt.
fn requests<'a>(m: &Gemma4, image: &'a ProcessedImage) -> Vec<Request<'a>> {
    let mut out: Vec<Request> = [
        "Hi",
        "Write a short poem about the sea and the ships that sail on it at night.",
        "List three colours.",
    ]
    .iter()
    .map(|t| Request {
        input_ids: m
            .prompt_ids(&[Message::user_with_images(0, t)], &[], false)
            .unwrap(),
        images: Vec::new(),
        image_features: None,
    })
    .collect();
    out.push(Request {
        input_ids: m
            .prompt_ids(
                &[Message::user_with_images(1, "Describe this image.")],
                &[image],
                false,
            )
            .unwrap(),
        images: vec![image],
        image_features: None,
    });
    out
}

/// Per sequence: each token with the logit it was chosen at (as `on_token` saw it).
type Trace = HashMap<usize, Vec<(u32, f32)>>;

/// Records what `on_token` sees and stops sequence `id` after `stop_after[id]` tokens, so rows
/// leave at different steps.
#[derive(Default)]
struct Recorder {
    stop_after: HashMap<usize, usize>,
    trace: Trace,
}

impl LogitsProcessor for Recorder {
    fn process(&mut self, _seq: usize, _logits: &mut [f32]) {}
    fn on_token(&mut self, seq: usize, token: u32, logits: &[f32]) -> bool {
        let t = self.trace.entry(seq).or_default();
        t.push((token, logits[token as usize]));
        self.stop_after.get(&seq).is_some_and(|&n| t.len() >= n)
    }
}

/// Runs `f` on the host-copy path, then on the device-resident one; checks that the second
/// really ran through IoBinding and returns both results.
fn both<T>(m: &mut Gemma4, mut f: impl FnMut(&mut Gemma4) -> T) -> (T, T) {
    m.decoder.device_resident = false;
    let before = m.decoder.bound_steps;
    let host = f(m);
    assert_eq!(
        m.decoder.bound_steps, before,
        "the host path used IoBinding"
    );
    m.decoder.device_resident = true;
    let bound = f(m);
    assert!(
        m.decoder.bound_steps > before,
        "the device-resident path ran no bound step"
    );
    (host, bound)
}

fn static_batches(m: &mut Gemma4, reqs: &[Request]) {
    // Batch 1: each request alone.
    let (host, bound) = both(m, |m| {
        reqs.iter()
            .map(|r| {
                let mut p = Recorder::default();
                let out = m
                    .generate(std::slice::from_ref(r), &opts(), &mut p)
                    .unwrap();
                (out.sequences[0].generated_ids.clone(), p.trace)
            })
            .collect::<Vec<_>>()
    });
    for (i, (h, b)) in host.iter().zip(&bound).enumerate() {
        assert_eq!(h.0.len(), MAX_NEW, "sequence {i}");
        assert_eq!(h, b, "batch 1, sequence {i}");
    }

    // Batch 4: prompts of different lengths (left padding), rows leaving at different steps.
    let stop_after = HashMap::from([(0, 3), (2, 9)]);
    let (host4, bound4) = both(m, |m| {
        let mut p = Recorder {
            stop_after: stop_after.clone(),
            ..Default::default()
        };
        let out = m.generate(reqs, &opts(), &mut p).unwrap();
        let ids: Vec<Vec<u32>> = out.sequences.into_iter().map(|s| s.generated_ids).collect();
        (ids, p.trace)
    });
    assert_eq!(host4, bound4, "batch 4");
    for (i, ids) in host4.0.iter().enumerate() {
        let n = stop_after.get(&i).copied().unwrap_or(MAX_NEW);
        assert_eq!(
            ids,
            &host[i].0[..n].to_vec(),
            "batch 4 vs alone, sequence {i}"
        );
    }
}

/// `joins`: `(step, request indices)` admitted as one group before that decode step.
fn scheduled(
    m: &mut Gemma4,
    reqs: &[Request],
    joins: &[(usize, Vec<usize>)],
    stop_after: &HashMap<usize, usize>,
) -> (Vec<Vec<u32>>, Trace) {
    let mut batch = DecodeBatch::new(m, &opts(), BatchLimits::UNBOUNDED);
    let mut p = Recorder {
        stop_after: stop_after.clone(),
        ..Default::default()
    };
    let mut out: Vec<Option<Vec<u32>>> = vec![None; reqs.len()];
    let mut step = 0;
    loop {
        for (_, group) in joins.iter().filter(|(s, _)| *s == step) {
            let seqs: Vec<NewSequence> = group
                .iter()
                .map(|&i| NewSequence {
                    id: i,
                    stream: i,
                    request: &reqs[i],
                })
                .collect();
            match batch.admit(m, &seqs, &mut p).unwrap() {
                Admission::Joined(done) => {
                    for f in done {
                        out[f.id] = Some(f.generation.generated_ids);
                    }
                }
                Admission::Refused => panic!("the tiny model's caches are full length"),
            }
        }
        if batch.is_empty() && joins.iter().all(|(s, _)| *s <= step) {
            break;
        }
        for f in batch.step(m, &mut p).unwrap() {
            out[f.id] = Some(f.generation.generated_ids);
        }
        step += 1;
    }
    (
        out.into_iter().map(|o| o.expect("finished")).collect(),
        p.trace,
    )
}

fn joins_and_leaves(m: &mut Gemma4, reqs: &[Request]) {
    // 1 (the long prompt) starts; 3 (image, longer still: the running row is padded) joins at
    // step 2; 0 (shorter than the cache: it is padded) at step 4; 2 at step 7 after 1 has left
    // (step 5), so it meets a trimmed cache.
    let joins = vec![(0, vec![1]), (2, vec![3]), (4, vec![0]), (7, vec![2])];
    let stop_after = HashMap::from([(1, 5), (3, 12), (0, 6)]);
    let (host, bound) = both(m, |m| scheduled(m, reqs, &joins, &stop_after));
    for (i, ids) in host.0.iter().enumerate() {
        let n = stop_after.get(&i).copied().unwrap_or(MAX_NEW);
        assert_eq!(ids.len(), n, "sequence {i}");
    }
    assert_eq!(host, bound);
}

fn image(m: &Gemma4) -> ProcessedImage {
    preprocess_for_model(
        m,
        "images/grad_640x480.png",
        Some(Budget::try_from(70).unwrap()),
    )
}

#[test]
fn device_resident_decoding_is_the_default_and_matches_the_host_loop() {
    let mut m = load_tiny();
    assert!(m.decoder.device_resident, "on by default");
    let img = image(&m);
    let reqs = requests(&m, &img);
    static_batches(&mut m, &reqs);
    joins_and_leaves(&mut m, &reqs);
}

#[test]
fn device_resident_decoding_matches_with_fp16_caches() {
    let opts = LoadOptions {
        dtype: DtypeSelection::uniform(Dtype::Fp16),
        ..Default::default()
    };
    let mut m = Gemma4::load(env(), tiny_dir(), &opts).unwrap();
    let img = image(&m);
    let reqs = requests(&m, &img);
    joins_and_leaves(&mut m, &reqs);
}
