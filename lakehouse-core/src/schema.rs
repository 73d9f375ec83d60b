//! Declared record schemas: the types a pipeline file may name, and the parser that turns
//! JSON records into typed Arrow columns one record at a time, so one bad record is an error
//! for that record alone (it goes to quarantine) and never fails the batch.

use arrow::array::{
    ArrayBuilder, ArrayRef, BooleanBuilder, Date32Builder, Decimal128Builder, Float64Builder,
    Int64Builder, ListArray, StringBuilder, StructArray, TimestampMicrosecondBuilder,
};
use arrow::buffer::{NullBuffer, OffsetBuffer};
use arrow::datatypes::{DataType, Field, Fields, TimeUnit};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate};
use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

/// Why a record without a value (a Kafka tombstone) cannot be typed, whatever its format.
pub const TOMBSTONE: &str = "the record has no value (a tombstone); deletes are not supported";

/// A column type as written in the pipeline file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
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
    /// `list<T>`: a JSON array whose elements are `T` (or null).
    List(Box<ColumnType>),
    /// `struct<name: T, …>`: a JSON object; fields it lacks are null, fields not declared are
    /// ignored, as for the record itself.
    Struct(Vec<(String, ColumnType)>),
}

pub const TYPE_NAMES: &str =
    "string, int, double, bool, date, timestamp, decimal(p,s), list<type>, struct<name: type, …>";

impl TryFrom<String> for ColumnType {
    type Error = String;

    fn try_from(name: String) -> Result<ColumnType, String> {
        let mut rest = name.as_str();
        let parsed = TypeParser { rest: &mut rest }
            .column_type()
            .and_then(|t| match rest.trim() {
                "" => Ok(t),
                extra => Err(format!("unexpected {extra:?} after the type")),
            });
        parsed.map_err(|e| format!("column type {name:?}: {e}; known types: {TYPE_NAMES}"))
    }
}

/// Reads a type name from the front of `rest`: a recursive descent over the grammar in
/// [`TYPE_NAMES`]. Names are case-insensitive; struct field names keep their case.
struct TypeParser<'a, 's> {
    rest: &'a mut &'s str,
}

impl<'s> TypeParser<'_, 's> {
    fn column_type(&mut self) -> Result<ColumnType, String> {
        let word = self.word();
        let t = match word.to_ascii_lowercase().as_str() {
            "string" => ColumnType::String,
            "int" => ColumnType::Int,
            "double" => ColumnType::Double,
            "bool" => ColumnType::Bool,
            "date" => ColumnType::Date,
            "timestamp" => ColumnType::Timestamp,
            "decimal" => {
                self.expect('(')?;
                let p = self.word();
                self.expect(',')?;
                let s = self.word();
                self.expect(')')?;
                let (p, s): (u8, i8) = match (p.parse(), s.parse()) {
                    (Ok(p), Ok(s)) => (p, s),
                    _ => return Err(format!("decimal({p},{s}): precision and scale are numbers")),
                };
                if !(1..=38).contains(&p) || s < 0 || s as u8 > p {
                    return Err("decimal precision must be 1..=38 and scale 0..=precision".into());
                }
                ColumnType::Decimal(p, s)
            }
            "list" => {
                self.expect('<')?;
                let item = self.column_type()?;
                self.expect('>')?;
                ColumnType::List(Box::new(item))
            }
            "struct" => {
                self.expect('<')?;
                let mut fields: Vec<(String, ColumnType)> = Vec::new();
                loop {
                    let field = self.word().to_string();
                    if field.is_empty() {
                        return Err("a struct field needs a name".into());
                    }
                    if fields.iter().any(|(f, _)| *f == field) {
                        return Err(format!("struct field {field:?} is declared twice"));
                    }
                    self.expect(':')?;
                    fields.push((field, self.column_type()?));
                    if self.next_is('>') {
                        break;
                    }
                    self.expect(',')?;
                }
                ColumnType::Struct(fields)
            }
            "" => return Err(format!("expected a type at {:?}", self.rest.trim())),
            _ => return Err(format!("unknown type {word:?}")),
        };
        Ok(t)
    }

    /// The next run of letters, digits and underscores, after any spaces.
    fn word(&mut self) -> &'s str {
        let trimmed = self.rest.trim_start();
        let end = trimmed
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(trimmed.len());
        let (word, rest) = trimmed.split_at(end);
        *self.rest = rest;
        word
    }

    /// Consumes `c` if it comes next (after spaces).
    fn next_is(&mut self, c: char) -> bool {
        match self.rest.trim_start().strip_prefix(c) {
            Some(rest) => {
                *self.rest = rest;
                true
            }
            None => false,
        }
    }

    fn expect(&mut self, c: char) -> Result<(), String> {
        if self.next_is(c) {
            Ok(())
        } else {
            Err(format!("expected '{c}' at {:?}", self.rest.trim()))
        }
    }
}

