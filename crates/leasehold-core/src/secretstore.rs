//! daprd's two local secret stores, through which a component's
//! `secretKeyRef` metadata is resolved when the sidecar starts.
//!
//! * `secretstores.local.env` reads process environment variables:
//!   secret `NAME` is the variable `<prefix>NAME`, with one key, `NAME`.
//!   Variables that hold a sidecar's own credentials (`APP_API_TOKEN`, every
//!   `DAPR_*`, and leasehold's `LEASEHOLD_ADMIN_TOKEN`) are never read.
//! * `secretstores.local.file` reads a JSON file (`secretsFile`, relative to
//!   the working directory, as daprd opens it). Without `multiValued`, the
//!   document is flattened: nested objects and arrays become one secret per
//!   leaf, named by the path joined with `nestedSeparator` (default `:`),
//!   array items by their index, and each secret has one key named like
//!   itself. With `multiValued` (any of daprd's truthy spellings), each
//!   top-level string is a secret with one key, each top-level object a
//!   secret whose keys are its flattened leaves, and anything else at the
//!   top level is dropped.
//!
//! Leaves are turned into text as daprd does (`fmt.Sprintf("%s", v)`), so a
//! JSON number, boolean or null becomes Go's `%!s(float64=6379)`,
//! `%!s(bool=true)` or `%!s(<nil>)`: write secrets as JSON strings.
//!
//! Two deliberate differences, both where daprd's outcome depends on Go's
//! random map order: two leaves that flatten to the same name are refused
//! (daprd stops flattening at the second, wherever that falls, and keeps
//! what it had), and a missing secret or key is an error (daprd logs it and
//! leaves the value empty). See docs/stores/secretstores.md.
//!
//! Every value is held as a [`Secret`], whose `Debug` hides it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde_json::Value as Json;

use crate::manifest::Env;
use crate::metadata::{Metadata, Secret};

/// The secret store types leasehold has, as `spec.type` names them.
pub const SUPPORTED_TYPES: &[&str] = &["secretstores.local.file", "secretstores.local.env"];

/// Environment variables a secret store never reads: the credentials of
/// the sidecar itself. daprd refuses `APP_API_TOKEN` and every `DAPR_*`
/// variable; leasehold's admin token is its own.
fn env_var_allowed(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    !(upper == "APP_API_TOKEN" || upper == "LEASEHOLD_ADMIN_TOKEN" || upper.starts_with("DAPR_"))
}

/// A `secretstores.*` component, as declared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretStoreComponent {
    /// `metadata.name`: what `auth.secretStore` names.
    pub name: String,
    /// `spec.type`, lower-cased (`secretstores.local.file`).
    pub type_name: String,
    /// `spec.version` as written.
    pub version: String,
    /// `spec.ignoreErrors`: a store that fails to load is left out (and
    /// every reference to it fails) instead of stopping the sidecar.
    pub ignore_errors: bool,
    /// `spec.metadata`, resolved (values, `envRef`s and templates).
    pub metadata: Metadata,
    /// The file it came from.
    pub source: PathBuf,
}

impl SecretStoreComponent {
    /// Whether leasehold has this type of store.
    pub fn is_supported(&self) -> bool {
        SUPPORTED_TYPES.contains(&self.type_name.as_str())
    }
}

/// A loaded secret store.
pub struct SecretStore {
    kind: Kind,
}

enum Kind {
    Env {
        prefix: String,
    },
    File {
        secrets: BTreeMap<String, FileSecret>,
    },
}

/// One secret of a file store: a single value, or (multi-valued) keys.
enum FileSecret {
    Value(Secret),
    Keys(BTreeMap<String, Secret>),
}

impl fmt::Debug for SecretStore {
    // The kind and a count only: the values are secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Env { .. } => f.write_str("SecretStore(local.env)"),
            Kind::File { secrets } => {
                write!(f, "SecretStore(local.file, {} secrets)", secrets.len())
            }
        }
    }
}

