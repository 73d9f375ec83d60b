//! Confluent-framed Avro records on any bytes: the framing, the schema id, the body decoded
//! by its writer schema and resolved to the reader's.
#![no_main]
use std::collections::BTreeMap;
use std::sync::OnceLock;

use lakehouse_core::avro::AvroDecoder;
use libfuzzer_sys::fuzz_target;

const READER: &str = r#"{"type":"record","name":"e","fields":[
  {"name":"id","type":"string"},
  {"name":"n","type":["null","long"],"default":null},
  {"name":"kind","type":{"type":"enum","name":"k","symbols":["A","B"]}},
  {"name":"tags","type":{"type":"array","items":"string"}},
  {"name":"at","type":{"type":"long","logicalType":"timestamp-millis"}},
  {"name":"extra","type":["null","string"],"default":null}]}"#;
const WRITER_1: &str = r#"{"type":"record","name":"e","fields":[
  {"name":"id","type":"string"},
  {"name":"n","type":["null","long"],"default":null},
  {"name":"kind","type":{"type":"enum","name":"k","symbols":["A","B"]}},
  {"name":"tags","type":{"type":"array","items":"string"}},
  {"name":"at","type":{"type":"long","logicalType":"timestamp-millis"}}]}"#;

fn decoder() -> &'static AvroDecoder {
    static DECODER: OnceLock<AvroDecoder> = OnceLock::new();
    DECODER.get_or_init(|| {
        let writers = BTreeMap::from([
            (1, Ok(WRITER_1.to_string())),
            (2, Ok(READER.to_string())),
            (3, Err("not in the registry".to_string())),
        ]);
        AvroDecoder::new(READER, &writers).unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    // Records split at 0xff bytes, so one input holds several.
    let records: Vec<&[u8]> = data.split(|b| *b == 0xff).collect();
    let decoded = decoder()
        .decode(records.iter().map(|r| Some(*r)))
        .expect("bad records are reported one by one, never as an error of the whole");
    assert_eq!(decoded.batch.num_rows() + decoded.bad.len(), records.len());
});
