//! Schema-constrained decoding with a uniformly random choice among the allowed tokens (what a
//! random-weight model amounts to): every output must be complete, parse, validate against the
//! user's schema and fit the token limit.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quire_constrained::{
    prepare_schema, BoundOptions, ConstraintTokenizer, JsonConstraint, SchemaError, SequenceMatcher,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

/// Extra logits beyond the tokenizer's vocabulary (the model's embedding is wider).
const LOGITS_PADDING: usize = 17;

/// A Gemma-style tokenizer.json (BPE with byte fallback, `▁` for spaces) of about 1k tokens:
/// specials, 256 byte tokens, `<unusedN>` placeholders, single characters, JSON fragments,
/// digit pairs, letter pairs, a few words and non-ASCII characters.
fn tiny_tokenizer_json() -> (String, Vec<u32>) {
    let mut vocab: Vec<String> = vec!["<pad>", "<eos>", "<bos>", "<unk>"]
        .into_iter()
        .map(String::from)
        .collect();
    for b in 0..=255u8 {
        vocab.push(format!("<0x{b:02X}>"));
    }
    for i in 0..12 {
        vocab.push(format!("<unused{i}>"));
    }
    for c in '!'..='~' {
        vocab.push(c.to_string());
    }
    for s in [
        "▁",
        "{\"",
        "\":",
        "\":\"",
        "\",\"",
        "\"}",
        "\"},",
        "},{\"",
        "\"]",
        "[{\"",
        "\",",
        "\":[",
        "null",
        "true",
        "false",
        "-0",
        ".0",
        ".5",
        "0.",
        "e+",
        "▁the",
        "▁and",
        "▁of",
        "Inv",
        "oice",
        "▁GmbH",
        "▁Ltd",
        "▁Street",
        "▁Road",
        "EUR",
        "USD",
        "2024-",
        "-01-",
        "T12:",
        ":00",
        "Z",
        "é",
        "ü",
        "€",
        "中",
        "日本",
        "😀",
        "\\n",
        "\\\"",
        "\\\\",
        "\\u00",
        "@",
        ".com",
    ] {
        vocab.push(s.to_string());
    }
    for a in 0..10 {
        for b in 0..10 {
            vocab.push(format!("{a}{b}"));
        }
    }
    'outer: for a in 'a'..='z' {
        for b in 'a'..='z' {
            if vocab.len() >= 1018 {
                break 'outer;
            }
            vocab.push(format!("{a}{b}"));
        }
    }
    let mut seen = std::collections::HashSet::new();
    vocab.retain(|t| seen.insert(t.clone()));
    let turn_start = vocab.len() as u32;
    vocab.push("<|turn>".into());
    let turn_end = vocab.len() as u32;
    vocab.push("<turn|>".into());
    vocab.push("<start_of_image>".into());

    let specials = [
        "<pad>",
        "<eos>",
        "<bos>",
        "<unk>",
        "<|turn>",
        "<turn|>",
        "<start_of_image>",
    ];
    let added: Vec<Value> = vocab
        .iter()
        .enumerate()
        .filter(|(_, t)| specials.contains(&t.as_str()))
        .map(|(i, t)| {
            json!({"id": i, "content": t, "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let vocab_map: serde_json::Map<String, Value> = vocab
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), json!(i)))
        .collect();
    let tok = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "Replace", "pattern": {"String": " "}, "content": "▁"},
        "pre_tokenizer": null,
        "post_processor": null,
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
            {"type": "ByteFallback"},
            {"type": "Fuse"}
        ]},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": "<unk>",
            "continuing_subword_prefix": null, "end_of_word_suffix": null,
            "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
            "vocab": vocab_map, "merges": []
        }
    });
    let _ = turn_start;
    (tok.to_string(), vec![1, turn_end])
}

fn tokenizer() -> Arc<ConstraintTokenizer> {
    let (json, eos) = tiny_tokenizer_json();
    let n = serde_json::from_str::<Value>(&json).unwrap()["model"]["vocab"]
        .as_object()
        .unwrap()
        .len();
    ConstraintTokenizer::from_json_bytes(json.as_bytes(), &eos, Some(n + LOGITS_PADDING))
        .expect("tokenizer")
}

