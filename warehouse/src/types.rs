//! Arrow → PostgreSQL: the type of each column, the DDL that creates a target table, and the
//! schema-drift rule (a new nullable column is added; any other difference is an error that
//! names the table and the column, raised before anything is changed).
//!
//! | Arrow | PostgreSQL |
//! |---|---|
//! | Boolean | boolean |
//! | Int8, Int16, UInt8 | smallint |
//! | Int32, UInt16 | integer |
//! | Int64, UInt32 | bigint |
//! | UInt64 | numeric(20,0) |
//! | Float16, Float32 | real |
//! | Float64 | double precision |
//! | Decimal128(p, s) | numeric(p,s) |
//! | Utf8, LargeUtf8, Utf8View | text |
//! | Binary, LargeBinary, BinaryView, FixedSizeBinary | bytea |
//! | Date32, Date64 | date |
//! | Timestamp with a time zone | timestamp with time zone |
//! | Timestamp without | timestamp without time zone |
//! | List, LargeList, FixedSizeList, Struct, Map | jsonb |

use std::fmt;

use arrow::datatypes::{DataType, Schema};

use crate::{Error, Result};

/// The column lakectl adds to every target: when the row was last written (dbt source
/// freshness reads it).
pub const LOADED_AT: &str = "_loaded_at";

/// `"a""b"`: every identifier lakectl writes into SQL goes through here.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A Postgres table, `schema.table`; displayed quoted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName {
    pub schema: String,
    pub table: String,
}

impl TableName {
    /// `schema.table`, split at the first dot; a bare name goes to `default_schema`.
    pub fn parse(name: &str, default_schema: &str) -> TableName {
        match name.split_once('.') {
            Some((schema, table)) => TableName {
                schema: schema.to_string(),
                table: table.to_string(),
            },
            None => TableName {
                schema: default_schema.to_string(),
                table: name.to_string(),
            },
        }
    }

    /// `schema.table` unquoted, for messages and the load-state key.
    pub fn plain(&self) -> String {
        format!("{}.{}", self.schema, self.table)
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{}",
            quote_ident(&self.schema),
            quote_ident(&self.table)
        )
    }
}

/// A column as Postgres spells its type (`format_type`), so wanted and existing compare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub pg_type: String,
    pub nullable: bool,
}

pub fn pg_type(data_type: &DataType) -> Option<String> {
    use DataType as D;
    Some(
        match data_type {
            D::Boolean => "boolean",
            D::Int8 | D::Int16 | D::UInt8 => "smallint",
            D::Int32 | D::UInt16 => "integer",
            D::Int64 | D::UInt32 => "bigint",
            D::UInt64 => "numeric(20,0)",
            D::Float16 | D::Float32 => "real",
            D::Float64 => "double precision",
            D::Decimal128(p, s) if *s >= 0 => return Some(format!("numeric({p},{s})")),
            D::Utf8 | D::LargeUtf8 | D::Utf8View => "text",
            D::Binary | D::LargeBinary | D::BinaryView | D::FixedSizeBinary(_) => "bytea",
            D::Date32 | D::Date64 => "date",
            D::Timestamp(_, Some(_)) => "timestamp with time zone",
            D::Timestamp(_, None) => "timestamp without time zone",
            D::List(_) | D::LargeList(_) | D::FixedSizeList(..) | D::Struct(_) | D::Map(..) => {
                "jsonb"
            }
            _ => return None,
        }
        .to_string(),
    )
}

/// The target's columns for a source schema, in order (without [`LOADED_AT`]).
pub fn columns_for(schema: &Schema, table: &TableName) -> Result<Vec<Column>> {
    schema
        .fields()
        .iter()
        .map(|f| {
            if f.name() == LOADED_AT {
                return Err(Error::Schema(format!(
                    "{}: the source has a column {LOADED_AT}, which lakectl adds itself",
                    table.plain()
                )));
            }
            let pg_type = pg_type(f.data_type()).ok_or_else(|| {
                Error::Schema(format!(
                    "{}: column {:?} has type {}, which lakectl cannot load",
                    table.plain(),
                    f.name(),
                    f.data_type()
                ))
            })?;
            Ok(Column {
                name: f.name().clone(),
                pg_type,
                nullable: f.is_nullable(),
            })
        })
        .collect()
}

