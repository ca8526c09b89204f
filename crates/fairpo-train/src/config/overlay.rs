//! TOML plumbing for configs: overlay merging, `--set key=value` overrides and
//! deserialisation errors that name the offending key.

use serde::de::DeserializeOwned;
use std::path::Path;
use toml::{Table, Value};

/// Errors while reading, merging or overriding a TOML config.
#[derive(Debug, thiserror::Error)]
pub enum TomlError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("{path}: invalid TOML: {message}")]
    Syntax { path: String, message: String },
    /// A `--set` argument is not of the form `key=value`.
    #[error("--set {arg:?}: expected key=value with a dotted key, e.g. train.lr=5e-4")]
    BadOverride { arg: String },
    /// A `--set` path walks through something that is not a table.
    #[error("--set {key}: `{part}` is not a table")]
    NotATable { key: String, part: String },
    /// The merged config does not match the schema (unknown key, wrong type...).
    #[error("{origin}: key `{key}`: {message}")]
    Schema {
        origin: String,
        key: String,
        message: String,
    },
}

/// Reads a TOML file into a table.
pub(crate) fn read_table(path: &Path) -> Result<Table, TomlError> {
    let text = std::fs::read_to_string(path).map_err(|source| TomlError::Read {
        path: path.display().to_string(),
        source,
    })?;
    text.parse::<Table>().map_err(|e| TomlError::Syntax {
        path: path.display().to_string(),
        message: e.to_string().trim().replace('\n', " "),
    })
}

/// Tables that hold one choice among variants (`{ fraction = 0.2 }` or `{ names = [...] }`):
/// an overlay's value replaces them whole, since merging two choices would make neither.
const CHOICE_TABLES: [&str; 1] = ["data.privileged"];

/// Deep-merges `overlay` into `base`: tables merge key by key (except [`CHOICE_TABLES`]),
/// anything else replaces.
pub(crate) fn merge(base: &mut Table, overlay: Table) {
    merge_at(base, overlay, "");
}

fn merge_at(base: &mut Table, overlay: Table, path: &str) {
    for (key, value) in overlay {
        let here = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        match (base.get_mut(&key), value) {
            (Some(Value::Table(b)), Value::Table(o)) if !CHOICE_TABLES.contains(&here.as_str()) => {
                merge_at(b, o, &here)
            }
            (_, v) => {
                base.insert(key, v);
            }
        }
    }
}

/// Parses the value side of `--set`: any TOML value (`0.5`, `true`, `[1, 2]`, `"x"`),
/// and otherwise the raw text as a string (so `--set name=my-run` works unquoted).
fn parse_value(raw: &str) -> Value {
    let doc = format!("v = {raw}");
    match doc.parse::<Table>() {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| Value::String(raw.to_string())),
        Err(_) => Value::String(raw.to_string()),
    }
}

/// Applies one `key.sub=value` override, creating intermediate tables as needed.
pub(crate) fn apply_override(table: &mut Table, arg: &str) -> Result<(), TomlError> {
    let (key, raw) = arg.split_once('=').ok_or_else(|| TomlError::BadOverride {
        arg: arg.to_string(),
    })?;
    let key = key.trim();
    if key.is_empty() || key.split('.').any(str::is_empty) {
        return Err(TomlError::BadOverride {
            arg: arg.to_string(),
        });
    }
    let parts: Vec<&str> = key.split('.').collect();
    let mut cur = table;
    for (i, part) in parts[..parts.len() - 1].iter().enumerate() {
        let entry = cur
            .entry(part.to_string())
            .or_insert_with(|| Value::Table(Table::new()));
        if CHOICE_TABLES.contains(&parts[..=i].join(".").as_str()) {
            // `--set data.privileged.count=16` chooses anew.
            *entry = Value::Table(Table::new());
        }
        cur = match entry {
            Value::Table(t) => t,
            _ => {
                return Err(TomlError::NotATable {
                    key: key.to_string(),
                    part: part.to_string(),
                })
            }
        };
    }
    cur.insert(parts[parts.len() - 1].to_string(), parse_value(raw.trim()));
    Ok(())
}