fn samples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../samples/schemas")
}

fn load_schema(name: &str) -> Value {
    let p = samples_dir().join(name);
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

struct Run {
    output: String,
    tokens: usize,
    finished: bool,
}

/// Generates one document: uniform choice among the allowed tokens, at most `limit` tokens.
fn generate(
    seq: &mut SequenceMatcher,
    rng: &mut StdRng,
    n_logits: usize,
    limit: usize,
    step_times: &mut Vec<Duration>,
) -> Run {
    let mut logits = vec![0f32; n_logits];
    let mut allowed = Vec::with_capacity(n_logits);
    for _ in 0..limit {
        if seq.is_finished() {
            break;
        }
        logits.fill(0.0);
        let t0 = Instant::now();
        seq.mask_logits(&mut logits).expect("mask");
        let t1 = t0.elapsed();
        allowed.clear();
        allowed.extend(
            logits
                .iter()
                .enumerate()
                .filter(|(_, l)| l.is_finite())
                .map(|(i, _)| i as u32),
        );
        let tok = allowed[rng.random_range(0..allowed.len())];
        let t2 = Instant::now();
        seq.consume(tok).expect("consume");
        step_times.push(t1 + t2.elapsed());
    }
    Run {
        output: String::from_utf8(seq.output_bytes()).expect("utf-8 output"),
        tokens: seq.tokens().len(),
        finished: seq.is_finished(),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

/// The test's schemas: (name, user schema, independent JSON Schema to validate against,
/// token limit).
fn schemas() -> Vec<(&'static str, Value, Value, usize)> {
    let invoice = load_schema("invoice.schema.json");
    let nested = json!({
        "type": "object",
        "properties": {
            "person": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "active": {"type": "boolean"},
                    "address": {
                        "type": "object",
                        "properties": {
                            "city": {"type": "string", "maxLength": 12},
                            "zip": {"type": "string", "pattern": "^[0-9]{5}$"}
                        },
                        "required": ["city", "zip"]
                    }
                },
                "required": ["name", "active", "address"]
            },
            "note": {"type": "string", "maxLength": 6}
        },
        "required": ["person"]
    });
    let arrays = json!({
        "type": "object",
        "properties": {
            "items": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "properties": {
                        "sku": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{4}$"},
                        "tags": {"type": "array", "items": {"type": "string", "maxLength": 5}, "maxItems": 3}
                    },
                    "required": ["sku", "tags"]
                }
            },
            "matrix": {"type": "array", "items": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 9}, "maxItems": 3}, "maxItems": 2}
        },
        "required": ["items", "matrix"]
    });
    let numbers = json!({
        "type": "object",
        "properties": {
            "status": {"type": "string", "enum": ["draft", "sent", "paid", "void"]},
            "priority": {"enum": [1, 2, 3, null]},
            "count": {"type": "integer"},
            "score": {"type": "number"},
            "ratio": {"type": "number", "minimum": 0, "maximum": 1},
            "half": {"type": "number", "multipleOf": 0.5, "minimum": -10, "maximum": 10},
            "level": {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 100},
            "kind": {"const": "fixed"}
        },
        "required": ["status", "priority", "count", "score", "ratio", "half", "level", "kind"]
    });
    let nullable_openapi = json!({
        "type": "object",
        "$defs": {"money": {"type": "object", "properties": {"value": {"type": "integer", "minimum": 0, "maximum": 999}}, "required": ["value"]}},
        "properties": {
            "middle_name": {"type": "string", "maxLength": 4, "nullable": true},
            "age": {"type": "integer", "minimum": 0, "maximum": 150, "nullable": true},
            "color": {"type": "string", "enum": ["red", "green"], "nullable": true},
            "price": {"$ref": "#/$defs/money", "nullable": true},
            "listed": {"type": ["string", "null"], "maxLength": 3}
        },
        "required": ["middle_name", "age", "color", "price", "listed"]
    });
    // The OpenAPI schema in plain JSON Schema: what outputs must satisfy.
    let nullable_plain = json!({
        "type": "object",
        "$defs": {"money": {"type": "object", "properties": {"value": {"type": "integer", "minimum": 0, "maximum": 999}}, "required": ["value"]}},
        "properties": {
            "middle_name": {"type": ["string", "null"], "maxLength": 4},
            "age": {"type": ["integer", "null"], "minimum": 0, "maximum": 150},
            "color": {"type": ["string", "null"], "enum": ["red", "green", null]},
            "price": {"anyOf": [{"$ref": "#/$defs/money"}, {"type": "null"}]},
            "listed": {"type": ["string", "null"], "maxLength": 3}
        },
        "required": ["middle_name", "age", "color", "price", "listed"]
    });
    let formats = json!({
        "type": "object",
        "properties": {
            "day": {"type": "string", "format": "date"},
            "at": {"type": "string", "format": "date-time"},
            "clock": {"type": "string", "format": "time"},
            "id": {"type": "string", "format": "uuid"},
            "host": {"type": "string", "format": "hostname", "maxLength": 20},
            "ip": {"type": "string", "format": "ipv4"},
            "code": {"type": "string", "pattern": "^[A-Z]{2}[0-9]{2}"}
        },
        "required": ["day", "at", "clock", "id", "host", "ip", "code"]
    });
    let top_array = json!({
        "type": "array",
        "maxItems": 4,
        "items": {"anyOf": [
            {"type": "object", "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 99}}, "required": ["a"]},
            {"type": "string", "maxLength": 8}
        ]}
    });
    let plain = |v: &Value| v.clone();
    vec![
        ("invoice", plain(&invoice), invoice, 2048),
        ("nested", plain(&nested), nested, 256),
        ("arrays", plain(&arrays), arrays, 256),
        ("numbers", plain(&numbers), numbers, 256),
        ("nullable", nullable_openapi, nullable_plain, 256),
        ("formats", plain(&formats), formats, 256),
        ("top_array", plain(&top_array), top_array, 256),
    ]
}