/// Why a secret could not be read; the caller adds the component, field
/// and store. Lowercase, no trailing period, and never the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupError(pub String);

impl fmt::Display for LookupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl SecretStore {
    /// Load the store `component` declares. Only [`SUPPORTED_TYPES`] load.
    /// Errors name the metadata field or file, never a secret value.
    pub fn open(component: &SecretStoreComponent) -> Result<SecretStore, String> {
        match component.type_name.as_str() {
            "secretstores.local.env" => Ok(SecretStore {
                kind: Kind::Env {
                    // Matched against variable names case-sensitively, as
                    // daprd does on Linux.
                    prefix: component
                        .metadata
                        .get("prefix")
                        .unwrap_or_default()
                        .to_owned(),
                },
            }),
            "secretstores.local.file" => open_file(&component.metadata),
            other => Err(format!(
                "leasehold has no secret store of type {other}; it has {}",
                SUPPORTED_TYPES.join(" and ")
            )),
        }
    }

    /// The value of `key` in secret `name` (daprd's `GetSecret`, then the
    /// key; the caller passes the secret's name when `secretKeyRef.key` is
    /// empty). An absent or empty value is an error.
    pub fn lookup(&self, name: &str, key: &str, env: &dyn Env) -> Result<Secret, LookupError> {
        let fail = |message: String| Err(LookupError(message));
        match &self.kind {
            Kind::Env { prefix } => {
                let variable = format!("{prefix}{name}");
                if !env_var_allowed(&variable) {
                    return fail(format!(
                        "the environment variable {variable} is never read through a secret store: it holds a sidecar's own credentials (APP_API_TOKEN, DAPR_*, LEASEHOLD_ADMIN_TOKEN)"
                    ));
                }
                if key != name {
                    return fail(format!(
                        "secret {name:?} has one key, named like the secret, so key {key:?} does not exist (leave secretKeyRef.key out)"
                    ));
                }
                match env.var(&variable) {
                    Some(value) => Ok(Secret::new(value)),
                    None => fail(format!(
                        "the environment variable {variable} is unset or empty"
                    )),
                }
            }
            Kind::File { secrets } => {
                let Some(secret) = secrets.get(name) else {
                    return fail(format!("there is no secret {name:?} in its secretsFile"));
                };
                let value = match secret {
                    FileSecret::Value(value) if key == name => value,
                    FileSecret::Value(_) => {
                        return fail(format!(
                            "secret {name:?} has one key, named like the secret, so key {key:?} does not exist (leave secretKeyRef.key out, or set multiValued)"
                        ));
                    }
                    FileSecret::Keys(keys) => match keys.get(key) {
                        Some(value) => value,
                        None => {
                            let names: Vec<&str> = keys.keys().map(String::as_str).collect();
                            return fail(format!(
                                "secret {name:?} has no key {key:?} (its keys: {})",
                                if names.is_empty() {
                                    "none".to_owned()
                                } else {
                                    names.join(", ")
                                }
                            ));
                        }
                    },
                };
                if value.is_empty() {
                    return fail(format!("secret {name:?} key {key:?} is empty"));
                }
                Ok(value.clone())
            }
        }
    }
}

/// Go's `kit/strings.IsTruthy`, which daprd decodes boolean metadata of
/// contrib components with: anything else is false, never an error.
fn is_truthy(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "y" | "yes" | "true" | "t" | "on" | "1"
    )
}

fn open_file(metadata: &Metadata) -> Result<SecretStore, String> {
    let path = match metadata.get("secretsFile") {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => {
            return Err(
                "metadata `secretsFile` is required: the path of a JSON file of secrets".to_owned(),
            );
        }
    };
    let separator = match metadata.get("nestedSeparator") {
        Some(separator) if !separator.is_empty() => separator,
        _ => ":",
    };
    let multi_valued = metadata.get("multiValued").is_some_and(is_truthy);
    let bytes = std::fs::read(&path).map_err(|err| {
        format!(
            "metadata `secretsFile`: cannot read {}: {err}",
            path.display()
        )
    })?;
    let secrets = parse_secrets(&bytes, separator, multi_valued)
        .map_err(|err| format!("metadata `secretsFile`: {}: {err}", path.display()))?;
    Ok(SecretStore {
        kind: Kind::File { secrets },
    })
}

