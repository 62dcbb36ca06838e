//! Per-field confidence: the probability the model gave each token it chose under the schema
//! constraint, gathered per value of the generated JSON (the tokens whose bytes overlap it).

use super::super::extraction::{pointer_join, Fields};
use jsonc_parser::ast::{ObjectPropName, Value as Ast};
use jsonc_parser::common::Ranged;
use jsonc_parser::{CollectOptions, ParseOptions};
use quire_exporters::record::FieldRecord;

/// The probability of `token` under the softmax of `logits` (those the constraint masked are
/// `-inf` and get none): what the model gave the token, renormalised over the allowed ones.
pub fn probability(logits: &[f32], token: u32) -> f64 {
    let max = logits
        .iter()
        .copied()
        .filter(|l| l.is_finite())
        .fold(f32::NEG_INFINITY, f32::max);
    let Some(&chosen) = logits.get(token as usize) else {
        return 0.0;
    };
    if !max.is_finite() || !chosen.is_finite() {
        return 0.0;
    }
    let total: f64 = logits
        .iter()
        .filter(|l| l.is_finite())
        .map(|&l| ((l - max) as f64).exp())
        .sum();
    ((chosen - max) as f64).exp() / total
}

/// One generated token: its bytes and, where the constraint allowed more than one token, the
/// probability of the one chosen (`None`: the schema left no choice).
pub struct ScoredToken {
    pub bytes: Vec<u8>,
    pub probability: Option<f64>,
}

/// The field record of every value (leaf) of the JSON `text` that `tokens` spell, by JSON
/// Pointer: the lowest and mean probability of the tokens overlapping its bytes where the model
/// had a choice (1 when it had none), and `page`.
pub fn fields(tokens: &[ScoredToken], text: &str, page: Option<u32>) -> Fields {
    let mut spans = Vec::with_capacity(tokens.len());
    let mut at = 0;
    for t in tokens {
        spans.push((at, at + t.bytes.len(), t.probability));
        at += t.bytes.len();
    }
    let mut fields = Fields::new();
    let Ok(parsed) =
        jsonc_parser::parse_to_ast(text, &CollectOptions::default(), &ParseOptions::default())
    else {
        return fields;
    };
    let Some(root) = parsed.value else {
        return fields;
    };
    let mut leaves = Vec::new();
    collect_leaves(&root, String::new(), &mut leaves);
    for (ptr, start, end) in leaves {
        let chosen: Vec<f64> = spans
            .iter()
            .filter(|(s, e, _)| *s < end && *e > start)
            .filter_map(|(_, _, p)| *p)
            .collect();
        let (confidence, mean) = if chosen.is_empty() {
            (1.0, 1.0)
        } else {
            (
                chosen.iter().copied().fold(1.0, f64::min),
                chosen.iter().sum::<f64>() / chosen.len() as f64,
            )
        };
        fields.insert(
            ptr,
            FieldRecord {
                confidence: round(confidence),
                mean_probability: round(mean),
                page,
                bbox: None,
                alternatives: Vec::new(),
            },
        );
    }
    fields
}

/// Four decimals: what a reader can use, and stable across runs.
fn round(p: f64) -> f64 {
    (p * 1e4).round() / 1e4
}

fn collect_leaves(value: &Ast, ptr: String, out: &mut Vec<(String, usize, usize)>) {
    match value {
        Ast::Object(obj) => {
            for prop in &obj.properties {
                let key = match &prop.name {
                    ObjectPropName::String(s) => s.value.as_ref(),
                    ObjectPropName::Word(w) => w.value,
                };
                collect_leaves(&prop.value, pointer_join(&ptr, key), out);
            }
        }
        Ast::Array(arr) => {
            for (i, item) in arr.elements.iter().enumerate() {
                collect_leaves(item, format!("{ptr}/{i}"), out);
            }
        }
        leaf => {
            let r = leaf.range();
            out.push((ptr, r.start, r.end));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probabilities_and_spans() {
        let l = [1.0f32, f32::NEG_INFINITY, 2.0, 0.5];
        let z = 1f64.exp() + 2f64.exp() + 0.5f64.exp();
        assert!((probability(&l, 2) - 2f64.exp() / z).abs() < 1e-6);
        assert_eq!(probability(&l, 1), 0.0);

        // {"a":"xy","b":[true,3]} as tokens: `{"a":"` `x` `y",` `"b":[` `true` `,3` `]}`
        let toks = [
            (r#"{"a":""#, None),
            ("x", Some(0.5)),
            (r#"y","#, Some(0.8)),
            (r#""b":["#, None),
            ("true", Some(0.9)),
            (",3", Some(0.25)),
            ("]}", None),
        ];
        let tokens: Vec<ScoredToken> = toks
            .iter()
            .map(|(b, p)| ScoredToken {
                bytes: b.as_bytes().to_vec(),
                probability: *p,
            })
            .collect();
        let text: String = toks.iter().map(|(b, _)| *b).collect();
        let f = fields(&tokens, &text, Some(3));
        assert_eq!(f.keys().collect::<Vec<_>>(), ["/a", "/b/0", "/b/1"]);
        // "xy" spans `{"a":"` (its quote; forced), `x`, `y",`
        assert_eq!(f["/a"].confidence, 0.5);
        assert_eq!(f["/a"].mean_probability, 0.65);
        assert_eq!(f["/b/0"].confidence, 0.9);
        assert_eq!(f["/b/1"].confidence, 0.25);
        assert_eq!(f["/a"].page, Some(3));
    }
}
