//! Per-tokenizer, per-schema and per-sequence state of constrained decoding.

use std::path::Path;
use std::sync::Arc;

use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{SimpleVob, TokEnv};
use llguidance::{Matcher, ParserFactory, TokenParser};
use serde_json::Value;
use toktrie_hf_tokenizers::ByteTokenizer;

use super::error::{ConstraintError, SchemaError, ValidationError};
use super::schema::{prepare_schema, BoundOptions, PreparedSchema};
use super::validate::OutputValidator;

/// A tokenizer prepared for constrained decoding: the llguidance parser factory (built once
/// per tokenizer) and the tokens never allowed in JSON (special tokens, Gemma `<unusedN>`,
/// padding up to the logits width).
pub struct ConstraintTokenizer {
    factory: ParserFactory,
    excluded: SimpleVob,
    eos: Vec<u32>,
}

impl std::fmt::Debug for ConstraintTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConstraintTokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("excluded", &self.excluded.num_set())
            .field("eos", &self.eos)
            .finish()
    }
}

impl ConstraintTokenizer {
    /// Loads `tokenizer.json`. `eos_token_ids`: the model's `generation_config.json` eos list.
    /// `n_vocab`: the logits width when it exceeds the tokenizer's vocabulary.
    pub fn from_file(
        path: impl AsRef<Path>,
        eos_token_ids: &[u32],
        n_vocab: Option<usize>,
    ) -> Result<Arc<Self>, ConstraintError> {
        let tok = ByteTokenizer::from_file(path.as_ref())
            .map_err(|e| ConstraintError::Tokenizer(format!("{e:#}")))?;
        Self::from_byte_tokenizer(tok, eos_token_ids, n_vocab)
    }

    /// Like [`ConstraintTokenizer::from_file`], from the bytes of a `tokenizer.json`.
    pub fn from_json_bytes(
        bytes: &[u8],
        eos_token_ids: &[u32],
        n_vocab: Option<usize>,
    ) -> Result<Arc<Self>, ConstraintError> {
        let tok = ByteTokenizer::from_json_bytes(bytes)
            .map_err(|e| ConstraintError::Tokenizer(format!("{e:#}")))?;
        Self::from_byte_tokenizer(tok, eos_token_ids, n_vocab)
    }

    fn from_byte_tokenizer(
        mut tok: ByteTokenizer,
        eos_token_ids: &[u32],
        n_vocab: Option<usize>,
    ) -> Result<Arc<Self>, ConstraintError> {
        let size = tok.tokrx_info().vocab_size;
        if let Some(bad) = eos_token_ids.iter().find(|&&t| t >= size) {
            return Err(ConstraintError::Tokenizer(format!(
                "eos token id {bad} is outside the vocabulary ({size} tokens)"
            )));
        }
        if !eos_token_ids.is_empty() {
            tok.set_eos_tokens(eos_token_ids);
        }
        let eos = tok.eos_tokens();
        let env: TokEnv = tok
            .into_tok_env(n_vocab)
            .map_err(|e| ConstraintError::Tokenizer(format!("{e:#}")))?;
        let trie = env.tok_trie();
        let n = trie.vocab_size();
        let mut excluded = SimpleVob::alloc(n);
        for t in 0..n as u32 {
            let bytes = trie.token(t);
            if bytes.is_empty() || trie.is_special_token(t) || is_unused_token(bytes) {
                excluded.allow_token(t);
            }
        }
        let mut factory = ParserFactory::new_simple(&env)
            .map_err(|e| ConstraintError::Tokenizer(format!("{e:#}")))?;
        factory.quiet();
        Ok(Arc::new(Self {
            factory,
            excluded,
            eos,
        }))
    }

    /// Vocabulary size (the logits width when `n_vocab` was given).
    pub fn vocab_size(&self) -> usize {
        self.factory.tok_env().tok_trie().vocab_size()
    }

    /// The EOS token ids (offered only after the JSON is complete).
    pub fn eos_tokens(&self) -> &[u32] {
        &self.eos
    }