/// Float-tolerance `multipleOf`: jsonschema 0.33's own rejects every negative number.
struct ToleranceMultipleOf(f64);

impl jsonschema::Keyword for ToleranceMultipleOf {
    fn validate<'i>(
        &self,
        instance: &'i Value,
        location: &jsonschema::paths::LazyLocation,
    ) -> Result<(), jsonschema::ValidationError<'i>> {
        if self.is_valid(instance) {
            Ok(())
        } else {
            Err(jsonschema::ValidationError::custom(
                jsonschema::paths::Location::new(),
                location.into(),
                instance,
                format!("not a multiple of {}", self.0),
            ))
        }
    }
    fn is_valid(&self, instance: &Value) -> bool {
        instance.as_f64().is_none_or(|v| {
            let r = v / self.0;
            (r - r.round()).abs() <= 1e-6 * r.abs().max(1.0)
        })
    }
}

/// Plain jsonschema (draft 2020-12, formats checked), with a float-tolerance `multipleOf`.
#[allow(clippy::result_large_err)] // jsonschema's error type, in its keyword factory
fn independent_validator(schema: &Value) -> jsonschema::Validator {
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .with_keyword("multipleOf", |_, v, _| {
            Ok(Box::new(ToleranceMultipleOf(v.as_f64().unwrap())))
        })
        .build(schema)
        .unwrap()
}

