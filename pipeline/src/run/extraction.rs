//! One extraction (`data` and what is known of each of its values), and the schema-aware merge
//! of several: the pages of a document extracted one prompt at a time, the parts of a long one.
//!
//! The merge never makes a valid document fail: it follows the schema (objects merge property
//! by property; lists are concatenated without duplicates and cut to their `maxItems`; a field
//! the pages disagree on keeps the surest value and records the others as alternatives), and
//! when the merged object still does not validate (a schema the rules cannot see through, such
//! as `oneOf`), the surest single page's extraction is kept instead, with a warning.

use indexmap::IndexMap;
use quire_constrained::JsonConstraint;
use quire_exporters::record::{Alternative, FieldRecord};
use serde_json::{Map, Value};

/// Fields by JSON Pointer, in the order of the data.
pub type Fields = IndexMap<String, FieldRecord>;

/// An extraction: schema-valid `data` and its `fields`.
#[derive(Debug, Clone, PartialEq)]
pub struct Extraction {
    pub data: Value,
    pub fields: Fields,
}

/// Merges extractions given in page order into one that validates against `constraint`'s
/// schema. `warnings` gets a line for what the merge dropped or could not merge.
pub fn merge_valid(
    extractions: Vec<Extraction>,
    constraint: &JsonConstraint,
    warnings: &mut Vec<String>,
) -> Extraction {
    if extractions.len() <= 1 {
        return extractions.into_iter().next().unwrap_or(Extraction {
            data: Value::Null,
            fields: Fields::new(),
        });
    }
    let schema = &constraint.schema().validation;
    let mut notes = Vec::new();
    let merged = merge(&extractions, schema, &mut notes);
    match constraint.validate(&merged.data.to_string()) {
        Ok(_) => {
            warnings.extend(notes);
            merged
        }
        Err(e) => {
            // Each extraction validated on its own: the surest one is a valid result.
            let best = extractions
                .iter()
                .enumerate()
                .max_by(|(i, a), (j, b)| {
                    mean_confidence(a)
                        .total_cmp(&mean_confidence(b))
                        .then(j.cmp(i))
                })
                .map(|(i, _)| i)
                .expect("several extractions");
            warnings.push(format!(
                "the pages' extractions could not be merged into one that fits the schema ({e}); \
                 kept the surest page's extraction"
            ));
            extractions.into_iter().nth(best).expect("index in range")
        }
    }
}

/// Sets to `null` each value whose confidence is below `threshold`, where the schema allows
/// `null` there (abstain rather than invent); `warnings` says which.
pub fn null_below(
    extraction: &mut Extraction,
    threshold: f64,
    constraint: &JsonConstraint,
    warnings: &mut Vec<String>,
) {
    let low: Vec<(String, f64)> = extraction
        .fields
        .iter()
        .filter(|(ptr, f)| {
            f.confidence < threshold && extraction.data.pointer(ptr).is_some_and(|v| !v.is_null())
        })
        .map(|(ptr, f)| (ptr.clone(), f.confidence))
        .collect();
    for (ptr, confidence) in low {
        let Some(slot) = extraction.data.pointer_mut(&ptr) else {
            continue;
        };
        let value = std::mem::replace(slot, Value::Null);
        // The validator knows where `null` is allowed (types, enums, anyOf, $ref).
        if constraint.validate(&extraction.data.to_string()).is_ok() {
            warnings.push(format!(
                "{ptr}: confidence {confidence} below --null-below {threshold}: set to null \
                 (was {value})"
            ));
        } else if let Some(slot) = extraction.data.pointer_mut(&ptr) {
            *slot = value;
        }
    }
}

fn mean_confidence(e: &Extraction) -> f64 {
    if e.fields.is_empty() {
        return 0.0;
    }
    e.fields.values().map(|f| f.confidence).sum::<f64>() / e.fields.len() as f64
}

/// An extraction as a tree whose leaves carry their field records, so that values keep them
/// while lists are concatenated and cut.
#[derive(Debug, Clone)]
enum Node {
    Object(Vec<(String, Node)>),
    Array(Vec<Node>),
    Leaf(Value, Option<FieldRecord>),
}

