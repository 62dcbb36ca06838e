//! The config file: fills the settings no flag or environment variable gave. Generic over the
//! settings struct: its serialized form names every setting (absent ones as `null`), so a key
//! of the file is either one of them or an error, and is taken only where the value is absent.

use super::SettingsError;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};
use std::path::Path;

/// `args` with the settings of the TOML file at `path` filled in where `args` has none.
pub fn fill_from_file<T: Serialize + DeserializeOwned>(
    args: T,
    path: &Path,
) -> Result<T, SettingsError> {
    let file = path.to_path_buf();
    let text = std::fs::read_to_string(path).map_err(|source| SettingsError::ReadConfig {
        path: file.clone(),
        source,
    })?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| SettingsError::ConfigSyntax {
        path: file.clone(),
        message: e.to_string(),
    })?;
    let mut settings = to_map(&args).map_err(|message| SettingsError::ConfigMerge {
        path: file.clone(),
        message,
    })?;
    for (key, value) in table {
        let Some(slot) = settings.get_mut(&key) else {
            return Err(SettingsError::UnknownKey { key, path: file });
        };
        let value = serde_json::to_value(&value).map_err(|e| SettingsError::ConfigValue {
            key: key.clone(),
            path: file.clone(),
            message: e.to_string(),
        })?;
        // Each key is checked on its own, so that a bad value is named even when a flag wins.
        let alone = Map::from_iter([(key.clone(), value.clone())]);
        if let Err(e) = serde_json::from_value::<T>(Value::Object(alone)) {
            return Err(SettingsError::ConfigValue {
                key,
                path: file,
                message: e.to_string(),
            });
        }
        if slot.is_null() {
            *slot = value;
        }
    }
    serde_json::from_value(Value::Object(settings)).map_err(|e| SettingsError::ConfigMerge {
        path: file,
        message: e.to_string(),
    })
}

fn to_map<T: Serialize>(args: &T) -> Result<Map<String, Value>, String> {
    match serde_json::to_value(args).map_err(|e| e.to_string())? {
        Value::Object(map) => Ok(map),
        other => Err(format!("settings serialize to {other}, not a table")),
    }
}

/// The config file keys of `T`: every setting it holds.
pub fn keys<T: Serialize + Default>() -> Vec<String> {
    to_map(&T::default())
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}