impl std::fmt::Display for ColumnType {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            ColumnType::String => f.write_str("string"),
            ColumnType::Int => f.write_str("int"),
            ColumnType::Double => f.write_str("double"),
            ColumnType::Bool => f.write_str("bool"),
            ColumnType::Date => f.write_str("date"),
            ColumnType::Timestamp => f.write_str("timestamp"),
            ColumnType::Decimal(p, s) => write!(f, "decimal({p},{s})"),
            ColumnType::List(item) => write!(f, "list<{item}>"),
            ColumnType::Struct(fields) => {
                f.write_str("struct<")?;
                for (i, (name, t)) in fields.iter().enumerate() {
                    let sep = if i == 0 { "" } else { ", " };
                    write!(f, "{sep}{name}: {t}")?;
                }
                f.write_str(">")
            }
        }
    }
}

impl ColumnType {
    pub fn arrow_type(&self) -> DataType {
        match *self {
            ColumnType::String => DataType::Utf8,
            ColumnType::Int => DataType::Int64,
            ColumnType::Double => DataType::Float64,
            ColumnType::Bool => DataType::Boolean,
            ColumnType::Date => DataType::Date32,
            ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            ColumnType::Decimal(p, s) => DataType::Decimal128(p, s),
            ColumnType::List(ref item) => DataType::List(list_item(item)),
            ColumnType::Struct(ref fields) => DataType::Struct(struct_fields(fields)),
        }
    }

    fn is_nested(&self) -> bool {
        matches!(self, ColumnType::List(_) | ColumnType::Struct(_))
    }

    /// A builder for a scalar type; nested values are gathered as [`Nested`] trees and built
    /// at the end by [`build_nested`].
    fn builder(&self, capacity: usize) -> Box<dyn ArrayBuilder> {
        match *self {
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
            ColumnType::List(_) | ColumnType::Struct(_) => {
                unreachable!("nested columns are built from Nested values")
            }
        }
    }