/// Generates `docs` documents per schema and checks each: finished before the limit, within
/// the computed worst case, parses, validates with jsonschema against the (plain) user schema
/// and with quire's validator. Returns the number of nulls in the `nullable` documents.
fn check_random_generation(
    label: &str,
    tok: &Arc<ConstraintTokenizer>,
    schemas: Vec<(&'static str, Value, Value, usize)>,
    docs: usize,
) -> usize {
    let n_logits = tok.vocab_size();
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let mut all_steps = Vec::new();
    let mut nulls_in_nullable = 0;
    for (name, schema, plain, limit) in schemas {
        let opts = BoundOptions::new(limit);
        let t = Instant::now();
        let c = JsonConstraint::new(tok, &schema, &opts).unwrap_or_else(|e| panic!("{name}: {e}"));
        let compile = t.elapsed();
        let independent = independent_validator(&plain);
        let mut steps = Vec::new();
        let (mut valid, mut max_tokens, mut total_tokens) = (0, 0, 0);
        for doc in 0..docs {
            let mut seq = c.matcher();
            let run = generate(&mut seq, &mut rng, n_logits, limit, &mut steps);
            assert!(
                run.finished,
                "{name} #{doc}: not finished after {} tokens: {}",
                run.tokens, run.output
            );
            assert!(run.tokens <= c.schema().worst_case_tokens, "{name}: bound");
            assert!(
                run.output.len() <= c.schema().worst_case_tokens,
                "{name}: bytes"
            );
            let value: Value = serde_json::from_str(&run.output)
                .unwrap_or_else(|e| panic!("{name} #{doc}: {e}: {}", run.output));
            if let Err(e) = independent.validate(&value) {
                panic!("{name} #{doc}: invalid ({e}): {}", run.output);
            }
            c.validate_sequence(&seq)
                .unwrap_or_else(|e| panic!("{name} #{doc}: quire validation: {e}: {}", run.output));
            if name == "nullable" {
                nulls_in_nullable += value
                    .as_object()
                    .unwrap()
                    .values()
                    .filter(|v| v.is_null())
                    .count();
            }
            valid += 1;
            max_tokens = max_tokens.max(run.tokens);
            total_tokens += run.tokens;
        }
        steps.sort();
        println!(
            "[{label}] {name:>9}: {valid}/{docs} valid, limit {limit}, worst case {} tokens \
             (default maxLength {}, maxItems {}), max {max_tokens} mean {} tokens; compile \
             {:.2} ms; per token median {:.1} µs p99 {:.1} µs max {:.1} µs",
            c.schema().worst_case_tokens,
            c.schema().default_max_length,
            c.schema().default_max_items,
            total_tokens / docs,
            compile.as_secs_f64() * 1e3,
            percentile(&steps, 0.5),
            percentile(&steps, 0.99),
            percentile(&steps, 1.0),
        );
        assert_eq!(valid, docs);
        all_steps.extend(steps);
    }
    all_steps.sort();
    println!(
        "[{label}] all: {} tokens, per token (mask_logits + consume, {} logits) median {:.1} µs, \
         p99 {:.1} µs",
        all_steps.len(),
        n_logits,
        percentile(&all_steps, 0.5),
        percentile(&all_steps, 0.99)
    );
    nulls_in_nullable
}

/// Every output of 200 random generations per schema (7 schemas) is complete, parses,
/// validates and fits the limit; `nullable: true` produces nulls.
#[test]
fn constrained_random_generation_is_always_valid() {
    const DOCS: usize = 200;
    let nulls = check_random_generation("fixture", &tokenizer(), schemas(), DOCS);
    println!("nullable: {nulls} nulls in {DOCS} documents");
    assert!(nulls > 0, "nullable: true never produced null");
}

/// The same with the tiny Gemma 4's own tokenizer and generation_config eos list.
#[test]
fn constrained_random_generation_tiny_gemma4_tokenizer() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../samples/models/tiny-gemma4");
    let path = dir.join("tokenizer.json");
    if !path.exists() {
        eprintln!("skipped: {} is missing", path.display());
        return;
    }
    let gen: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("generation_config.json")).unwrap())
            .unwrap();
    let eos: Vec<u32> = gen["eos_token_id"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let vocab = config["text_config"]["vocab_size"]
        .as_u64()
        .or_else(|| config["vocab_size"].as_u64())
        .map(|v| v as usize);
    let tok = ConstraintTokenizer::from_file(&path, &eos, vocab).unwrap();
    assert_eq!(tok.eos_tokens(), &eos[..]);
    let nulls = check_random_generation("tiny-gemma4", &tok, schemas(), 200);
    assert!(nulls > 0);
}

