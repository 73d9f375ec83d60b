//! PostgreSQL's binary COPY format, written straight from Arrow columns: no text rendering and
//! parsing on either side. Each value is encoded as the type [`crate::types::pg_type`] maps its
//! column to.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Float32Type, Float64Type, Int16Type, Int32Type,
    Int64Type, TimeUnit, TimestampMicrosecondType,
};

use crate::{Error, Result};

const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";
/// Days and microseconds between the Unix epoch and Postgres' (2000-01-01).
const PG_EPOCH_DAYS: i32 = 10_957;
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// The stream header: signature, flags, no extension.
pub fn header(out: &mut Vec<u8>) {
    out.extend_from_slice(SIGNATURE);
    out.extend_from_slice(&0i32.to_be_bytes());
    out.extend_from_slice(&0i32.to_be_bytes());
}

pub fn trailer(out: &mut Vec<u8>) {
    out.extend_from_slice(&(-1i16).to_be_bytes());
}

/// One column, brought to the Arrow type whose encoding matches its Postgres type.
enum Encoded {
    Bool(ArrayRef),
    I16(ArrayRef),
    I32(ArrayRef),
    I64(ArrayRef),
    F32(ArrayRef),
    F64(ArrayRef),
    Numeric(ArrayRef, i8),
    Text(ArrayRef),
    Bytes(ArrayRef),
    Date(ArrayRef),
    Timestamp(ArrayRef),
    /// Pre-rendered JSON text per row.
    Json(Vec<Option<String>>),
}

impl Encoded {
    /// The Arrow array behind the column; `None` for pre-rendered JSON.
    fn array(&self) -> Option<&ArrayRef> {
        match self {
            Encoded::Bool(a)
            | Encoded::I16(a)
            | Encoded::I32(a)
            | Encoded::I64(a)
            | Encoded::F32(a)
            | Encoded::F64(a)
            | Encoded::Numeric(a, _)
            | Encoded::Text(a)
            | Encoded::Bytes(a)
            | Encoded::Date(a)
            | Encoded::Timestamp(a) => Some(a),
            Encoded::Json(_) => None,
        }
    }
}

fn cast(array: &ArrayRef, to: &DataType) -> Result<ArrayRef> {
    Ok(arrow::compute::cast(array, to)?)
}

fn prepare(array: &ArrayRef, name: &str) -> Result<Encoded> {
    use DataType as D;
    Ok(match array.data_type() {
        D::Boolean => Encoded::Bool(array.clone()),
        D::Int8 | D::Int16 | D::UInt8 => Encoded::I16(cast(array, &D::Int16)?),
        D::Int32 | D::UInt16 => Encoded::I32(cast(array, &D::Int32)?),
        D::Int64 | D::UInt32 => Encoded::I64(cast(array, &D::Int64)?),
        D::UInt64 => Encoded::Numeric(cast(array, &D::Decimal128(20, 0))?, 0),
        D::Float16 | D::Float32 => Encoded::F32(cast(array, &D::Float32)?),
        D::Float64 => Encoded::F64(array.clone()),
        D::Decimal128(_, s) => Encoded::Numeric(array.clone(), *s),
        D::Utf8 => Encoded::Text(array.clone()),
        D::LargeUtf8 | D::Utf8View => Encoded::Text(cast(array, &D::Utf8)?),
        D::Binary => Encoded::Bytes(array.clone()),
        D::LargeBinary | D::BinaryView | D::FixedSizeBinary(_) => {
            Encoded::Bytes(cast(array, &D::Binary)?)
        }
        D::Date32 => Encoded::Date(array.clone()),
        D::Date64 => Encoded::Date(cast(array, &D::Date32)?),
        D::Timestamp(unit, tz) => {
            let micros = D::Timestamp(TimeUnit::Microsecond, tz.clone());
            Encoded::Timestamp(if *unit == TimeUnit::Microsecond {
                array.clone()
            } else {
                cast(array, &micros)?
            })
        }
        D::List(_) | D::LargeList(_) | D::FixedSizeList(..) | D::Struct(_) | D::Map(..) => {
            Encoded::Json(json_values(array, name)?)
        }
        other => {
            return Err(Error::Schema(format!(
                "column {name:?}: type {other} cannot be loaded"
            )))
        }
    })
}