    /// Converts one JSON value. Strings holding a number are accepted for numeric types
    /// (CSV-born data often quotes them); numbers are accepted for strings as their JSON
    /// text (a title like `1984` arrives as a number). Anything else is an error that says
    /// what was expected and what came.
    fn convert<'v>(&self, value: Raw<'v>) -> Result<Cell<'v>, String> {
        let value = match value {
            Raw::Null => return Ok(Cell::Null),
            Raw::Str(s) if *self == ColumnType::String => return Ok(Cell::Str(s)),
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
        let cell = match *self {
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
            ColumnType::List(_) | ColumnType::Struct(_) => None,
        };
        cell.ok_or_else(|| format!("expected {}, got {}", self.expected(), value.shown()))
    }

    /// What a value of this type looks like, for error messages.
    fn expected(&self) -> String {
        match *self {
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
            ColumnType::List(_) => "a list (JSON array)".into(),
            ColumnType::Struct(_) => "an object".into(),
        }
    }

    /// Converts one value of a nested column (or of a field inside one). An error carries the
    /// path below this value (`.os`, `[2].score`) and the message.
    fn nested(&self, value: Raw<'_>) -> Result<Nested, (String, String)> {
        let mismatch = |value: &Raw| {
            (
                String::new(),
                format!("expected {}, got {}", self.expected(), value.shown()),
            )
        };
        match (self, value) {
            (_, Raw::Null) => Ok(Nested::Null),
            (ColumnType::List(item), Raw::Nested(Value::Array(items))) => items
                .into_iter()
                .enumerate()
                .map(|(i, v)| {
                    item.nested(Raw::from(v))
                        .map_err(|(path, e)| (format!("[{i}]{path}"), e))
                })
                .collect::<Result<_, _>>()
                .map(Nested::List),
            (ColumnType::Struct(fields), Raw::Nested(Value::Object(mut object))) => fields
                .iter()
                .map(|(name, t)| match object.remove(name) {
                    None => Ok(Nested::Null),
                    Some(v) => t
                        .nested(Raw::from(v))
                        .map_err(|(path, e)| (format!(".{name}{path}"), e)),
                })
                .collect::<Result<_, _>>()
                .map(Nested::Struct),
            (ColumnType::List(_) | ColumnType::Struct(_), other) => Err(mismatch(&other)),
            (scalar, other) => scalar
                .convert(other)
                .map(|cell| Nested::Leaf(cell.into_owned()))
                .map_err(|e| (String::new(), e)),
        }
    }
}

/// The field of a list's items: nullable, named "element" as Delta's schema names it when a
/// table is read back (Arrow's default "item" would not match on the next write).
fn list_item(item: &ColumnType) -> Arc<Field> {
    Arc::new(Field::new("element", item.arrow_type(), true))
}

/// The Arrow fields of a struct's declared fields, all nullable, as for a record's.
fn struct_fields(fields: &[(String, ColumnType)]) -> Fields {
    RecordParser::arrow_fields(fields).into()
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

impl From<Value> for Raw<'static> {
    fn from(value: Value) -> Raw<'static> {
        match value {
            Value::Null => Raw::Null,
            Value::Bool(b) => Raw::Bool(b),
            Value::Number(n) => Raw::Number(n),
            Value::String(s) => Raw::Str(Cow::Owned(s)),
            nested => Raw::Nested(nested),
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

impl Cell<'_> {
    fn into_owned(self) -> Cell<'static> {
        match self {
            Cell::Str(s) => Cell::Str(Cow::Owned(s.into_owned())),
            Cell::Null => Cell::Null,
            Cell::Int(v) => Cell::Int(v),
            Cell::Double(v) => Cell::Double(v),
            Cell::Bool(v) => Cell::Bool(v),
            Cell::Date(v) => Cell::Date(v),
            Cell::Timestamp(v) => Cell::Timestamp(v),
            Cell::Decimal(v) => Cell::Decimal(v),
        }
    }
}

