//! How lakectl's plans cross the wire: Ballista's logical codec, plus [`SnapshotTable`]s and
//! in-memory tables (a silver or window unit's rows, as Arrow IPC inside the plan). The
//! client, the scheduler and every executor use the same codec (`lakectl cluster` sets it).

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use ballista_core::serde::BallistaLogicalExtensionCodec;
use datafusion::catalog::TableProvider;
use datafusion::common::TableReference;
use datafusion::datasource::file_format::FileFormatFactory;
use datafusion::datasource::MemTable;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Extension, LogicalPlan};
use datafusion_proto::logical_plan::LogicalExtensionCodec;

use crate::snapshot::SnapshotTable;

/// The first byte of an encoded table provider: ours, or Ballista's default.
const SNAPSHOT: u8 = 1;
const MEMORY: u8 = 2;
const OTHER: u8 = 0;

#[derive(Debug, Default)]
pub struct LakectlCodec {
    ballista: BallistaLogicalExtensionCodec,
}

impl LogicalExtensionCodec for LakectlCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[LogicalPlan],
        ctx: &TaskContext,
    ) -> Result<Extension> {
        self.ballista.try_decode(buf, inputs, ctx)
    }

    fn try_encode(&self, node: &Extension, buf: &mut Vec<u8>) -> Result<()> {
        self.ballista.try_encode(node, buf)
    }

    fn try_decode_table_provider(
        &self,
        buf: &[u8],
        table_ref: &TableReference,
        schema: SchemaRef,
        ctx: &TaskContext,
    ) -> Result<Arc<dyn TableProvider>> {
        match buf.split_first() {
            Some((&SNAPSHOT, rest)) => Ok(Arc::new(
                SnapshotTable::decode(rest, schema)
                    .map_err(|e| DataFusionError::Internal(e.to_string()))?,
            )),
            Some((&MEMORY, rest)) => Ok(Arc::new(decode_memory(rest, schema)?)),
            Some((&OTHER, rest)) => self
                .ballista
                .try_decode_table_provider(rest, table_ref, schema, ctx),
            _ => Err(DataFusionError::Internal(format!(
                "table {table_ref}: not a table provider lakectl encoded"
            ))),
        }
    }

    fn try_encode_table_provider(
        &self,
        table_ref: &TableReference,
        node: Arc<dyn TableProvider>,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        if let Some(snapshot) = node.downcast_ref::<SnapshotTable>() {
            buf.push(SNAPSHOT);
            let encoded = snapshot
                .encode()
                .map_err(|e| DataFusionError::Internal(e.to_string()))?;
            buf.extend(encoded);
            return Ok(());
        }
        if let Some(memory) = node.downcast_ref::<MemTable>() {
            buf.push(MEMORY);
            return encode_memory(memory, buf);
        }
        buf.push(OTHER);
        self.ballista
            .try_encode_table_provider(table_ref, node, buf)
    }

    fn try_decode_file_format(
        &self,
        buf: &[u8],
        ctx: &TaskContext,
    ) -> Result<Arc<dyn FileFormatFactory>> {
        self.ballista.try_decode_file_format(buf, ctx)
    }

    fn try_encode_file_format(
        &self,
        buf: &mut Vec<u8>,
        node: Arc<dyn FileFormatFactory>,
    ) -> Result<()> {
        self.ballista.try_encode_file_format(buf, node)
    }
}

/// An in-memory table as its partitions, each a length-prefixed Arrow IPC stream.
fn encode_memory(table: &MemTable, buf: &mut Vec<u8>) -> Result<()> {
    for partition in &table.batches {
        let batches = partition.try_read().map_err(|_| {
            DataFusionError::Internal("an in-memory table is being written to".into())
        })?;
        let mut stream = Vec::new();
        let mut writer = StreamWriter::try_new(&mut stream, &table.schema())?;
        for batch in batches.iter() {
            writer.write(batch)?;
        }
        writer.finish()?;
        drop(writer);
        buf.extend((stream.len() as u64).to_le_bytes());
        buf.extend(stream);
    }
    Ok(())
}

fn decode_memory(mut buf: &[u8], schema: SchemaRef) -> Result<MemTable> {
    let mut partitions = Vec::new();
    while let Some((len, rest)) = buf.split_first_chunk::<8>() {
        let len = u64::from_le_bytes(*len) as usize;
        if rest.len() < len {
            return Err(DataFusionError::Internal(
                "an in-memory table's encoding is cut short".into(),
            ));
        }
        let (stream, rest) = rest.split_at(len);
        partitions.push(StreamReader::try_new(stream, None)?.collect::<Result<Vec<_>, _>>()?);
        buf = rest;
    }
    MemTable::try_new(schema, partitions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::record_batch::RecordBatch;

    #[test]
    fn in_memory_tables_round_trip_with_their_partitions() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ]));
        let batch = |ids: Vec<i64>| {
            let names: StringArray = ids
                .iter()
                .map(|i| (i % 2 == 0).then(|| format!("n{i}")))
                .collect();
            RecordBatch::try_new(
                schema.clone(),
                vec![Arc::new(Int64Array::from(ids)), Arc::new(names)],
            )
            .unwrap()
        };
        let partitions = vec![
            vec![batch(vec![1, 2]), batch(vec![3])],
            vec![],
            vec![batch(vec![4])],
        ];
        let table = MemTable::try_new(schema.clone(), partitions.clone()).unwrap();
        let mut buf = Vec::new();
        encode_memory(&table, &mut buf).unwrap();
        let back = decode_memory(&buf, schema).unwrap();
        let back: Vec<Vec<RecordBatch>> = back
            .batches
            .iter()
            .map(|p| p.try_read().unwrap().clone())
            .collect();
        assert_eq!(back, partitions);
    }
}