/// The statements that make `table` fit `wanted`: a CREATE when it does not exist, an ALTER
/// per new nullable column, nothing when it fits. `existing` excludes [`LOADED_AT`].
pub fn schema_changes(
    table: &TableName,
    wanted: &[Column],
    existing: Option<&[Column]>,
    key: &[String],
) -> Result<Vec<String>> {
    let Some(existing) = existing else {
        let mut defs: Vec<String> = wanted
            .iter()
            .map(|c| {
                let not_null = if c.nullable && !key.contains(&c.name) {
                    ""
                } else {
                    " NOT NULL"
                };
                format!("{} {}{not_null}", quote_ident(&c.name), c.pg_type)
            })
            .collect();
        defs.push(format!(
            "{} timestamp with time zone NOT NULL DEFAULT now()",
            quote_ident(LOADED_AT)
        ));
        if !key.is_empty() {
            let key: Vec<String> = key.iter().map(|k| quote_ident(k)).collect();
            defs.push(format!("PRIMARY KEY ({})", key.join(", ")));
        }
        return Ok(vec![
            format!("CREATE SCHEMA IF NOT EXISTS {}", quote_ident(&table.schema)),
            format!("CREATE TABLE {table} ({})", defs.join(", ")),
        ]);
    };
    let mut changes = Vec::new();
    for column in wanted {
        match existing.iter().find(|e| e.name == column.name) {
            Some(e) if e.pg_type == column.pg_type => {}
            Some(e) => {
                return Err(Error::Schema(format!(
                    "{}: column {:?} is {} in Postgres but {} in the source; change the target by \
                     hand (or drop it to reload) — nothing was changed",
                    table.plain(),
                    column.name,
                    e.pg_type,
                    column.pg_type
                )))
            }
            None if column.nullable => changes.push(format!(
                "ALTER TABLE {table} ADD COLUMN {} {}",
                quote_ident(&column.name),
                column.pg_type
            )),
            None => {
                return Err(Error::Schema(format!(
                    "{}: the source has a new column {:?} that is NOT NULL; existing rows would \
                     have no value for it — nothing was changed",
                    table.plain(),
                    column.name
                )))
            }
        }
    }
    if let Some(gone) = existing
        .iter()
        .find(|e| !wanted.iter().any(|w| w.name == e.name))
    {
        return Err(Error::Schema(format!(
            "{}: column {:?} is no longer in the source — nothing was changed",
            table.plain(),
            gone.name
        )));
    }
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{Field, TimeUnit};
    use std::sync::Arc;

    fn table() -> TableName {
        TableName::parse("silver.books", "public")
    }

    fn col(name: &str, pg_type: &str, nullable: bool) -> Column {
        Column {
            name: name.into(),
            pg_type: pg_type.into(),
            nullable,
        }
    }

    #[test]
    fn identifiers_are_always_quoted() {
        let hostile = TableName::parse(r#"a"b.c; DROP TABLE x; --"#, "public");
        assert_eq!(hostile.to_string(), r#""a""b"."c; DROP TABLE x; --""#);
        assert_eq!(TableName::parse("books", "gold").plain(), "gold.books");
    }

    #[test]
    fn types_map_as_documented() {
        let ts = |tz: Option<&str>| DataType::Timestamp(TimeUnit::Microsecond, tz.map(Into::into));
        let item = Arc::new(Field::new("item", DataType::Int32, true));
        for (arrow, pg) in [
            (DataType::Int64, "bigint"),
            (DataType::UInt64, "numeric(20,0)"),
            (DataType::Decimal128(10, 2), "numeric(10,2)"),
            (DataType::Utf8View, "text"),
            (ts(Some("UTC")), "timestamp with time zone"),
            (ts(None), "timestamp without time zone"),
            (DataType::List(item), "jsonb"),
        ] {
            assert_eq!(pg_type(&arrow).as_deref(), Some(pg), "{arrow}");
        }
        assert_eq!(pg_type(&DataType::Duration(TimeUnit::Second)), None);
    }

    #[test]
    fn a_new_table_gets_its_key_and_loaded_at() {
        let ddl = schema_changes(
            &table(),
            &[
                col("book_title", "text", true),
                col("sales", "numeric(10,2)", true),
            ],
            None,
            &["book_title".into()],
        )
        .unwrap();
        assert_eq!(ddl[0], r#"CREATE SCHEMA IF NOT EXISTS "silver""#);
        assert_eq!(
            ddl[1],
            r#"CREATE TABLE "silver"."books" ("book_title" text NOT NULL, "sales" numeric(10,2), "_loaded_at" timestamp with time zone NOT NULL DEFAULT now(), PRIMARY KEY ("book_title"))"#
        );
    }

    #[test]
    fn drift_adds_nullable_columns_and_refuses_the_rest() {
        let existing = [col("id", "bigint", false), col("name", "text", true)];
        let key = ["id".to_string()];
        let same = schema_changes(&table(), &existing, Some(&existing), &key).unwrap();
        assert!(same.is_empty());

        let wider = [
            existing[0].clone(),
            existing[1].clone(),
            col("genre", "text", true),
        ];
        assert_eq!(
            schema_changes(&table(), &wider, Some(&existing), &key).unwrap(),
            [r#"ALTER TABLE "silver"."books" ADD COLUMN "genre" text"#]
        );

        let retyped = [existing[0].clone(), col("name", "bigint", true)];
        let err = schema_changes(&table(), &retyped, Some(&existing), &key).unwrap_err();
        assert!(
            err.to_string()
                .contains("silver.books: column \"name\" is text in Postgres but bigint"),
            "{err}"
        );

        let required = [
            existing[0].clone(),
            existing[1].clone(),
            col("x", "text", false),
        ];
        assert!(schema_changes(&table(), &required, Some(&existing), &key).is_err());

        let dropped = [existing[0].clone()];
        let err = schema_changes(&table(), &dropped, Some(&existing), &key).unwrap_err();
        assert!(
            err.to_string()
                .contains("\"name\" is no longer in the source"),
            "{err}"
        );
    }
}
