//! The typed values of settings, each parsed in one place: from a flag or an environment
//! variable (clap, through `FromStr`) and from the config file (serde, through the same
//! `FromStr` via [`text`]).

use quire_exporters::formats::Format;
use quire_onnx::ep::Provider;
use std::fmt;
use std::str::FromStr;

/// A value given on the command line that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("--mode {0:?} is not an octal file mode like 600")]
    Mode(String),
    #[error("unknown task {0:?}: expected ocr, extract or prompt")]
    Task(String),
    #[error(transparent)]
    Provider(#[from] quire_onnx::ep::ParseProviderError),
    #[error(transparent)]
    Format(#[from] quire_exporters::formats::UnknownFormat),
}

/// Execution providers in order of preference: `cuda,cpu`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Providers(pub Vec<Provider>);

impl FromStr for Providers {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        quire_onnx::ep::EpConfig::parse_list(s)
            .map(Providers)
            .map_err(ValueError::from)
    }
}

impl fmt::Display for Providers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        join(f, self.0.iter().map(|p| p.name()))
    }
}

/// Output formats: `json,jsonl,csv,md`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Formats(pub Vec<Format>);

impl Formats {
    pub fn contains(&self, format: Format) -> bool {
        self.0.contains(&format)
    }
}

impl FromStr for Formats {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        s.split(',')
            .map(str::parse::<Format>)
            .collect::<Result<Vec<_>, _>>()
            .map(Formats)
            .map_err(ValueError::from)
    }
}

impl fmt::Display for Formats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        join(f, self.0.iter().map(|format| format.name()))
    }
}

/// Permissions of output files, written in octal: `640`, `0o640`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode(pub u32);

impl FromStr for Mode {
    type Err = ValueError;
    fn from_str(m: &str) -> Result<Self, ValueError> {
        u32::from_str_radix(m.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .map(Mode)
            .ok_or_else(|| ValueError::Mode(m.to_string()))
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:o}", self.0)
    }
}

/// What to ask the model (`--task`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskName {
    Ocr,
    Extract,
    Prompt,
}

impl FromStr for TaskName {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        match s {
            "ocr" => Ok(TaskName::Ocr),
            "extract" => Ok(TaskName::Extract),
            "prompt" => Ok(TaskName::Prompt),
            other => Err(ValueError::Task(other.to_string())),
        }
    }
}

impl fmt::Display for TaskName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TaskName::Ocr => "ocr",
            TaskName::Extract => "extract",
            TaskName::Prompt => "prompt",
        })
    }
}

/// The password of encrypted PDFs; `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(pub String);

impl FromStr for Password {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Password(s.to_string()))
    }
}

impl fmt::Display for Password {
    /// The password itself: this is what the config file merge writes and reads back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(..)")
    }
}

fn join<'a>(f: &mut fmt::Formatter<'_>, names: impl Iterator<Item = &'a str>) -> fmt::Result {
    for (i, name) in names.enumerate() {
        if i > 0 {
            f.write_str(",")?;
        }
        f.write_str(name)?;
    }
    Ok(())
}

/// Serde for an optional value written as its command-line text (`Display` / `FromStr`), so
/// that the config file takes what the flag takes: `#[serde(default, with = "text")]`. Numbers
/// are read as their decimal text too (`mode = 640`).
pub(crate) mod text {
    use serde::de::{self, Deserializer, Visitor};
    use serde::Serializer;
    use std::fmt::{self, Display};
    use std::marker::PhantomData;
    use std::str::FromStr;

    pub fn serialize<T: Display, S: Serializer>(
        value: &Option<T>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(v) => serializer.collect_str(v),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, T, D>(deserializer: D) -> Result<Option<T>, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        deserializer.deserialize_option(OptionVisitor(PhantomData))
    }

    struct OptionVisitor<T>(PhantomData<T>);

    impl<'de, T: FromStr> Visitor<'de> for OptionVisitor<T>
    where
        T::Err: Display,
    {
        type Value = Option<T>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(TextVisitor(PhantomData)).map(Some)
        }
    }

    struct TextVisitor<T>(PhantomData<T>);

    impl<T: FromStr> Visitor<'_> for TextVisitor<T>
    where
        T::Err: Display,
    {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<T, E> {
            s.parse().map_err(E::custom)
        }
        fn visit_u64<E: de::Error>(self, n: u64) -> Result<T, E> {
            self.visit_str(&n.to_string())
        }
        fn visit_i64<E: de::Error>(self, n: i64) -> Result<T, E> {
            self.visit_str(&n.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_back_what_they_write() {
        for text in ["cpu", "cuda,cpu", "tensorrt,cuda,cpu"] {
            assert_eq!(text.parse::<Providers>().unwrap().to_string(), text);
        }
        for text in ["json", "json,jsonl,csv,md"] {
            assert_eq!(text.parse::<Formats>().unwrap().to_string(), text);
        }
        assert_eq!("0o640".parse::<Mode>().unwrap(), Mode(0o640));
        assert_eq!(Mode(0o640).to_string(), "640");
        assert_eq!(Mode(0o7).to_string().parse::<Mode>().unwrap(), Mode(0o7));
        for text in ["ocr", "extract", "prompt"] {
            assert_eq!(text.parse::<TaskName>().unwrap().to_string(), text);
        }
        assert!("999"
            .parse::<Mode>()
            .unwrap_err()
            .to_string()
            .contains("octal"));
        assert!("7777".parse::<Mode>().is_err());
        assert!("ocrr".parse::<TaskName>().is_err());
        assert!("json,pdf".parse::<Formats>().is_err());
        assert!("cpu,gpu".parse::<Providers>().is_err());
        assert_eq!(format!("{:?}", Password("secret".into())), "Password(..)");
    }
}