/// Special tokens, `<unusedN>` and padding logits are never allowed; EOS only after the end.
#[test]
fn constrained_excludes_special_and_unused_tokens() {
    let tok = tokenizer();
    let (json, _) = tiny_tokenizer_json();
    let v: Value = serde_json::from_str(&json).unwrap();
    let vocab = v["model"]["vocab"].as_object().unwrap();
    let id = |s: &str| vocab[s].as_u64().unwrap() as u32;
    let schema = json!({"type": "object", "properties": {"s": {"type": "string", "maxLength": 3}}, "required": ["s"]});
    let c = JsonConstraint::new(&tok, &schema, &BoundOptions::new(64)).unwrap();
    let mut seq = c.matcher();
    for t in ["{\"", "s", "\":\""] {
        seq.consume(id(t)).unwrap();
    }
    // inside a string: letters allowed, unused/special/padding not
    let mut logits = vec![0f32; tok.vocab_size()];
    seq.mask_logits(&mut logits).unwrap();
    assert!(logits[id("ab") as usize].is_finite());
    for bad in [
        "<unused0>",
        "<unused11>",
        "<eos>",
        "<turn|>",
        "<bos>",
        "<pad>",
    ] {
        assert!(logits[id(bad) as usize].is_infinite(), "{bad} allowed");
    }
    assert!(
        logits[tok.vocab_size() - 1].is_infinite(),
        "padding allowed"
    );
    assert!(seq.consume(id("<unused3>")).is_err());
    let mut seq = c.matcher();
    for t in ["{\"", "s", "\":\"", "ab", "\"}"] {
        assert!(!seq.is_finished());
        seq.consume(id(t)).unwrap();
    }
    assert!(seq.is_finished());
    assert_eq!(c.validate_sequence(&seq).unwrap(), json!({"s": "ab"}));
    // after the end: only EOS (both ids of the eos list)
    let mut logits = vec![0f32; tok.vocab_size()];
    assert_eq!(seq.mask_logits(&mut logits).unwrap(), 2);
    assert!(logits[1].is_finite() && logits[id("<turn|>") as usize].is_finite());
    seq.consume(1).unwrap();
    assert!(seq.consume(id("ab")).is_err());
    assert_eq!(tok.eos_tokens(), &[1, id("<turn|>")]);
}

