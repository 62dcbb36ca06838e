//! Continuous batching on the tiny model: sequences that join a running batch at different
//! steps (prompts shorter and longer than the running cache, alone and in groups) get exactly
//! the greedy tokens they get alone; the token budget caps the rows and the cache.

mod common;
use common::*;
use quire_onnx::gemma4::{
    Admission, BatchLimits, DecodeBatch, Dtype, DtypeSelection, Gemma4, GenerateOptions,
    LoadOptions, LogitsProcessor, Message, NewSequence, NoProcessor, ProcessedImage, Request,
};
use std::collections::HashMap;

const MAX_NEW: usize = 24;

fn opts() -> GenerateOptions {
    GenerateOptions {
        max_new_tokens: MAX_NEW,
        stop_ids: Some(vec![]), // run to the length limit or the processor's stop
        ..Default::default()
    }
}

/// Text prompts of several lengths and two image prompts (79 and 93 tokens at budget 70).
fn prompts(m: &Gemma4, images: &[ProcessedImage]) -> Vec<Vec<u32>> {
    let mut out = Vec::new();
    for text in [
        "Hi",
        "Write a short poem about the sea and the ships that sail on it at night.",
        "List three colours.",
    ] {
        out.push(
            m.prompt_ids(&[Message::user_with_images(0, text)], &[], false)
                .unwrap(),
        );
    }
    for img in images {
        out.push(
            m.prompt_ids(
                &[Message::user_with_images(1, "Describe this image.")],
                &[img],
                false,
            )
            .unwrap(),
        );
    }
    out
}

fn images(m: &Gemma4) -> Vec<ProcessedImage> {
    let budget = Some(quire_onnx::gemma4::Budget::try_from(70).unwrap());
    ["images/grad_640x480.png", "images/tall_300x1000.png"]
        .iter()
        .map(|p| preprocess_for_model(m, p, budget))
        .collect()
}

fn requests<'a>(ids: &[Vec<u32>], images: &'a [ProcessedImage]) -> Vec<Request<'a>> {
    let text = ids.len() - images.len();
    ids.iter()
        .enumerate()
        .map(|(i, ids)| Request {
            input_ids: ids.clone(),
            images: if i >= text {
                vec![&images[i - text]]
            } else {
                Vec::new()
            },
            image_features: None,
        })
        .collect()
}

/// Stops sequence `id` after `stop_after[id]` tokens, so rows leave at different steps.
struct StopAfter {
    stop_after: HashMap<usize, usize>,
    counts: HashMap<usize, usize>,
}

impl LogitsProcessor for StopAfter {
    fn process(&mut self, _seq: usize, _logits: &mut [f32]) {}
    fn on_token(&mut self, seq: usize, _token: u32, _logits: &[f32]) -> bool {
        let c = self.counts.entry(seq).or_default();
        *c += 1;
        self.stop_after.get(&seq).is_some_and(|&n| *c >= n)
    }
}

/// Each request generated alone.
fn alone(m: &mut Gemma4, reqs: &[Request]) -> Vec<Vec<u32>> {
    reqs.iter()
        .map(|r| {
            m.generate(std::slice::from_ref(r), &opts(), &mut NoProcessor)
                .unwrap()
                .sequences[0]
                .generated_ids
                .clone()
        })
        .collect()
}

/// Runs `joins` (`(step, request indices)`: admitted as one group before that decode step)
/// on one batch; returns each sequence's tokens.
fn scheduled(
    m: &mut Gemma4,
    reqs: &[Request],
    joins: &[(usize, Vec<usize>)],
    stop_after: &HashMap<usize, usize>,
) -> Vec<Vec<u32>> {
    let mut batch = DecodeBatch::new(m, &opts(), BatchLimits::UNBOUNDED);
    let mut p = StopAfter {
        stop_after: stop_after.clone(),
        counts: HashMap::new(),
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
            let before = batch.cache_len();
            let lens: Vec<usize> = group.iter().map(|&i| reqs[i].input_ids.len()).collect();
            eprintln!("step {step}: {lens:?} join a cache of {before} columns");
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
    out.into_iter().map(|o| o.expect("finished")).collect()
}

fn joining_matches_alone(m: &mut Gemma4) {
    let imgs = images(m);
    let ids = prompts(m, &imgs);
    let reqs = requests(&ids, &imgs);
    let lens: Vec<usize> = reqs.iter().map(|r| r.input_ids.len()).collect();
    eprintln!("prompt lengths {lens:?}");
    let want = alone(m, &reqs);
    // 1 starts; 3 (longer: the running rows are padded) joins at step 3; 0 (shorter than the
    // cache: it is padded) at step 6; 4 and 2 as one group at step 9, after 1 has left (step
    // 8), so the trimmed cache meets a group that is itself left-padded.
    let joins = vec![(0, vec![1]), (3, vec![3]), (6, vec![0]), (9, vec![4, 2])];
    let stop_after = HashMap::from([(1, 8), (3, 20), (4, 10)]);
    let got = scheduled(m, &reqs, &joins, &stop_after);
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        let n = stop_after.get(&i).copied().unwrap_or(MAX_NEW);
        assert_eq!(g, &w[..n].to_vec(), "sequence {i} (prompt of {})", lens[i]);
    }
}

