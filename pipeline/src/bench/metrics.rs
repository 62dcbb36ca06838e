//! The numbers of a bench cell, as pure functions: field-level precision/recall/F1 of
//! extractions under normalised comparison, character error rate of text, percentiles, and the
//! Pareto frontier. The README (`## Bench`) states the same rules.
//!
//! Extraction: both the prediction and the truth are flattened to leaves keyed by JSON Pointer
//! (`/vendor/name`, `/line_items/0/amount`: objects by key, arrays by index). `null` leaves (and
//! empty objects and arrays) are absent values: not predicted, not expected. A leaf is
//! compared after normalisation ([`Leaf::of`]): strings trimmed, case-folded and with runs of
//! whitespace made one space; a string that reads as a number is that number; a string that
//! reads as a date (`2026-03-14`, `2026/03/14`, `14.03.2026`, `14 March 2026`, `March 14,
//! 2026`) is the ISO date; numbers compare numerically (`20.3` = `"20.30"`). A true positive is
//! an expected leaf whose path the prediction has with an equal value.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// A normalised leaf value.
#[derive(Debug, Clone, PartialEq)]
pub enum Leaf {
    Number(f64),
    Bool(bool),
    /// An ISO date, `YYYY-MM-DD`.
    Date(String),
    Text(String),
}

impl Leaf {
    /// The normalised form of a JSON scalar; `None` for `null` (an absent value).
    pub fn of(value: &Value) -> Option<Leaf> {
        match value {
            Value::Null | Value::Array(_) | Value::Object(_) => None,
            Value::Bool(b) => Some(Leaf::Bool(*b)),
            Value::Number(n) => n.as_f64().map(Leaf::Number),
            Value::String(s) => Some(Leaf::of_str(s)),
        }
    }

    fn of_str(s: &str) -> Leaf {
        let folded = fold_whitespace(s).to_lowercase();
        if let Some(n) = as_number(&folded) {
            return Leaf::Number(n);
        }
        if let Some(date) = as_iso_date(&folded) {
            return Leaf::Date(date);
        }
        Leaf::Text(folded)
    }

    /// Equal after normalisation: numbers within a relative 1e-9 (binary fractions).
    pub fn matches(&self, other: &Leaf) -> bool {
        match (self, other) {
            (Leaf::Number(a), Leaf::Number(b)) => {
                (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
            }
            (a, b) => a == b,
        }
    }
}

/// Trimmed, every run of whitespace one space.
pub fn fold_whitespace(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A plain decimal number (`-1234.50`, `1,234.50`, `1e3`): not `inf`, `nan` or digits with
/// letters. Commas count only as thousands separators (groups of three digits).
fn as_number(s: &str) -> Option<f64> {
    let ungrouped;
    let s = if s.contains(',') {
        let mut groups = s.split(',');
        let head = groups.next().unwrap_or("");
        let grouped = !head.is_empty()
            && groups.all(|g| {
                let digits = g.split('.').next().unwrap_or("");
                digits.len() == 3 && digits.bytes().all(|b| b.is_ascii_digit())
            });
        if !grouped {
            return None;
        }
        ungrouped = s.replace(',', "");
        ungrouped.as_str()
    } else {
        s
    };
    let plain = s
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e'));
    if !plain || !s.bytes().any(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<f64>().ok().filter(|n| n.is_finite())
}

/// The ISO form of a date written in one of the unambiguous formats (not `03/04/2026`, which
/// reads either way).
fn as_iso_date(s: &str) -> Option<String> {
    const FORMATS: [&str; 7] = [
        "%Y-%m-%d",
        "%Y/%m/%d",
        "%d.%m.%Y",
        "%d %B %Y",
        "%d %b %Y",
        "%B %d, %Y",
        "%b %d, %Y",
    ];
    FORMATS.iter().find_map(|f| {
        chrono::NaiveDate::parse_from_str(s, f)
            .ok()
            .map(|d| d.format("%Y-%m-%d").to_string())
    })
}

/// The leaves of `value` by JSON Pointer, in document order; absent values left out.
pub fn flatten(value: &Value) -> BTreeMap<String, Leaf> {
    let mut out = BTreeMap::new();
    flatten_into(value, &mut String::new(), &mut out);
    out
}

fn flatten_into(value: &Value, path: &mut String, out: &mut BTreeMap<String, Leaf>) {
    let len = path.len();
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                path.push('/');
                path.push_str(&key.replace('~', "~0").replace('/', "~1"));
                flatten_into(v, path, out);
                path.truncate(len);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                path.push('/');
                path.push_str(&i.to_string());
                flatten_into(v, path, out);
                path.truncate(len);
            }
        }
        scalar => {
            if let Some(leaf) = Leaf::of(scalar) {
                out.insert(path.clone(), leaf);
            }
        }
    }
}

