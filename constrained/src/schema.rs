//! Schema checking, OpenAPI `nullable` rewriting, bounding and the worst-case token bound.
//! The rules are described in the module documentation of [`crate`].

use serde_json::{json, Map, Value};

use super::error::SchemaError;

/// JSON Schema keywords that quire understands (and that llguidance enforces).
const STRUCTURAL: &[&str] = &[
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "prefixItems",
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
    "pattern",
    "format",
    "enum",
    "const",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "anyOf",
    "oneOf",
    "$ref",
    "$defs",
    "definitions",
    "nullable",
];

/// Keywords that carry no constraint on the output.
const ANNOTATIONS: &[&str] = &[
    "$schema",
    "$id",
    "$comment",
    "$anchor",
    "title",
    "description",
    "default",
    "examples",
    "readOnly",
    "writeOnly",
    "deprecated",
    "contentMediaType",
    "contentEncoding",
];

/// Keywords quire rejects, with the reason given to the user.
const REJECTED: &[(&str, &str)] = &[
    ("contains", "not enforced by the grammar engine"),
    ("minContains", "not enforced by the grammar engine"),
    ("maxContains", "not enforced by the grammar engine"),
    ("uniqueItems", "not enforced by the grammar engine"),
    ("not", "not enforced by the grammar engine"),
    (
        "if",
        "conditional schemas are not enforced by the grammar engine",
    ),
    (
        "then",
        "conditional schemas are not enforced by the grammar engine",
    ),
    (
        "else",
        "conditional schemas are not enforced by the grammar engine",
    ),
    ("dependentRequired", "not enforced by the grammar engine"),
    ("dependentSchemas", "not enforced by the grammar engine"),
    ("dependencies", "not enforced by the grammar engine"),
    ("propertyNames", "not enforced by the grammar engine"),
    (
        "unevaluatedProperties",
        "not enforced by the grammar engine",
    ),
    ("unevaluatedItems", "not enforced by the grammar engine"),
    (
        "minProperties",
        "not supported by quire (list the properties in `required`)",
    ),
    (
        "maxProperties",
        "not supported by quire (use `additionalProperties: false`)",
    ),
    (
        "patternProperties",
        "open-ended property sets cannot be bounded to the token limit",
    ),
    (
        "additionalItems",
        "use `prefixItems` and `items` (draft 2020-12)",
    ),
    (
        "allOf",
        "not supported by quire (merge the subschemas into one)",
    ),
    ("$dynamicRef", "not supported by quire"),
    ("$dynamicAnchor", "not supported by quire"),
    ("$recursiveRef", "not supported by quire"),
    ("$recursiveAnchor", "not supported by quire"),
    ("$vocabulary", "not supported by quire"),
    ("x-guidance", "quire sets the grammar options itself"),
];

/// Formats llguidance enforces. Others (e.g. `phone`) are rejected.
const FORMATS: &[&str] = &[
    "date",
    "date-time",
    "time",
    "email",
    "uuid",
    "uri",
    "hostname",
    "ipv4",
    "ipv6",
    "duration",
];

const TYPES: &[&str] = &[
    "object", "array", "string", "number", "integer", "boolean", "null",
];

/// Worst-case output bytes of one character of a free (non-format) string: a 4-byte UTF-8
/// scalar. `\uXXXX` escapes (6 bytes) are disabled in the grammar; short escapes are 2 bytes.
pub const MAX_BYTES_PER_CHAR: usize = 4;

/// The largest integer that is exact in an f64 (2^53 - 1): the default integer range is
/// `[-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER]`.
pub const MAX_SAFE_INTEGER: i64 = 9_007_199_254_740_991;

