//! Component metadata: the `name`/`value` pairs under `spec.metadata`.
//!
//! Names are matched case-insensitively and values are strings, as daprd
//! decodes them. [`MetadataReader`] reads typed fields and collects every
//! problem, so a start-up error lists them all at once.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::duration::parse_metadata_duration;

/// A metadata value that must never reach a log line or a `Debug` print.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wrap a value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value itself, for the one place that sends it to the backend.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the value is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("Secret(\"\")")
        } else {
            f.write_str("Secret(***)")
        }
    }
}

/// One metadata value: as written, or resolved through a secret store.
#[derive(Clone, PartialEq, Eq)]
enum Value {
    Plain(String),
    Secret(Secret),
}

impl Value {
    fn as_str(&self) -> &str {
        match self {
            Value::Plain(value) => value,
            Value::Secret(secret) => secret.expose(),
        }
    }
}

/// The metadata of one component: names as written, values resolved.
///
/// A value that came from a secret store (`secretKeyRef`) is kept as a
/// [`Secret`]: [`MetadataReader`] leaves it out of its error messages, and
/// [`Metadata::secret_values`] lists such values so that a process can keep
/// them out of its logs.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    entries: Vec<(String, Value)>,
}

impl fmt::Debug for Metadata {
    // Values can hold passwords and connection strings: print names only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(self.entries.iter().map(|(name, _)| name))
            .finish()
    }
}

impl Metadata {
    /// Build from pairs; a later pair with the same name (ignoring case)
    /// wins, as in a Go map.
    pub fn from_pairs<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let mut metadata = Metadata::default();
        for (name, value) in pairs {
            metadata.insert(name.into(), value.into());
        }
        metadata
    }

    /// Set `name` to `value`, replacing an entry of the same name.
    pub fn insert(&mut self, name: String, value: String) {
        self.set(name, Value::Plain(value));
    }

    /// Set `name` to a value read from a secret store, replacing an entry of
    /// the same name.
    pub fn insert_secret(&mut self, name: String, value: Secret) {
        self.set(name, Value::Secret(value));
    }

    fn set(&mut self, name: String, value: Value) {
        match self
            .entries
            .iter_mut()
            .find(|(existing, _)| existing.eq_ignore_ascii_case(&name))
        {
            Some(entry) => entry.1 = value,
            None => self.entries.push((name, value)),
        }
    }

    /// The value of `name`, matched case-insensitively.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.entry(name).map(Value::as_str)
    }

    fn entry(&self, name: &str) -> Option<&Value> {
        self.entries
            .iter()
            .find(|(existing, _)| existing.eq_ignore_ascii_case(name))
            .map(|(_, value)| value)
    }

    /// Whether `name` is present (case-insensitively).
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Whether the value of `name` came from a secret store.
    pub fn is_secret(&self, name: &str) -> bool {
        matches!(self.entry(name), Some(Value::Secret(_)))
    }

    /// The names as written in the file.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(name, _)| name.as_str())
    }

    /// Every value that came from a secret store.
    pub fn secret_values(&self) -> impl Iterator<Item = &Secret> {
        self.entries.iter().filter_map(|(_, value)| match value {
            Value::Secret(secret) => Some(secret),
            Value::Plain(_) => None,
        })
    }
}

/// One problem with one metadata field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The metadata name.
    pub field: String,
    /// What is wrong with it, lowercase, no trailing period.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "metadata `{}`: {}", self.field, self.message)
    }
}

/// Parse a boolean as Go's `strconv.ParseBool` does.
pub fn parse_go_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Reads typed fields out of [`Metadata`] and collects every problem.
#[derive(Debug)]
pub struct MetadataReader<'a> {
    metadata: &'a Metadata,
    errors: Vec<FieldError>,
}

impl<'a> MetadataReader<'a> {
    /// Start reading.
    pub fn new(metadata: &'a Metadata) -> Self {
        MetadataReader {
            metadata,
            errors: Vec::new(),
        }
    }

    /// Record a problem found by the caller.
    pub fn error(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(FieldError {
            field: field.to_owned(),
            message: message.into(),
        });
    }