/// Renders nested values as JSON through Arrow's JSON writer, one row per line.
fn json_values(array: &ArrayRef, name: &str) -> Result<Vec<Option<String>>> {
    let field = arrow::datatypes::Field::new("v", array.data_type().clone(), true);
    let batch = RecordBatch::try_new(
        Arc::new(arrow::datatypes::Schema::new(vec![field])),
        vec![array.clone()],
    )?;
    let mut writer = arrow::json::LineDelimitedWriter::new(Vec::new());
    writer.write(&batch)?;
    writer.finish()?;
    let text = String::from_utf8(writer.into_inner())
        .map_err(|e| Error::Schema(format!("column {name:?}: JSON is not UTF-8: {e}")))?;
    let mut values = Vec::with_capacity(array.len());
    for (i, line) in text.lines().enumerate() {
        if array.is_null(i) {
            values.push(None);
            continue;
        }
        let mut row: serde_json::Map<String, serde_json::Value> = serde_json::from_str(line)
            .map_err(|e| Error::Schema(format!("column {name:?}: {e}")))?;
        values.push(Some(
            row.remove("v")
                .unwrap_or(serde_json::Value::Null)
                .to_string(),
        ));
    }
    Ok(values)
}

/// A row Postgres would refuse, found before the COPY (which fails as a whole on one such
/// row), and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub row: usize,
    pub reason: String,
}

/// Appends the rows of `batch` to `out`, except those Postgres would refuse, which are
/// returned instead: text or JSON with a NUL character, a NULL in a `not_null` column (the
/// target's key and NOT NULL columns), a date or timestamp outside Postgres' range, a decimal
/// with more digits than its column's precision.
pub fn encode(batch: &RecordBatch, not_null: &[String], out: &mut Vec<u8>) -> Result<Vec<Refused>> {
    let schema = batch.schema();
    let columns: Vec<Encoded> = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| prepare(c, f.name()))
        .collect::<Result<_>>()?;
    let width = i16::try_from(columns.len())
        .map_err(|_| Error::Schema("more than 32767 columns".into()))?;
    let mut refused: Vec<Refused> = Vec::new();
    for (column, field) in columns.iter().zip(schema.fields()) {
        let required = not_null.iter().any(|c| c == field.name());
        refuse(column, field.name(), required, &mut refused);
    }
    refused.sort_by_key(|r| r.row);
    refused.dedup_by_key(|r| r.row);
    let mut next_refused = refused.iter().map(|r| r.row).peekable();
    for row in 0..batch.num_rows() {
        if next_refused.next_if_eq(&row).is_some() {
            continue;
        }
        out.extend_from_slice(&width.to_be_bytes());
        for column in &columns {
            write_value(column, row, out);
        }
    }
    Ok(refused)
}

/// Postgres' range of `date` in days since 2000-01-01: from 4713 BC to 5874897 AD.
const PG_DAYS: std::ops::Range<i64> = -2_451_545..2_145_031_949;
/// ... and of timestamps in microseconds since 2000-01-01: from 4713 BC to 294276 AD.
const PG_MICROS: std::ops::Range<i64> = -211_813_488_000_000_000..9_223_371_331_200_000_000;