/// How quire bounds a schema. [`BoundOptions::new`] gives the defaults.
#[derive(Debug, Clone)]
pub struct BoundOptions {
    /// The generation limit the complete JSON output must fit in (tokens).
    pub max_new_tokens: usize,
    /// Starting default `maxLength` for strings without one; shrunk until the bound fits.
    pub default_max_length: usize,
    /// Starting default `maxItems` for arrays without one; shrunk until the bound fits.
    pub default_max_items: usize,
    /// The default `maxLength` is never shrunk below this (it is an error instead).
    pub min_default_max_length: usize,
    /// The default `maxItems` is never shrunk below this (it is an error instead).
    pub min_default_max_items: usize,
    /// Range added to integers that lack `minimum`/`maximum` (each side separately).
    pub integer_range: (i64, i64),
    /// Range added to numbers that lack `minimum`/`maximum` (each side separately).
    pub number_range: (f64, f64),
    /// Fraction digits allowed for numbers without `multipleOf`: adds `multipleOf: 10^-n`.
    pub number_fraction_digits: u32,
    /// Tokens charged per character of a free string. The default, [`MAX_BYTES_PER_CHAR`],
    /// is a guarantee for any tokenizer (one byte per token); a smaller value is an estimate
    /// that allows longer strings and more items, and an output cut by the limit is then an
    /// error for the caller.
    pub tokens_per_char: f64,
}

impl BoundOptions {
    pub fn new(max_new_tokens: usize) -> Self {
        Self {
            max_new_tokens,
            default_max_length: 256,
            default_max_items: 64,
            min_default_max_length: 4,
            min_default_max_items: 1,
            integer_range: (-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER),
            number_range: (-1e15, 1e15),
            number_fraction_digits: 2,
            tokens_per_char: MAX_BYTES_PER_CHAR as f64,
        }
    }
}

/// A user schema checked and prepared for constrained decoding.
#[derive(Debug, Clone)]
pub struct PreparedSchema {
    /// The schema as the user gave it.
    pub original: Value,
    /// The user schema in plain JSON Schema terms (OpenAPI `nullable: true` rewritten into
    /// type lists): what outputs are validated against. No quire bounds in it.
    pub validation: Value,
    /// The bounded schema handed to llguidance (with `x-guidance`).
    pub grammar: Value,
    /// The default `maxLength` chosen for strings without one.
    pub default_max_length: usize,
    /// The default `maxItems` chosen for arrays without one.
    pub default_max_items: usize,
    /// Worst-case output tokens of the bounded schema (each token is at least one byte, so
    /// this is a bound on bytes): `worst_case_tokens <= max_new_tokens`.
    pub worst_case_tokens: usize,
}

/// Checks, rewrites and bounds `schema` so that every complete output fits
/// `opts.max_new_tokens` tokens.
pub fn prepare_schema(schema: &Value, opts: &BoundOptions) -> Result<PreparedSchema, SchemaError> {
    let mut validation = schema.clone();
    check(&validation, "", true)?;
    rewrite_nullable(&mut validation);
    check_refs(&validation, &validation, "")?;

    let budget = opts.max_new_tokens;
    let mut len = opts.default_max_length.max(opts.min_default_max_length);
    let mut items = opts.default_max_items.max(opts.min_default_max_items);
    loop {
        let grammar = bounded(&validation, len, items, opts);
        let bound = worst_case(&grammar, &grammar, opts.tokens_per_char, &mut Vec::new())?;
        if bound <= budget {
            return Ok(PreparedSchema {
                original: schema.clone(),
                validation,
                grammar: with_guidance_options(grammar),
                default_max_length: len,
                default_max_items: items,
                worst_case_tokens: bound,
            });
        }
        // Shrink the default that buys the most; ~3/4 steps keep the defaults near the budget.
        let next_len = (len * 3 / 4).max(opts.min_default_max_length);
        let next_items = (items * 3 / 4).max(opts.min_default_max_items);
        let bound_len = if next_len < len {
            Some(worst_case(
                &bounded(&validation, next_len, items, opts),
                &Value::Null,
                opts.tokens_per_char,
                &mut Vec::new(),
            ))
        } else {
            None
        };
        let bound_items = if next_items < items {
            Some(worst_case(
                &bounded(&validation, len, next_items, opts),
                &Value::Null,
                opts.tokens_per_char,
                &mut Vec::new(),
            ))
        } else {
            None
        };
        match (bound_len, bound_items) {
            (None, None) => {
                return Err(SchemaError::DoesNotFit {
                    smallest_max_new_tokens: bound,
                    max_new_tokens: budget,
                    max_length: len,
                    max_items: items,
                })
            }
            (Some(_), None) => len = next_len,
            (None, Some(_)) => items = next_items,
            (Some(a), Some(b)) => {
                let a = a.unwrap_or(usize::MAX);
                let b = b.unwrap_or(usize::MAX);
                if a <= b {
                    len = next_len
                } else {
                    items = next_items
                }
            }
        }
    }
}