/// A typed value of a nested column, kept until [`build_nested`] turns a column of them into
/// one Arrow array: Arrow's nested builders would need a downcast at every level.
enum Nested {
    Null,
    Leaf(Cell<'static>),
    List(Vec<Nested>),
    Struct(Vec<Nested>),
}

/// One Arrow array of type `t` from its values.
fn build_nested(t: &ColumnType, values: Vec<Nested>) -> ArrayRef {
    match t {
        ColumnType::List(item) => {
            let mut offsets = Vec::with_capacity(values.len() + 1);
            offsets.push(0i32);
            let mut valid = Vec::with_capacity(values.len());
            let mut items = Vec::new();
            for value in values {
                let is_list = matches!(value, Nested::List(_));
                if let Nested::List(values) = value {
                    items.extend(values);
                }
                valid.push(is_list);
                offsets.push(items.len() as i32);
            }
            let child = build_nested(item, items);
            Arc::new(ListArray::new(
                list_item(item),
                OffsetBuffer::new(offsets.into()),
                child,
                Some(NullBuffer::from(valid)),
            ))
        }
        ColumnType::Struct(fields) => {
            let n = values.len();
            let mut columns: Vec<Vec<Nested>> =
                fields.iter().map(|_| Vec::with_capacity(n)).collect();
            let mut valid = Vec::with_capacity(n);
            for value in values {
                match value {
                    Nested::Struct(values) => {
                        valid.push(true);
                        columns.iter_mut().zip(values).for_each(|(c, v)| c.push(v));
                    }
                    _ => {
                        valid.push(false);
                        columns.iter_mut().for_each(|c| c.push(Nested::Null));
                    }
                }
            }
            let arrays = fields
                .iter()
                .zip(columns)
                .map(|((_, t), values)| build_nested(t, values))
                .collect();
            Arc::new(StructArray::new(
                struct_fields(fields),
                arrays,
                Some(NullBuffer::from(valid)),
            ))
        }
        scalar => {
            let mut builder = scalar.builder(values.len());
            for value in values {
                match value {
                    Nested::Leaf(cell) => append(builder.as_mut(), cell),
                    _ => append_null(builder.as_mut()),
                }
            }
            builder.finish()
        }
    }
}

/// Turns JSON object records into columns of the declared types.
pub struct RecordParser {
    fields: Vec<(String, ColumnType)>,
    /// Field name → position, to find a key without building the whole JSON object.
    index: HashMap<String, usize>,
    columns: Vec<ColumnBuffer>,
}

/// One column's values so far.
enum ColumnBuffer {
    Scalar(Box<dyn ArrayBuilder>),
    Nested(Vec<Nested>),
}

/// One field of a record, converted.
enum Converted<'a> {
    Scalar(Cell<'a>),
    Nested(Nested),
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
            columns: fields
                .iter()
                .map(|(_, t)| match t.is_nested() {
                    true => ColumnBuffer::Nested(Vec::with_capacity(capacity)),
                    false => ColumnBuffer::Scalar(t.builder(capacity)),
                })
                .collect(),
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
            .map(|((name, column_type), value)| {
                let value = value.unwrap_or(Raw::Null);
                if column_type.is_nested() {
                    column_type
                        .nested(value)
                        .map(Converted::Nested)
                        .map_err(|(path, e)| format!("field \"{name}{path}\": {e}"))
                } else {
                    column_type
                        .convert(value)
                        .map(Converted::Scalar)
                        .map_err(|e| format!("field {name:?}: {e}"))
                }
            })
            .collect::<Result<Vec<_>, String>>()?;
        for (column, cell) in self.columns.iter_mut().zip(cells) {
            match (column, cell) {
                (ColumnBuffer::Scalar(b), Converted::Scalar(cell)) => append(b.as_mut(), cell),
                (ColumnBuffer::Nested(values), Converted::Nested(value)) => values.push(value),
                _ => unreachable!("a column and its values come from the same type"),
            }
        }
        Ok(())
    }

