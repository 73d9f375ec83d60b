//! `generate --format avro`: a profile's JSON record in Avro's binary encoding, framed the way
//! Confluent's serializers frame it (magic byte 0, the 4-byte big-endian schema id, the body),
//! by the profile's Avro schema. Only the parts of Avro the profiles use: records, enums,
//! arrays, unions, the primitive types, and the logical types `timestamp-millis` (from an RFC
//! 3339 string), `date` (from `YYYY-MM-DD`) and `decimal` on bytes.

use chrono::{DateTime, NaiveDate};
use serde_json::Value;

/// An Avro schema, parsed once.
#[derive(Debug, Clone, PartialEq)]
pub enum AvroType {
    Null,
    Boolean,
    Int,
    Long,
    Float,
    Double,
    String,
    TimestampMillis,
    Date,
    Decimal { scale: u32 },
    Enum(Vec<String>),
    Array(Box<AvroType>),
    Record(Vec<(String, AvroType)>),
    Union(Vec<AvroType>),
}

impl AvroType {
    pub fn parse(schema: &str) -> Result<AvroType, String> {
        let json: Value = serde_json::from_str(schema).map_err(|e| e.to_string())?;
        AvroType::from_json(&json)
    }

    fn from_json(v: &Value) -> Result<AvroType, String> {
        let logical = v.get("logicalType").and_then(Value::as_str);
        Ok(match v {
            Value::String(name) => primitive(name)?,
            Value::Array(branches) => AvroType::Union(
                branches
                    .iter()
                    .map(AvroType::from_json)
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(o) => match (o.get("type").and_then(Value::as_str), logical) {
                (Some("long"), Some("timestamp-millis")) => AvroType::TimestampMillis,
                (Some("int"), Some("date")) => AvroType::Date,
                (Some("bytes"), Some("decimal")) => AvroType::Decimal {
                    scale: o.get("scale").and_then(Value::as_u64).unwrap_or(0) as u32,
                },
                (Some("enum"), _) => AvroType::Enum(
                    (o["symbols"].as_array().ok_or("an enum needs symbols")?)
                        .iter()
                        .map(|s| s.as_str().unwrap_or_default().to_string())
                        .collect(),
                ),
                (Some("array"), _) => AvroType::Array(Box::new(AvroType::from_json(&o["items"])?)),
                (Some("record"), _) => AvroType::Record(
                    (o["fields"].as_array().ok_or("a record needs fields")?)
                        .iter()
                        .map(|f| {
                            let name = f["name"].as_str().ok_or("a field needs a name")?;
                            Ok((name.to_string(), AvroType::from_json(&f["type"])?))
                        })
                        .collect::<Result<_, String>>()?,
                ),
                (Some(name), _) => primitive(name)?,
                (None, _) => AvroType::from_json(&o["type"])?,
            },
            other => return Err(format!("not an Avro schema: {other}")),
        })
    }

    /// Appends `value`'s Avro binary encoding to `out`.
    pub fn encode(&self, value: &Value, out: &mut Vec<u8>) -> Result<(), String> {
        let mismatch = || format!("{value} is not a {self:?}");
        match (self, value) {
            (AvroType::Null, Value::Null) => {}
            (AvroType::Boolean, Value::Bool(b)) => out.push(*b as u8),
            (AvroType::Int | AvroType::Long, Value::Number(n)) => {
                zigzag(n.as_i64().ok_or_else(mismatch)?, out)
            }
            (AvroType::Float, Value::Number(n)) => {
                out.extend((n.as_f64().ok_or_else(mismatch)? as f32).to_le_bytes())
            }
            (AvroType::Double, Value::Number(n)) => {
                out.extend(n.as_f64().ok_or_else(mismatch)?.to_le_bytes())
            }
            (AvroType::String, Value::String(s)) => bytes(s.as_bytes(), out),
            (AvroType::TimestampMillis, Value::String(s)) => zigzag(
                DateTime::parse_from_rfc3339(s)
                    .map_err(|e| format!("{s:?}: {e}"))?
                    .timestamp_millis(),
                out,
            ),
            (AvroType::Date, Value::String(s)) => {
                let day =
                    NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|e| format!("{s:?}: {e}"))?;
                let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("a valid date");
                zigzag((day - epoch).num_days(), out)
            }
            (AvroType::Decimal { scale }, Value::Number(n)) => {
                let unscaled = unscaled(&n.to_string(), *scale).ok_or_else(mismatch)?;
                bytes(&twos_complement(unscaled), out)
            }
            (AvroType::Enum(symbols), Value::String(s)) => {
                let i = symbols.iter().position(|x| x == s).ok_or_else(mismatch)?;
                zigzag(i as i64, out)
            }
            (AvroType::Array(item), Value::Array(items)) => {
                if !items.is_empty() {
                    zigzag(items.len() as i64, out);
                    for v in items {
                        item.encode(v, out)?;
                    }
                }
                out.push(0);
            }
            (AvroType::Record(fields), Value::Object(o)) => {
                for (name, t) in fields {
                    t.encode(o.get(name).unwrap_or(&Value::Null), out)
                        .map_err(|e| format!("{name}: {e}"))?;
                }
            }
            (AvroType::Union(branches), v) => {
                let i = branches
                    .iter()
                    .position(|b| b.accepts(v))
                    .ok_or_else(mismatch)?;
                zigzag(i as i64, out);
                branches[i].encode(v, out)?;
            }
            _ => return Err(mismatch()),
        }
        Ok(())
    }

