//! The schema type names of pipeline files (`decimal(12,2)`, `struct<a:list<int>>`, …).
#![no_main]
use lakehouse_core::schema::ColumnType;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(t) = ColumnType::try_from(text.to_string()) {
        // What a type prints as parses back to the same type.
        let again = ColumnType::try_from(t.to_string()).expect("a printed type parses");
        assert_eq!(again, t);
        let _ = t.arrow_type();
    }
});