    pub fn finish(&mut self) -> Vec<ArrayRef> {
        self.columns
            .iter_mut()
            .zip(&self.fields)
            .map(|(column, (_, t))| match column {
                ColumnBuffer::Scalar(b) => b.finish(),
                ColumnBuffer::Nested(values) => build_nested(t, std::mem::take(values)),
            })
            .collect()
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
        assert_each_fails(&mut p, &cases);
        p.push(br#"{"title":"fine"}"#).unwrap();
        let cols = p.finish();
        assert!(
            cols.iter().all(|c| c.len() == 1),
            "only the good record landed"
        );
    }

    /// Each record fails to parse with an error that contains its text.
    fn assert_each_fails(p: &mut RecordParser, cases: &[(&[u8], &str)]) {
        for (raw, want) in cases {
            let err = p.push(raw).unwrap_err();
            assert!(
                err.contains(want),
                "{}: {err}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    fn nested_fields() -> Vec<(String, ColumnType)> {
        [
            ("device", "struct<type: string, os_version: string>"),
            ("actions", "list<string>"),
            (
                "recs",
                "List< Struct<media_id: string, score: double, tags: list<string>> >",
            ),
        ]
        .iter()
        .map(|(n, t)| (n.to_string(), ColumnType::try_from(t.to_string()).unwrap()))
        .collect()
    }

    #[test]
    fn nested_type_names_parse_print_and_explain_their_errors() {
        let fields = nested_fields();
        assert_eq!(
            fields[2].1.to_string(),
            "list<struct<media_id: string, score: double, tags: list<string>>>"
        );
        let reparsed = ColumnType::try_from(fields[2].1.to_string()).unwrap();
        assert_eq!(reparsed, fields[2].1);
        for (bad, why) in [
            ("struct<a: varchar>", "unknown type \"varchar\""),
            ("struct<a: int, a: string>", "declared twice"),
            ("list<int", "expected '>'"),
            ("struct<>", "needs a name"),
            ("list<int> x", "unexpected \"x\""),
            ("decimal(x,1)", "are numbers"),
        ] {
            let err = ColumnType::try_from(bad.to_string()).unwrap_err();
            assert!(err.contains(why) && err.contains(bad), "{bad}: {err}");
        }
    }

    #[test]
    fn nested_records_become_struct_and_list_columns() {
        let fields = nested_fields();
        let mut p = RecordParser::new(&fields, 4);
        p.push(br#"{"device":{"type":"tv","os_version":14,"extra":1},"actions":["play",null],"recs":[{"media_id":"m1","score":"0.5","tags":["a"]},null]}"#).unwrap();
        p.push(br#"{"device":{"type":"mobile"},"actions":[],"recs":null}"#)
            .unwrap();
        p.push(br#"{"device":null}"#).unwrap();
        let cols = p.finish();
        for ((_, t), col) in fields.iter().zip(&cols) {
            assert_eq!(col.data_type(), &t.arrow_type());
        }
        let device = cols[0].as_struct();
        let os_version = device.column(1).as_string::<i32>();
        assert_eq!(os_version.value(0), "14", "a number kept as its JSON text");
        assert!(os_version.is_null(1) && device.is_null(2) && device.is_valid(1));
        let actions = cols[1].as_list::<i32>();
        assert_eq!(actions.value_length(0), 2);
        assert!(actions.value(0).is_null(1) && actions.value_length(1) == 0);
        assert!(actions.is_null(2));
        let recs = cols[2].as_list::<i32>();
        let first = recs.value(0);
        let first = first.as_struct();
        assert_eq!(first.column(1).as_primitive::<Float64Type>().value(0), 0.5);
        assert_eq!(
            first
                .column(2)
                .as_list::<i32>()
                .value(0)
                .as_string::<i32>()
                .value(0),
            "a"
        );
        assert!(first.is_null(1) && recs.is_null(1) && recs.is_null(2));
    }

    #[test]
    fn nested_errors_name_the_path_to_the_bad_value() {
        let mut p = RecordParser::new(&nested_fields(), 4);
        let cases: [(&[u8], &str); 4] = [
            (
                br#"{"recs":[{"score":1},{"score":"high"}]}"#,
                r#"field "recs[1].score": expected a finite number, got "high""#,
            ),
            (
                br#"{"device":"phone"}"#,
                r#"field "device": expected an object, got "phone""#,
            ),
            (
                br#"{"actions":{"a":1}}"#,
                r#"field "actions": expected a list (JSON array), got {"a":1}"#,
            ),
            (
                br#"{"recs":[{"tags":[1,[2]]}]}"#,
                r#"field "recs[0].tags[1]": expected a string, got [2]"#,
            ),
        ];
        assert_each_fails(&mut p, &cases);
        assert!(p.finish().iter().all(|c| c.is_empty()), "nothing appended");
    }
}
