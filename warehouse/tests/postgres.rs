//! The type mapping, binary COPY, hostile identifiers and schema drift against the real
//! PostgreSQL that `scripts/services.sh` starts (`DATABASE_URL`).

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryArray, BooleanArray, Date32Array, Decimal128Array, Float32Array, Float64Array,
    Int16Array, Int32Array, Int64Array, Int8Array, LargeStringArray, ListArray, RecordBatch,
    StringArray, StringViewArray, StructArray, TimestampMicrosecondArray,
    TimestampMillisecondArray, TimestampNanosecondArray, UInt16Array, UInt32Array, UInt64Array,
    UInt8Array,
};
use arrow::datatypes::{DataType, Field, Int32Type};
use lakehouse_core::testing::{service_env, unique_name};
use sqlx::{PgConnection, Row};
use warehouse::{Copier, TableName};

async fn connect() -> Option<PgConnection> {
    let url = service_env("DATABASE_URL")?;
    let pool = warehouse::connect(Some(&url), "DATABASE_URL")
        .await
        .unwrap();
    Some(pool.acquire().await.unwrap().detach())
}

/// Creates (or alters) `table` for `batch`'s schema and COPYs the batch in, in one transaction.
async fn load(
    conn: &mut PgConnection,
    table: &TableName,
    batch: &RecordBatch,
    key: &[String],
) -> warehouse::Result<u64> {
    let (rows, refused) = load_refusing(conn, table, batch, key).await?;
    assert_eq!(refused, [], "no row refused");
    Ok(rows)
}

/// [`load`], returning the rows Postgres would have refused too.
async fn load_refusing(
    conn: &mut PgConnection,
    table: &TableName,
    batch: &RecordBatch,
    key: &[String],
) -> warehouse::Result<(u64, Vec<warehouse::copy::Refused>)> {
    let wanted = warehouse::types::columns_for(&batch.schema(), table)?;
    let existing = warehouse::existing_columns(conn, table).await?;
    let changes = warehouse::types::schema_changes(table, &wanted, existing.as_deref(), key)?;
    sqlx::query("BEGIN").execute(&mut *conn).await?;
    warehouse::change_catalog(conn, changes).await?;
    let columns: Vec<String> = wanted.iter().map(|c| c.name.clone()).collect();
    let mut copier = Copier::start(conn, &table.to_string(), &columns, key).await?;
    let refused = copier.send(batch).await?;
    let rows = copier.finish().await?;
    sqlx::query("COMMIT").execute(&mut *conn).await?;
    Ok((rows, refused))
}

fn column(name: &str, array: ArrayRef) -> (Field, ArrayRef) {
    (Field::new(name, array.data_type().clone(), true), array)
}

