//! The JSON form of the protobuf messages both HTTP APIs carry, with one
//! set of rules: the proto3 JSON mapping as daprd's protojson applies it.
//!
//! Decoding:
//! * the body is one JSON object (an empty or blank body is an error, as in
//!   protojson), with nothing after it;
//! * a field may be named by its JSON name (`resourceId`) or its proto name
//!   (`resource_id`); naming one field twice, by either name, is refused;
//! * `null` is the field's default;
//! * integers are JSON numbers or strings holding a JSON number, integral
//!   and in range (`7`, `7.0`, `"1e1"`; not `" 7 "`, `"+7"` or `7.5`);
//! * enums are their names or their numbers;
//! * fields the message does not have are ignored on the Dapr routes (as
//!   daprd does) and refused on leasehold.v1's, where a misspelt `waitMs`
//!   should not silently mean "do not wait".
//!
//! Encoding writes every field (daprd's `EmitUnpopulated`), 64-bit
//! integers as strings, and enums by name unless a message says otherwise.
//!
//! Every refusal names the field.

use std::fmt::{self, Write as _};

use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::Value;

/// What to do with a field the message does not have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unknown {
    /// Skip it (the Dapr routes, as daprd).
    Ignore,
    /// Refuse the body (leasehold.v1).
    Refuse,
}

/// A decoded JSON object, read field by field.
#[derive(Debug)]
pub(crate) struct Object {
    fields: Vec<(String, Value)>,
    used: Vec<bool>,
}

/// A message that can be read from a JSON object.
pub(crate) trait FromJson: Sized {
    /// Read every field of the message from `object`.
    fn from_json(object: &mut Object) -> Result<Self, String>;
}

/// A message that can be written as a JSON object.
pub(crate) trait ToJson {
    /// Write every field of the message into `out`.
    fn to_json(&self, out: &mut Writer);
}

/// Decode `body` as message `M`.
pub(crate) fn decode<M: FromJson>(body: &[u8], unknown: Unknown) -> Result<M, String> {
    let mut object = Object::parse(body)?;
    let message = M::from_json(&mut object)?;
    object.finish(unknown)?;
    Ok(message)
}

/// Encode `message` as a JSON object.
pub(crate) fn encode<M: ToJson + ?Sized>(message: &M) -> String {
    let mut out = Writer::default();
    message.to_json(&mut out);
    out.finish()
}

/// `resource_id` → `resourceId`, the proto3 JSON name of a proto field
/// (`r#type` is `type`).
pub(crate) fn json_name(proto: &str) -> String {
    let proto = proto.strip_prefix("r#").unwrap_or(proto);
    let mut name = String::with_capacity(proto.len());
    let mut upper = false;
    for c in proto.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            name.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            name.push(c);
        }
    }
    name
}

/// Implement [`FromJson`] for protobuf request messages: each listed field
/// is read by its kind (`string`, `int32`, `uint32`,
/// `uint64`; an enum as `[Type]`); the
/// fields not listed (those the URL carries) keep their defaults.
macro_rules! from_json {
    ($($message:ty { $($field:ident: $kind:tt),* $(,)? })*) => {$(
        impl $crate::http::json::FromJson for $message {
            // Whether fields are left to their defaults depends on the message.
            #[allow(clippy::needless_update)]
            fn from_json(object: &mut $crate::http::json::Object) -> Result<Self, String> {
                Ok(Self {
                    $($field: from_json!(@field object, stringify!($field), $kind),)*
                    ..Default::default()
                })
            }
        }
    )*};
    (@field $object:ident, $name:expr, [$enum:ty]) => {{
        let names: Vec<&str> = (0..)
            .map_while(|n| <$enum>::try_from(n).ok().map(|e| e.as_str_name()))
            .collect();
        $object.enumeration($name, &names)?
    }};
    (@field $object:ident, $name:expr, $kind:ident) => { $object.$kind($name)? };
}