impl Node {
    fn of(value: &Value, fields: &Fields, ptr: &str) -> Node {
        match value {
            Value::Object(map) => Node::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), Node::of(v, fields, &pointer_join(ptr, k))))
                    .collect(),
            ),
            Value::Array(items) => Node::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| Node::of(v, fields, &format!("{ptr}/{i}")))
                    .collect(),
            ),
            leaf => Node::Leaf(leaf.clone(), fields.get(ptr).cloned()),
        }
    }

    fn into_extraction(self) -> Extraction {
        let mut fields = Fields::new();
        let data = self.flatten("", &mut fields);
        Extraction { data, fields }
    }

    fn flatten(self, ptr: &str, fields: &mut Fields) -> Value {
        match self {
            Node::Object(entries) => {
                let mut map = Map::new();
                for (k, v) in entries {
                    let value = v.flatten(&pointer_join(ptr, &k), fields);
                    map.insert(k, value);
                }
                Value::Object(map)
            }
            Node::Array(items) => Value::Array(
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| v.flatten(&format!("{ptr}/{i}"), fields))
                    .collect(),
            ),
            Node::Leaf(value, field) => {
                if let Some(f) = field {
                    fields.insert(ptr.to_string(), f);
                }
                value
            }
        }
    }

    /// The data without the field records (to compare values).
    fn value(&self) -> Value {
        self.clone().flatten("", &mut Fields::new())
    }

    /// The lowest confidence of its values (1 when it has none).
    fn confidence(&self) -> f64 {
        match self {
            Node::Object(entries) => entries
                .iter()
                .map(|(_, v)| v.confidence())
                .fold(1.0, f64::min),
            Node::Array(items) => items.iter().map(Node::confidence).fold(1.0, f64::min),
            Node::Leaf(_, f) => f.as_ref().map_or(1.0, |f| f.confidence),
        }
    }

    /// The first page any of its values came from.
    fn page(&self) -> Option<u32> {
        match self {
            Node::Object(entries) => entries.iter().find_map(|(_, v)| v.page()),
            Node::Array(items) => items.iter().find_map(Node::page),
            Node::Leaf(_, f) => f.as_ref().and_then(|f| f.page),
        }
    }

    fn is_null(&self) -> bool {
        matches!(self, Node::Leaf(Value::Null, _))
    }
}

/// `ptr` with `key` appended, escaped as JSON Pointer wants (`~0`, `~1`).
pub fn pointer_join(ptr: &str, key: &str) -> String {
    format!("{ptr}/{}", key.replace('~', "~0").replace('/', "~1"))
}

/// The schema-aware merge of `extractions` (in page order); see the module documentation.
fn merge(extractions: &[Extraction], schema: &Value, notes: &mut Vec<String>) -> Extraction {
    let cx = Cx { root: schema };
    let mut nodes = extractions.iter().map(|e| Node::of(&e.data, &e.fields, ""));
    let first = nodes.next().expect("at least one extraction");
    nodes
        .fold(first, |acc, next| cx.merge(acc, next, schema, "", notes))
        .into_extraction()
}

struct Cx<'s> {
    root: &'s Value,
}

