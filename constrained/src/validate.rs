//! Independent validation of outputs: the `jsonschema` crate on the user's schema, with quire's
//! strict versions of the formats llguidance accepts too loosely.

use jsonschema::paths::{LazyLocation, Location};
use serde_json::Value;

use super::error::{SchemaError, ValidationError};

/// Validates outputs against the user's schema (not the bounded grammar schema).
pub struct OutputValidator {
    validator: jsonschema::Validator,
}

impl std::fmt::Debug for OutputValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OutputValidator")
    }
}

impl OutputValidator {
    #[allow(clippy::result_large_err)] // jsonschema's error type, in its keyword factory
    /// Builds a draft 2020-12 validator that checks formats, with quire's strict `date`,
    /// `date-time`, `time` and `hostname`.
    pub fn new(schema: &Value) -> Result<Self, SchemaError> {
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(true)
            .should_ignore_unknown_formats(false)
            .with_format("date", is_strict_date)
            .with_format("date-time", is_strict_date_time)
            .with_format("time", is_strict_time)
            .with_format("hostname", is_strict_hostname)
            .with_keyword("multipleOf", |_, value, path| {
                let divisor = value
                    .as_number()
                    .and_then(|n| parse_decimal(&n.to_string()))
                    .filter(|(m, _)| *m > 0)
                    .ok_or_else(|| {
                        jsonschema::ValidationError::custom(
                            path.clone(),
                            Location::new(),
                            value,
                            "multipleOf must be a number > 0",
                        )
                    })?;
                Ok(Box::new(ExactMultipleOf {
                    divisor,
                    shown: value.to_string(),
                    path,
                }))
            })
            .build(schema)
            .map_err(|e| SchemaError::Validator(e.to_string()))?;
        Ok(Self { validator })
    }

    /// Parses `output` and validates it. The parsed value when valid.
    pub fn validate_str(&self, output: &str) -> Result<Value, ValidationError> {
        let value: Value =
            serde_json::from_str(output).map_err(|e| ValidationError::NotJson(e.to_string()))?;
        self.validate(&value)?;
        Ok(value)
    }

    /// Validates a parsed output; the first error.
    pub fn validate(&self, value: &Value) -> Result<(), ValidationError> {
        self.validator
            .validate(value)
            .map_err(|e| ValidationError::Schema {
                instance_path: e.instance_path.to_string(),
                // the message without the instance (document content stays out of logs)
                message: e.masked().to_string(),
            })
    }
}

/// `multipleOf` in exact decimal arithmetic. jsonschema 0.33 rejects every negative value
/// (`value < multiple` is "not a multiple") and divides binary floats; outputs are decimal
/// text, so quire checks the decimal digits instead.
struct ExactMultipleOf {
    divisor: (i128, i32),
    shown: String,
    path: Location,
}

impl jsonschema::Keyword for ExactMultipleOf {
    fn validate<'i>(
        &self,
        instance: &'i Value,
        location: &LazyLocation,
    ) -> Result<(), jsonschema::ValidationError<'i>> {
        if self.is_valid(instance) {
            Ok(())
        } else {
            Err(jsonschema::ValidationError::custom(
                self.path.clone(),
                location.into(),
                instance,
                format!("is not a multiple of {}", self.shown),
            ))
        }
    }

    fn is_valid(&self, instance: &Value) -> bool {
        let Value::Number(n) = instance else {
            return true;
        };
        let text = n.to_string();
        match parse_decimal(&text) {
            Some(v) => is_decimal_multiple(v, self.divisor).unwrap_or_else(|| {
                let (q, d) = (n.as_f64().unwrap_or(f64::NAN), to_f64(self.divisor));
                let r = q / d;
                (r - r.round()).abs() < 1e-9
            }),
            None => false,
        }
    }
}

fn to_f64((m, s): (i128, i32)) -> f64 {
    m as f64 * 10f64.powi(-s)
}

/// `text` (a JSON number) as `mantissa × 10^-scale`.
fn parse_decimal(text: &str) -> Option<(i128, i32)> {
    let (mant, exp) = match text.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i32>().ok()?),
        None => (text, 0),
    };
    let (int, frac) = mant.split_once('.').unwrap_or((mant, ""));
    let digits = format!("{int}{frac}");
    let m: i128 = digits.parse().ok()?;
    Some((m, frac.len() as i32 - exp))
}

