//! The Arrow types lakectl writes Delta files in. A Delta schema has no unsigned integers, no
//! dictionaries and one width of strings, lists and timestamps; delta-rs declares the nearest
//! Delta type (a `UInt64` column becomes `long`) but writes the batch's own Arrow types into the
//! Parquet files, which stricter readers refuse (Polars: "incoming: UInt64 != target: Int64").
//! Every batch is brought to the types its table declares before it is written.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::compute::CastOptions;
use arrow::datatypes::{DataType, Field, FieldRef, Fields, Schema, TimeUnit};

use crate::error::{Error, Result};

/// The type a column of `data_type` has in a Delta table lakectl makes: unsigned integers as
/// the next wider signed type (`UInt64` as `Int64`: a count or a length does not reach 2^63),
/// dictionaries as their values, one width of strings, binaries and lists, microsecond
/// timestamps; nested types likewise.
pub fn delta_type(data_type: &DataType) -> DataType {
    use DataType as D;
    match data_type {
        D::UInt8 => D::Int16,
        D::UInt16 => D::Int32,
        D::UInt32 | D::UInt64 => D::Int64,
        D::Float16 => D::Float32,
        D::Dictionary(_, values) => delta_type(values),
        D::LargeUtf8 | D::Utf8View => D::Utf8,
        D::LargeBinary | D::BinaryView => D::Binary,
        D::Date64 => D::Date32,
        D::Timestamp(_, tz) => D::Timestamp(TimeUnit::Microsecond, tz.clone()),
        D::List(item) | D::LargeList(item) | D::ListView(item) | D::LargeListView(item) => {
            D::List(delta_field(item))
        }
        D::FixedSizeList(item, _) => D::List(delta_field(item)),
        D::Struct(fields) => D::Struct(fields.iter().map(delta_field).collect::<Fields>()),
        D::Map(entries, sorted) => D::Map(delta_field(entries), *sorted),
        other => other.clone(),
    }
}

fn delta_field(field: &FieldRef) -> FieldRef {
    Arc::new(Field::new(
        field.name(),
        delta_type(field.data_type()),
        field.is_nullable(),
    ))
}

/// `batch` with the types of `declared` (the table's schema, `None` before the table exists)
/// for the columns it declares, and [`delta_type`]'s for the others. A value that does not
/// fit its column (an unsigned value past 2^63) is an error naming the column.
pub fn as_delta_types(batch: RecordBatch, declared: Option<&Schema>) -> Result<RecordBatch> {
    let schema = batch.schema();
    let wanted: Vec<DataType> = (schema.fields().iter())
        .map(
            |f| match declared.and_then(|d| d.field_with_name(f.name()).ok()) {
                Some(d) => d.data_type().clone(),
                None => delta_type(f.data_type()),
            },
        )
        .collect();
    if (schema.fields().iter().zip(&wanted)).all(|(f, w)| f.data_type() == w) {
        return Ok(batch);
    }
    let strict = CastOptions {
        safe: false,
        ..Default::default()
    };
    let mut fields = Vec::with_capacity(wanted.len());
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(wanted.len());
    for ((field, column), to) in schema.fields().iter().zip(batch.columns()).zip(wanted) {
        let column = if column.data_type() == &to {
            column.clone()
        } else {
            arrow::compute::cast_with_options(column, &to, &strict).map_err(|e| {
                Error::Input(format!(
                    "column {:?}: its {} values do not fit the table's {to}: {e}",
                    field.name(),
                    column.data_type()
                ))
            })?
        };
        fields.push(
            Field::new(field.name(), to, field.is_nullable())
                .with_metadata(field.metadata().clone()),
        );
        columns.push(column);
    }
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone())),
        columns,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{
        AsArray, DictionaryArray, Int64Array, StringArray, UInt64Array, UInt8Array,
    };
    use arrow::datatypes::{Int32Type, Int64Type};

    #[test]
    fn unsigned_and_dictionary_columns_take_delta_types() {
        let batch = RecordBatch::try_from_iter([
            ("n", Arc::new(UInt64Array::from(vec![3, 0])) as ArrayRef),
            ("b", Arc::new(UInt8Array::from(vec![255, 1])) as ArrayRef),
            (
                "e",
                Arc::new(DictionaryArray::<Int32Type>::from_iter(["x", "y"])) as ArrayRef,
            ),
            ("s", Arc::new(StringArray::from(vec!["a", "b"])) as ArrayRef),
        ])
        .unwrap();
        let typed = as_delta_types(batch.clone(), None).unwrap();
        let types: Vec<DataType> = (typed.schema().fields().iter())
            .map(|f| f.data_type().clone())
            .collect();
        assert_eq!(
            types,
            [
                DataType::Int64,
                DataType::Int16,
                DataType::Utf8,
                DataType::Utf8
            ]
        );
        assert_eq!(
            typed.column(0).as_primitive::<Int64Type>().values(),
            &[3, 0]
        );
        assert_eq!(typed.column(2).as_string::<i32>().value(1), "y");
        // A batch already in its types is returned as it is.
        let again = as_delta_types(typed.clone(), Some(&typed.schema())).unwrap();
        assert_eq!(again, typed);
    }

    #[test]
    fn a_declared_type_wins_and_a_value_that_does_not_fit_is_named() {
        let declared = Schema::new(vec![Field::new("n", DataType::Int64, true)]);
        let batch = RecordBatch::try_from_iter([(
            "n",
            Arc::new(UInt64Array::from(vec![u64::MAX])) as ArrayRef,
        )])
        .unwrap();
        let err = as_delta_types(batch, Some(&declared)).unwrap_err();
        assert!(err.to_string().contains("column \"n\""), "{err}");
        let fits =
            RecordBatch::try_from_iter([("n", Arc::new(Int64Array::from(vec![7])) as ArrayRef)])
                .unwrap();
        assert_eq!(as_delta_types(fits.clone(), Some(&declared)).unwrap(), fits);
    }
}
