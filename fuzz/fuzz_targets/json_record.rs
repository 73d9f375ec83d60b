//! silver's JSON record typer on any bytes, against a schema of every column type, nested.
#![no_main]
use std::sync::OnceLock;

use lakehouse_core::schema::{ColumnType, RecordParser};
use libfuzzer_sys::fuzz_target;

fn fields() -> &'static Vec<(String, ColumnType)> {
    static FIELDS: OnceLock<Vec<(String, ColumnType)>> = OnceLock::new();
    FIELDS.get_or_init(|| {
        [
            ("s", "string"),
            ("i", "int"),
            ("d", "double"),
            ("b", "bool"),
            ("day", "date"),
            ("at", "timestamp"),
            ("money", "decimal(12,2)"),
            (
                "nested",
                "struct<a:int,b:list<struct<c:string,d:decimal(38,10)>>>",
            ),
            ("tags", "list<list<string>>"),
        ]
        .iter()
        .map(|(n, t)| (n.to_string(), ColumnType::try_from(t.to_string()).unwrap()))
        .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let mut parser = RecordParser::new(fields(), 2);
    let accepted = parser.push(data).is_ok();
    // A second record after any first one: the builders must stay aligned.
    let _ = parser.push(br#"{"s":"x","i":1,"nested":{"a":1,"b":[{"c":"y","d":"1.5"}]}}"#);
    let columns = parser.finish();
    let rows = usize::from(accepted) + 1;
    for column in &columns {
        assert_eq!(
            column.len(),
            rows,
            "a column out of step with the records accepted"
        );
    }
});