/// The secrets of a secrets file's text.
fn parse_secrets(
    bytes: &[u8],
    separator: &str,
    multi_valued: bool,
) -> Result<BTreeMap<String, FileSecret>, String> {
    // Go's decoder replaces invalid UTF-8 instead of refusing it.
    let text = String::from_utf8_lossy(bytes);
    // The error says where, never what: the text is secret.
    let document: Json = serde_json::from_str(&text).map_err(|err| {
        format!(
            "not valid JSON (line {}, column {})",
            err.line(),
            err.column()
        )
    })?;
    let top = match document {
        Json::Object(top) => top,
        // Go leaves the map nil for `null`: a store with no secrets.
        Json::Null => return Ok(BTreeMap::new()),
        _ => return Err("the JSON document is not an object".to_owned()),
    };
    let mut secrets = BTreeMap::new();
    if multi_valued {
        for (name, value) in top {
            match value {
                Json::String(value) => {
                    secrets.insert(name, FileSecret::Value(Secret::new(value)));
                }
                Json::Object(object) => {
                    let mut keys = BTreeMap::new();
                    let mut path = Vec::new();
                    flatten_object(&object, &mut path, separator, &mut keys)?;
                    secrets.insert(name, FileSecret::Keys(keys));
                }
                // daprd drops numbers, booleans, arrays and null here.
                _ => {}
            }
        }
    } else {
        let mut flat = BTreeMap::new();
        let mut path = Vec::new();
        flatten_object(&top, &mut path, separator, &mut flat)?;
        secrets = flat
            .into_iter()
            .map(|(name, value)| (name, FileSecret::Value(value)))
            .collect();
    }
    Ok(secrets)
}

fn flatten_object(
    object: &serde_json::Map<String, Json>,
    path: &mut Vec<String>,
    separator: &str,
    out: &mut BTreeMap<String, Secret>,
) -> Result<(), String> {
    for (key, value) in object {
        path.push(key.clone());
        flatten(value, path, separator, out)?;
        path.pop();
    }
    Ok(())
}

fn flatten(
    value: &Json,
    path: &mut Vec<String>,
    separator: &str,
    out: &mut BTreeMap<String, Secret>,
) -> Result<(), String> {
    match value {
        Json::Object(object) => flatten_object(object, path, separator, out),
        Json::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                path.push(index.to_string());
                flatten(item, path, separator, out)?;
                path.pop();
            }
            Ok(())
        }
        leaf => {
            let name = path.join(separator);
            if out.contains_key(&name) {
                return Err(format!(
                    "two values flatten to the secret name {name:?} (nestedSeparator {separator:?})"
                ));
            }
            out.insert(name, Secret::new(go_text(leaf)));
            Ok(())
        }
    }
}

/// A JSON leaf as Go's `fmt.Sprintf("%s", v)` prints what `encoding/json`
/// decoded it to.
fn go_text(leaf: &Json) -> String {
    match leaf {
        Json::String(text) => text.clone(),
        Json::Bool(value) => format!("%!s(bool={value})"),
        Json::Null => "%!s(<nil>)".to_owned(),
        Json::Number(number) => {
            let value = number.as_f64().unwrap_or(f64::NAN);
            format!("%!s(float64={})", go_float(value))
        }
        // Objects and arrays are flattened before they get here.
        Json::Array(_) | Json::Object(_) => String::new(),
    }
}

