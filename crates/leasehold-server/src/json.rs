//! Request bodies of the Dapr HTTP routes, decoded as daprd's protojson
//! does: camelCase or proto field names, `null` for the default, unknown
//! fields ignored, duplicate fields refused, an int32 as a number or a
//! quoted number. Every refusal names the field.

use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};

/// The fields of Dapr's `TryLockRequest` / `UnlockRequest` that a body
/// carries (`storeName` comes from the URL and overrides the body).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LockBody {
    /// `resourceId`.
    pub resource_id: String,
    /// `lockOwner`.
    pub lock_owner: String,
    /// `expiryInSeconds` (unlock ignores it).
    pub expiry_in_seconds: i32,
}

impl LockBody {
    /// Decode a body. An empty body is the default message, as in daprd.
    pub fn parse(body: &[u8]) -> Result<Self, String> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(LockBody::default());
        }
        let mut deserializer = serde_json::Deserializer::from_slice(body);
        let parsed = deserializer
            .deserialize_map(BodyVisitor)
            .and_then(|body| deserializer.end().map(|()| body));
        parsed.map_err(|err| err.to_string())
    }
}

enum Field {
    ResourceId,
    LockOwner,
    Expiry,
    Other,
}

impl Field {
    fn name(&self) -> &'static str {
        match self {
            Field::ResourceId => "resourceId",
            Field::LockOwner => "lockOwner",
            Field::Expiry => "expiryInSeconds",
            Field::Other => "",
        }
    }
}

impl<'de> de::Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldVisitor;
        impl Visitor<'_> for FieldVisitor {
            type Value = Field;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, name: &str) -> Result<Field, E> {
                Ok(match name {
                    "resourceId" | "resource_id" => Field::ResourceId,
                    "lockOwner" | "lock_owner" => Field::LockOwner,
                    "expiryInSeconds" | "expiry_in_seconds" => Field::Expiry,
                    _ => Field::Other,
                })
            }
        }
        deserializer.deserialize_identifier(FieldVisitor)
    }
}

struct BodyVisitor;

impl<'de> Visitor<'de> for BodyVisitor {
    type Value = LockBody;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<LockBody, A::Error> {
        let mut body = LockBody::default();
        let mut seen = [false; 3];
        while let Some(field) = map.next_key::<Field>()? {
            let slot = match field {
                Field::ResourceId => 0,
                Field::LockOwner => 1,
                Field::Expiry => 2,
                Field::Other => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            let name = field.name();
            if std::mem::replace(&mut seen[slot], true) {
                return Err(de::Error::custom(format!("duplicate field `{name}`")));
            }
            let named = |err: A::Error| de::Error::custom(format!("field `{name}`: {err}"));
            match field {
                Field::ResourceId => {
                    body.resource_id = map.next_value::<NullableString>().map_err(named)?.0
                }
                Field::LockOwner => {
                    body.lock_owner = map.next_value::<NullableString>().map_err(named)?.0
                }
                Field::Expiry => {
                    body.expiry_in_seconds = map.next_value::<ProtoInt32>().map_err(named)?.0
                }
                Field::Other => unreachable!("handled above"),
            }
        }
        Ok(body)
    }
}

/// A string, or `null` for the empty string.
struct NullableString(String);

impl<'de> de::Deserialize<'de> for NullableString {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = NullableString;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<NullableString, E> {
                Ok(NullableString(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<NullableString, E> {
                Ok(NullableString(v))
            }
            fn visit_unit<E: de::Error>(self) -> Result<NullableString, E> {
                Ok(NullableString(String::new()))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// A protobuf int32 in JSON: a number with no fraction, or such a number
/// in quotes, or `null` for zero.
struct ProtoInt32(i32);

impl<'de> de::Deserialize<'de> for ProtoInt32 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl V {
            fn range<E: de::Error>(v: i128) -> Result<ProtoInt32, E> {
                i32::try_from(v)
                    .map(ProtoInt32)
                    .map_err(|_| E::custom(format!("{v} is out of the 32-bit integer range")))
            }
        }
        impl Visitor<'_> for V {
            type Value = ProtoInt32;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a 32-bit integer")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ProtoInt32, E> {
                V::range(v.into())
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ProtoInt32, E> {
                V::range(v.into())
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<ProtoInt32, E> {
                if v.fract() != 0.0 || !v.is_finite() {
                    return Err(E::custom(format!("{v} is not a whole number")));
                }
                if v.abs() > i32::MAX as f64 + 1.0 {
                    return Err(E::custom(format!("{v} is out of the 32-bit integer range")));
                }
                V::range(v as i128)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ProtoInt32, E> {
                let parsed: i128 = v
                    .trim()
                    .parse()
                    .map_err(|_| E::custom(format!("{v:?} is not a whole number")))?;
                V::range(parsed)
            }
            fn visit_unit<E: de::Error>(self) -> Result<ProtoInt32, E> {
                Ok(ProtoInt32(0))
            }
        }
        deserializer.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(body: &str) -> LockBody {
        LockBody::parse(body.as_bytes()).unwrap_or_else(|e| panic!("{body}: {e}"))
    }

    fn err(body: &str) -> String {
        LockBody::parse(body.as_bytes()).unwrap_err()
    }

    #[test]
    fn sdk_bodies() {
        let body = ok(r#"{"resourceId":"r","lockOwner":"o","expiryInSeconds":60}"#);
        assert_eq!(
            body,
            LockBody {
                resource_id: "r".into(),
                lock_owner: "o".into(),
                expiry_in_seconds: 60
            }
        );
        assert_eq!(
            ok(r#"{"resourceId":"r","lockOwner":"o"}"#).expiry_in_seconds,
            0
        );
    }

    #[test]
    fn protojson_leniency() {
        let body = ok(
            r#"{"resource_id":"r","lock_owner":null,"expiry_in_seconds":"7","storeName":"x","extra":{"a":[1]}}"#,
        );
        assert_eq!(
            body,
            LockBody {
                resource_id: "r".into(),
                lock_owner: String::new(),
                expiry_in_seconds: 7
            }
        );
        assert_eq!(ok("").expiry_in_seconds, 0);
        assert_eq!(ok("  \n").resource_id, "");
        assert_eq!(ok(r#"{"expiryInSeconds":5.0}"#).expiry_in_seconds, 5);
        assert_eq!(ok(r#"{"expiryInSeconds":-3}"#).expiry_in_seconds, -3);
    }

    #[test]
    fn refusals_name_the_field() {
        assert!(
            err(r#"{"resourceId":5}"#).starts_with("field `resourceId`: invalid type"),
            "{}",
            err(r#"{"resourceId":5}"#)
        );
        assert!(err(r#"{"expiryInSeconds":"soon"}"#).contains("field `expiryInSeconds`"));
        assert!(err(r#"{"expiryInSeconds":1.5}"#).contains("not a whole number"));
        assert!(
            err(r#"{"expiryInSeconds":4294967296}"#).contains("out of the 32-bit integer range")
        );
        assert!(
            err(r#"{"lockOwner":"a","lock_owner":"b"}"#).contains("duplicate field `lockOwner`")
        );
        assert!(err(r#"[1,2]"#).contains("expected a JSON object"));
        assert!(err(r#"{"resourceId":"r""#).contains("EOF"));
        assert!(err(r#"{} {}"#).contains("trailing characters"));
    }
}