#[test]
fn sequences_joining_a_running_batch_get_their_unbatched_tokens() {
    joining_matches_alone(&mut load_tiny());
}

#[test]
fn joining_works_with_fp16_caches() {
    let opts = LoadOptions {
        dtype: DtypeSelection::uniform(Dtype::Fp16),
        ..Default::default()
    };
    let mut m = Gemma4::load(env(), tiny_dir(), &opts).unwrap();
    joining_matches_alone(&mut m);
}

/// A queue served first come first served under `limits`; checks the bound after every call
/// and returns the tokens and the most rows seen.
fn serve(m: &mut Gemma4, reqs: &[Request], limits: BatchLimits) -> (Vec<Vec<u32>>, usize) {
    let mut batch = DecodeBatch::new(m, &opts(), limits);
    let mut out: Vec<Option<Vec<u32>>> = vec![None; reqs.len()];
    let mut next = 0;
    let mut most_rows = 0;
    while next < reqs.len() || !batch.is_empty() {
        let mut group = Vec::new();
        let mut lens = Vec::new();
        while next < reqs.len() {
            lens.push(reqs[next].input_ids.len());
            if !batch.fits(&lens) {
                break;
            }
            group.push(NewSequence {
                id: next,
                stream: next,
                request: &reqs[next],
            });
            next += 1;
        }
        if let Admission::Joined(done) = batch.admit(m, &group, &mut NoProcessor).unwrap() {
            for f in done {
                out[f.id] = Some(f.generation.generated_ids);
            }
        }
        most_rows = most_rows.max(batch.len());
        if batch.len() > 1 {
            assert!(
                batch.len() * batch.cache_len() <= limits.max_tokens,
                "{} rows × {} columns over the budget {}",
                batch.len(),
                batch.cache_len(),
                limits.max_tokens
            );
        }
        for f in batch.step(m, &mut NoProcessor).unwrap() {
            out[f.id] = Some(f.generation.generated_ids);
        }
    }
    (
        out.into_iter().map(|o| o.expect("finished")).collect(),
        most_rows,
    )
}

#[test]
fn the_token_budget_caps_rows_and_an_oversize_sequence_runs_alone() {
    let mut m = load_tiny();
    let texts = [
        "Hi",
        "List three colours.",
        "Name a fruit.",
        "Count to five.",
    ];
    let ids: Vec<Vec<u32>> = texts
        .iter()
        .map(|t| {
            m.prompt_ids(&[Message::user_with_images(0, t)], &[], false)
                .unwrap()
        })
        .collect();
    let reqs = requests(&ids, &[]);
    let want = alone(&mut m, &reqs);
    let longest = ids.iter().map(Vec::len).max().unwrap();

    // Room for two rows of the longest prompt and all its new tokens, not three.
    let two = 2 * (longest + MAX_NEW);
    let (got, rows) = serve(
        &mut m,
        &reqs,
        BatchLimits {
            max_rows: 8,
            max_tokens: two,
        },
    );
    assert_eq!(got, want);
    assert_eq!(rows, 2, "budget {two}");

    // The row limit binds before a generous budget.
    let (got, rows) = serve(
        &mut m,
        &reqs,
        BatchLimits {
            max_rows: 3,
            max_tokens: usize::MAX,
        },
    );
    assert_eq!(got, want);
    assert_eq!(rows, 3);

    // A budget below any one sequence: each runs alone.
    let (got, rows) = serve(
        &mut m,
        &reqs,
        BatchLimits {
            max_rows: 8,
            max_tokens: 10,
        },
    );
    assert_eq!(got, want);
    assert_eq!(rows, 1);
}
