//! Declared record schemas: the types a pipeline file may name, and the parser that turns
//! JSON records into typed Arrow columns one record at a time, so one bad record is an error
//! for that record alone (it goes to quarantine) and never fails the batch.

use arrow::array::{
    ArrayBuilder, ArrayRef, BooleanBuilder, Date32Builder, Decimal128Builder, Float64Builder,
    Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, TimeUnit};
use std::borrow::Cow;
use std::collections::HashMap;

use chrono::{DateTime, NaiveDate};
use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

/// A column type as written in the pipeline file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub enum ColumnType {
    String,
    /// 64-bit signed integer.
    Int,
    Double,
    Bool,
    /// `YYYY-MM-DD`.
    Date,
    /// RFC 3339 with an offset, stored as UTC microseconds.
    Timestamp,
    /// Exact decimal: precision (total digits) and scale (digits after the point).
    Decimal(u8, i8),
}

pub const TYPE_NAMES: &str = "string, int, double, bool, date, timestamp, decimal(p,s)";

impl TryFrom<String> for ColumnType {
    type Error = String;

    fn try_from(name: String) -> Result<ColumnType, String> {
        let lower = name.trim().to_ascii_lowercase();
        let simple = match lower.as_str() {
            "string" => Some(ColumnType::String),
            "int" => Some(ColumnType::Int),
            "double" => Some(ColumnType::Double),
            "bool" => Some(ColumnType::Bool),
            "date" => Some(ColumnType::Date),
            "timestamp" => Some(ColumnType::Timestamp),
            _ => None,
        };
        if let Some(t) = simple {
            return Ok(t);
        }
        let unknown = || format!("unknown column type {name:?}; known types: {TYPE_NAMES}");
        let args = lower
            .strip_prefix("decimal(")
            .and_then(|rest| rest.strip_suffix(')'))
            .ok_or_else(unknown)?;
        let (p, s) = args.split_once(',').ok_or_else(unknown)?;
        let (p, s): (u8, i8) = match (p.trim().parse(), s.trim().parse()) {
            (Ok(p), Ok(s)) => (p, s),
            _ => return Err(unknown()),
        };
        if !(1..=38).contains(&p) || s < 0 || s as u8 > p {
            return Err(format!(
                "{name:?}: decimal precision must be 1..=38 and scale 0..=precision"
            ));
        }
        Ok(ColumnType::Decimal(p, s))
    }
}

impl ColumnType {
    pub fn arrow_type(self) -> DataType {
        match self {
            ColumnType::String => DataType::Utf8,
            ColumnType::Int => DataType::Int64,
            ColumnType::Double => DataType::Float64,
            ColumnType::Bool => DataType::Boolean,
            ColumnType::Date => DataType::Date32,
            ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            ColumnType::Decimal(p, s) => DataType::Decimal128(p, s),
        }
    }

    fn builder(self, capacity: usize) -> Box<dyn ArrayBuilder> {
        match self {
            ColumnType::String => Box::new(StringBuilder::with_capacity(capacity, capacity * 16)),
            ColumnType::Int => Box::new(Int64Builder::with_capacity(capacity)),
            ColumnType::Double => Box::new(Float64Builder::with_capacity(capacity)),
            ColumnType::Bool => Box::new(BooleanBuilder::with_capacity(capacity)),
            ColumnType::Date => Box::new(Date32Builder::with_capacity(capacity)),
            ColumnType::Timestamp => {
                Box::new(TimestampMicrosecondBuilder::with_capacity(capacity).with_timezone("UTC"))
            }
            ColumnType::Decimal(p, s) => Box::new(
                Decimal128Builder::with_capacity(capacity)
                    .with_precision_and_scale(p, s)
                    .expect("precision and scale are checked when parsed"),
            ),
        }
    }

