//! Decoded values as JSON and as text for people.

use odb_wire::catalog::{Decoded, ObjectView};
use odb_wire::describe::{FieldValues, Value};
use serde_json::{json, Map, Value as Json};

/// A value as JSON: numbers, strings, arrays and objects as they read naturally; `null` for
/// `None` and `()`; a reference as `{"$ref": "schema.Type", "id": N}`; a unit variant as its
/// name and any other variant as `{"Variant": fields}`; bytes as a `0x` hex string, and those
/// of a type without a description as `{"$opaque": "0x.."}`.
pub fn value_json(value: &Value) -> Json {
    match value {
        Value::Bool(b) => json!(b),
        Value::UInt(n) => u64::try_from(*n).map_or_else(|_| json!(n.to_string()), |n| json!(n)),
        Value::Int(n) => i64::try_from(*n).map_or_else(|_| json!(n.to_string()), |n| json!(n)),
        Value::Float(x) => {
            serde_json::Number::from_f64(*x).map_or_else(|| json!(x.to_string()), Json::Number)
        }
        Value::Char(c) => json!(c.to_string()),
        Value::String(s) => json!(s),
        Value::Bytes(b) => json!(hex(b)),
        Value::Opaque(b) => json!({ "$opaque": hex(b) }),
        Value::Unit | Value::Option(None) => Json::Null,
        Value::Option(Some(v)) => value_json(v),
        Value::Seq(items) | Value::Tuple(items) => {
            Json::Array(items.iter().map(value_json).collect())
        }
        Value::Map(pairs) => {
            if pairs.iter().all(|(k, _)| matches!(k, Value::String(_))) {
                let map: Map<String, Json> = pairs
                    .iter()
                    .filter_map(|(k, v)| match k {
                        Value::String(k) => Some((k.clone(), value_json(v))),
                        _ => None,
                    })
                    .collect();
                Json::Object(map)
            } else {
                Json::Array(
                    pairs
                        .iter()
                        .map(|(k, v)| json!([value_json(k), value_json(v)]))
                        .collect(),
                )
            }
        }
        Value::Struct { name, fields } => match fields {
            FieldValues::Unit => json!(name),
            other => fields_json(other),
        },
        Value::Variant {
            variant, fields, ..
        } => match fields {
            FieldValues::Unit => json!(variant),
            other => json!({ variant.clone(): fields_json(other) }),
        },
        Value::Ref { type_name, id } => json!({ "$ref": type_name, "id": id }),
    }
}

fn fields_json(fields: &FieldValues) -> Json {
    match fields {
        FieldValues::Unit => Json::Null,
        FieldValues::Newtype(v) => value_json(v),
        FieldValues::Tuple(items) => Json::Array(items.iter().map(value_json).collect()),
        FieldValues::Named(named) => Json::Object(
            named
                .iter()
                .map(|(n, v)| (n.clone(), value_json(v)))
                .collect(),
        ),
    }
}

/// A field value as JSON; undecoded bytes as `{"$raw": "0x..", "why": ".."}`.
pub fn decoded_json(decoded: &Decoded) -> Json {
    match decoded {
        Decoded::Value(v) => value_json(v),
        Decoded::Raw { bytes, why } => json!({ "$raw": hex(bytes), "why": why }),
    }
}

/// A field value for people.
pub fn decoded_text(decoded: &Decoded) -> String {
    decoded.to_string()
}

/// An object as JSON: `{"id", "type", "fields": {..}, "indices": {..}}`.
pub fn object_json(object: &ObjectView) -> Json {
    json!({
        "id": object.id,
        "type": object.type_name,
        "fields": pairs_json(&object.fields),
        "indices": pairs_json(&object.indices),
    })
}

/// Named decoded values as a JSON object.
pub fn pairs_json(pairs: &[(String, Decoded)]) -> Json {
    Json::Object(
        pairs
            .iter()
            .map(|(n, v)| (n.clone(), decoded_json(v)))
            .collect(),
    )
}

/// Named decoded values as `name=value` words.
pub fn pairs_text(pairs: &[(String, Decoded)]) -> String {
    pairs
        .iter()
        .map(|(n, v)| format!("{n}={}", decoded_text(v)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// An object on one line: `#id schema.Type field=value ...`.
pub fn object_line(object: &ObjectView) -> String {
    let fields = pairs_text(&object.fields);
    format!("#{} {} {fields}", object.id, object.type_name)
        .trim_end()
        .to_string()
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(2 + bytes.len() * 2);
    out.push_str("0x");
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    out
}