/// A float64 as Go's `%v` prints it: `strconv.FormatFloat(f, 'g', -1, 64)`,
/// the shortest digits that read back the same, in exponent form when the
/// exponent is below -4 or at least 6 (`1e+06`, `1.5e-05`).
fn go_float(value: f64) -> String {
    if value.is_nan() {
        return "NaN".to_owned();
    }
    if value.is_infinite() {
        return if value > 0.0 { "+Inf" } else { "-Inf" }.to_owned();
    }
    // Rust's `{:e}` gives the same shortest digits: `d.ddde±x`.
    let scientific = format!("{:e}", value.abs());
    let (mantissa, exponent) = scientific
        .split_once('e')
        .unwrap_or((scientific.as_str(), "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let sign = if value.is_sign_negative() { "-" } else { "" };
    if digits == "0" {
        return format!("{sign}0");
    }
    if !(-4..6).contains(&exponent) {
        let (first, rest) = digits.split_at(1);
        let fraction = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let exponent_sign = if exponent < 0 { '-' } else { '+' };
        return format!(
            "{sign}{first}{fraction}e{exponent_sign}{:02}",
            exponent.abs()
        );
    }
    let point = exponent + 1; // digits before the decimal point
    let text = if point <= 0 {
        format!("0.{}{digits}", "0".repeat(point.unsigned_abs() as usize))
    } else if point as usize >= digits.len() {
        format!("{digits}{}", "0".repeat(point as usize - digits.len()))
    } else {
        let (whole, fraction) = digits.split_at(point as usize);
        format!("{whole}.{fraction}")
    };
    format!("{sign}{text}")
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn store(text: &str, separator: &str, multi: bool) -> SecretStore {
        SecretStore {
            kind: Kind::File {
                secrets: parse_secrets(text.as_bytes(), separator, multi).unwrap(),
            },
        }
    }

    fn get(store: &SecretStore, name: &str, key: &str) -> Result<String, String> {
        store
            .lookup(name, key, &HashMap::new())
            .map(|secret| secret.expose().to_owned())
            .map_err(|err| err.0)
    }

    const NESTED: &str = r#"{
        "redisPassword": "pw",
        "redis": {"password": "nested-pw", "tls": {"ca": "ca-text"}},
        "hosts": ["a:1", {"name": "b"}],
        "port": 6379,
        "ratio": 0.5,
        "on": true,
        "nothing": null,
        "empty": ""
    }"#;

    #[test]
    fn a_single_valued_file_is_flattened_with_the_separator() {
        let s = store(NESTED, ":", false);
        assert_eq!(get(&s, "redisPassword", "redisPassword").unwrap(), "pw");
        assert_eq!(
            get(&s, "redis:password", "redis:password").unwrap(),
            "nested-pw"
        );
        assert_eq!(get(&s, "redis:tls:ca", "redis:tls:ca").unwrap(), "ca-text");
        assert_eq!(get(&s, "hosts:0", "hosts:0").unwrap(), "a:1");
        assert_eq!(get(&s, "hosts:1:name", "hosts:1:name").unwrap(), "b");
        // An object is not a secret of its own without multiValued.
        assert!(
            get(&s, "redis", "redis")
                .unwrap_err()
                .contains("no secret \"redis\"")
        );
        // One key per secret, named like it.
        let err = get(&s, "redisPassword", "password").unwrap_err();
        assert!(err.contains("has one key"), "{err}");
        let err = get(&s, "empty", "empty").unwrap_err();
        assert!(err.contains("is empty"), "{err}");

        let s = store(NESTED, ".", false);
        assert_eq!(get(&s, "redis.tls.ca", "redis.tls.ca").unwrap(), "ca-text");
        assert!(get(&s, "redis:tls:ca", "redis:tls:ca").is_err());
    }

    #[test]
    fn leaves_that_are_not_strings_read_as_go_prints_them() {
        let s = store(NESTED, ":", false);
        assert_eq!(get(&s, "port", "port").unwrap(), "%!s(float64=6379)");
        assert_eq!(get(&s, "ratio", "ratio").unwrap(), "%!s(float64=0.5)");
        assert_eq!(get(&s, "on", "on").unwrap(), "%!s(bool=true)");
        assert_eq!(get(&s, "nothing", "nothing").unwrap(), "%!s(<nil>)");
    }

    #[test]
    fn go_float_formatting() {
        for (value, text) in [
            (0.0, "0"),
            (-0.0, "-0"),
            (1.0, "1"),
            (6379.0, "6379"),
            (123456.0, "123456"),
            (1234567.0, "1.234567e+06"),
            (1e6, "1e+06"),
            (1e21, "1e+21"),
            (0.5, "0.5"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (-2.25, "-2.25"),
            (12345678901234567890.0, "1.2345678901234567e+19"),
            (1e100, "1e+100"),
            (100.5, "100.5"),
        ] {
            assert_eq!(go_float(value), text, "{value}");
        }
    }

    #[test]
    fn multi_valued_files_keep_top_level_objects_as_secrets_with_keys() {
        let s = store(NESTED, ":", true);
        assert_eq!(get(&s, "redis", "password").unwrap(), "nested-pw");
        assert_eq!(get(&s, "redis", "tls:ca").unwrap(), "ca-text");
        assert_eq!(get(&s, "redisPassword", "redisPassword").unwrap(), "pw");
        let err = get(&s, "redis", "user").unwrap_err();
        assert!(
            err.contains("no key \"user\" (its keys: password, tls:ca)"),
            "{err}"
        );
        // Top-level numbers, booleans, arrays and null are dropped.
        for dropped in ["port", "on", "hosts", "nothing"] {
            assert!(get(&s, dropped, dropped).is_err(), "{dropped}");
        }
        // Nested paths are not top-level secrets in this mode.
        assert!(get(&s, "redis:password", "redis:password").is_err());
    }

    #[test]
    fn duplicate_flattened_names_and_bad_files_are_refused() {
        let err = parse_secrets(br#"{"a:b": "1", "a": {"b": "2"}}"#, ":", false)
            .err()
            .unwrap();
        assert!(err.contains("\"a:b\""), "{err}");
        // With another separator the same file is fine.
        assert!(parse_secrets(br#"{"a:b": "1", "a": {"b": "2"}}"#, "/", false).is_ok());
        let err = parse_secrets(b"[1, 2]", ":", false).err().unwrap();
        assert!(err.contains("not an object"), "{err}");
        let err = parse_secrets(b"{\"pw\": \"hunter2\",}", ":", false)
            .err()
            .unwrap();
        assert!(err.contains("line 1"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        assert!(parse_secrets(b"null", ":", false).unwrap().is_empty());
        // Duplicate JSON keys: the last one wins, as in Go.
        let s = store(r#"{"a": "1", "a": "2"}"#, ":", false);
        assert_eq!(get(&s, "a", "a").unwrap(), "2");
        // Invalid UTF-8 becomes U+FFFD, as in Go.
        let s = SecretStore {
            kind: Kind::File {
                secrets: parse_secrets(b"{\"a\": \"x\xffy\"}", ":", false).unwrap(),
            },
        };
        assert_eq!(get(&s, "a", "a").unwrap(), "x\u{fffd}y");
    }

    #[test]
    fn truthy_spellings() {
        for yes in ["y", "YES", "true", "T", "on", " 1 "] {
            assert!(is_truthy(yes), "{yes}");
        }
        for no in ["", "no", "false", "2", "yess", "enabled"] {
            assert!(!is_truthy(no), "{no}");
        }
    }

    fn component(type_name: &str, pairs: &[(&str, &str)]) -> SecretStoreComponent {
        SecretStoreComponent {
            name: "secrets".to_owned(),
            type_name: type_name.to_owned(),
            version: "v1".to_owned(),
            ignore_errors: false,
            metadata: Metadata::from_pairs(pairs.iter().copied()),
            source: PathBuf::from("s.yaml"),
        }
    }

    #[test]
    fn the_env_store_reads_prefixed_variables_and_never_credentials() {
        let env: HashMap<String, String> = [
            ("APP_REDIS_PASSWORD", "pw"),
            ("REDIS_PASSWORD", "unprefixed"),
            ("DAPR_API_TOKEN", "t"),
            ("APP_API_TOKEN", "t"),
            ("LEASEHOLD_ADMIN_TOKEN", "t"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let plain = SecretStore::open(&component("secretstores.local.env", &[])).unwrap();
        let read = |store: &SecretStore, name: &str, key: &str| {
            store
                .lookup(name, key, &env)
                .map(|s| s.expose().to_owned())
                .map_err(|e| e.0)
        };
        assert_eq!(
            read(&plain, "REDIS_PASSWORD", "REDIS_PASSWORD").unwrap(),
            "unprefixed"
        );
        for refused in [
            "DAPR_API_TOKEN",
            "dapr_api_token",
            "APP_API_TOKEN",
            "LEASEHOLD_ADMIN_TOKEN",
        ] {
            let err = read(&plain, refused, refused).unwrap_err();
            assert!(err.contains("never read"), "{err}");
        }
        assert!(
            read(&plain, "MISSING", "MISSING")
                .unwrap_err()
                .contains("unset or empty")
        );
        assert!(
            read(&plain, "REDIS_PASSWORD", "password")
                .unwrap_err()
                .contains("has one key")
        );

        let prefixed =
            SecretStore::open(&component("secretstores.local.env", &[("PREFIX", "APP_")])).unwrap();
        assert_eq!(
            read(&prefixed, "REDIS_PASSWORD", "REDIS_PASSWORD").unwrap(),
            "pw"
        );
        // The prefix is case-sensitive, as on Linux in daprd.
        let lower =
            SecretStore::open(&component("secretstores.local.env", &[("prefix", "app_")])).unwrap();
        assert!(read(&lower, "REDIS_PASSWORD", "REDIS_PASSWORD").is_err());
        // The check covers the prefixed name.
        let dapr = SecretStore::open(&component("secretstores.local.env", &[("prefix", "DAPR_")]))
            .unwrap();
        assert!(
            read(&dapr, "API_TOKEN", "API_TOKEN")
                .unwrap_err()
                .contains("never read")
        );
    }

    #[test]
    fn the_file_store_needs_a_readable_secrets_file() {
        let err = SecretStore::open(&component("secretstores.local.file", &[])).unwrap_err();
        assert!(err.contains("`secretsFile` is required"), "{err}");
        let err = SecretStore::open(&component(
            "secretstores.local.file",
            &[("secretsFile", "/nonexistent/secrets.json")],
        ))
        .unwrap_err();
        assert!(err.contains("/nonexistent/secrets.json"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.json");
        std::fs::write(&path, r#"{"redis": {"password": "pw"}}"#).unwrap();
        let path = path.to_str().unwrap();
        let single = SecretStore::open(&component(
            "secretstores.local.file",
            &[("SECRETSFILE", path)],
        ))
        .unwrap();
        assert_eq!(
            get(&single, "redis:password", "redis:password").unwrap(),
            "pw"
        );
        let multi = SecretStore::open(&component(
            "secretstores.local.file",
            &[
                ("secretsFile", path),
                ("multiValued", "TRUE"),
                ("nestedSeparator", ""),
            ],
        ))
        .unwrap();
        assert_eq!(get(&multi, "redis", "password").unwrap(), "pw");
        assert!(!format!("{multi:?}").contains("pw"));
    }

    #[test]
    fn other_types_are_named_with_what_is_supported() {
        let vault = component("secretstores.hashicorp.vault", &[]);
        assert!(!vault.is_supported());
        let err = SecretStore::open(&vault).unwrap_err();
        assert_eq!(
            err,
            "leasehold has no secret store of type secretstores.hashicorp.vault; it has secretstores.local.file and secretstores.local.env"
        );
    }
}