/// Field counts of extractions, summed over documents (micro-averaged).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct FieldCounts {
    /// Expected leaves found with an equal value.
    pub matched: u64,
    /// Leaves predicted.
    pub predicted: u64,
    /// Leaves expected.
    pub expected: u64,
}

impl FieldCounts {
    /// One document: `predicted` is `None` for a document that failed (nothing predicted).
    pub fn of(predicted: Option<&Value>, expected: &Value) -> FieldCounts {
        let expected = flatten(expected);
        let predicted = predicted.map(flatten).unwrap_or_default();
        let matched = expected
            .iter()
            .filter(|(path, leaf)| predicted.get(*path).is_some_and(|p| p.matches(leaf)))
            .count();
        FieldCounts {
            matched: matched as u64,
            predicted: predicted.len() as u64,
            expected: expected.len() as u64,
        }
    }

    pub fn add(&mut self, other: FieldCounts) {
        self.matched += other.matched;
        self.predicted += other.predicted;
        self.expected += other.expected;
    }

    /// Matched over predicted (1 when nothing was predicted and nothing expected).
    pub fn precision(&self) -> f64 {
        ratio(self.matched, self.predicted)
    }

    /// Matched over expected.
    pub fn recall(&self) -> f64 {
        ratio(self.matched, self.expected)
    }

    /// The harmonic mean of precision and recall (0 when both are 0).
    pub fn f1(&self) -> f64 {
        let (p, r) = (self.precision(), self.recall());
        if p + r == 0.0 {
            0.0
        } else {
            2.0 * p * r / (p + r)
        }
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        if a == 0 {
            1.0
        } else {
            0.0
        }
    } else {
        a as f64 / b as f64
    }
}

/// How often two extractions of the same documents agree: leaves with an equal value in both
/// over the leaves present in either.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Agreement {
    pub same: u64,
    pub total: u64,
    /// Documents whose extractions are equal leaf for leaf.
    pub identical_documents: u64,
    pub documents: u64,
}

impl Agreement {
    pub fn add_data(&mut self, a: &Value, b: &Value) {
        let (a, b) = (flatten(a), flatten(b));
        let same = a
            .iter()
            .filter(|(path, leaf)| b.get(*path).is_some_and(|o| o.matches(leaf)))
            .count() as u64;
        let total = a.len() as u64 + b.keys().filter(|k| !a.contains_key(*k)).count() as u64;
        self.same += same;
        self.total += total;
        self.documents += 1;
        self.identical_documents += u64::from(same == total);
    }

    /// Texts: characters in common by edit distance (`1 − CER` of one against the other).
    pub fn add_text(&mut self, a: &str, b: &str) {
        let counts = CharErrors::of(a, b);
        self.same += counts.reference_chars.saturating_sub(counts.edits);
        self.total += counts.reference_chars;
        self.documents += 1;
        self.identical_documents += u64::from(counts.edits == 0);
    }