/// Adds to `refused` the rows of `column` Postgres would not take.
fn refuse(column: &Encoded, name: &str, required: bool, refused: &mut Vec<Refused>) {
    let mut add = |row: usize, reason: String| refused.push(Refused { row, reason });
    let Some(array) = column.array() else {
        if let Encoded::Json(values) = column {
            for (row, value) in values.iter().enumerate() {
                match value {
                    None if required => add(row, null_in(name)),
                    // jsonb refuses the escaped NUL too ("unsupported Unicode escape sequence").
                    Some(json) if json.contains("\\u0000") => add(row, nul_in(name, "JSON")),
                    _ => {}
                }
            }
        }
        return;
    };
    if required && array.null_count() > 0 {
        (0..array.len())
            .filter(|&row| array.is_null(row))
            .for_each(|row| add(row, null_in(name)));
    }
    let valid = |row: &usize| array.is_valid(*row);
    match column {
        Encoded::Text(a) => {
            let text = a.as_string::<i32>();
            // Most batches hold no NUL at all: one scan of the bytes answers for every value.
            if text.value_data().contains(&0) {
                (0..text.len())
                    .filter(valid)
                    .filter(|&row| text.value(row).contains('\0'))
                    .for_each(|row| add(row, nul_in(name, "text")));
            }
        }
        Encoded::Date(a) => {
            let days = a.as_primitive::<Date32Type>();
            for row in (0..days.len()).filter(valid) {
                let day = days.value(row) as i64 - PG_EPOCH_DAYS as i64;
                if !PG_DAYS.contains(&day) {
                    add(row, out_of_range(name, "date"));
                }
            }
        }
        Encoded::Timestamp(a) => {
            let micros = a.as_primitive::<TimestampMicrosecondType>();
            for row in (0..micros.len()).filter(valid) {
                let pg = micros.value(row).checked_sub(PG_EPOCH_MICROS);
                if !pg.is_some_and(|m| PG_MICROS.contains(&m)) {
                    add(row, out_of_range(name, "timestamp"));
                }
            }
        }
        Encoded::Numeric(a, _) => {
            let decimals = a.as_primitive::<Decimal128Type>();
            let limit = 10u128.checked_pow(decimals.precision() as u32);
            for row in (0..decimals.len()).filter(valid) {
                if limit.is_some_and(|l| decimals.value(row).unsigned_abs() >= l) {
                    add(
                        row,
                        format!(
                            "column {name:?}: the value has more than the {} digits of its \
                             numeric column",
                            decimals.precision()
                        ),
                    );
                }
            }
        }
        _ => {}
    }
}

fn null_in(name: &str) -> String {
    format!("column {name:?} is NULL, and the target's column is NOT NULL (a key column)")
}

fn nul_in(name: &str, what: &str) -> String {
    format!("column {name:?}: {what} with a NUL character (U+0000), which Postgres cannot store")
}

fn out_of_range(name: &str, what: &str) -> String {
    format!("column {name:?}: the {what} is outside the range Postgres stores (4713 BC to 294276 AD for timestamps, 5874897 AD for dates)")
}