/// Implement [`ToJson`] for protobuf response messages: each field is
/// written by its kind (`string`, `bool`, `int` for 32-bit integers,
/// `uint64`, `messages` for repeated messages, or an enum type's name in
/// brackets, `[pb::ReleaseStatus]`, to write it by name).
macro_rules! to_json {
    ($($message:ty { $($field:ident: $kind:tt),* $(,)? })*) => {$(
        impl $crate::http::json::ToJson for $message {
            #[allow(unused_variables)] // a message with no fields
            fn to_json(&self, out: &mut $crate::http::json::Writer) {
                $(to_json!(@field out, stringify!($field), &self.$field, $kind);)*
            }
        }
    )*};
    (@field $out:ident, $name:expr, $value:expr, string) => { $out.string($name, $value) };
    (@field $out:ident, $name:expr, $value:expr, bool) => { $out.bool($name, *$value) };
    (@field $out:ident, $name:expr, $value:expr, int) => { $out.int($name, i64::from(*$value)) };
    (@field $out:ident, $name:expr, $value:expr, uint64) => { $out.uint64($name, *$value) };
    (@field $out:ident, $name:expr, $value:expr, messages) => { $out.messages($name, $value) };
    (@field $out:ident, $name:expr, $value:expr, [$enum:ty]) => {
        match <$enum>::try_from(*$value) {
            Ok(known) => $out.string($name, known.as_str_name()),
            Err(_) => $out.int($name, i64::from(*$value)),
        }
    };
}

pub(crate) use {from_json, to_json};

impl Object {
    /// Parse a body that must be one JSON object.
    pub(crate) fn parse(body: &[u8]) -> Result<Self, String> {
        let mut deserializer = serde_json::Deserializer::from_slice(body);
        let fields = deserializer
            .deserialize_map(FieldsVisitor)
            .and_then(|fields| deserializer.end().map(|()| fields))
            .map_err(|err| {
                if err.is_eof() && body.iter().all(u8::is_ascii_whitespace) {
                    "the body is empty; expected a JSON object".to_owned()
                } else {
                    err.to_string()
                }
            })?;
        let used = vec![false; fields.len()];
        Ok(Object { fields, used })
    }

    /// The value of field `proto` (by either of its names), if present and
    /// not `null`.
    fn take(&mut self, proto: &str) -> Result<Option<Value>, String> {
        let json = json_name(proto);
        let mut found = None;
        for (i, (name, _)) in self.fields.iter().enumerate() {
            if *name == json || name == proto {
                if found.is_some() {
                    return Err(format!("duplicate field `{json}`"));
                }
                found = Some(i);
            }
        }
        let Some(i) = found else {
            return Ok(None);
        };
        self.used[i] = true;
        Ok(match std::mem::take(&mut self.fields[i].1) {
            Value::Null => None,
            value => Some(value),
        })
    }

    /// A `string` field.
    pub(crate) fn string(&mut self, proto: &str) -> Result<String, String> {
        match self.take(proto)? {
            None => Ok(String::new()),
            Some(Value::String(s)) => Ok(s),
            Some(other) => Err(invalid(proto, "a string", &other)),
        }
    }

    /// An `int32` field.
    pub(crate) fn int32(&mut self, proto: &str) -> Result<i32, String> {
        self.integer(
            proto,
            i128::from(i32::MIN),
            i128::from(i32::MAX),
            "32-bit integer",
        )
        .map(|v| v as i32)
    }

    /// A `uint32` field.
    pub(crate) fn uint32(&mut self, proto: &str) -> Result<u32, String> {
        self.integer(proto, 0, i128::from(u32::MAX), "unsigned 32-bit integer")
            .map(|v| v as u32)
    }

    /// An enum field, by name (one of `names`, whose index is the number)
    /// or by number.
    pub(crate) fn enumeration(&mut self, proto: &str, names: &[&str]) -> Result<i32, String> {
        match self.take(proto)? {
            None => Ok(0),
            Some(Value::String(s)) => names
                .iter()
                .position(|n| *n == s)
                .map(|i| i as i32)
                .ok_or_else(|| {
                    format!(
                        "field `{}`: {s:?} is not one of {}",
                        json_name(proto),
                        names.join(", ")
                    )
                }),
            Some(Value::Number(n)) => n
                .as_i64()
                .and_then(|v| i32::try_from(v).ok())
                .ok_or_else(|| format!("field `{}`: {n} is not an enum number", json_name(proto))),
            Some(other) => Err(invalid(proto, "an enum name or number", &other)),
        }
    }

    /// A `uint64` field.
    pub(crate) fn uint64(&mut self, proto: &str) -> Result<u64, String> {
        self.integer(proto, 0, i128::from(u64::MAX), "unsigned 64-bit integer")
            .map(|v| v as u64)
    }

    fn integer(&mut self, proto: &str, min: i128, max: i128, what: &str) -> Result<i128, String> {
        let named = |message: String| format!("field `{}`: {message}", json_name(proto));
        let value = match self.take(proto)? {
            None => return Ok(0),
            Some(Value::Number(n)) => number(&n).map_err(named)?,
            // A quoted integer is a JSON number inside the quotes, with no
            // space around it.
            Some(Value::String(s)) => {
                let parsed = if s.trim() == s {
                    serde_json::from_str::<serde_json::Number>(&s).ok()
                } else {
                    None
                };
                let n = parsed.ok_or_else(|| named(format!("{s:?} is not a number")))?;
                number(&n).map_err(named)?
            }
            Some(other) => return Err(invalid(proto, "a whole number", &other)),
        };
        if value < min || value > max {
            return Err(named(format!("{value} is out of the {what} range")));
        }
        Ok(value)
    }