/// Unsupported keywords are rejected before any generation, naming the keyword and its JSON
/// pointer.
#[test]
fn constrained_rejects_unsupported_keywords() {
    let opts = BoundOptions::new(512);
    let cases = [
        (
            json!({"type": "array", "items": {"type": "integer"}, "uniqueItems": true}),
            "uniqueItems",
            "/uniqueItems",
        ),
        (
            json!({"type": "object", "properties": {"a": {"type": "array", "items": {"type": "string"}, "contains": {"const": "x"}}}}),
            "contains",
            "/properties/a/contains",
        ),
        (
            json!({"type": "object", "properties": {"a": {"type": "string", "not": {"const": "x"}}}}),
            "not",
            "/properties/a/not",
        ),
        (
            json!({"type": "object", "if": {"required": ["a"]}, "then": {}}),
            "if",
            "/if",
        ),
        (
            json!({"type": "object", "properties": {"a": {"type": "string"}}, "dependentRequired": {"a": ["b"]}}),
            "dependentRequired",
            "/dependentRequired",
        ),
        (
            json!({"type": "object", "propertyNames": {"maxLength": 3}}),
            "propertyNames",
            "/propertyNames",
        ),
        (
            json!({"type": "object", "unevaluatedProperties": false}),
            "unevaluatedProperties",
            "/unevaluatedProperties",
        ),
        (
            json!({"type": "object", "additionalProperties": true}),
            "additionalProperties",
            "/additionalProperties",
        ),
        (
            json!({"type": "object", "additionalProperties": {"type": "string"}}),
            "additionalProperties",
            "/additionalProperties",
        ),
        (
            json!({"type": "object", "patternProperties": {"^a": {"type": "string"}}}),
            "patternProperties",
            "/patternProperties",
        ),
        (
            json!({"type": "object", "properties": {"p": {"type": "string", "format": "phone"}}}),
            "format",
            "/properties/p/format",
        ),
        (
            json!({"type": "object", "properties": {"p": {"type": "string", "maxlength": 3}}}),
            "maxlength",
            "/properties/p/maxlength",
        ),
        (
            json!({"type": "object", "properties": {"p": {"$ref": "https://example.com/s.json"}}}),
            "$ref",
            "/properties/p/$ref",
        ),
        (
            json!({"type": "object", "properties": {"p": {"allOf": [{"type": "string"}]}}}),
            "allOf",
            "/properties/p/allOf",
        ),
        (
            json!({"type": "object", "minProperties": 1}),
            "minProperties",
            "/minProperties",
        ),
        (
            json!({"type": "object", "properties": {"p": {}}}),
            "type",
            "/properties/p",
        ),
        (json!({"type": "string"}), "type", "/type"),
        (
            json!({"type": "object", "properties": {"a~b/c": {"type": "string", "if": {}}}}),
            "if",
            "/properties/a~0b~1c/if",
        ),
    ];
    for (schema, keyword, pointer) in cases {
        match prepare_schema(&schema, &opts) {
            Err(SchemaError::Unsupported {
                keyword: k,
                pointer: p,
                ..
            }) => {
                assert_eq!((k.as_str(), p.as_str()), (keyword, pointer), "{schema}")
            }
            other => panic!("{schema}: expected Unsupported {keyword}, got {other:?}"),
        }
        let msg = prepare_schema(&schema, &opts).unwrap_err().to_string();
        assert!(msg.contains(keyword) && msg.contains(pointer), "{msg}");
    }
    // recursive references cannot be bounded
    let recursive = json!({"type": "object", "$defs": {"node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/node"}}}},
        "properties": {"root": {"$ref": "#/$defs/node"}}});
    let err = prepare_schema(&recursive, &opts).unwrap_err();
    assert!(
        matches!(&err, SchemaError::Unsupported { keyword, .. } if keyword == "$ref"),
        "{err}"
    );
}

/// Schemas llguidance refuses (compile errors) and schemas whose required structure cannot fit
/// the token limit are rejected before any generation.
#[test]
fn constrained_rejects_uncompilable_and_oversized_schemas() {
    let tok = tokenizer();
    let lookaround =
        json!({"type": "object", "properties": {"a": {"type": "string", "pattern": "^(?=a)b"}}});
    let err = JsonConstraint::new(&tok, &lookaround, &BoundOptions::new(256)).unwrap_err();
    assert!(matches!(err, SchemaError::Compile(_)), "{err}");
    println!("compile error: {err}");
    let unsat = json!({"type": "object", "properties": {"a": {"type": "string", "minLength": 5, "maxLength": 2}}, "required": ["a"]});
    let err = JsonConstraint::new(&tok, &unsat, &BoundOptions::new(256)).unwrap_err();
    assert!(matches!(err, SchemaError::Compile(_)), "{err}");
    println!("compile error: {err}");

    // the schema's own bounds do not fit: an error, not a truncated output later
    let big = json!({"type": "object", "properties": {"a": {"type": "string", "maxLength": 100}}});
    let err = prepare_schema(&big, &BoundOptions::new(256)).unwrap_err();
    assert!(matches!(err, SchemaError::DoesNotFit { .. }), "{err}");
    println!("{err}");
    assert!(prepare_schema(&big, &BoundOptions::new(512)).is_ok());

    // defaults shrink to fit, and are respected where the schema has its own
    let open = json!({"type": "object", "properties": {
        "a": {"type": "string"}, "b": {"type": "array", "items": {"type": "string"}},
        "c": {"type": "string", "maxLength": 3}, "n": {"type": "number"}, "i": {"type": "integer"}}});
    for limit in [128, 256, 1024, 4096] {
        let p = prepare_schema(&open, &BoundOptions::new(limit)).unwrap();
        assert!(p.worst_case_tokens <= limit);
        let g = &p.grammar;
        assert_eq!(g["properties"]["c"]["maxLength"], 3);
        assert_eq!(g["properties"]["a"]["maxLength"], p.default_max_length);
        assert_eq!(g["properties"]["b"]["maxItems"], p.default_max_items);
        assert_eq!(g["properties"]["n"]["multipleOf"], 0.01);
        assert_eq!(g["properties"]["i"]["maximum"], 9007199254740991i64);
        assert_eq!(g["additionalProperties"], false);
        assert_eq!(g["x-guidance"]["whitespace_flexible"], false);
        assert!(p.validation.get("x-guidance").is_none());
        println!(
            "limit {limit}: default maxLength {}, maxItems {}, worst case {} tokens",
            p.default_max_length, p.default_max_items, p.worst_case_tokens
        );
    }
    for tokens_per_char in [4.0, 1.0] {
        for limit in [1024, 2048, 4096, 8192] {
            let opts = BoundOptions {
                tokens_per_char,
                ..BoundOptions::new(limit)
            };
            match prepare_schema(&load_schema("invoice.schema.json"), &opts) {
                Ok(p) => println!(
                    "invoice at {limit}, {tokens_per_char} tokens/char: line_items maxItems {}, \
                     worst case {} tokens",
                    p.default_max_items, p.worst_case_tokens
                ),
                Err(e) => println!("invoice at {limit}, {tokens_per_char} tokens/char: {e}"),
            }
        }
    }
}