fn with_guidance_options(mut grammar: Value) -> Value {
    if let Some(obj) = grammar.as_object_mut() {
        obj.insert(
            "x-guidance".into(),
            json!({
                "whitespace_flexible": false,
                // No \uXXXX escapes: 4 bytes per character at most, and no escaped controls.
                "json_allowed_escapes": "nrbtf\\\"",
            }),
        );
    }
    grammar
}

fn ptr_join(ptr: &str, key: &str) -> String {
    format!("{ptr}/{}", key.replace('~', "~0").replace('/', "~1"))
}

fn unsupported(ptr: &str, keyword: &str, reason: impl Into<String>) -> SchemaError {
    SchemaError::Unsupported {
        keyword: keyword.to_string(),
        pointer: ptr_join(ptr, keyword),
        reason: reason.into(),
    }
}

/// Rejects what quire cannot enforce or bound. `ptr` is the JSON pointer of `schema`.
fn check(schema: &Value, ptr: &str, root: bool) -> Result<(), SchemaError> {
    let obj = match schema {
        Value::Object(obj) => obj,
        Value::Bool(_) => {
            return Err(SchemaError::Unsupported {
                keyword: schema.to_string(),
                pointer: ptr.to_string(),
                reason: "boolean schemas are only supported as `additionalProperties: false` \
                         or `items: false`"
                    .into(),
            })
        }
        _ => {
            return Err(SchemaError::Invalid {
                pointer: ptr.to_string(),
                message: "a schema must be an object".into(),
            })
        }
    };
    for (key, value) in obj {
        if let Some((_, reason)) = REJECTED.iter().find(|(k, _)| k == key) {
            return Err(unsupported(ptr, key, *reason));
        }
        if key.starts_with("x-") || ANNOTATIONS.contains(&key.as_str()) {
            continue;
        }
        if !STRUCTURAL.contains(&key.as_str()) {
            return Err(unsupported(ptr, key, "unknown keyword"));
        }
        let kptr = ptr_join(ptr, key);
        match key.as_str() {
            "type" => {
                let names: Vec<&Value> = match value {
                    Value::Array(a) => a.iter().collect(),
                    v => vec![v],
                };
                for n in names {
                    if !n.as_str().is_some_and(|s| TYPES.contains(&s)) {
                        return Err(SchemaError::Invalid {
                            pointer: kptr,
                            message: format!("unknown type {n}"),
                        });
                    }
                }
            }
            "properties" | "$defs" | "definitions" => {
                let map = value.as_object().ok_or_else(|| SchemaError::Invalid {
                    pointer: kptr.clone(),
                    message: format!("`{key}` must be an object"),
                })?;
                for (name, sub) in map {
                    check(sub, &ptr_join(&kptr, name), false)?;
                }
            }
            "additionalProperties" if value != &Value::Bool(false) => {
                return Err(unsupported(
                    ptr,
                    key,
                    "only `additionalProperties: false` is supported: open-ended property \
                     sets cannot be bounded to the token limit",
                ));
            }
            "items" if value != &Value::Bool(false) => check(value, &kptr, false)?,
            "prefixItems" | "anyOf" | "oneOf" => {
                let arr = value.as_array().ok_or_else(|| SchemaError::Invalid {
                    pointer: kptr.clone(),
                    message: format!("`{key}` must be an array"),
                })?;
                for (i, sub) in arr.iter().enumerate() {
                    check(sub, &format!("{kptr}/{i}"), false)?;
                }
            }
            "format" => {
                let f = value.as_str().unwrap_or_default();
                if !FORMATS.contains(&f) {
                    return Err(unsupported(
                        ptr,
                        key,
                        format!(
                            "format {value} is not enforced (supported: {})",
                            FORMATS.join(", ")
                        ),
                    ));
                }
            }
            "$ref" => {
                let r = value.as_str().unwrap_or_default();
                if !(r.starts_with("#/$defs/") || r.starts_with("#/definitions/")) {
                    return Err(unsupported(
                        ptr,
                        key,
                        format!("only local references into `$defs`/`definitions` are supported, not {value}"),
                    ));
                }
            }
            "nullable" if !value.is_boolean() => {
                return Err(SchemaError::Invalid {
                    pointer: kptr,
                    message: "`nullable` must be a boolean".into(),
                });
            }
            _ => {}
        }
    }
    let has_shape = ["type", "enum", "const", "$ref", "anyOf", "oneOf"]
        .iter()
        .any(|k| obj.contains_key(*k));
    if !(has_shape || root && obj.is_empty()) {
        return Err(SchemaError::Unsupported {
            keyword: "type".into(),
            pointer: ptr.to_string(),
            reason: "a schema without `type`, `enum`, `const`, `$ref`, `anyOf` or `oneOf` \
                     accepts any JSON value, which cannot be bounded"
                .into(),
        });
    }
    if root {
        let t = obj.get("type");
        let ok = matches!(t.and_then(Value::as_str), Some("object" | "array"));
        if !ok {
            return Err(SchemaError::Unsupported {
                keyword: "type".into(),
                pointer: "/type".into(),
                reason: "the top-level schema must have `type: \"object\"` or `type: \"array\"` \
                         (generation stops at its closing bracket)"
                    .into(),
            });
        }
    }
    Ok(())
}