    /// Check what is left: every field was read, unless unknown fields are
    /// ignored.
    pub(crate) fn finish(self, unknown: Unknown) -> Result<(), String> {
        if unknown == Unknown::Ignore {
            return Ok(());
        }
        match self.fields.iter().zip(&self.used).find(|(_, used)| !**used) {
            Some(((name, _), _)) => Err(format!("unknown field `{name}`")),
            None => Ok(()),
        }
    }
}

/// A JSON number as an integer, if it is one (`7`, `7.0`, `1e1`).
fn number(n: &serde_json::Number) -> Result<i128, String> {
    if let Some(v) = n.as_i64() {
        return Ok(v.into());
    }
    if let Some(v) = n.as_u64() {
        return Ok(v.into());
    }
    let v = n.as_f64().unwrap_or(f64::NAN);
    if !v.is_finite() || v.fract() != 0.0 {
        return Err(format!("{n} is not a whole number"));
    }
    // Beyond every range checked here, so a saturated value is refused too.
    Ok(if v.abs() < 1e30 { v as i128 } else { i128::MAX })
}

fn invalid(proto: &str, expected: &str, got: &Value) -> String {
    let got = match got {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("{s:?}"),
        Value::Array(_) => "an array".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    };
    format!(
        "field `{}`: expected {expected}, got {got}",
        json_name(proto)
    )
}

/// Collects an object's fields in order, duplicates and all.
struct FieldsVisitor;

impl<'de> Visitor<'de> for FieldsVisitor {
    type Value = Vec<(String, Value)>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(4));
        while let Some(name) = map.next_key::<String>()? {
            let value = map.next_value::<Value>()?;
            fields.push((name, value));
        }
        Ok(fields)
    }
}

/// Writes one JSON object, field by field.
#[derive(Debug, Default)]
pub(crate) struct Writer {
    out: String,
    /// Escape `<`, `>` and `&` as Go's `encoding/json` does.
    html: bool,
}

impl Writer {
    /// A writer for bodies daprd writes with Go's `encoding/json`.
    pub(crate) fn go() -> Self {
        Writer {
            out: String::new(),
            html: true,
        }
    }

    fn name(&mut self, proto: &str) {
        self.key(&json_name(proto));
    }

    fn key(&mut self, key: &str) {
        self.out.push(if self.out.is_empty() { '{' } else { ',' });
        push_escaped(&mut self.out, key, self.html);
        self.out.push(':');
    }

    /// A `string` field.
    pub(crate) fn string(&mut self, proto: &str, value: &str) {
        self.name(proto);
        push_escaped(&mut self.out, value, self.html);
    }

    /// An entry of a map field, its key written as it is.
    pub(crate) fn entry(&mut self, key: &str, value: &str) {
        self.key(key);
        push_escaped(&mut self.out, value, self.html);
    }

    /// A repeated `string` field.
    pub(crate) fn strings(&mut self, proto: &str, values: &[String]) {
        self.name(proto);
        self.out.push('[');
        for (i, value) in values.iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            push_escaped(&mut self.out, value, self.html);
        }
        self.out.push(']');
    }

    /// A `bool` field.
    pub(crate) fn bool(&mut self, proto: &str, value: bool) {
        self.name(proto);
        self.out.push_str(if value { "true" } else { "false" });
    }

    /// A 32-bit integer field (a JSON number).
    pub(crate) fn int(&mut self, proto: &str, value: i64) {
        self.name(proto);
        let _ = write!(self.out, "{value}");
    }

    /// A 64-bit integer field (a string, as proto3 JSON writes them).
    pub(crate) fn uint64(&mut self, proto: &str, value: u64) {
        self.name(proto);
        let _ = write!(self.out, "\"{value}\"");
    }

    /// A message field, or a repeated one, already written as JSON.
    pub(crate) fn raw(&mut self, proto: &str, json: &str) {
        self.name(proto);
        self.out.push_str(json);
    }

    /// A repeated message field.
    pub(crate) fn messages<M: ToJson>(&mut self, proto: &str, items: &[M]) {
        self.name(proto);
        self.out.push('[');
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            self.out.push_str(&encode(item));
        }
        self.out.push(']');
    }

    /// The object, closed.
    pub(crate) fn finish(mut self) -> String {
        if self.out.is_empty() {
            self.out.push('{');
        }
        self.out.push('}');
        self.out
    }
}

