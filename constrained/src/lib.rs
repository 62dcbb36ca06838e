//! Schema-constrained decoding for quire: a JSON Schema becomes an llguidance grammar whose
//! every complete output fits the generation limit, and every output is checked again by an
//! independent validator before it is called valid.
//!
//! The crate knows no model runtime: it works on a `tokenizer.json` and one logits slice per
//! decode step. `quire-onnx` generates; the pipeline joins the two with a logits processor
//! that drives a [`SequenceMatcher`] per sequence. Built on llguidance (grammar, token masks),
//! toktrie_hf_tokenizers (the tokenizer's bytes) and jsonschema (the final validation).
//!
//! # Flow
//! * [`ConstraintTokenizer`] — once per tokenizer: `tokenizer.json`, the model's EOS ids
//!   (`generation_config.json`), the logits width; builds the llguidance `ParserFactory`.
//!   Special tokens, Gemma `<unusedN>` tokens and padding ids are never allowed.
//! * [`JsonConstraint`] — once per (tokenizer, schema): [`prepare_schema`] checks and bounds
//!   the schema, llguidance compiles it, [`OutputValidator`] is built on the user's schema.
//! * [`SequenceMatcher`] — once per sequence: `mask_logits`, `consume`, `is_finished`. The
//!   matcher stops after the closing bracket and never offers EOS before: the generator stops
//!   when `is_finished()` is true.
//!
//! # Supported schemas
//! Draft 2020-12 subset: `type` (also lists such as `["string","null"]`), `properties`,
//! `required`, `additionalProperties: false`, `items`, `prefixItems`, `minItems`/`maxItems`,
//! `minLength`/`maxLength`, `pattern`, `format` (`date`, `date-time`, `time`, `email`,
//! `uuid`, `uri`, `hostname`, `ipv4`, `ipv6`, `duration`), `enum`, `const`,
//! `minimum`/`maximum` (also exclusive), `multipleOf`, `anyOf`, `oneOf` (disjoint), local
//! `$ref` into `$defs`/`definitions` (not recursive), annotations and `x-*` keys. OpenAPI
//! `nullable: true` is rewritten into a type list (with `null` added to an `enum`; with
//! `$ref`/`const`/no `type` into `anyOf: [schema, {"type":"null"}]`) — llguidance ignores it.
//! Everything else (`contains`, `uniqueItems`, `not`, `if`/`then`/`else`, `allOf`,
//! `patternProperties`, open `additionalProperties`, `min/maxProperties`, unknown keywords
//! and formats, ...) is rejected with the keyword and its JSON pointer
//! ([`SchemaError::Unsupported`]); llguidance's own compile errors become
//! [`SchemaError::Compile`] with the first line of its message. The top level must be an
//! object or an array.
//!
//! # Bounding rules (the grammar schema)
//! A random or confused model does not finish an unbounded schema: strings never close,
//! numbers grow digits. quire therefore adds, where the schema has none:
//! * `"x-guidance": {"whitespace_flexible": false, "json_allowed_escapes": "nrbtf\\\""}` —
//!   compact JSON, no `\uXXXX` escapes (a character is then at most 4 bytes);
//! * `additionalProperties: false` on objects (the schema's properties only);
//! * `maxLength` on strings without `enum`/`const`: the default string length `L` (at least
//!   `minLength`); format strings get their own: `date` 10, `uuid` 36, `ipv4` 15, `ipv6` 39,
//!   `date-time` 32, `time` 21 (microseconds and an offset), `hostname` `min(L, 253)`; a
//!   string with a `pattern` anchored at both ends (`^…$`) gets the pattern's longest match
//!   (every string the pattern admits stays possible), one with an unanchored pattern at least
//!   its shortest match (never an unsatisfiable field);
//! * `maxItems` on arrays: the default item count `I` (at least `minItems`);
//! * `minimum`/`maximum` on integers: ±(2^53 − 1) (exact in f64, safe in i64); on numbers:
//!   ±1e15; each side only where missing (an exclusive bound counts);
//! * `multipleOf: 0.01` on numbers without `multipleOf` (at most 2 fraction digits; the
//!   count is [`BoundOptions::number_fraction_digits`]);
//! * strict patterns in place of llguidance's loose `date` (real calendar dates, leap years,
//!   year ≥ 1), `date-time` and `time` (second ≤ 59) formats, when the schema has no
//!   `pattern` of its own; `hostname` capped at 253 characters.
//!
//! The schema's own bounds are kept. The worst-case output is then computed in bytes, which
//! bounds tokens for any tokenizer (every token is at least one byte): compact JSON
//! punctuation and keys exactly; `4 × maxLength + 2` per free string, `maxLength + 2` per
//! format string or anchored ASCII pattern (2× where `"` or a backslash may occur); sign +
//! integer digits of the larger bound + `.` + `multipleOf`
//! decimals per number; the longest value of an `enum`/`const`; `maxItems` × item (+ commas)
//! per array; every property present per object; the largest alternative of a type list or
//! `anyOf`/`oneOf`. `L` and `I` start at [`BoundOptions::default_max_length`] (256) and
//! [`BoundOptions::default_max_items`] (64) and shrink by a quarter at a time (whichever
//! shrinks the bound more) until the bound fits [`BoundOptions::max_new_tokens`]; when it
//! cannot fit at the floors (`L` 4, `I` 1) the schema is rejected with
//! [`SchemaError::DoesNotFit`], which names the smallest `--max-new-tokens` that fits. So a
//! complete object always fits the limit.
//!
//! The 4 tokens per free-string character is what makes this a guarantee for any tokenizer
//! (a real model spends far fewer); [`BoundOptions::tokens_per_char`] trades it for longer
//! defaults. Note that a shrunk default `maxItems` caps arrays silently (a valid but shorter
//! list): [`PreparedSchema::default_max_items`] says what was chosen.
//!
//! # Validation
//! llguidance is looser than a validator (it accepts Feb 29 of any year, year 0000, second
//! 60, hostnames of any length). Every output is validated with the `jsonschema` crate
//! against the user's schema (not the bounded one; `nullable` rewritten as above), with
//! quire's strict `date` (real calendar dates, year ≥ 1), `date-time`/`time` (second ≤ 59)
//! and `hostname` (≤ 253 characters). An output that fails is an error, never a valid result.

mod constraint;
mod error;
mod schema;
mod validate;

pub use constraint::{ConstraintTokenizer, JsonConstraint, SequenceMatcher};
pub use error::{ConstraintError, SchemaError, ValidationError};
pub use schema::{
    prepare_schema, BoundOptions, PreparedSchema, MAX_BYTES_PER_CHAR, MAX_SAFE_INTEGER,
};
pub use validate::{
    is_strict_date, is_strict_date_time, is_strict_hostname, is_strict_time, OutputValidator,
};