/// Checks that every `$ref` points at an existing definition.
fn check_refs(schema: &Value, root: &Value, ptr: &str) -> Result<(), SchemaError> {
    match schema {
        Value::Object(obj) => {
            if let Some(r) = obj.get("$ref").and_then(Value::as_str) {
                if resolve(root, r).is_none() {
                    return Err(SchemaError::Invalid {
                        pointer: ptr_join(ptr, "$ref"),
                        message: format!("reference {r:?} does not resolve"),
                    });
                }
            }
            for (k, v) in obj {
                if k == "enum" || k == "const" || k == "default" || k == "examples" {
                    continue;
                }
                check_refs(v, root, &ptr_join(ptr, k))?;
            }
        }
        Value::Array(arr) => {
            for (i, v) in arr.iter().enumerate() {
                check_refs(v, root, &format!("{ptr}/{i}"))?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn resolve<'a>(root: &'a Value, reference: &str) -> Option<&'a Value> {
    let pointer = reference.strip_prefix('#')?;
    root.pointer(pointer)
}

/// Rewrites OpenAPI `nullable: true` into JSON Schema (llguidance and the validator ignore it).
fn rewrite_nullable(schema: &mut Value) {
    let Value::Object(obj) = schema else { return };
    for (k, v) in obj.iter_mut() {
        match k.as_str() {
            "properties" | "$defs" | "definitions" => {
                if let Value::Object(m) = v {
                    m.values_mut().for_each(rewrite_nullable);
                }
            }
            "items" => rewrite_nullable(v),
            "prefixItems" | "anyOf" | "oneOf" => {
                if let Value::Array(a) = v {
                    a.iter_mut().for_each(rewrite_nullable);
                }
            }
            _ => {}
        }
    }
    let Some(nullable) = obj.remove("nullable") else {
        return;
    };
    if nullable != Value::Bool(true) {
        return;
    }
    if obj.contains_key("const")
        || obj.contains_key("$ref")
        || !obj.contains_key("type") && !obj.contains_key("enum")
    {
        // {"anyOf": [<the schema>, {"type": "null"}]}, annotations stay outside.
        let mut inner = Map::new();
        let keys: Vec<String> = obj
            .keys()
            .filter(|k| !ANNOTATIONS.contains(&k.as_str()) && *k != "$defs" && *k != "definitions")
            .cloned()
            .collect();
        for k in keys {
            if let Some(v) = obj.remove(&k) {
                inner.insert(k, v);
            }
        }
        obj.insert(
            "anyOf".into(),
            json!([Value::Object(inner), {"type": "null"}]),
        );
        return;
    }
    if let Some(t) = obj.get_mut("type") {
        match t {
            Value::String(s) if s != "null" => *t = json!([s.clone(), "null"]),
            Value::Array(a) if !a.contains(&json!("null")) => a.push(json!("null")),
            _ => {}
        }
    }
    if let Some(Value::Array(e)) = obj.get_mut("enum") {
        if !e.contains(&Value::Null) {
            e.push(Value::Null);
        }
    }
}

fn types_of(obj: &Map<String, Value>) -> Vec<&str> {
    match obj.get("type") {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// The validation schema with quire's bounds added (see the module docs for the rules).
fn bounded(schema: &Value, max_length: usize, max_items: usize, opts: &BoundOptions) -> Value {
    let mut s = schema.clone();
    add_bounds(&mut s, max_length, max_items, opts);
    s
}

fn add_bounds(schema: &mut Value, max_length: usize, max_items: usize, opts: &BoundOptions) {
    let Value::Object(obj) = schema else { return };
    for (k, v) in obj.iter_mut() {
        match k.as_str() {
            "properties" | "$defs" | "definitions" => {
                if let Value::Object(m) = v {
                    m.values_mut()
                        .for_each(|s| add_bounds(s, max_length, max_items, opts));
                }
            }
            "items" => add_bounds(v, max_length, max_items, opts),
            "prefixItems" | "anyOf" | "oneOf" => {
                if let Value::Array(a) = v {
                    a.iter_mut()
                        .for_each(|s| add_bounds(s, max_length, max_items, opts));
                }
            }
            _ => {}
        }
    }
    if obj.contains_key("enum") || obj.contains_key("const") {
        return;
    }
    let types: Vec<String> = types_of(obj).into_iter().map(String::from).collect();
    for t in &types {
        match t.as_str() {
            "string" if !obj.contains_key("maxLength") => {
                let min = obj.get("minLength").and_then(Value::as_u64).unwrap_or(0) as usize;
                let mut default = match obj.get("format").and_then(Value::as_str) {
                    Some(f) => format_default_max_length(f, max_length),
                    None => max_length,
                };
                // An anchored pattern bounds the string itself: every string it admits stays
                // possible. Otherwise never below what the pattern needs (a default shorter
                // than its shortest match would make the field unsatisfiable).
                if let Some(lengths) = obj
                    .get("pattern")
                    .and_then(Value::as_str)
                    .and_then(pattern_lengths)
                {
                    default = match lengths.max_chars {
                        Some(longest) => longest,
                        None => default.max(lengths.min_chars),
                    };
                }
                obj.insert("maxLength".into(), json!(default.max(min)));
            }
            _ => {}
        }
    }
    if types.iter().any(|t| t == "string") {
        tighten_format(obj);
    }
    for t in &types {
        match t.as_str() {
            "array" if !obj.contains_key("maxItems") => {
                let min = obj.get("minItems").and_then(Value::as_u64).unwrap_or(0) as usize;
                let prefix = obj
                    .get("prefixItems")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len);
                // without `items`, further items are any JSON: only the prefix is generated
                let n = if prefix > 0 && obj.get("items").is_none_or(|i| i == &Value::Bool(false)) {
                    prefix.max(min)
                } else {
                    max_items.max(min)
                };
                obj.insert("maxItems".into(), json!(n));
            }
            "object" if !obj.contains_key("additionalProperties") => {
                obj.insert("additionalProperties".into(), Value::Bool(false));
            }
            "integer" | "number" => {
                let integer = !types.iter().any(|t| t == "number");
                if !obj.contains_key("minimum") && !obj.contains_key("exclusiveMinimum") {
                    let v = if integer {
                        json!(opts.integer_range.0)
                    } else {
                        json!(opts.number_range.0)
                    };
                    obj.insert("minimum".into(), v);
                }
                if !obj.contains_key("maximum") && !obj.contains_key("exclusiveMaximum") {
                    let v = if integer {
                        json!(opts.integer_range.1)
                    } else {
                        json!(opts.number_range.1)
                    };
                    obj.insert("maximum".into(), v);
                }
                if !integer && !obj.contains_key("multipleOf") {
                    let step: f64 = format!("1e-{}", opts.number_fraction_digits)
                        .parse()
                        .unwrap_or(0.01);
                    obj.insert("multipleOf".into(), json!(step));
                }
            }
            _ => {}
        }
    }
}

/// Non-zero 4-digit year.
const YEAR: &str = "(?:[1-9][0-9]{3}|0[1-9][0-9]{2}|00[1-9][0-9]|000[1-9])";
/// 4-digit leap year (Gregorian), not 0000.
const LEAP_YEAR: &str =
    "(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:0[48]|[2468][048]|[13579][26])00)";
const MONTH_DAY: &str = "(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)|02-(?:0[1-9]|1[0-9]|2[0-8]))";
const TIME: &str = "(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\\.[0-9]+)?(?:[zZ]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])";

fn date_regex() -> String {
    format!("(?:{YEAR}-{MONTH_DAY}|{LEAP_YEAR}-02-29)")
}

/// llguidance's formats are looser than a validator: `date` takes Feb 29 of any year and year
/// 0000, `date-time`/`time` second 60, `hostname` any length. In the grammar, strict
/// patterns replace them (when the schema has no `pattern` of its own) and hostnames are
/// capped at 253 characters.
fn tighten_format(obj: &mut Map<String, Value>) {
    let Some(format) = obj.get("format").and_then(Value::as_str).map(String::from) else {
        return;
    };
    let pattern = match format.as_str() {
        "date" => format!("^{}$", date_regex()),
        "date-time" => format!("^{}[tT]{TIME}$", date_regex()),
        "time" => format!("^{TIME}$"),
        "hostname" => {
            if let Some(m) = obj.get("maxLength").and_then(Value::as_u64) {
                if m > 253 {
                    obj.insert("maxLength".into(), json!(253));
                }
            }
            return;
        }
        _ => return,
    };
    if !obj.contains_key("pattern") {
        obj.remove("format");
        obj.insert("pattern".into(), Value::String(pattern));
        obj.insert("x-quire-format".into(), Value::String(format));
    }
}

/// The lengths of the strings a `pattern` admits, in characters.
struct PatternLengths {
    /// No shorter string matches (JSON Schema patterns search: a match needs at least this).
    min_chars: usize,
    /// No longer string matches: only for a pattern anchored at both ends (`^…$`).
    max_chars: Option<usize>,
    /// Output bytes per character in JSON when every character of a matching string is ASCII
    /// (an anchored pattern of ASCII characters):
    /// 1, or 2 where `"`, `\` or a control character (escaped) can occur.
    ascii_json_bytes: Option<usize>,
}

/// What `pattern` needs; `None` when the regex does not parse here (llguidance reports it).
fn pattern_lengths(pattern: &str) -> Option<PatternLengths> {
    use regex_syntax::hir::Look;
    let hir = regex_syntax::Parser::new().parse(pattern).ok()?;
    let props = hir.properties();
    let ascii = ascii_chars(&hir);
    // Lengths are in UTF-8 bytes: a character is 1 byte if ASCII, else up to 4.
    let min_bytes = props.minimum_len().unwrap_or(0);
    let min_chars = match ascii {
        Some(_) => min_bytes,
        None => min_bytes.div_ceil(4),
    };
    let anchored = props.look_set_prefix().contains(Look::Start)
        && props.look_set_suffix().contains(Look::End);
    Some(PatternLengths {
        min_chars,
        // at most one character per byte
        max_chars: if anchored { props.maximum_len() } else { None },
        // a search admits any characters around the match
        ascii_json_bytes: ascii
            .filter(|_| anchored)
            .map(|escaped| if escaped { 2 } else { 1 }),
    })
}

/// `Some(escaped)` when every character `hir` can match is ASCII; `escaped`: one of them is
/// written escaped in JSON (`"`, `\`, a control character). `None` otherwise.
fn ascii_chars(hir: &regex_syntax::hir::Hir) -> Option<bool> {
    use regex_syntax::hir::{Class, HirKind};
    let range = |lo: u32, hi: u32| -> Option<bool> {
        (hi < 0x80).then(|| lo < 0x20 || (lo..=hi).contains(&0x22) || (lo..=hi).contains(&0x5c))
    };
    let all = |v: &mut dyn Iterator<Item = Option<bool>>| -> Option<bool> {
        let mut escaped = false;
        for x in v {
            escaped |= x?;
        }
        Some(escaped)
    };
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => Some(false),
        HirKind::Literal(l) => all(&mut l.0.iter().map(|&b| range(b as u32, b as u32))),
        HirKind::Class(Class::Unicode(c)) => all(&mut c
            .ranges()
            .iter()
            .map(|r| range(r.start() as u32, r.end() as u32))),
        HirKind::Class(Class::Bytes(c)) => all(&mut c
            .ranges()
            .iter()
            .map(|r| range(r.start() as u32, r.end() as u32))),
        HirKind::Repetition(r) => ascii_chars(&r.sub),
        HirKind::Capture(c) => ascii_chars(&c.sub),
        HirKind::Concat(v) | HirKind::Alternation(v) => all(&mut v.iter().map(ascii_chars)),
    }
}

/// Default `maxLength` for a format string without one. Fixed-length formats get their own
/// length; `date-time`/`time` get room for microseconds and an offset.
fn format_default_max_length(format: &str, max_length: usize) -> usize {
    match format {
        "date" => 10,
        "uuid" => 36,
        "ipv4" => 15,
        "ipv6" => 39,
        "date-time" => 32,
        "time" => 21,
        "hostname" => max_length.clamp(1, 253),
        "email" => max_length.max(6),
        "uri" => max_length.max(8),
        "duration" => max_length.max(4),
        _ => max_length,
    }
}

fn digits(v: u128) -> usize {
    v.to_string().len()
}

/// Decimal places of a `multipleOf` value (0.01 -> 2, 0.5 -> 1, 5 -> 0).
fn scale_of(v: &Value) -> usize {
    let s = v.to_string();
    if let Some((mant, exp)) = s.split_once(['e', 'E']) {
        let frac = mant.split_once('.').map_or(0, |(_, f)| f.len()) as i64;
        let exp: i64 = exp.parse().unwrap_or(0);
        return (frac - exp).max(0) as usize;
    }
    s.split_once('.')
        .map_or(0, |(_, f)| f.trim_end_matches('0').len())
}

/// Worst-case output bytes of a bounded schema (= worst-case tokens: every token is at least
/// one byte). `root` resolves `$ref`s (`Value::Null`: use `schema` itself). `Err` for an
/// unbounded or recursive schema.
fn worst_case(
    schema: &Value,
    root: &Value,
    tokens_per_char: f64,
    stack: &mut Vec<String>,
) -> Result<usize, SchemaError> {
    let root = if root.is_null() { schema } else { root };
    let cx = Cx {
        root,
        tokens_per_char,
    };
    bytes_of(&cx, schema, "", stack)
}

struct Cx<'a> {
    root: &'a Value,
    tokens_per_char: f64,
}

fn bytes_of(
    cx: &Cx<'_>,
    schema: &Value,
    ptr: &str,
    stack: &mut Vec<String>,
) -> Result<usize, SchemaError> {
    let root = cx.root;
    let Value::Object(obj) = schema else {
        return Ok(0);
    };
    let mut alternatives: Vec<usize> = Vec::new();
    if let Some(r) = obj.get("$ref").and_then(Value::as_str) {
        if stack.iter().any(|s| s == r) {
            return Err(unsupported(
                ptr,
                "$ref",
                format!("recursive reference {r:?} cannot be bounded to the token limit"),
            ));
        }
        let target = resolve(root, r).ok_or_else(|| SchemaError::Invalid {
            pointer: ptr_join(ptr, "$ref"),
            message: format!("reference {r:?} does not resolve"),
        })?;
        stack.push(r.to_string());
        let b = bytes_of(cx, target, &r[1..], stack);
        stack.pop();
        alternatives.push(b?);
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(Value::Array(a)) = obj.get(key) {
            let kptr = ptr_join(ptr, key);
            let mut m = 0;
            for (i, sub) in a.iter().enumerate() {
                m = m.max(bytes_of(cx, sub, &format!("{kptr}/{i}"), stack)?);
            }
            alternatives.push(m);
        }
    }
    // enum/const restrict every other keyword at this level: their values bound the output.
    if let Some(c) = obj.get("const") {
        return Ok(json_len(c));
    }
    if let Some(Value::Array(e)) = obj.get("enum") {
        return Ok(e.iter().map(json_len).max().unwrap_or(0));
    }
    let mut own = None;
    for t in types_of(obj) {
        let b = match t {
            "null" => 4,
            "boolean" => 5,
            "integer" | "number" => number_bytes(obj, t == "integer", ptr)?,
            "string" => {
                let max = obj
                    .get("maxLength")
                    .and_then(Value::as_u64)
                    .ok_or_else(|| unsupported(ptr, "maxLength", "string without maxLength"))?
                    as usize;
                let format = obj
                    .get("format")
                    .or_else(|| obj.get("x-quire-format"))
                    .and_then(Value::as_str);
                let chars = match format {
                    Some("date") => max.min(10),
                    Some("uuid") => max.min(36),
                    Some("ipv4") => max.min(15),
                    Some("ipv6") => max.min(39),
                    _ => max,
                };
                // format strings are ASCII by their grammar; so are those of some patterns
                let pattern_bytes = obj
                    .get("pattern")
                    .and_then(Value::as_str)
                    .and_then(pattern_lengths)
                    .and_then(|p| p.ascii_json_bytes);
                let per_char = match (format, pattern_bytes) {
                    (Some(_), _) => cx.tokens_per_char.min(1.0),
                    (None, Some(b)) => cx.tokens_per_char.min(b as f64),
                    (None, None) => cx.tokens_per_char,
                };
                2 + (chars as f64 * per_char).ceil() as usize
            }
            "array" => {
                let max_items = obj
                    .get("maxItems")
                    .and_then(Value::as_u64)
                    .ok_or_else(|| unsupported(ptr, "maxItems", "array without maxItems"))?
                    as usize;
                let mut total = 2 + max_items.saturating_sub(1);
                let prefix = obj
                    .get("prefixItems")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                for (i, sub) in prefix.iter().enumerate().take(max_items) {
                    total += bytes_of(cx, sub, &format!("{ptr}/prefixItems/{i}"), stack)?;
                }
                let rest = max_items.saturating_sub(prefix.len());
                if rest > 0 {
                    match obj.get("items") {
                        Some(Value::Bool(false)) => {}
                        Some(items) => {
                            total = total.saturating_add(rest.saturating_mul(bytes_of(
                                cx,
                                items,
                                &ptr_join(ptr, "items"),
                                stack,
                            )?))
                        }
                        None => return Err(unsupported(
                            ptr,
                            "items",
                            "an array needs an `items` schema (any JSON value cannot be bounded)",
                        )),
                    }
                }
                total
            }
            "object" => {
                let mut total = 2;
                if let Some(Value::Object(props)) = obj.get("properties") {
                    total += props.len().saturating_sub(1);
                    let pptr = ptr_join(ptr, "properties");
                    for (name, sub) in props {
                        total = total.saturating_add(
                            json_len(&Value::String(name.clone()))
                                + 1
                                + bytes_of(cx, sub, &ptr_join(&pptr, name), stack)?,
                        );
                    }
                }
                total
            }
            _ => 0,
        };
        own = Some(own.map_or(b, |o: usize| o.max(b)));
    }
    // `type` intersects with `anyOf`/`$ref`: any one of them bounds the output.
    if let Some(o) = own {
        alternatives.push(o);
    }
    Ok(alternatives.into_iter().min().unwrap_or(0))
}

fn json_len(v: &Value) -> usize {
    serde_json::to_string(v).map_or(0, |s| s.len())
}

fn number_bytes(obj: &Map<String, Value>, integer: bool, ptr: &str) -> Result<usize, SchemaError> {
    let get = |a: &str, b: &str| obj.get(a).or_else(|| obj.get(b)).and_then(Value::as_f64);
    let lo = get("minimum", "exclusiveMinimum")
        .ok_or_else(|| unsupported(ptr, "minimum", "number without minimum"))?;
    let hi = get("maximum", "exclusiveMaximum")
        .ok_or_else(|| unsupported(ptr, "maximum", "number without maximum"))?;
    let mag = lo.abs().max(hi.abs()).ceil();
    let int_digits = if mag >= 1e38 { 39 } else { digits(mag as u128) };
    let sign = usize::from(lo < 0.0);
    let frac = if integer {
        0
    } else {
        obj.get("multipleOf").map_or(0, scale_of)
    };
    Ok(sign + int_digits + if frac > 0 { 1 + frac } else { 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_of_multiple_of() {
        assert_eq!(scale_of(&json!(0.01)), 2);
        assert_eq!(scale_of(&json!(0.5)), 1);
        assert_eq!(scale_of(&json!(5)), 0);
        assert_eq!(scale_of(&json!(1e-7)), 7);
    }

    #[test]
    fn nullable_rewrites() {
        let mut s = json!({"type": "string", "nullable": true, "enum": ["a"]});
        rewrite_nullable(&mut s);
        assert_eq!(s, json!({"type": ["string", "null"], "enum": ["a", null]}));
        let mut s = json!({"$ref": "#/$defs/x", "nullable": true, "description": "d"});
        rewrite_nullable(&mut s);
        assert_eq!(
            s,
            json!({"description": "d", "anyOf": [{"$ref": "#/$defs/x"}, {"type": "null"}]})
        );
    }
}