/// Whether `v` is an integer multiple of `d` (both `mantissa × 10^-scale`); `None` on overflow.
fn is_decimal_multiple(v: (i128, i32), d: (i128, i32)) -> Option<bool> {
    if v.0 == 0 {
        return Some(true);
    }
    let scale = v.1.max(d.1);
    let up = |(m, s): (i128, i32)| -> Option<i128> {
        let k = u32::try_from(scale - s).ok()?;
        m.checked_mul(10i128.checked_pow(k)?)
    };
    let (vv, dd) = (up(v)?, up(d)?);
    Some(dd != 0 && vv % dd == 0)
}

fn two(b: &[u8]) -> Option<u32> {
    if b.len() == 2 && b.iter().all(u8::is_ascii_digit) {
        Some(u32::from(b[0] - b'0') * 10 + u32::from(b[1] - b'0'))
    } else {
        None
    }
}

/// `YYYY-MM-DD`, a real calendar date (Gregorian leap years), year >= 1.
pub fn is_strict_date(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' || !b[..4].iter().all(u8::is_ascii_digit) {
        return false;
    }
    let year: u32 = s[..4].parse().unwrap_or(0);
    let (Some(month), Some(day)) = (two(&b[5..7]), two(&b[8..10])) else {
        return false;
    };
    if year == 0 || !(1..=12).contains(&month) || day == 0 {
        return false;
    }
    let leap = year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400));
    let days = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    day <= days
}

/// RFC 3339 `full-time`: `HH:MM:SS[.frac](Z|+HH:MM|-HH:MM)`, second <= 59 (no leap second).
pub fn is_strict_time(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 9 || b[2] != b':' || b[5] != b':' {
        return false;
    }
    let (Some(h), Some(m), Some(sec)) = (two(&b[0..2]), two(&b[3..5]), two(&b[6..8])) else {
        return false;
    };
    if h > 23 || m > 59 || sec > 59 {
        return false;
    }
    let mut rest = &b[8..];
    if rest.first() == Some(&b'.') {
        let n = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return false;
        }
        rest = &rest[1 + n..];
    }
    match rest {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', oh1, oh2, b':', om1, om2] => {
            matches!((two(&[*oh1, *oh2]), two(&[*om1, *om2])), (Some(oh), Some(om)) if oh <= 23 && om <= 59)
        }
        _ => false,
    }
}

/// RFC 3339 `date-time` with [`is_strict_date`] and [`is_strict_time`].
pub fn is_strict_date_time(s: &str) -> bool {
    s.len() > 11
        && matches!(s.as_bytes()[10], b'T' | b't')
        && s.is_char_boundary(10)
        && is_strict_date(&s[..10])
        && is_strict_time(&s[11..])
}

/// RFC 1123 hostname: at most 253 characters, labels of 1-63 letters, digits and inner
/// hyphens.
pub fn is_strict_hostname(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
                && b[0] != b'-'
                && b[b.len() - 1] != b'-'
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_multiple_of() {
        let v = OutputValidator::new(&serde_json::json!({"type": "number", "multipleOf": 0.01}))
            .unwrap();
        for ok in [
            "-8055.92",
            "0",
            "455971336.51",
            "-0.01",
            "1e2",
            "12.5",
            "1.10",
        ] {
            assert!(v.validate_str(ok).is_ok(), "{ok}");
        }
        for bad in ["0.005", "-8055.921", "1e-3"] {
            assert!(v.validate_str(bad).is_err(), "{bad}");
        }
        let v =
            OutputValidator::new(&serde_json::json!({"type": "integer", "multipleOf": 5})).unwrap();
        assert!(v.validate_str("-15").is_ok());
        assert!(v.validate_str("7").is_err());
    }

    #[test]
    fn strict_formats() {
        assert!(is_strict_date("2024-02-29"));
        assert!(is_strict_date("2000-02-29"));
        assert!(!is_strict_date("1900-02-29"));
        assert!(!is_strict_date("2023-02-29"));
        assert!(!is_strict_date("0000-01-01"));
        assert!(!is_strict_date("2023-04-31"));
        assert!(!is_strict_date("2023-13-01"));
        assert!(is_strict_time("23:59:59Z"));
        assert!(is_strict_time("23:59:59.123+05:30"));
        assert!(!is_strict_time("23:59:60Z"));
        assert!(!is_strict_time("23:59:59"));
        assert!(is_strict_date_time("2024-01-31T10:00:00Z"));
        assert!(!is_strict_date_time("2024-01-31T10:00:60Z"));
        assert!(is_strict_hostname("example.com"));
        assert!(!is_strict_hostname(&format!("{}.com", "a.".repeat(130))));
        assert!(!is_strict_hostname("-a.com"));
    }
}