    /// `None` when neither had anything to compare.
    pub fn rate(&self) -> Option<f64> {
        (self.total > 0).then(|| self.same as f64 / self.total as f64)
    }
}

/// Character errors of texts against references, summed over documents.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct CharErrors {
    /// Levenshtein distance in characters (insertions, deletions, substitutions).
    pub edits: u64,
    pub reference_chars: u64,
}

impl CharErrors {
    /// `text` against `reference`, both with whitespace folded ([`fold_whitespace`]): layout
    /// (line breaks, indentation) is not what CER measures.
    pub fn of(text: &str, reference: &str) -> CharErrors {
        let (text, reference) = (fold_whitespace(text), fold_whitespace(reference));
        CharErrors {
            edits: strsim::levenshtein(&text, &reference) as u64,
            reference_chars: reference.chars().count() as u64,
        }
    }

    pub fn add(&mut self, other: CharErrors) {
        self.edits += other.edits;
        self.reference_chars += other.reference_chars;
    }

    /// Edits over reference characters (can exceed 1 for a long wrong text).
    pub fn cer(&self) -> f64 {
        if self.reference_chars == 0 {
            return if self.edits == 0 { 0.0 } else { 1.0 };
        }
        self.edits as f64 / self.reference_chars as f64
    }
}