/// Deserialises a table into `T`, reporting the dotted path of the first bad key.
pub(crate) fn deserialize<T: DeserializeOwned>(table: Table, origin: &str) -> Result<T, TomlError> {
    let value = Value::Table(table);
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let message = inner.to_string().trim().replace('\n', " ");
        // For an unknown field the path ends at the table that holds it; add the field's name.
        let key = match unknown_field_name(&message) {
            Some(field) if path == "." => field,
            _ => path,
        };
        TomlError::Schema {
            origin: origin.to_string(),
            key,
            message,
        }
    })
}

fn unknown_field_name(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    Some(rest.split('`').next()?.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        #[serde(default)]
        lr: f64,
    }
    #[derive(Debug, serde::Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        #[serde(default)]
        name: String,
        train: Inner,
    }

    #[test]
    fn merge_is_deep() {
        let mut a: Table = "x = 1\n[t]\na = 1\nb = 2".parse().unwrap();
        let b: Table = "[t]\nb = 3\nc = 4".parse().unwrap();
        merge(&mut a, b);
        assert_eq!(a["x"].as_integer(), Some(1));
        assert_eq!(a["t"]["a"].as_integer(), Some(1));
        assert_eq!(a["t"]["b"].as_integer(), Some(3));
        assert_eq!(a["t"]["c"].as_integer(), Some(4));
    }

    #[test]
    fn a_choice_table_is_replaced_not_merged() {
        let mut a: Table = "[data]\nroot = \"x\"\nprivileged = { fraction = 0.2 }"
            .parse()
            .unwrap();
        let b: Table = "[data]\nprivileged = { names = [\"cat\"] }"
            .parse()
            .unwrap();
        merge(&mut a, b);
        let p = a["data"]["privileged"].as_table().unwrap();
        assert_eq!(p.keys().collect::<Vec<_>>(), ["names"]);
        assert_eq!(a["data"]["root"].as_str(), Some("x"));
        apply_override(&mut a, "data.privileged.count=16").unwrap();
        let p = a["data"]["privileged"].as_table().unwrap();
        assert_eq!(p.keys().collect::<Vec<_>>(), ["count"]);
    }

    #[test]
    fn overrides_parse_values_and_create_tables() {
        let mut t = Table::new();
        apply_override(&mut t, "train.lr=5e-4").unwrap();
        apply_override(&mut t, "name=my-run").unwrap();
        apply_override(&mut t, "a.b.c=[1, 2]").unwrap();
        apply_override(&mut t, "flag=true").unwrap();
        assert_eq!(t["train"]["lr"].as_float(), Some(5e-4));
        assert_eq!(t["name"].as_str(), Some("my-run"));
        assert_eq!(t["a"]["b"]["c"].as_array().unwrap().len(), 2);
        assert_eq!(t["flag"].as_bool(), Some(true));
        assert!(matches!(
            apply_override(&mut t, "noequals"),
            Err(TomlError::BadOverride { .. })
        ));
        assert!(matches!(
            apply_override(&mut t, "name.x=1"),
            Err(TomlError::NotATable { .. })
        ));
    }

    #[test]
    fn unknown_key_is_named_with_its_path() {
        let t: Table = "[train]\nlrr = 0.1".parse().unwrap();
        let err = deserialize::<Outer>(t, "cfg.toml").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("train.lrr"), "{msg}");
        assert!(msg.contains("cfg.toml"), "{msg}");
        let t: Table = "nme = 'x'\n[train]".parse().unwrap();
        let msg = deserialize::<Outer>(t, "c").unwrap_err().to_string();
        assert!(msg.contains("key `nme`"), "{msg}");
    }

    #[test]
    fn wrong_type_is_named_with_its_path() {
        let t: Table = "[train]\nlr = 'fast'".parse().unwrap();
        let msg = deserialize::<Outer>(t, "c").unwrap_err().to_string();
        assert!(msg.contains("train.lr"), "{msg}");
    }
}