#[tokio::test]
async fn every_supported_type_round_trips_with_nulls_and_edges() {
    let Some(mut conn) = connect().await else {
        return;
    };
    let table = TableName::parse(
        &format!("{}.\"odd\" name; DROP TABLE x; --", unique_name("wh")),
        "public",
    );
    let list = ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
        Some(vec![Some(1), None, Some(3)]),
        Some(vec![]),
        None,
    ]);
    let structs = StructArray::from(vec![
        (
            Arc::new(Field::new("a", DataType::Int64, true)),
            Arc::new(Int64Array::from(vec![Some(1), None, Some(3)])) as ArrayRef,
        ),
        (
            Arc::new(Field::new("b", DataType::Utf8, true)),
            Arc::new(StringArray::from(vec![Some("x\"y"), Some("é"), None])) as ArrayRef,
        ),
    ]);
    let columns = vec![
        column("id", Arc::new(Int32Array::from(vec![1, 2, 3]))),
        column(
            "i8",
            Arc::new(Int8Array::from(vec![Some(i8::MIN), Some(i8::MAX), None])),
        ),
        column(
            "i16",
            Arc::new(Int16Array::from(vec![Some(i16::MIN), Some(0), None])),
        ),
        column(
            "i64",
            Arc::new(Int64Array::from(vec![Some(i64::MIN), Some(i64::MAX), None])),
        ),
        column(
            "u8",
            Arc::new(UInt8Array::from(vec![Some(255), Some(0), None])),
        ),
        column(
            "u16",
            Arc::new(UInt16Array::from(vec![Some(65535), Some(1), None])),
        ),
        column(
            "u32",
            Arc::new(UInt32Array::from(vec![Some(u32::MAX), Some(1), None])),
        ),
        column(
            "u64",
            Arc::new(UInt64Array::from(vec![Some(u64::MAX), Some(0), None])),
        ),
        column(
            "f32",
            Arc::new(Float32Array::from(vec![Some(1.5), Some(-0.0), None])),
        ),
        column(
            "f64",
            Arc::new(Float64Array::from(vec![
                Some(f64::NAN),
                Some(f64::NEG_INFINITY),
                Some(1e300),
            ])),
        ),
        column(
            "dec",
            Arc::new(
                Decimal128Array::from(vec![Some(-1_234_567_891), Some(5), Some(0)])
                    .with_precision_and_scale(12, 2)
                    .unwrap(),
            ),
        ),
        column(
            "big dec",
            Arc::new(
                Decimal128Array::from(vec![Some(10i128.pow(37)), Some(-1), None])
                    .with_precision_and_scale(38, 0)
                    .unwrap(),
            ),
        ),
        column(
            "text",
            Arc::new(StringArray::from(vec![
                Some(""),
                Some("héllo \"q\" ,;\n\\"),
                None,
            ])),
        ),
        column(
            "large",
            Arc::new(LargeStringArray::from(vec![Some("l"), None, Some("🦀")])),
        ),
        column(
            "view",
            Arc::new(StringViewArray::from(vec![
                Some("a view string longer than twelve"),
                Some("v"),
                None,
            ])),
        ),
        column(
            "flag",
            Arc::new(BooleanArray::from(vec![Some(true), Some(false), None])),
        ),
        column(
            "day",
            Arc::new(Date32Array::from(vec![
                Some(-719_162),
                Some(-1),
                Some(20_000),
            ])),
        ),
        column(
            "at",
            Arc::new(
                TimestampMicrosecondArray::from(vec![Some(-1), Some(1_700_000_000_123_456), None])
                    .with_timezone("UTC"),
            ),
        ),
        column(
            "at ms",
            Arc::new(TimestampMillisecondArray::from(vec![
                Some(1_000),
                None,
                Some(-86_400_000),
            ])),
        ),
        column(
            "at ns",
            Arc::new(
                TimestampNanosecondArray::from(vec![Some(1_999), None, Some(0)])
                    .with_timezone("+02:00"),
            ),
        ),
        column(
            "bytes",
            Arc::new(BinaryArray::from(vec![
                Some(&[0u8, 255, 10][..]),
                Some(&[][..]),
                None,
            ])),
        ),
        column("list", Arc::new(list)),
        column("struct", Arc::new(structs)),
    ];
    let (fields, arrays): (Vec<Field>, Vec<ArrayRef>) = columns.into_iter().unzip();
    let batch =
        RecordBatch::try_new(Arc::new(arrow::datatypes::Schema::new(fields)), arrays).unwrap();
    assert_eq!(
        load(&mut conn, &table, &batch, &["id".into()])
            .await
            .unwrap(),
        3
    );

    let types: Vec<(String, String)> = sqlx::query_as(
        "SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute \
         WHERE attrelid = $1::regclass AND attnum > 0 ORDER BY attnum",
    )
    .bind(table.to_string())
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let type_of = |name: &str| types.iter().find(|(n, _)| n == name).unwrap().1.clone();
    assert_eq!(type_of("u64"), "numeric(20,0)");
    assert_eq!(type_of("at"), "timestamp with time zone");
    assert_eq!(type_of("at ms"), "timestamp without time zone");
    assert_eq!(type_of("list"), "jsonb");
    assert_eq!(type_of("_loaded_at"), "timestamp with time zone");

    let q = |c: &str| warehouse::quote_ident(c);
    let text_of = |c: &str| match type_of(c).as_str() {
        t if t.starts_with("timestamp") => {
            format!("(extract(epoch from {}) * 1000000)::bigint::text", q(c))
        }
        "bytea" => format!("encode({}, 'hex')", q(c)),
        _ => format!("{}::text", q(c)),
    };
    let names: Vec<String> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let select: Vec<String> = names.iter().map(|n| text_of(n)).collect();
    let rows = sqlx::query(&format!(
        "SELECT {} FROM {table} ORDER BY id",
        select.join(", ")
    ))
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let got = |row: usize, name: &str| -> Option<String> {
        rows[row].get(names.iter().position(|n| n == name).unwrap())
    };
    let expect = [
        ("i8", ["-128", "127", "NULL"]),
        ("i16", ["-32768", "0", "NULL"]),
        (
            "i64",
            ["-9223372036854775808", "9223372036854775807", "NULL"],
        ),
        ("u8", ["255", "0", "NULL"]),
        ("u16", ["65535", "1", "NULL"]),
        ("u32", ["4294967295", "1", "NULL"]),
        ("u64", ["18446744073709551615", "0", "NULL"]),
        ("f32", ["1.5", "-0", "NULL"]),
        ("f64", ["NaN", "-Infinity", "1e+300"]),
        ("dec", ["-12345678.91", "0.05", "0.00"]),
        (
            "big dec",
            ["10000000000000000000000000000000000000", "-1", "NULL"],
        ),
        ("text", ["", "héllo \"q\" ,;\n\\", "NULL"]),
        ("large", ["l", "NULL", "🦀"]),
        ("view", ["a view string longer than twelve", "v", "NULL"]),
        ("flag", ["true", "false", "NULL"]),
        ("day", ["0001-01-01", "1969-12-31", "2024-10-04"]),
        ("at", ["-1", "1700000000123456", "NULL"]),
        ("at ms", ["1000000", "NULL", "-86400000000"]),
        ("at ns", ["1", "NULL", "0"]),
        ("bytes", ["00ff0a", "", "NULL"]),
        ("list", ["[1, null, 3]", "[]", "NULL"]),
        (
            "struct",
            [r#"{"a": 1, "b": "x\"y"}"#, r#"{"b": "é"}"#, r#"{"a": 3}"#],
        ),
    ];
    for (name, values) in expect {
        for (row, want) in values.iter().enumerate() {
            let want = (*want != "NULL").then(|| want.to_string());
            assert_eq!(got(row, name), want, "column {name:?}, row {row}");
        }
    }
    sqlx::query(&format!("DROP SCHEMA {} CASCADE", q(&table.schema)))
        .execute(&mut conn)
        .await
        .unwrap();
}