    /// The raw value, if present.
    pub fn raw(&self, field: &str) -> Option<&'a str> {
        self.metadata.get(field)
    }

    /// A string; an empty value counts as absent.
    pub fn string(&self, field: &str) -> Option<String> {
        self.metadata
            .get(field)
            .filter(|value| !value.is_empty())
            .map(str::to_owned)
    }

    /// A secret string; an empty value counts as absent.
    pub fn secret(&self, field: &str) -> Option<Secret> {
        self.string(field).map(Secret)
    }

    /// A required string.
    pub fn required(&mut self, field: &str) -> Option<String> {
        let value = self.string(field);
        if value.is_none() {
            self.error(field, "is required and empty or missing");
        }
        value
    }

    /// How an error message shows the value of `field`: quoted, or not at
    /// all when it came from a secret store.
    fn shown(&self, field: &str, raw: &str) -> String {
        if self.metadata.is_secret(field) {
            "the value from the secret store".to_owned()
        } else {
            format!("{raw:?}")
        }
    }

    /// A boolean in Go's spellings (`true`, `1`, `T`, ...).
    pub fn bool(&mut self, field: &str) -> Option<bool> {
        let raw = self.string(field)?;
        let parsed = parse_go_bool(&raw);
        if parsed.is_none() {
            let shown = self.shown(field, &raw);
            self.error(
                field,
                format!("{shown} is not a boolean (use true or false)"),
            );
        }
        parsed
    }

    /// A number; surrounding spaces are refused, as daprd refuses them.
    pub fn number<T>(&mut self, field: &str) -> Option<T>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        let raw = self.string(field)?;
        match raw.parse::<T>() {
            Ok(value) => Some(value),
            Err(err) => {
                let shown = self.shown(field, &raw);
                self.error(field, format!("{shown} is not a valid number: {err}"));
                None
            }
        }
    }

    /// A duration: an integer is milliseconds, otherwise a Go duration
    /// (`"5s"`, `"1m30s"`).
    pub fn duration(&mut self, field: &str) -> Option<Duration> {
        let raw = self.string(field)?;
        match parse_metadata_duration(&raw) {
            Ok(value) => Some(value),
            Err(err) => {
                self.duration_error(field, err);
                None
            }
        }
    }

    /// A duration given in whole seconds or as a Go duration string.
    pub fn seconds_or_duration(&mut self, field: &str) -> Option<Duration> {
        let raw = self.string(field)?;
        if let Ok(seconds) = raw.parse::<u64>() {
            return Some(Duration::from_secs(seconds));
        }
        match crate::duration::parse_go_duration(&raw) {
            Ok(value) => Some(value),
            Err(err) => {
                self.duration_error(field, err);
                None
            }
        }
    }

    /// The duration parsers quote the value in their messages.
    fn duration_error(&mut self, field: &str, message: String) {
        if self.metadata.is_secret(field) {
            self.error(field, "the value from the secret store is not a duration");
        } else {
            self.error(field, message);
        }
    }

    /// The problems found, if any.
    pub fn finish(self) -> Result<(), Vec<FieldError>> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(self.errors)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_case_insensitive_and_last_wins() {
        let md = Metadata::from_pairs([("redisHost", "a"), ("REDISHOST", "b")]);
        assert_eq!(md.get("redishost"), Some("b"));
        assert_eq!(md.names().count(), 1);
    }

    #[test]
    fn reader_collects_every_problem() {
        let md = Metadata::from_pairs([
            ("enableTLS", "yes"),
            ("redisDB", "1 "),
            ("dialTimeout", "5 parsecs"),
            ("poolSize", "8"),
        ]);
        let mut reader = MetadataReader::new(&md);
        assert_eq!(reader.bool("enableTLS"), None);
        assert_eq!(reader.number::<u32>("redisDB"), None);
        assert_eq!(reader.duration("dialTimeout"), None);
        assert_eq!(reader.number::<u32>("poolSize"), Some(8));
        assert_eq!(reader.required("redisHost"), None);
        let errors = reader.finish().unwrap_err();
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["enableTLS", "redisDB", "dialTimeout", "redisHost"]);
        assert!(errors[0].to_string().starts_with("metadata `enableTLS`: "));
    }

    #[test]
    fn secrets_do_not_print() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), "Secret(***)");
        let md = Metadata::from_pairs([("redisPassword", "hunter2")]);
        assert!(!format!("{md:?}").contains("hunter2"));
    }

    #[test]
    fn values_from_secret_stores_stay_out_of_reader_errors() {
        let mut md = Metadata::from_pairs([("plain", "x1")]);
        for field in ["enableTLS", "redisDB", "dialTimeout", "timeout"] {
            md.insert_secret(field.to_owned(), Secret::new("s3cr3t-value"));
        }
        assert!(md.is_secret("ENABLETLS"));
        assert!(!md.is_secret("plain"));
        assert_eq!(md.get("redisdb"), Some("s3cr3t-value"));
        assert_eq!(md.secret_values().count(), 4);
        let mut reader = MetadataReader::new(&md);
        assert_eq!(reader.bool("enableTLS"), None);
        assert_eq!(reader.number::<u32>("redisDB"), None);
        assert_eq!(reader.duration("dialTimeout"), None);
        assert_eq!(reader.seconds_or_duration("timeout"), None);
        assert_eq!(reader.bool("plain"), None);
        let errors = reader.finish().unwrap_err();
        assert_eq!(errors.len(), 5);
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert!(text[..4].iter().all(|e| !e.contains("s3cr3t")), "{text:?}");
        assert!(
            text[0].contains("the value from the secret store"),
            "{text:?}"
        );
        // A plain value is still quoted, so the user sees what is wrong.
        assert!(text[4].contains("\"x1\""), "{text:?}");
        // Replacing a secret with a plain value clears the mark.
        md.insert("enableTLS".to_owned(), "true".to_owned());
        assert!(!md.is_secret("enableTLS"));
    }

    #[test]
    fn go_bools() {
        for t in ["1", "t", "T", "true", "TRUE", "True"] {
            assert_eq!(parse_go_bool(t), Some(true));
        }
        for f in ["0", "f", "F", "false", "FALSE", "False"] {
            assert_eq!(parse_go_bool(f), Some(false));
        }
        assert_eq!(parse_go_bool("yes"), None);
    }
}