    /// Whether `token` is never allowed (special, `<unusedN>`, padding).
    pub fn is_excluded(&self, token: u32) -> bool {
        (token as usize) >= self.excluded.len() || self.excluded.get(token as usize)
    }

    /// The bytes of `tokens` (special tokens included as their names).
    pub fn decode(&self, tokens: &[u32]) -> Vec<u8> {
        self.factory.tok_env().tok_trie().decode(tokens)
    }
}

/// Gemma's `<unusedN>` placeholder tokens: ordinary vocabulary entries that would otherwise be
/// allowed inside strings.
fn is_unused_token(bytes: &[u8]) -> bool {
    bytes
        .strip_prefix(b"<unused")
        .and_then(|r| r.strip_suffix(b">"))
        .is_some_and(|d| !d.is_empty() && d.iter().all(u8::is_ascii_digit))
}

/// A schema compiled for one tokenizer: built once, one [`SequenceMatcher`] per sequence.
pub struct JsonConstraint {
    tokenizer: Arc<ConstraintTokenizer>,
    parser: TokenParser,
    schema: PreparedSchema,
    validator: OutputValidator,
}

impl std::fmt::Debug for JsonConstraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonConstraint")
            .field("tokenizer", &self.tokenizer)
            .field("worst_case_tokens", &self.schema.worst_case_tokens)
            .finish()
    }
}

impl JsonConstraint {
    /// Checks, bounds and compiles `schema`; builds its validator. Every error here comes
    /// before any document is processed.
    pub fn new(
        tokenizer: &Arc<ConstraintTokenizer>,
        schema: &Value,
        opts: &BoundOptions,
    ) -> Result<Self, SchemaError> {
        Self::from_prepared(tokenizer, prepare_schema(schema, opts)?)
    }

    /// Compiles an already prepared schema.
    pub fn from_prepared(
        tokenizer: &Arc<ConstraintTokenizer>,
        schema: PreparedSchema,
    ) -> Result<Self, SchemaError> {
        let validator = OutputValidator::new(&schema.validation)?;
        let parser = tokenizer
            .factory
            .create_parser(TopLevelGrammar::from_json_schema(schema.grammar.clone()))
            .map_err(|e| {
                // llguidance's first line names the problem; some (regex errors) continue on
                // the next lines: keep them, on one line.
                let msg = e.to_string();
                let mut line: String = msg
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .collect::<Vec<_>>()
                    .join(" ");
                if line.len() > 400 {
                    let cut = (0..=400)
                        .rev()
                        .find(|&i| line.is_char_boundary(i))
                        .unwrap_or(0);
                    line.truncate(cut);
                    line.push('…');
                }
                SchemaError::Compile(line)
            })?;
        Ok(Self {
            tokenizer: tokenizer.clone(),
            parser,
            schema,
            validator,
        })
    }

    /// The prepared schema (user, validation and grammar forms, chosen defaults, bound).
    pub fn schema(&self) -> &PreparedSchema {
        &self.schema
    }

    /// The tokenizer this constraint was compiled for.
    pub fn tokenizer(&self) -> &Arc<ConstraintTokenizer> {
        &self.tokenizer
    }

    /// A fresh matcher for one sequence. It shares the compiled grammar and the lexer cache of
    /// this constraint.
    pub fn matcher(&self) -> SequenceMatcher {
        SequenceMatcher {
            matcher: Matcher::new(Ok(self.parser.clone())),
            tokenizer: self.tokenizer.clone(),
            mask: None,
            tokens: Vec::new(),
            finished: false,
        }
    }

    /// Validates a complete output against the user's schema (see [`OutputValidator`]).
    pub fn validate(&self, output: &str) -> Result<Value, ValidationError> {
        self.validator.validate_str(output)
    }

    /// Validates what `seq` generated; an error when it did not finish.
    pub fn validate_sequence(&self, seq: &SequenceMatcher) -> Result<Value, ValidationError> {
        if !seq.is_finished() {
            return Err(ValidationError::Incomplete {
                tokens: seq.tokens().len(),
            });
        }
        let text = String::from_utf8(seq.output_bytes())
            .map_err(|e| ValidationError::NotJson(e.to_string()))?;
        self.validate(&text)
    }
}