/// Values Postgres refuses are held back, each row with its reason, and every other row loads:
/// one of them failed the whole COPY, and so every later load of the table.
#[tokio::test]
async fn loads_creating_tables_in_one_new_schema_at_once_all_succeed() {
    // Each load runs `CREATE SCHEMA IF NOT EXISTS` for the same new schema: without the catalog
    // lock one of them loses on pg_namespace's unique index (seen in a chaos run).
    let schema = unique_name("wh_race");
    let mut loads = Vec::new();
    for i in 0..12 {
        let Some(mut conn) = connect().await else {
            return;
        };
        let table = TableName::parse(&format!("{schema}.t{i}"), "public");
        loads.push(tokio::spawn(async move {
            let (field, array) = column("n", Arc::new(Int64Array::from(vec![i])));
            let batch = RecordBatch::try_new(
                Arc::new(arrow::datatypes::Schema::new(vec![field])),
                vec![array],
            )
            .unwrap();
            load(&mut conn, &table, &batch, &[]).await
        }));
    }
    for load in loads {
        assert_eq!(load.await.unwrap().unwrap(), 1);
    }
}

#[tokio::test]
async fn rows_postgres_would_refuse_are_held_back_and_the_rest_load() {
    let Some(mut conn) = connect().await else {
        return;
    };
    let table = TableName::parse(&format!("{}.refused", unique_name("wh")), "public");
    let n = 8;
    let nested = StructArray::from(vec![(
        Arc::new(Field::new("s", DataType::Utf8, true)),
        Arc::new(StringArray::from(
            (0..n)
                .map(|i| Some(if i == 6 { "a\0b" } else { "ok" }))
                .collect::<Vec<_>>(),
        )) as ArrayRef,
    )]);
    let columns = vec![
        column(
            "id",
            Arc::new(Int32Array::from(
                (1..=n).map(|i| (i != 3).then_some(i)).collect::<Vec<_>>(),
            )),
        ),
        column(
            "page",
            Arc::new(StringArray::from(
                (1..=n)
                    .map(|i| if i == 2 { "/a\0b" } else { "/a" })
                    .collect::<Vec<_>>(),
            )),
        ),
        column(
            "day",
            Arc::new(Date32Array::from(
                (1..=n)
                    .map(|i| if i == 4 { i32::MAX } else { 20_000 })
                    .collect::<Vec<_>>(),
            )),
        ),
        column(
            "at",
            Arc::new(
                TimestampMicrosecondArray::from(
                    (1..=n)
                        .map(|i| if i == 5 { i64::MIN } else { 0 })
                        .collect::<Vec<_>>(),
                )
                .with_timezone("UTC"),
            ),
        ),
        column(
            "amount",
            Arc::new(
                Decimal128Array::from(
                    (1..=n)
                        .map(|i| if i == 6 { 1_000_000 } else { 99_999 })
                        .collect::<Vec<i128>>(),
                )
                .with_precision_and_scale(5, 2)
                .unwrap(),
            ),
        ),
        column("nested", Arc::new(nested)),
    ];
    let (fields, arrays): (Vec<Field>, Vec<ArrayRef>) = columns.into_iter().unzip();
    let batch =
        RecordBatch::try_new(Arc::new(arrow::datatypes::Schema::new(fields)), arrays).unwrap();
    let (rows, refused) = load_refusing(&mut conn, &table, &batch, &["id".into()])
        .await
        .unwrap();
    assert_eq!(rows, 2, "{refused:?}");
    let reasons: Vec<(usize, &str)> = refused.iter().map(|r| (r.row, r.reason.as_str())).collect();
    let expected = [
        (1, "\"page\": text with a NUL"),
        (2, "\"id\" is NULL"),
        (3, "\"day\": the date is outside the range"),
        (4, "\"at\": the timestamp is outside the range"),
        (5, "\"amount\": the value has more than the 5 digits"),
        (6, "\"nested\": JSON with a NUL"),
    ];
    assert_eq!(reasons.len(), expected.len(), "{reasons:?}");
    for ((row, reason), (want_row, want)) in reasons.iter().zip(expected) {
        assert_eq!(*row, want_row);
        assert!(
            reason.contains(want),
            "row {row}: {reason:?} should say {want:?}"
        );
    }
    let ids: Vec<i32> = sqlx::query_scalar(&format!("SELECT id FROM {table} ORDER BY id"))
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert_eq!(ids, [1, 8]);
    sqlx::query(&format!(
        "DROP SCHEMA {} CASCADE",
        warehouse::quote_ident(&table.schema)
    ))
    .execute(&mut conn)
    .await
    .unwrap();
}