    /// Whether a union branch of this type takes `v` (the first one that does is written).
    fn accepts(&self, v: &Value) -> bool {
        matches!(
            (self, v),
            (AvroType::Null, Value::Null)
                | (AvroType::Boolean, Value::Bool(_))
                | (
                    AvroType::Int
                        | AvroType::Long
                        | AvroType::Float
                        | AvroType::Double
                        | AvroType::Decimal { .. },
                    Value::Number(_)
                )
                | (
                    AvroType::String
                        | AvroType::TimestampMillis
                        | AvroType::Date
                        | AvroType::Enum(_),
                    Value::String(_)
                )
                | (AvroType::Array(_), Value::Array(_))
                | (AvroType::Record(_), Value::Object(_))
        )
    }
}

fn primitive(name: &str) -> Result<AvroType, String> {
    Ok(match name {
        "null" => AvroType::Null,
        "boolean" => AvroType::Boolean,
        "int" => AvroType::Int,
        "long" => AvroType::Long,
        "float" => AvroType::Float,
        "double" => AvroType::Double,
        "string" => AvroType::String,
        other => {
            return Err(format!(
                "Avro type {other:?} is not supported by the generator"
            ))
        }
    })
}

/// Avro's `long`/`int`: zig-zag, then 7 bits per byte, low bits first.
fn zigzag(v: i64, out: &mut Vec<u8>) {
    let mut n = ((v << 1) ^ (v >> 63)) as u64;
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn bytes(b: &[u8], out: &mut Vec<u8>) {
    zigzag(b.len() as i64, out);
    out.extend_from_slice(b);
}

/// `"15.9"` at scale 2 → 1590; `None` if it has more digits after the point than the scale.
fn unscaled(text: &str, scale: u32) -> Option<i128> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let fraction = fraction.trim_end_matches('0');
    if fraction.len() > scale as usize {
        return None;
    }
    format!("{whole}{fraction:0<width$}", width = scale as usize)
        .parse()
        .ok()
}

/// The shortest big-endian two's-complement bytes of `v`, as Avro's decimal wants them.
fn twos_complement(v: i128) -> Vec<u8> {
    let all = v.to_be_bytes();
    let sign = if v < 0 { 0xff } else { 0x00 };
    let mut start = 0;
    while start < all.len() - 1 && all[start] == sign && (all[start + 1] & 0x80) == (sign & 0x80) {
        start += 1;
    }
    all[start..].to_vec()
}

/// Confluent's framing around an Avro body.
pub fn framed(schema_id: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + body.len());
    out.push(0);
    out.extend(schema_id.to_be_bytes());
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_follow_the_avro_spec() {
        let mut out = Vec::new();
        for v in [0, -1, 1, -64, 64] {
            zigzag(v, &mut out);
        }
        // Examples from the spec: 0 → 00, -1 → 01, 1 → 02, -64 → 7f, 64 → 80 01.
        assert_eq!(out, [0x00, 0x01, 0x02, 0x7f, 0x80, 0x01]);
        assert_eq!(twos_complement(1590), [0x06, 0x36]);
        assert_eq!(twos_complement(-1), [0xff]);
        assert_eq!(twos_complement(128), [0x00, 0x80]);
        assert_eq!(unscaled("15.9", 2), Some(1590));
        assert_eq!(unscaled("15.999", 2), None);
    }

    #[test]
    fn records_unions_arrays_and_enums_encode_in_order() {
        let t = AvroType::parse(
            r#"{"type":"record","name":"R","fields":[
                {"name":"a","type":["null","string"]},
                {"name":"e","type":{"type":"enum","name":"E","symbols":["x","y"]}},
                {"name":"l","type":{"type":"array","items":"long"}}]}"#,
        )
        .unwrap();
        let mut out = Vec::new();
        t.encode(
            &serde_json::json!({"a": "hi", "e": "y", "l": [1, 2]}),
            &mut out,
        )
        .unwrap();
        assert_eq!(out, [0x02, 0x04, b'h', b'i', 0x02, 0x04, 0x02, 0x04, 0x00]);
        let err = t
            .encode(
                &serde_json::json!({"a": 1, "e": "y", "l": []}),
                &mut Vec::new(),
            )
            .unwrap_err();
        assert!(err.starts_with("a: "), "{err}");
    }
}