/// Constrained decoding state of one sequence.
///
/// Per step: [`mask_logits`](Self::mask_logits), pick a token, [`consume`](Self::consume);
/// stop when [`is_finished`](Self::is_finished) (after the closing bracket; EOS is never
/// offered before). After the end, `mask_logits` allows only the EOS tokens and consuming one
/// of them is a no-op, so a generator that wants an EOS gets one.
pub struct SequenceMatcher {
    matcher: Matcher,
    tokenizer: Arc<ConstraintTokenizer>,
    mask: Option<SimpleVob>,
    tokens: Vec<u32>,
    finished: bool,
}

impl SequenceMatcher {
    /// Computes the allowed set for the next token, once per step; `mask_logits` uses it.
    /// Call it ahead (e.g. while the model runs) to take it off the critical path.
    pub fn compute_mask(&mut self) -> Result<&SimpleVob, ConstraintError> {
        if self.mask.is_none() {
            let mask = if self.finished {
                let mut m = SimpleVob::alloc(self.tokenizer.vocab_size());
                for &t in &self.tokenizer.eos {
                    m.allow_token(t);
                }
                m
            } else {
                let mut m = self
                    .matcher
                    .compute_mask()
                    .map_err(|e| ConstraintError::Matcher(e.to_string()))?;
                m.sub(&self.tokenizer.excluded);
                if m.is_zero() {
                    return Err(ConstraintError::DeadEnd);
                }
                m
            };
            self.mask = Some(mask);
        }
        Ok(self.mask.as_ref().expect("mask just computed"))
    }

    /// Sets every disallowed logit to `-inf`. `logits` may be wider than the vocabulary (the
    /// extra ids are disallowed). Returns how many ids stay allowed.
    pub fn mask_logits(&mut self, logits: &mut [f32]) -> Result<usize, ConstraintError> {
        let mask = self.compute_mask()?;
        let mut allowed = 0;
        let words = mask.as_slice();
        for (chunk_idx, chunk) in logits.chunks_mut(32).enumerate() {
            let word = words.get(chunk_idx).copied().unwrap_or(0);
            if word == 0 {
                chunk.fill(f32::NEG_INFINITY);
                continue;
            }
            for (bit, l) in chunk.iter_mut().enumerate() {
                if word & (1 << bit) == 0 {
                    *l = f32::NEG_INFINITY;
                } else {
                    allowed += 1;
                }
            }
        }
        if allowed == 0 {
            return Err(ConstraintError::DeadEnd);
        }
        Ok(allowed)
    }

    /// Whether `token` is allowed next.
    pub fn is_allowed(&mut self, token: u32) -> Result<bool, ConstraintError> {
        let mask = self.compute_mask()?;
        Ok((token as usize) < mask.len() && mask.get(token as usize))
    }

    /// Advances by the chosen token. A disallowed token is an error (and the matcher stays in
    /// error). After the end, an EOS token is accepted and ignored.
    pub fn consume(&mut self, token: u32) -> Result<(), ConstraintError> {
        if self.finished {
            return if self.tokenizer.eos.contains(&token) {
                Ok(())
            } else {
                Err(ConstraintError::AfterFinish(token))
            };
        }
        if self.tokenizer.is_excluded(token) {
            return Err(ConstraintError::Matcher(format!(
                "token {token} is never allowed in JSON output"
            )));
        }
        self.mask = None;
        self.matcher
            .consume_token(token)
            .map_err(|e| ConstraintError::Matcher(e.to_string()))?;
        self.tokens.push(token);
        if self.matcher.is_stopped() {
            if let Some(e) = self.matcher.get_error() {
                return Err(ConstraintError::Matcher(e));
            }
            self.finished = true;
        }
        Ok(())
    }

    /// The JSON is complete (the matcher stopped after the closing bracket): stop generating.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Tokens consumed so far (EOS after the end not included).
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// The output so far, as bytes.
    pub fn output_bytes(&self) -> Vec<u8> {
        self.tokenizer.decode(&self.tokens)
    }
}