/// Append `value` as a JSON string the way Go's `encoding/json` writes it,
/// which is how daprd writes its error bodies: `<`, `>` and `&` are
/// escaped too.
pub(crate) fn push_string_html(out: &mut String, value: &str) {
    push_escaped(out, value, true);
}

fn push_escaped(out: &mut String, value: &str, html: bool) {
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' if html => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct Lock {
        resource_id: String,
        lock_owner: String,
        expiry_in_seconds: i32,
    }

    impl FromJson for Lock {
        fn from_json(o: &mut Object) -> Result<Self, String> {
            Ok(Lock {
                resource_id: o.string("resource_id")?,
                lock_owner: o.string("lock_owner")?,
                expiry_in_seconds: o.int32("expiry_in_seconds")?,
            })
        }
    }

    fn ok(body: &str) -> Lock {
        decode(body.as_bytes(), Unknown::Ignore).unwrap_or_else(|e| panic!("{body}: {e}"))
    }

    fn err(body: &str) -> String {
        decode::<Lock>(body.as_bytes(), Unknown::Ignore).unwrap_err()
    }

    #[test]
    fn names_nulls_and_unknown_fields() {
        let body = ok(
            r#"{"resource_id":"r","lockOwner":null,"expiry_in_seconds":"7","storeName":"x","extra":{"a":[1]}}"#,
        );
        assert_eq!(
            body,
            Lock {
                resource_id: "r".into(),
                lock_owner: String::new(),
                expiry_in_seconds: 7
            }
        );
        assert_eq!(ok("{}").expiry_in_seconds, 0);
        let strict = decode::<Lock>(br#"{"resourceId":"r","extra":1}"#, Unknown::Refuse);
        assert_eq!(strict.unwrap_err(), "unknown field `extra`");
    }

    #[test]
    fn integers_as_protojson_reads_them() {
        for (text, value) in [
            ("5", 5),
            ("5.0", 5),
            ("1e1", 10),
            ("-3", -3),
            (r#""7""#, 7),
            (r#""7.0""#, 7),
            (r#""1e1""#, 10),
            (r#""-0""#, 0),
        ] {
            assert_eq!(
                ok(&format!(r#"{{"expiryInSeconds":{text}}}"#)).expiry_in_seconds,
                value,
                "{text}"
            );
        }
        for (text, needle) in [
            (r#"" 7 ""#, "is not a number"),
            (r#""+7""#, "is not a number"),
            (r#""07""#, "is not a number"),
            (r#""0x10""#, "is not a number"),
            ("7.5", "not a whole number"),
            (r#""7.5""#, "not a whole number"),
            ("2147483648", "out of the 32-bit integer range"),
            (r#""soon""#, "is not a number"),
            ("true", "expected a whole number, got true"),
        ] {
            let e = err(&format!(r#"{{"expiryInSeconds":{text}}}"#));
            assert!(
                e.starts_with("field `expiryInSeconds`: ") && e.contains(needle),
                "{text}: {e}"
            );
        }
    }

    #[test]
    fn refusals_name_the_field() {
        assert_eq!(
            err(r#"{"resourceId":5}"#),
            "field `resourceId`: expected a string, got 5"
        );
        assert_eq!(
            err(r#"{"lockOwner":"a","lock_owner":"b"}"#),
            "duplicate field `lockOwner`"
        );
        assert_eq!(
            err(r#"{"resourceId":"a","resourceId":"b"}"#),
            "duplicate field `resourceId`"
        );
        assert!(err(r#"[1,2]"#).contains("expected a JSON object"));
        assert!(err(r#"{"resourceId":"r""#).contains("EOF"));
        assert!(err(r#"{} {}"#).contains("trailing characters"));
        assert_eq!(err(""), "the body is empty; expected a JSON object");
        assert_eq!(err(" \n"), "the body is empty; expected a JSON object");
        assert!(err("null").contains("expected a JSON object"));
    }

    #[test]
    fn writes_every_field() {
        let mut out = Writer::default();
        out.bool("acquired", false);
        out.uint64("fencing_token", 0);
        out.string("owner", "a \"b\"\n");
        out.int("waiters", 3);
        assert_eq!(
            out.finish(),
            r#"{"acquired":false,"fencingToken":"0","owner":"a \"b\"\n","waiters":3}"#
        );
        assert_eq!(Writer::default().finish(), "{}");
        assert_eq!(json_name("evicted_fencing_token"), "evictedFencingToken");
    }
}