    /// Converts one JSON value. Strings holding a number are accepted for numeric types
    /// (CSV-born data often quotes them); numbers are accepted for strings as their JSON
    /// text (a title like `1984` arrives as a number). Anything else is an error that says
    /// what was expected and what came.
    fn convert(self, value: Raw<'_>) -> Result<Cell<'_>, String> {
        let value = match value {
            Raw::Null => return Ok(Cell::Null),
            Raw::Str(s) if self == ColumnType::String => return Ok(Cell::Str(s)),
            other => other,
        };
        let number = match &value {
            Raw::Number(n) => Some(n),
            _ => None,
        };
        let text = match &value {
            Raw::Str(s) => Some(s.trim()),
            _ => None,
        };
        let cell = match self {
            ColumnType::String => match &value {
                Raw::Number(n) => Some(Cell::Str(n.to_string().into())),
                Raw::Bool(b) => Some(Cell::Str(b.to_string().into())),
                _ => None,
            },
            ColumnType::Int => match number {
                Some(n) => n.as_i64(),
                None => text.and_then(|s| s.parse().ok()),
            }
            .map(Cell::Int),
            ColumnType::Double => match number {
                Some(n) => n.as_f64(),
                // `NaN` and `inf` parse as f64 but are not data.
                None => text.and_then(|s| s.parse::<f64>().ok().filter(|f| f.is_finite())),
            }
            .map(Cell::Double),
            ColumnType::Bool => match (&value, text.map(str::to_ascii_lowercase)) {
                (Raw::Bool(b), _) => Some(*b),
                (_, Some(s)) if s == "true" => Some(true),
                (_, Some(s)) if s == "false" => Some(false),
                _ => None,
            }
            .map(Cell::Bool),
            ColumnType::Date => text
                .and_then(|s| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
                .map(|d| {
                    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date");
                    Cell::Date((d - epoch).num_days() as i32)
                }),
            ColumnType::Timestamp => text
                .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                .map(|t| Cell::Timestamp(t.timestamp_micros())),
            ColumnType::Decimal(p, s) => match number {
                Some(n) => parse_decimal(&n.to_string(), p, s),
                None => text.and_then(|t| parse_decimal(t, p, s)),
            }
            .map(Cell::Decimal),
        };
        cell.ok_or_else(|| format!("expected {}, got {}", self.expected(), value.shown()))
    }

    /// What a value of this type looks like, for error messages.
    fn expected(self) -> String {
        match self {
            ColumnType::String => "a string".into(),
            ColumnType::Int => "an integer".into(),
            ColumnType::Double => "a finite number".into(),
            ColumnType::Bool => "true or false".into(),
            ColumnType::Date => "a date YYYY-MM-DD".into(),
            ColumnType::Timestamp => "an RFC 3339 timestamp with offset".into(),
            ColumnType::Decimal(p, s) => format!(
                "a decimal with at most {} digits before and {s} after the point",
                p as i8 - s
            ),
        }
    }
}

/// One declared field's JSON value, borrowed from the record where it can be: building a
/// `serde_json::Value` allocated every string twice over.
enum Raw<'de> {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    Str(Cow<'de, str>),
    /// An array or an object: never a valid cell, kept whole for the error message.
    Nested(Value),
}

impl Raw<'_> {
    /// The value as JSON text, cut to 60 characters.
    fn shown(&self) -> String {
        let s = match self {
            Raw::Null => "null".to_string(),
            Raw::Bool(b) => b.to_string(),
            Raw::Number(n) => n.to_string(),
            Raw::Str(s) => Value::String(s.to_string()).to_string(),
            Raw::Nested(v) => v.to_string(),
        };
        if s.len() > 60 {
            format!("{}…", &s[..s.floor_char_boundary(60)])
        } else {
            s
        }
    }
}

impl<'de> Deserialize<'de> for Raw<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Raw<'de>, D::Error> {
        d.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Raw<'de>, E> {
        Ok(Raw::Null)
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Raw<'de>, E> {
        Ok(Raw::Bool(v))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Raw<'de>, E> {
        Ok(Raw::Number(v.into()))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Raw<'de>, E> {
        Ok(Raw::Number(v.into()))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Raw<'de>, E> {
        serde_json::Number::from_f64(v)
            .map(Raw::Number)
            .ok_or_else(|| E::custom("not a finite number"))
    }

    fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Raw<'de>, E> {
        Ok(Raw::Str(Cow::Borrowed(v)))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Raw<'de>, E> {
        Ok(Raw::Str(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Raw<'de>, E> {
        Ok(Raw::Str(Cow::Owned(v)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Raw<'de>, A::Error> {
        Value::deserialize(SeqAccessDeserializer::new(seq)).map(Raw::Nested)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Raw<'de>, A::Error> {
        Value::deserialize(MapAccessDeserializer::new(map)).map(Raw::Nested)
    }
}

/// `"-12.5"` at scale 2 → `-1250`. Refuses exponents, more fractional digits than the scale
/// (rounding would change the data) and values that do not fit the precision.
fn parse_decimal(text: &str, precision: u8, scale: i8) -> Option<i128> {
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !all_digits(whole) || !all_digits(fraction) {
        return None;
    }
    let fraction = fraction.trim_end_matches('0');
    if fraction.len() > scale as usize {
        return None;
    }
    let whole = whole.trim_start_matches('0');
    if whole.len() + scale as usize > precision as usize {
        return None;
    }
    let padded = format!("{whole}{fraction:0<width$}", width = scale as usize);
    let magnitude: i128 = if padded.is_empty() {
        0
    } else {
        padded.parse().ok()?
    };
    Some(if negative { -magnitude } else { magnitude })
}

enum Cell<'a> {
    Null,
    Str(Cow<'a, str>),
    Int(i64),
    Double(f64),
    Bool(bool),
    Date(i32),
    Timestamp(i64),
    Decimal(i128),
}

/// Turns JSON object records into columns of the declared types.
pub struct RecordParser {
    fields: Vec<(String, ColumnType)>,
    /// Field name → position, to find a key without building the whole JSON object.
    index: HashMap<String, usize>,
    builders: Vec<Box<dyn ArrayBuilder>>,
}

/// Reads one JSON object, keeping the values of declared fields and skipping the rest.
struct ObjectVisitor<'p, 'de> {
    index: &'p HashMap<String, usize>,
    values: &'p mut [Option<Raw<'de>>],
}

impl<'de> Visitor<'de> for ObjectVisitor<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(position) = map.next_key_seed(FieldPosition(self.index))? {
            match position {
                Some(i) => self.values[i] = Some(map.next_value()?),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// A key, looked up without allocating: the position of a declared field, or `None`.
struct FieldPosition<'p>(&'p HashMap<String, usize>);

impl<'de> DeserializeSeed<'de> for FieldPosition<'_> {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for FieldPosition<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<Option<usize>, E> {
        Ok(self.0.get(key).copied())
    }
}