/// The `p`-th percentile (0–100) by nearest rank: the smallest value with at least p% of the
/// values at or below it. `None` for no values.
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Which points are Pareto-optimal when both coordinates are better higher: no other point is
/// at least as good in both and better in one. Points with a missing coordinate are never.
pub fn pareto(points: &[Option<(f64, f64)>]) -> Vec<bool> {
    points
        .iter()
        .map(|p| {
            let Some((x, y)) = *p else { return false };
            !points
                .iter()
                .flatten()
                .any(|&(ox, oy)| ox >= x && oy >= y && (ox > x || oy > y))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strings_numbers_and_dates_are_normalised() {
        let l = |v: Value| Leaf::of(&v).unwrap();
        assert!(
            l(json!("  Northwind   Office\nSupply ")).matches(&l(json!("northwind office supply")))
        );
        assert!(l(json!("20.30")).matches(&l(json!(20.3))));
        assert!(l(json!(0.1 + 0.2)).matches(&l(json!(0.3))));
        assert!(!l(json!("20.31")).matches(&l(json!(20.3))));
        assert_eq!(l(json!("1,250.00")), Leaf::Number(1250.0));
        assert_eq!(l(json!("1,25")), Leaf::Text("1,25".into()));
        assert_eq!(l(json!("14.03.2026")), Leaf::Date("2026-03-14".into()));
        assert_eq!(l(json!("14 March 2026")), Leaf::Date("2026-03-14".into()));
        assert_eq!(l(json!("Mar 14, 2026")), Leaf::Date("2026-03-14".into()));
        assert_eq!(l(json!("2026/03/14")), Leaf::Date("2026-03-14".into()));
        // Ambiguous day/month order stays text; so do codes with digits.
        assert_eq!(l(json!("03/04/2026")), Leaf::Text("03/04/2026".into()));
        assert_eq!(
            l(json!("INV-2026-0042")),
            Leaf::Text("inv-2026-0042".into())
        );
        assert_eq!(Leaf::of(&json!(null)), None);
    }

    #[test]
    fn nested_values_flatten_to_json_pointers() {
        let flat = flatten(&json!({"a/b": {"c": [1, null, {"d~": "x"}]}, "e": null, "f": []}));
        let keys: Vec<&str> = flat.keys().map(String::as_str).collect();
        assert_eq!(keys, ["/a~1b/c/0", "/a~1b/c/2/d~0"]);
    }

    #[test]
    fn precision_recall_and_f1_match_hand_computed_values() {
        let truth = json!({
            "invoice_number": "INV-1",
            "date": "2026-03-14",
            "vendor": {"name": "Northwind GmbH", "address": "Hafenstrasse 12"},
            "items": [{"qty": 8, "amount": "162.72"}, {"qty": 1, "amount": "16.05"}],
            "tax": null
        });
        // 8 expected leaves (the null tax is absent). Predicted: 9 leaves, of which 6 match (invoice number in another
        // case, the date in another format, the amount as a number); the vendor address and
        // the second item's quantity are wrong, and the tax is predicted though absent.
        let predicted = json!({
            "invoice_number": " inv-1 ",
            "date": "14.03.2026",
            "vendor": {"name": "NORTHWIND  GMBH", "address": "Elsewhere 1"},
            "items": [{"qty": 8, "amount": 162.72}, {"qty": 2, "amount": "16.05"}],
            "tax": 3.5
        });
        let c = FieldCounts::of(Some(&predicted), &truth);
        assert_eq!(
            c,
            FieldCounts {
                matched: 6,
                predicted: 9,
                expected: 8
            }
        );
        assert_eq!(c.precision(), 6.0 / 9.0);
        assert_eq!(c.recall(), 6.0 / 8.0);
        let f1 = 2.0 * (6.0 / 9.0) * (6.0 / 8.0) / (6.0 / 9.0 + 6.0 / 8.0);
        assert!((c.f1() - f1).abs() < 1e-12, "{} vs {f1}", c.f1());
        assert!((c.f1() - 12.0 / 17.0).abs() < 1e-12);

        // A failed document predicts nothing: recall 0, and its expected leaves still count.
        let mut total = c;
        total.add(FieldCounts::of(None, &json!({"total": 5})));
        assert_eq!((total.matched, total.predicted, total.expected), (6, 9, 9));
        assert_eq!(total.recall(), 6.0 / 9.0);
    }

    #[test]
    fn character_error_rate_is_levenshtein_over_reference_length() {
        // kitten → sitting: 3 edits over 7 reference characters.
        let e = CharErrors::of("kitten", "sitting");
        assert_eq!((e.edits, e.reference_chars), (3, 7));
        assert_eq!(e.cer(), 3.0 / 7.0);
        // Whitespace is folded first: layout is no error.
        assert_eq!(CharErrors::of("a  b\n\nc ", " a b c").edits, 0);
        let mut sum = e;
        sum.add(CharErrors::of("abc", "abd"));
        assert_eq!(sum.cer(), 4.0 / 10.0);
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=20).rev().map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(10.0));
        assert_eq!(percentile(&v, 95.0), Some(19.0));
        assert_eq!(percentile(&v, 100.0), Some(20.0));
        assert_eq!(percentile(&[7.0], 95.0), Some(7.0));
        assert_eq!(percentile(&[3.0, 1.0, 2.0], 50.0), Some(2.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn pareto_marks_the_points_nothing_beats() {
        let points = [
            Some((0.9, 1.0)), // most accurate
            Some((0.5, 4.0)), // fastest
            Some((0.5, 2.0)), // beaten by the fastest (same accuracy, slower)
            Some((0.7, 3.0)), // between the two: optimal
            Some((0.6, 2.5)), // beaten by (0.7, 3.0)
            None,             // no accuracy: never
            Some((0.9, 1.0)), // a tie with the first: both stay optimal
        ];
        assert_eq!(
            pareto(&points),
            [true, true, false, true, false, false, true]
        );
    }

    #[test]
    fn agreement_counts_leaves_in_either() {
        let mut a = Agreement::default();
        a.add_data(&json!({"x": 1, "y": "A"}), &json!({"x": "1.0", "z": 2}));
        a.add_data(&json!({"x": 1}), &json!({"x": 1}));
        assert_eq!(
            a,
            Agreement {
                same: 2,
                total: 4,
                identical_documents: 1,
                documents: 2
            }
        );
        assert_eq!(a.rate(), Some(0.5));
        assert_eq!(Agreement::default().rate(), None);
    }
}