impl<'s> Cx<'s> {
    /// `schema` with local `$ref`s followed.
    fn resolve(&self, mut schema: &'s Value) -> &'s Value {
        for _ in 0..32 {
            let Some(r) = schema.get("$ref").and_then(Value::as_str) else {
                break;
            };
            match r.strip_prefix('#').and_then(|p| self.root.pointer(p)) {
                Some(target) => schema = target,
                None => break,
            }
        }
        schema
    }

    fn merge(
        &self,
        a: Node,
        b: Node,
        schema: &'s Value,
        ptr: &str,
        notes: &mut Vec<String>,
    ) -> Node {
        // `null`: the page did not have the value.
        if a.is_null() {
            return b;
        }
        if b.is_null() {
            return a;
        }
        let schema = self.resolve(schema);
        // Alternatives (`anyOf`/`oneOf`) may give the pages different shapes: keep one whole.
        let atomic = schema.get("anyOf").is_some() || schema.get("oneOf").is_some();
        match (a, b) {
            (Node::Object(mut a), Node::Object(b)) if !atomic => {
                let props = schema.get("properties");
                for (key, value) in b {
                    let sub = props.and_then(|p| p.get(&key)).unwrap_or(&Value::Null);
                    let here = pointer_join(ptr, &key);
                    match a.iter().position(|(k, _)| *k == key) {
                        Some(i) => {
                            let current = std::mem::replace(&mut a[i].1, Node::Array(Vec::new()));
                            a[i].1 = self.merge(current, value, sub, &here, notes);
                        }
                        None => a.push((key, value)),
                    }
                }
                Node::Object(a)
            }
            (Node::Array(mut a), Node::Array(b))
                if !atomic && schema.get("prefixItems").is_none() =>
            {
                let mut seen: Vec<Value> = a.iter().map(Node::value).collect();
                for item in b {
                    let v = item.value();
                    if !seen.contains(&v) {
                        seen.push(v);
                        a.push(item);
                    }
                }
                if let Some(max) = schema.get("maxItems").and_then(Value::as_u64) {
                    let max = max as usize;
                    if a.len() > max {
                        notes.push(format!(
                            "{}: the pages gave {} distinct items; kept the first {max} \
                             (maxItems)",
                            if ptr.is_empty() { "/" } else { ptr },
                            a.len()
                        ));
                        a.truncate(max);
                    }
                }
                Node::Array(a)
            }
            (a, b) => self.choose(a, b),
        }
    }

    /// Two values for one field: the surer one (the earlier on a tie), with the other value
    /// and both sides' alternatives recorded. The result does not depend on how the pages were
    /// grouped (whole, or in the parts of a long document).
    fn choose(&self, a: Node, b: Node) -> Node {
        let (va, vb) = (a.value(), b.value());
        let (mut keep, other, other_value) = if b.confidence() > a.confidence() {
            (b, a, va)
        } else {
            (a, b, vb)
        };
        if let Node::Leaf(kept, Some(field)) = &mut keep {
            let mut offered = vec![Alternative {
                value: other_value,
                confidence: other.confidence(),
                page: other.page(),
            }];
            if let Node::Leaf(_, Some(f)) = other {
                offered.extend(f.alternatives);
            }
            for alt in offered {
                add_alternative(&mut field.alternatives, alt, kept);
            }
            field.alternatives.sort_by(|x, y| {
                y.confidence
                    .total_cmp(&x.confidence)
                    .then(x.page.cmp(&y.page))
            });
        }
        keep
    }
}

/// Adds `alt` unless it is the kept value; one entry per value, the surest.
fn add_alternative(alternatives: &mut Vec<Alternative>, alt: Alternative, kept: &Value) {
    if alt.value == *kept {
        return;
    }
    match alternatives.iter_mut().find(|a| a.value == alt.value) {
        Some(a)
            if (alt.confidence, std::cmp::Reverse(alt.page))
                > (a.confidence, std::cmp::Reverse(a.page)) =>
        {
            *a = alt
        }
        Some(_) => {}
        None => alternatives.push(alt),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field(confidence: f64, page: u32) -> FieldRecord {
        FieldRecord {
            confidence,
            mean_probability: confidence,
            page: Some(page),
            bbox: None,
            alternatives: Vec::new(),
        }
    }

    /// Every leaf of `data` gets `confidence`, on `page`.
    fn extraction(data: Value, confidence: f64, page: u32) -> Extraction {
        fn leaves(v: &Value, ptr: &str, out: &mut Vec<String>) {
            match v {
                Value::Object(m) => m
                    .iter()
                    .for_each(|(k, v)| leaves(v, &pointer_join(ptr, k), out)),
                Value::Array(a) => a
                    .iter()
                    .enumerate()
                    .for_each(|(i, v)| leaves(v, &format!("{ptr}/{i}"), out)),
                _ => out.push(ptr.to_string()),
            }
        }
        let mut ptrs = Vec::new();
        leaves(&data, "", &mut ptrs);
        Extraction {
            fields: ptrs
                .into_iter()
                .map(|p| (p, field(confidence, page)))
                .collect(),
            data,
        }
    }

    #[test]
    fn merge_follows_the_schema() {
        let schema = json!({"type": "object", "properties": {
            "number": {"type": "string"},
            "total": {"type": ["number", "null"]},
            "lines": {"type": "array", "maxItems": 3, "items": {"$ref": "#/$defs/line"}},
            "vendor": {"type": "object", "properties": {"name": {"type": ["string", "null"]}}},
            "pair": {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "integer"}]}},
            "$defs": {"line": {"type": "object", "properties": {"sku": {"type": "string"}}}}});
        let pages = vec![
            extraction(
                json!({"number": "PO-1", "total": null, "lines": [{"sku": "a"}, {"sku": "b"}],
                       "vendor": {"name": null}, "pair": [1, 2]}),
                0.5,
                0,
            ),
            extraction(
                json!({"number": "PO-7", "total": 10, "lines": [{"sku": "b"}, {"sku": "c"}],
                       "vendor": {"name": "ACME"}, "pair": [3, 4]}),
                0.9,
                1,
            ),
            extraction(
                json!({"number": "PO-1", "total": 12, "lines": [{"sku": "d"}],
                       "vendor": {"name": "ACME"}, "pair": [5, 6]}),
                0.7,
                2,
            ),
        ];
        let mut notes = Vec::new();
        let merged = merge(&pages, &schema, &mut notes);
        assert_eq!(
            merged.data,
            json!({"number": "PO-7", "total": 10, "lines": [{"sku": "a"}, {"sku": "b"}, {"sku": "c"}],
                   "vendor": {"name": "ACME"}, "pair": [3, 4]})
        );
        // duplicates dropped, then cut to maxItems, said in a note
        assert_eq!(
            notes,
            ["/lines: the pages gave 4 distinct items; kept the first 3 (maxItems)"]
        );
        // lines keep their own pages; the surer value wins and records the others
        assert_eq!(merged.fields["/lines/2/sku"].page, Some(1));
        let number = &merged.fields["/number"];
        assert_eq!((number.confidence, number.page), (0.9, Some(1)));
        // PO-1 was offered twice (0.5 on page 0, 0.7 on page 2): one entry, the surer
        assert_eq!(
            number.alternatives,
            [Alternative {
                value: json!("PO-1"),
                confidence: 0.7,
                page: Some(2)
            }]
        );
        let total = &merged.fields["/total"];
        assert_eq!(total.alternatives.len(), 1, "{total:?}");
        assert_eq!(total.alternatives[0].value, json!(12));
        // equal values: the surer page's record
        assert_eq!(merged.fields["/vendor/name"].page, Some(1));
        assert_eq!(merged.fields["/pair/0"].page, Some(1));
        assert_eq!(merged.fields.len(), 8);
    }
}