impl RecordParser {
    pub fn new(fields: &[(String, ColumnType)], capacity: usize) -> RecordParser {
        RecordParser {
            fields: fields.to_vec(),
            index: fields
                .iter()
                .enumerate()
                .map(|(i, (name, _))| (name.clone(), i))
                .collect(),
            builders: fields.iter().map(|(_, t)| t.builder(capacity)).collect(),
        }
    }

    /// The Arrow fields the parser produces, all nullable: absence is data, judged later by
    /// expectations.
    pub fn arrow_fields(fields: &[(String, ColumnType)]) -> Vec<Field> {
        fields
            .iter()
            .map(|(name, t)| Field::new(name, t.arrow_type(), true))
            .collect()
    }

    /// Appends one record, or returns why it cannot be typed (and appends nothing). Fields the
    /// schema does not declare are ignored; declared fields that are missing are null.
    pub fn push(&mut self, raw: &[u8]) -> Result<(), String> {
        let mut values: Vec<Option<Raw>> = (0..self.fields.len()).map(|_| None).collect();
        let mut reader = serde_json::Deserializer::from_slice(raw);
        let visitor = ObjectVisitor {
            index: &self.index,
            values: &mut values,
        };
        let read = reader.deserialize_map(visitor).and_then(|()| reader.end());
        if let Err(e) = read {
            // Valid JSON that is not an object, or not JSON at all.
            return Err(match serde_json::from_slice::<IgnoredAny>(raw) {
                Ok(_) => "not a JSON object".to_string(),
                Err(_) => format!("not JSON: {e}"),
            });
        }
        // Every field converted before any is appended: a record that fails half way leaves
        // the builders untouched.
        let cells = self
            .fields
            .iter()
            .zip(values)
            .map(|((name, column_type), value)| match value {
                None => Ok(Cell::Null),
                Some(v) => column_type
                    .convert(v)
                    .map_err(|e| format!("field {name:?}: {e}")),
            })
            .collect::<Result<Vec<_>, String>>()?;
        for (builder, cell) in self.builders.iter_mut().zip(cells) {
            append(builder.as_mut(), cell);
        }
        Ok(())
    }

    pub fn finish(&mut self) -> Vec<ArrayRef> {
        self.builders.iter_mut().map(|b| b.finish()).collect()
    }
}

fn append(builder: &mut dyn ArrayBuilder, cell: Cell) {
    fn typed<B: 'static>(b: &mut dyn ArrayBuilder) -> &mut B {
        b.as_any_mut()
            .downcast_mut::<B>()
            .expect("builders are made from the same column type as their cells")
    }
    match cell {
        Cell::Str(s) => typed::<StringBuilder>(builder).append_value(s),
        Cell::Int(v) => typed::<Int64Builder>(builder).append_value(v),
        Cell::Double(v) => typed::<Float64Builder>(builder).append_value(v),
        Cell::Bool(v) => typed::<BooleanBuilder>(builder).append_value(v),
        Cell::Date(v) => typed::<Date32Builder>(builder).append_value(v),
        Cell::Timestamp(v) => typed::<TimestampMicrosecondBuilder>(builder).append_value(v),
        Cell::Decimal(v) => typed::<Decimal128Builder>(builder).append_value(v),
        Cell::Null => append_null(builder),
    }
}