/// Every sample schema in samples/schemas compiles at the README's --max-new-tokens 2048,
/// and its outputs validate.
#[test]
fn constrained_sample_schemas_compile() {
    let tok = tokenizer();
    let mut rng = StdRng::seed_from_u64(11);
    let mut n = 0;
    for entry in std::fs::read_dir(samples_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let schema: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        // 2048: the README's budget, which fits the test model's 4,096-token context
        let c = JsonConstraint::new(&tok, &schema, &BoundOptions::new(2048))
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for _ in 0..20 {
            let mut seq = c.matcher();
            generate(&mut seq, &mut rng, tok.vocab_size(), 2048, &mut Vec::new());
            c.validate_sequence(&seq)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
        n += 1;
    }
    assert!(n >= 2);
}

/// The per-schema state is shared across threads; a sequence moves between them.
#[test]
fn constrained_types_are_thread_safe() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<ConstraintTokenizer>();
    send_sync::<JsonConstraint>();
    send::<SequenceMatcher>();
}

/// Tuples (`prefixItems` without `items`) generate the prefix only.
#[test]
fn constrained_prefix_items() {
    let tok = tokenizer();
    let schema = json!({"type": "object", "properties": {"pair": {"type": "array",
        "prefixItems": [{"type": "integer", "minimum": 0, "maximum": 9}, {"type": "boolean"}]}},
        "required": ["pair"]});
    let c = JsonConstraint::new(&tok, &schema, &BoundOptions::new(64)).unwrap();
    assert_eq!(c.schema().grammar["properties"]["pair"]["maxItems"], 2);
    let mut rng = StdRng::seed_from_u64(7);
    for _ in 0..50 {
        let mut seq = c.matcher();
        let run = generate(&mut seq, &mut rng, tok.vocab_size(), 64, &mut Vec::new());
        assert!(run.finished);
        let v = c.validate_sequence(&seq).unwrap();
        assert!(v["pair"].as_array().unwrap().len() <= 2, "{v}");
    }
}

