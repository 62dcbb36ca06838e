//! Token selection: an optional logits processor (constraints) first, then greedy argmax or
//! seeded sampling with HF's warper order temperature → top-k → top-p.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A hook on every decode step of every sequence, e.g. schema-constrained decoding.
/// `seq` is the index of the request given to `generate`, or the caller's id of a sequence
/// admitted to a [`super::decode_batch::DecodeBatch`]: stable while others join and leave.
pub trait LogitsProcessor {
    /// Edit the (soft-capped) logits before selection; set disallowed tokens to `f32::NEG_INFINITY`.
    fn process(&mut self, seq: usize, logits: &mut [f32]);
    /// The token chosen for `seq`, with the logits it was chosen from (after `process`: what a
    /// confidence is computed from). Return `true` to stop that sequence (the token is kept).
    fn on_token(&mut self, _seq: usize, _token: u32, _logits: &[f32]) -> bool {
        false
    }
}

/// No constraints.
pub struct NoProcessor;

impl LogitsProcessor for NoProcessor {
    fn process(&mut self, _seq: usize, _logits: &mut [f32]) {}
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampling {
    Greedy,
    Sample {
        temperature: f32,
        /// 0 = off.
        top_k: usize,
        /// 1.0 = off.
        top_p: f32,
        seed: u64,
    },
}

/// Per-sequence selection state (its own RNG, so batching does not change sampled tokens).
pub struct Sampler {
    mode: Sampling,
    rng: Option<StdRng>,
}

impl Sampler {
    pub fn new(mode: Sampling, seq: usize) -> Self {
        let rng = match mode {
            Sampling::Greedy => None,
            Sampling::Sample { seed, .. } => Some(StdRng::seed_from_u64(
                seed ^ (seq as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            )),
        };
        Sampler { mode, rng }
    }

    pub fn select(&mut self, logits: &[f32]) -> u32 {
        match self.mode {
            Sampling::Greedy => argmax(logits),
            Sampling::Sample {
                temperature,
                top_k,
                top_p,
                ..
            } => {
                let rng = self.rng.as_mut().expect("sampling has an rng");
                sample(logits, temperature, top_k, top_p, rng)
            }
        }
    }
}

/// Index of the largest logit; the first one on ties, as torch.argmax.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    let mut best_v = f32::NEG_INFINITY;
    for (i, &v) in logits.iter().enumerate() {
        if v > best_v {
            best_v = v;
            best = i;
        }
    }
    best as u32
}

/// HF order: temperature, then top-k, then top-p (keeping at least one token), then softmax
/// and a draw.
pub fn sample(
    logits: &[f32],
    temperature: f32,
    top_k: usize,
    top_p: f32,
    rng: &mut impl Rng,
) -> u32 {
    if temperature <= 0.0 {
        return argmax(logits);
    }
    let mut cand: Vec<(u32, f32)> = logits
        .iter()
        .enumerate()
        .filter(|(_, v)| v.is_finite() || **v == f32::INFINITY)
        .map(|(i, &v)| (i as u32, v / temperature))
        .collect();
    if cand.is_empty() {
        return argmax(logits);
    }
    cand.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    if top_k > 0 && top_k < cand.len() {
        // Ties with the k-th value stay, as in HF's `logits < topk.min` rule.
        let kth = cand[top_k - 1].1;
        let keep = cand.iter().take_while(|c| c.1 >= kth).count();
        cand.truncate(keep);
    }
    let max = cand[0].1;
    let mut probs: Vec<f64> = cand.iter().map(|c| ((c.1 - max) as f64).exp()).collect();
    let total: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= total);
    if top_p < 1.0 {
        let mut cum = 0.0;
        let mut keep = probs.len();
        for (i, p) in probs.iter().enumerate() {
            cum += p;
            if cum >= top_p as f64 {
                keep = i + 1;
                break;
            }
        }
        probs.truncate(keep.max(1));
        cand.truncate(keep.max(1));
        let t: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= t);
    }
    let r: f64 = rng.random();
    let mut acc = 0.0;
    for (c, p) in cand.iter().zip(&probs) {
        acc += p;
        if r < acc {
            return c.0;
        }
    }
    cand.last().expect("non-empty").0
}

/// Final logit soft-capping: `cap · tanh(x / cap)`.
pub fn soft_cap(logits: &mut [f32], cap: f32) {
    for v in logits {
        *v = (*v / cap).tanh() * cap;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_and_warpers() {
        let l = [0.0, 3.0, 1.0, 3.0];
        assert_eq!(argmax(&l), 1);
        let mut rng = StdRng::seed_from_u64(1);
        // top_k = 1 is greedy.
        for _ in 0..20 {
            assert_eq!(sample(&[0.0, 5.0, 1.0], 1.0, 1, 1.0, &mut rng), 1);
        }
        // top_p small keeps only the best token.
        for _ in 0..20 {
            assert_eq!(sample(&[0.0, 5.0, 1.0], 1.0, 0, 0.1, &mut rng), 1);
        }
        // Masked tokens are never drawn.
        let masked = [f32::NEG_INFINITY, 0.0, f32::NEG_INFINITY, 0.0];
        for _ in 0..50 {
            let t = sample(&masked, 1.0, 0, 1.0, &mut rng);
            assert!(t == 1 || t == 3);
        }
        // Same seed, same draws.
        let mut a = Sampler::new(
            Sampling::Sample {
                temperature: 1.0,
                top_k: 0,
                top_p: 1.0,
                seed: 7,
            },
            0,
        );
        let mut b = Sampler::new(
            Sampling::Sample {
                temperature: 1.0,
                top_k: 0,
                top_p: 1.0,
                seed: 7,
            },
            0,
        );
        let l = [0.1, 0.2, 0.3, 0.4, 0.5];
        for _ in 0..10 {
            assert_eq!(a.select(&l), b.select(&l));
        }
        let mut c = [100.0f32, -100.0, 1.0];
        soft_cap(&mut c, 30.0);
        assert!(c[0] < 30.0 && c[1] > -30.0 && (c[2] - 1.0).abs() < 1e-3);
    }
}