fn append_null(builder: &mut dyn ArrayBuilder) {
    let any = builder.as_any_mut();
    macro_rules! null_if {
        ($($ty:ty),*) => {$(
            if let Some(b) = any.downcast_mut::<$ty>() {
                return b.append_null();
            }
        )*};
    }
    null_if!(
        StringBuilder,
        Int64Builder,
        Float64Builder,
        BooleanBuilder,
        Date32Builder,
        TimestampMicrosecondBuilder,
        Decimal128Builder
    );
    unreachable!("every ColumnType has a builder above");
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Decimal128Type, Float64Type, Int64Type};

    fn fields() -> Vec<(String, ColumnType)> {
        [
            ("title", "string"),
            ("year", "int"),
            ("sales", "decimal(10,2)"),
            ("score", "double"),
            ("ok", "bool"),
            ("day", "date"),
            ("at", "timestamp"),
        ]
        .iter()
        .map(|(n, t)| (n.to_string(), ColumnType::try_from(t.to_string()).unwrap()))
        .collect()
    }

    #[test]
    fn type_names_parse_and_unknown_ones_list_the_known() {
        assert_eq!(
            ColumnType::try_from("Decimal(12, 3)".to_string()),
            Ok(ColumnType::Decimal(12, 3))
        );
        let err = ColumnType::try_from("varchar".to_string()).unwrap_err();
        assert!(err.contains("varchar") && err.contains(TYPE_NAMES), "{err}");
        assert!(ColumnType::try_from("decimal(3,4)".to_string()).is_err());
        assert!(ColumnType::try_from("decimal(39,0)".to_string()).is_err());
    }

    #[test]
    fn decimals_are_exact_and_never_rounded() {
        assert_eq!(parse_decimal("10.4", 10, 2), Some(1040));
        assert_eq!(parse_decimal("-0.5", 10, 2), Some(-50));
        assert_eq!(parse_decimal("200", 10, 2), Some(20000));
        assert_eq!(
            parse_decimal("1.230", 10, 2),
            Some(123),
            "trailing zeros are fine"
        );
        assert_eq!(parse_decimal("1.234", 10, 2), None, "would round");
        assert_eq!(parse_decimal("123456789", 10, 2), None, "too many digits");
        assert_eq!(parse_decimal("1e3", 10, 2), None);
        assert_eq!(parse_decimal("", 10, 2), None);
        assert_eq!(parse_decimal(".5", 10, 2), None);
    }

    #[test]
    fn good_records_become_typed_columns_with_nulls_for_missing_fields() {
        let mut p = RecordParser::new(&fields(), 4);
        p.push(br#"{"title":"Dune","year":1965,"sales":20.5,"score":"4.5","ok":true,"day":"2024-02-29","at":"2024-01-01T01:00:00+01:00","extra":[1]}"#).unwrap();
        p.push(br#"{"title":1984,"year":"1949","sales":"30"}"#)
            .unwrap();
        p.push(br#"{"title":"Say \"hi\"\u00e9","ok":" TRUE ","year":null}"#)
            .unwrap();
        let cols = p.finish();
        assert_eq!(cols[0].as_string::<i32>().value(1), "1984");
        assert_eq!(cols[0].as_string::<i32>().value(2), "Say \"hi\"é");
        assert!(cols[4].as_boolean().value(2) && cols[1].is_null(2));
        assert_eq!(
            cols[1].as_primitive::<Int64Type>().values()[..2],
            [1965, 1949]
        );
        assert_eq!(
            cols[2].as_primitive::<Decimal128Type>().values()[..2],
            [2050, 3000]
        );
        assert_eq!(cols[3].as_primitive::<Float64Type>().value(0), 4.5);
        assert!(cols[4].is_null(1) && cols[5].is_null(1) && cols[6].is_null(1));
        assert_eq!(
            cols[6]
                .as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
                .value(0),
            1_704_067_200_000_000
        );
    }

    #[test]
    fn bad_records_say_why_and_leave_no_partial_row() {
        let mut p = RecordParser::new(&fields(), 4);
        let cases: [(&[u8], &str); 9] = [
            (b"not json", "not JSON"),
            (br#"{"score": NaN}"#, "not JSON"),
            (br#"[1,2]"#, "not a JSON object"),
            (
                br#"{"year":"nineteen"}"#,
                r#"field "year": expected an integer, got "nineteen""#,
            ),
            (br#"{"year":1965.5}"#, "expected an integer"),
            (br#"{"score":"NaN"}"#, "expected a finite number"),
            (br#"{"title":"ok","sales":1.234}"#, "field \"sales\""),
            (
                br#"{"title":{"a":[1,"x"]}}"#,
                r#"field "title": expected a string, got {"a":[1,"x"]}"#,
            ),
            (br#"{"ok":"yes"}"#, r#"expected true or false, got "yes""#),
        ];
        for (raw, want) in cases {
            let err = p.push(raw).unwrap_err();
            assert!(
                err.contains(want),
                "{}: {err}",
                String::from_utf8_lossy(raw)
            );
        }
        p.push(br#"{"title":"fine"}"#).unwrap();
        let cols = p.finish();
        assert!(
            cols.iter().all(|c| c.len() == 1),
            "only the good record landed"
        );
    }
}