#[tokio::test]
async fn drift_adds_a_nullable_column_and_refuses_a_type_change_untouched() {
    let Some(mut conn) = connect().await else {
        return;
    };
    let table = TableName::parse(&format!("{}.drift", unique_name("wh")), "public");
    let batch = |columns: Vec<(Field, ArrayRef)>| {
        let (fields, arrays): (Vec<Field>, Vec<ArrayRef>) = columns.into_iter().unzip();
        RecordBatch::try_new(Arc::new(arrow::datatypes::Schema::new(fields)), arrays).unwrap()
    };
    let id = |v: Vec<i64>| column("id", Arc::new(Int64Array::from(v)));
    let key = ["id".to_string()];
    load(
        &mut conn,
        &table,
        &batch(vec![
            id(vec![1]),
            column("name", Arc::new(StringArray::from(vec!["a"]))),
        ]),
        &key,
    )
    .await
    .unwrap();

    let wider = batch(vec![
        id(vec![2]),
        column("name", Arc::new(StringArray::from(vec!["b"]))),
        column("genre", Arc::new(StringArray::from(vec![Some("g")]))),
    ]);
    load(&mut conn, &table, &wider, &key).await.unwrap();
    let rows: Vec<(i64, Option<String>)> =
        sqlx::query_as(&format!("SELECT id, genre FROM {table} ORDER BY id"))
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(rows, [(1, None), (2, Some("g".to_string()))]);

    let retyped = batch(vec![
        id(vec![3]),
        column("name", Arc::new(Int64Array::from(vec![7]))),
        column("genre", Arc::new(StringArray::from(vec![Some("g")]))),
    ]);
    let err = load(&mut conn, &table, &retyped, &key).await.unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains(&table.plain()) && message.contains("\"name\""),
        "{message}"
    );
    assert_eq!(err.fault(), lakehouse_core::Fault::User);
    let count: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(count, 2, "the target is untouched");
    sqlx::query(&format!(
        "DROP SCHEMA {} CASCADE",
        warehouse::quote_ident(&table.schema)
    ))
    .execute(&mut conn)
    .await
    .unwrap();
}
