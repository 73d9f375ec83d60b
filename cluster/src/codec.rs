//! How lakectl's plans cross the wire: Ballista's logical codec, plus [`SnapshotTable`]s. The
//! client, the scheduler and every executor use the same codec (`lakectl cluster` sets it).

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use ballista_core::serde::BallistaLogicalExtensionCodec;
use datafusion::catalog::TableProvider;
use datafusion::common::TableReference;
use datafusion::datasource::file_format::FileFormatFactory;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Extension, LogicalPlan};
use datafusion_proto::logical_plan::LogicalExtensionCodec;

use crate::snapshot::SnapshotTable;

/// The first byte of an encoded table provider: ours, or Ballista's default.
const SNAPSHOT: u8 = 1;
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