fn field(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn write_value(column: &Encoded, row: usize, out: &mut Vec<u8>) {
    if let Encoded::Json(values) = column {
        match &values[row] {
            None => out.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(json) => {
                // jsonb's binary form: a version byte, then the text.
                out.extend_from_slice(&(json.len() as i32 + 1).to_be_bytes());
                out.push(1);
                out.extend_from_slice(json.as_bytes());
            }
        }
        return;
    }
    if column.array().is_some_and(|a| a.is_null(row)) {
        out.extend_from_slice(&(-1i32).to_be_bytes());
        return;
    }
    match column {
        Encoded::Bool(a) => field(out, &[a.as_boolean().value(row) as u8]),
        Encoded::I16(a) => field(out, &a.as_primitive::<Int16Type>().value(row).to_be_bytes()),
        Encoded::I32(a) => field(out, &a.as_primitive::<Int32Type>().value(row).to_be_bytes()),
        Encoded::I64(a) => field(out, &a.as_primitive::<Int64Type>().value(row).to_be_bytes()),
        Encoded::F32(a) => field(
            out,
            &a.as_primitive::<Float32Type>().value(row).to_be_bytes(),
        ),
        Encoded::F64(a) => field(
            out,
            &a.as_primitive::<Float64Type>().value(row).to_be_bytes(),
        ),
        Encoded::Numeric(a, scale) => {
            numeric(a.as_primitive::<Decimal128Type>().value(row), *scale, out)
        }
        Encoded::Text(a) => field(out, a.as_string::<i32>().value(row).as_bytes()),
        Encoded::Bytes(a) => field(out, a.as_binary::<i32>().value(row)),
        Encoded::Date(a) => {
            // In range: refused rows are not written.
            let days = a.as_primitive::<Date32Type>().value(row) - PG_EPOCH_DAYS;
            field(out, &days.to_be_bytes())
        }
        Encoded::Timestamp(a) => {
            let micros = a.as_primitive::<TimestampMicrosecondType>().value(row) - PG_EPOCH_MICROS;
            field(out, &micros.to_be_bytes())
        }
        Encoded::Json(_) => unreachable!("handled above"),
    }
}

/// Postgres `numeric` binary form: base-10000 digits with a weight (the power of 10000 of
/// the first digit), a sign and the display scale.
fn numeric(value: i128, scale: i8, out: &mut Vec<u8>) {
    let negative = value < 0;
    let digits = value.unsigned_abs().to_string();
    let scale = scale.max(0) as usize;
    let (int_part, frac_part) = if digits.len() > scale {
        digits.split_at(digits.len() - scale)
    } else {
        ("", digits.as_str())
    };
    let frac = format!("{frac_part:0>scale$}");
    // Left-pad the integer part and right-pad the fraction to whole groups of 4.
    let int_groups = int_part.len().div_ceil(4);
    let int_padded = format!("{int_part:0>width$}", width = int_groups * 4);
    let frac_groups = frac.len().div_ceil(4);
    let frac_padded = format!("{frac:0<width$}", width = frac_groups * 4);
    let mut groups: Vec<i16> = int_padded
        .as_bytes()
        .chunks(4)
        .chain(frac_padded.as_bytes().chunks(4))
        .map(|c| {
            std::str::from_utf8(c)
                .expect("ASCII digits")
                .parse()
                .expect("4 digits")
        })
        .collect();
    let mut weight = int_groups as i16 - 1;
    while groups.first() == Some(&0) {
        groups.remove(0);
        weight -= 1;
    }
    while groups.last() == Some(&0) {
        groups.pop();
    }
    if groups.is_empty() {
        weight = 0;
    }
    let mut bytes = Vec::with_capacity(8 + groups.len() * 2);
    bytes.extend_from_slice(&(groups.len() as i16).to_be_bytes());
    bytes.extend_from_slice(&weight.to_be_bytes());
    bytes.extend_from_slice(&(if negative { 0x4000u16 } else { 0 }).to_be_bytes());
    bytes.extend_from_slice(&(scale as i16).to_be_bytes());
    for g in groups {
        bytes.extend_from_slice(&g.to_be_bytes());
    }
    field(out, &bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric_fields(value: i128, scale: i8) -> (i16, i16, u16, i16, Vec<i16>) {
        let mut out = Vec::new();
        numeric(value, scale, &mut out);
        let word = |i: usize| i16::from_be_bytes([out[4 + i * 2], out[5 + i * 2]]);
        let n = word(0);
        let digits = (0..n as usize).map(|i| word(4 + i)).collect();
        (n, word(1), word(2) as u16, word(3), digits)
    }

    #[test]
    fn numerics_encode_as_base_10000_digits() {
        // 5236.90 at scale 2: digits [5236, 9000], weight 0.
        assert_eq!(numeric_fields(523690, 2), (2, 0, 0, 2, vec![5236, 9000]));
        // -0.05: one digit 500 at weight -1.
        assert_eq!(numeric_fields(-5, 2), (1, -1, 0x4000, 2, vec![500]));
        // 100000000: 1 0000 0000 -> [1], weight 2.
        assert_eq!(numeric_fields(100_000_000, 0), (1, 2, 0, 0, vec![1]));
        assert_eq!(numeric_fields(0, 2), (0, 0, 0, 2, vec![]));
    }

    #[test]
    fn nulls_are_length_minus_one() {
        let batch = RecordBatch::try_from_iter([(
            "x",
            Arc::new(arrow::array::Int64Array::from(vec![Some(7), None])) as ArrayRef,
        )])
        .unwrap();
        let mut out = Vec::new();
        assert_eq!(encode(&batch, &[], &mut out).unwrap(), []);
        assert_eq!(
            out,
            [
                &1i16.to_be_bytes()[..],
                &8i32.to_be_bytes(),
                &7i64.to_be_bytes(),
                &1i16.to_be_bytes(),
                &(-1i32).to_be_bytes(),
            ]
            .concat()
        );
    }
}