/// The validator is stricter than llguidance's formats.
#[test]
fn constrained_validation_is_strict() {
    let tok = tokenizer();
    let schema = json!({"type": "object", "properties": {
        "d": {"type": "string", "format": "date"},
        "t": {"type": "string", "format": "date-time"},
        "h": {"type": "string", "format": "hostname"}}});
    let c = JsonConstraint::new(&tok, &schema, &BoundOptions::new(1024)).unwrap();
    assert!(c
        .validate(r#"{"d":"2024-02-29","t":"2024-02-29T23:59:59Z","h":"a.b"}"#)
        .is_ok());
    for bad in [
        r#"{"d":"2023-02-29"}"#,
        r#"{"d":"0000-01-01"}"#,
        r#"{"t":"2024-01-01T23:59:60Z"}"#,
        &format!(r#"{{"h":"{}com"}}"#, "abc.".repeat(70)),
        r#"{"d":"2024-01-01","x":1}"#.replace(r#","x":1"#, r#","d2":"#).as_str(),
    ] {
        assert!(c.validate(bad).is_err(), "{bad}");
    }
}

/// A pattern's shortest match bounds the default `maxLength` from below (never unsatisfiable),
/// an anchored pattern's longest match from above; random generation then completes and
/// validates even at a small budget. A budget too small for any default names the smallest
/// `--max-new-tokens` that fits, and that budget does fit.
#[test]
fn constrained_bounds_respect_patterns() {
    let tok = tokenizer();
    let po = json!({"type": "object", "properties": {
        "po": {"type": "string", "pattern": "^PO-[0-9]{4,8}$"},
        "ref": {"type": "string", "pattern": "INV-[0-9]{6}"},
        "note": {"type": "string"}},
        "required": ["po", "ref", "note"]});
    let p = prepare_schema(&po, &BoundOptions::new(100)).unwrap();
    let props = &p.grammar["properties"];
    // at 100 tokens the free default shrinks to its floor; the patterns keep what they need
    assert_eq!(p.default_max_length, 4, "{}", p.grammar);
    assert_eq!(
        props["po"]["maxLength"], 11,
        "anchored: every PO-nnnn… up to 8 digits"
    );
    assert_eq!(
        props["ref"]["maxLength"], 10,
        "search: at least INV- and 6 digits"
    );
    assert_eq!(props["note"]["maxLength"], 4);
    assert!(p.worst_case_tokens <= 100, "{}", p.worst_case_tokens);
    let plain = po.clone();
    let nulls = check_random_generation("patterns", &tok, vec![("po", po, plain, 100)], 50);
    assert_eq!(nulls, 0);
    // the issue's case: one pattern field at 60 tokens
    let one = json!({"type": "object", "properties": {
        "po": {"type": "string", "pattern": "^PO-[0-9]{4,8}$"}}, "required": ["po"]});
    let p = prepare_schema(&one, &BoundOptions::new(60)).unwrap();
    assert_eq!(p.grammar["properties"]["po"]["maxLength"], 11);
    check_random_generation(
        "patterns",
        &tok,
        vec![("po-only", one.clone(), one, 60)],
        20,
    );

    // too small for the schema: the message names the smallest budget, which works
    let err = prepare_schema(
        &json!({"type": "object", "properties": {
            "po": {"type": "string", "pattern": "^PO-[0-9]{4,8}$"},
            "lines": {"type": "array", "minItems": 2, "items": {"type": "string", "maxLength": 12}}},
            "required": ["po", "lines"]}),
        &BoundOptions::new(40),
    )
    .unwrap_err();
    let SchemaError::DoesNotFit {
        smallest_max_new_tokens,
        ..
    } = err
    else {
        panic!("{err}")
    };
    let msg = err.to_string();
    assert!(
        msg.contains("does not fit --max-new-tokens 40")
            && msg.contains(&format!(
                "use --max-new-tokens {smallest_max_new_tokens} or more"
            )),
        "{msg}"
    );
    assert!(smallest_max_new_tokens > 40);
    let schema = json!({"type": "object", "properties": {
        "po": {"type": "string", "pattern": "^PO-[0-9]{4,8}$"},
        "lines": {"type": "array", "minItems": 2, "items": {"type": "string", "maxLength": 12}}},
        "required": ["po", "lines"]});
    assert!(prepare_schema(&schema, &BoundOptions::new(smallest_max_new_tokens)).is_ok());
    assert!(prepare_schema(&schema, &BoundOptions::new(smallest_max_new_tokens - 1)).is_err());
}
