//! The loop guard of free-text generation: a small model sometimes repeats one span forever.
//! When the tail of the output is one span repeated, generation stops there and the output is
//! cut after the first copy, instead of running to the token limit.

/// Repetition thresholds.
#[derive(Debug, Clone, Copy)]
pub struct LoopGuardConfig {
    /// Longest repeated span looked for, in tokens.
    pub max_period: usize,
    /// Copies of the span needed.
    pub min_repeats: usize,
    /// Fewest tokens the repeated tail must cover (a table rule `|---|---|` is not a loop).
    pub min_tokens: usize,
}

impl Default for LoopGuardConfig {
    fn default() -> Self {
        LoopGuardConfig {
            max_period: 64,
            min_repeats: 4,
            min_tokens: 32,
        }
    }
}

/// Watches one sequence.
#[derive(Debug, Clone)]
pub struct LoopGuard {
    config: LoopGuardConfig,
    tokens: Vec<u32>,
    cut_at: Option<usize>,
}

impl LoopGuard {
    pub fn new(config: LoopGuardConfig) -> Self {
        LoopGuard {
            config,
            tokens: Vec::new(),
            cut_at: None,
        }
    }

    /// Adds a generated token; `true` when the output now ends in a loop.
    pub fn push(&mut self, token: u32) -> bool {
        self.tokens.push(token);
        if self.cut_at.is_none() {
            self.cut_at = self.find_loop();
        }
        self.cut_at.is_some()
    }

    /// Where to cut the output (tokens kept) when a loop was found.
    pub fn cut_at(&self) -> Option<usize> {
        self.cut_at
    }

    fn find_loop(&self) -> Option<usize> {
        let t = &self.tokens;
        let n = t.len();
        for period in 1..=self.config.max_period {
            let span = (period * self.config.min_repeats).max(self.config.min_tokens);
            if span > n {
                break;
            }
            let start = n - span;
            if (start + period..n).all(|i| t[i] == t[i - period]) {
                // Keep everything before the loop and its first copy.
                return Some(start + period);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(tokens: &[u32]) -> Option<usize> {
        let mut guard = LoopGuard::new(LoopGuardConfig::default());
        for &t in tokens {
            if guard.push(t) {
                break;
            }
        }
        guard.cut_at()
    }

    #[test]
    fn cuts_a_repeated_span_after_its_first_copy() {
        let mut tokens: Vec<u32> = (100..120).collect();
        let span = [7, 8, 9, 10, 11, 12, 13, 14, 15];
        for _ in 0..10 {
            tokens.extend(span);
        }
        // span 9 × 4 = 36 ≥ 32 tokens: found after the 4th copy is complete.
        assert_eq!(run(&tokens), Some(20 + 9));
    }

    #[test]
    fn a_single_token_run_needs_the_minimum_length() {
        let mut tokens = vec![5u32; 31];
        assert_eq!(run(&tokens), None);
        tokens.push(5);
        assert_eq!(run(&tokens), Some(1));
    }

    #[test]
    fn varied_text_and_short_table_rules_pass() {
        let rule = [124u32, 45, 45, 45]; // "|---" ×3: 12 tokens
        let mut tokens: Vec<u32> = (0..200).map(|i| (i * 7919 % 1000) as u32).collect();
        for _ in 0..3 {
            tokens.extend(rule);
        }
        tokens.extend(300..340);
        assert_eq!(run(&tokens), None);
    }
}
