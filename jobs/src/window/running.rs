//! `update` windows' running aggregates: one DataFusion accumulator per aggregate, open window
//! and group, fed each unit's new rows, so that a unit costs its own rows and not every row
//! of the windows they fall in (a 5-minute window aggregated again several times a second
//! was the user-activity pipeline's largest CPU cost). They are kept in memory only: a
//! process's first unit feeds them the state's open rows, which hold every row of every open
//! window, so a restart rebuilds what the last process had.
//!
//! The aggregates' SQL is planned once by DataFusion. Its aggregate operator gives the
//! accumulators and the expressions of their arguments and groups; its input (a scan of the
//! window rows, and what DataFusion put above it) runs over each slice fed; what the SQL does
//! after grouping (the projection to the output columns, the order) runs over the emitted
//! groups' values. SQL of another shape (grouping sets, ordered aggregates, nested
//! aggregates) is not followed: [`Running::plan`] says so and the job aggregates with SQL.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, RecordBatch, UInt32Array};
use arrow::compute::{filter, take};
use arrow::datatypes::SchemaRef;
use arrow::row::{OwnedRow, RowConverter, SortField};
use datafusion::common::ScalarValue;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::Accumulator;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::{
    collect, replace_children_if_necessary, ExecutionPlan, PhysicalExpr,
};
use datafusion::prelude::{SessionConfig, SessionContext};
use lakehouse_core::{Error, Result};

pub struct Running {
    /// The plan's operators above the aggregate, root first: they run over its output.
    above: Vec<Arc<dyn ExecutionPlan>>,
    /// The aggregate's output: the group columns, then one column per aggregate.
    output: SchemaRef,
    /// What the aggregate reads, root first: operators over one scan of the window rows (the
    /// last), which each fed slice replaces.
    input: Vec<Arc<dyn ExecutionPlan>>,
    group_by: Vec<Arc<dyn PhysicalExpr>>,
    aggregates: Vec<Arc<AggregateFunctionExpr>>,
    /// Each aggregate's `FILTER (WHERE …)`.
    filters: Vec<Option<Arc<dyn PhysicalExpr>>>,
    task: Arc<TaskContext>,
    /// Group column values in Arrow's row format: the `groups` map's keys.
    keys: RowConverter,
    groups: HashMap<OwnedRow, Group>,
}

struct Group {
    /// The group columns' values: the window's bounds first.
    keys: Vec<ScalarValue>,
    end: i64,
    accumulators: Vec<Box<dyn Accumulator>>,
    /// Whether rows came since the group was last emitted.
    touched: bool,
}

/// A context planning the SQL as one aggregate: one partition, and no rewrite of a
/// `count(DISTINCT x)` into a grouping by `x` under a second aggregate.
fn context() -> Result<SessionContext> {
    let mut ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1));
    lakehouse_core::sql::register_functions(&mut ctx)?;
    ctx.remove_optimizer_rule("single_distinct_aggregation_to_group_by");
    Ok(ctx)
}

/// The single-input operators from `node` down to the first for which `stop` holds (its
/// index is the last), or `None` if an operator on the way has several inputs or none.
fn chain(
    node: &Arc<dyn ExecutionPlan>,
    stop: impl Fn(&Arc<dyn ExecutionPlan>) -> bool,
) -> Option<Vec<Arc<dyn ExecutionPlan>>> {
    let mut out = vec![node.clone()];
    while !stop(out.last().expect("starts with one")) {
        match out.last().expect("starts with one").children()[..] {
            [child] => out.push(child.clone()),
            _ => return None,
        }
    }
    Some(out)
}

fn aggregate(node: &Arc<dyn ExecutionPlan>) -> Option<&AggregateExec> {
    node.downcast_ref::<AggregateExec>()
}

/// `operators` (root first) over `leaf`.
fn over(
    operators: &[Arc<dyn ExecutionPlan>],
    leaf: Arc<dyn ExecutionPlan>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let mut node = leaf;
    for parent in operators.iter().rev() {
        node = replace_children_if_necessary(parent.clone(), vec![node])?;
    }
    Ok(node)
}

fn scan(batch: RecordBatch) -> Result<Arc<dyn ExecutionPlan>> {
    let schema = batch.schema();
    Ok(MemorySourceConfig::try_new_exec(
        &[vec![batch]],
        schema,
        None,
    )?)
}

impl Running {
    /// Plans `sql`, the aggregates over `table` grouped by `groups` columns (the window
    /// bounds, then the keys), for window rows of `schema`. `None` when the accumulators
    /// cannot follow it; an error when it does not plan.
    pub async fn plan(
        sql: &str,
        table: &str,
        schema: SchemaRef,
        groups: usize,
    ) -> Result<Option<Running>> {
        let ctx = context()?;
        ctx.register_batch(table, RecordBatch::new_empty(schema))?;
        let df = lakehouse_core::sql::read_only(&ctx, sql).await?;
        let plan = df.create_physical_plan().await?;
        let Some(mut above) = chain(&plan, |n| aggregate(n).is_some()) else {
            return Ok(None);
        };
        let top = above.pop().expect("the chain ends at the aggregate");
        let top_aggregate = aggregate(&top).expect("the chain stopped at it");
        let lowest = match top_aggregate.mode() {
            AggregateMode::Single | AggregateMode::SinglePartitioned => top.clone(),
            AggregateMode::Final | AggregateMode::FinalPartitioned => {
                let below = top_aggregate.input();
                match chain(below, |n| aggregate(n).is_some()) {
                    Some(mut partial) => partial.pop().expect("ends at an aggregate"),
                    None => return Ok(None),
                }
            }
            AggregateMode::Partial | AggregateMode::PartialReduce => return Ok(None),
        };
        let lowest = aggregate(&lowest).expect("found as one");
        if !lowest.group_expr().is_single()
            || lowest.group_expr().expr().len() != groups
            || lowest.aggr_expr().iter().any(|a| !a.order_bys().is_empty())
        {
            return Ok(None);
        }
        let Some(input) = chain(lowest.input(), |n| n.children().is_empty()) else {
            return Ok(None);
        };
        if input.iter().any(|n| aggregate(n).is_some()) {
            return Ok(None);
        }
        let group_by: Vec<Arc<dyn PhysicalExpr>> = (lowest.group_expr().expr().iter())
            .map(|(e, _)| e.clone())
            .collect();
        let input_schema = lowest.input().schema();
        let keys = RowConverter::new(
            (group_by.iter())
                .map(|e| Ok(SortField::new(e.data_type(&input_schema)?)))
                .collect::<Result<Vec<_>>>()?,
        )?;
        Ok(Some(Running {
            above,
            output: top.schema(),
            input,
            group_by,
            aggregates: lowest.aggr_expr().to_vec(),
            filters: lowest.filter_expr().to_vec(),
            task: ctx.task_ctx(),
            keys,
            groups: HashMap::new(),
        }))
    }

    /// Adds window rows (of the schema planned for, with their bounds) to their windows' and
    /// groups' accumulators; `touched` marks the groups for the next [`Running::emit`].
    pub async fn update(&mut self, rows: RecordBatch, touched: bool) -> Result<()> {
        if rows.num_rows() == 0 {
            return Ok(());
        }
        let (leaf, operators) = self.input.split_last().expect("a chain has a leaf");
        let schema = leaf.schema();
        let columns = (schema.fields().iter())
            .map(|f| Ok(rows.column(rows.schema().index_of(f.name())?).clone()))
            .collect::<Result<Vec<_>>>()?;
        let input = over(operators, scan(RecordBatch::try_new(schema, columns)?)?)?;
        for batch in collect(input, self.task.clone()).await? {
            self.update_batch(&batch, touched)?;
        }
        Ok(())
    }

    fn update_batch(&mut self, batch: &RecordBatch, touched: bool) -> Result<()> {
        let n = batch.num_rows();
        let evaluate = |e: &Arc<dyn PhysicalExpr>| -> Result<ArrayRef> {
            Ok(e.evaluate(batch)?.into_array(n)?)
        };
        let keys = self
            .group_by
            .iter()
            .map(evaluate)
            .collect::<Result<Vec<_>>>()?;
        let key_rows = self.keys.convert_columns(&keys)?;
        // The batch's rows by group: each group's first row and all of its rows.
        let mut places = HashMap::new();
        let mut members: Vec<(usize, Vec<u32>)> = Vec::new();
        for i in 0..n {
            let place = *places.entry(key_rows.row(i)).or_insert_with(|| {
                members.push((i, Vec::new()));
                members.len() - 1
            });
            members[place].1.push(i as u32);
        }
        let args = (self.aggregates.iter())
            .map(|a| a.expressions().iter().map(evaluate).collect())
            .collect::<Result<Vec<Vec<ArrayRef>>>>()?;
        let filters = (self.filters.iter())
            .map(|f| f.as_ref().map(evaluate).transpose())
            .collect::<Result<Vec<_>>>()?;
        for (first, rows) in members {
            let group = match self.groups.entry(key_rows.row(first).owned()) {
                Entry::Occupied(group) => group.into_mut(),
                Entry::Vacant(place) => {
                    let keys = (keys.iter())
                        .map(|k| ScalarValue::try_from_array(k, first))
                        .collect::<datafusion::error::Result<Vec<_>>>()?;
                    let end = match keys.get(1) {
                        Some(ScalarValue::TimestampMicrosecond(Some(end), _)) => *end,
                        other => {
                            return Err(Error::Internal(format!(
                                "the second group column is the window's end, not {other:?}"
                            )))
                        }
                    };
                    let accumulators = (self.aggregates.iter())
                        .map(|a| a.create_accumulator())
                        .collect::<datafusion::error::Result<Vec<_>>>()?;
                    place.insert(Group {
                        keys,
                        end,
                        accumulators,
                        touched: false,
                    })
                }
            };
            group.touched |= touched;
            let rows = UInt32Array::from(rows);
            for ((accumulator, args), only) in
                group.accumulators.iter_mut().zip(&args).zip(&filters)
            {
                let mut values = (args.iter())
                    .map(|a| take(a, &rows, None))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                if let Some(only) = only {
                    let only = take(only, &rows, None)?;
                    values = (values.iter())
                        .map(|v| filter(v, only.as_boolean()))
                        .collect::<std::result::Result<Vec<_>, _>>()?;
                }
                accumulator.update_batch(&values)?;
            }
        }
        Ok(())
    }

    /// The output rows of the groups that got rows since the last emit, through the SQL's
    /// operators after the aggregate; then forgets the windows that end by `watermark` (final:
    /// no row can join them any more).
    pub async fn emit(&mut self, watermark: Option<i64>) -> Result<Vec<RecordBatch>> {
        let mut touched: Vec<&mut Group> = self.groups.values_mut().filter(|g| g.touched).collect();
        let out = if touched.is_empty() {
            Vec::new()
        } else {
            let mut columns = Vec::new();
            for i in 0..self.group_by.len() {
                columns.push(ScalarValue::iter_to_array(
                    touched.iter().map(|g| g.keys[i].clone()),
                )?);
            }
            for j in 0..self.aggregates.len() {
                let values = (touched.iter_mut())
                    .map(|g| g.accumulators[j].evaluate())
                    .collect::<datafusion::error::Result<Vec<_>>>()?;
                columns.push(ScalarValue::iter_to_array(values)?);
            }
            for group in &mut touched {
                group.touched = false;
            }
            let values = RecordBatch::try_new(self.output.clone(), columns)?;
            collect(over(&self.above, scan(values)?)?, self.task.clone()).await?
        };
        if let Some(watermark) = watermark {
            self.groups.retain(|_, g| g.end > watermark);
        }
        Ok(out)
    }

    /// How many windows and groups are open.
    #[cfg(test)]
    fn open_groups(&self) -> usize {
        self.groups.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray, TimestampMicrosecondArray};
    use arrow::compute::concat_batches;

    const SQL_COLUMNS: &str = "count(DISTINCT user_id) AS users, count(*) AS events, \
        sum(amount) AS amount, avg(amount) AS mean, max(amount) - min(amount) AS spread, \
        count(*) FILTER (WHERE amount > 5) AS large";

    fn sql() -> String {
        format!(
            "SELECT window_start, window_end, page, {SQL_COLUMNS} FROM window_rows \
             GROUP BY window_start, window_end, page ORDER BY window_start, window_end, page"
        )
    }

    /// Window rows: two windows, three pages, users and amounts (some NULL) from a formula.
    fn rows(from: i64, n: i64) -> RecordBatch {
        let ids = from..from + n;
        let stamps = |f: fn(i64) -> i64| {
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(ids.clone().map(f))
                    .with_timezone("UTC"),
            ) as ArrayRef
        };
        RecordBatch::try_from_iter([
            ("window_start", stamps(|i| (i % 2) * 60_000_000)),
            ("window_end", stamps(|i| (i % 2) * 60_000_000 + 300_000_000)),
            (
                "page",
                Arc::new(StringArray::from_iter_values(
                    ids.clone().map(|i| format!("p{}", i % 3)),
                )),
            ),
            (
                "user_id",
                Arc::new(StringArray::from_iter_values(
                    ids.clone().map(|i| format!("u{}", i * 7 % 5)),
                )),
            ),
            (
                "amount",
                Arc::new(Int64Array::from_iter(
                    ids.clone().map(|i| (i % 4 != 0).then_some(i % 10)),
                )) as ArrayRef,
            ),
        ])
        .unwrap()
    }

    /// Each row of `batches` as text, one value after another.
    fn lines(batches: &[RecordBatch]) -> Vec<String> {
        let options = arrow::util::display::FormatOptions::default();
        let mut out = Vec::new();
        for batch in batches {
            let columns = (batch.columns().iter())
                .map(|c| arrow::util::display::ArrayFormatter::try_new(c, &options).unwrap())
                .collect::<Vec<_>>();
            for i in 0..batch.num_rows() {
                let values: Vec<String> = columns.iter().map(|c| c.value(i).to_string()).collect();
                out.push(values.join(" | "));
            }
        }
        out
    }

    /// Running aggregates of the test's SQL, for window rows like `rows`.
    async fn planned(rows: &RecordBatch) -> Running {
        Running::plan(&sql(), "window_rows", rows.schema(), 3)
            .await
            .unwrap()
            .expect("plain aggregates are followed")
    }

    async fn sql_over(batches: &[RecordBatch]) -> Vec<String> {
        let ctx = SessionContext::new();
        let all = concat_batches(&batches[0].schema(), batches).unwrap();
        ctx.register_batch("window_rows", all).unwrap();
        lines(&ctx.sql(&sql()).await.unwrap().collect().await.unwrap())
    }

    /// Units fed one after another emit, for every group they touched, what the SQL over all
    /// rows so far gives; a group not touched is not emitted.
    #[tokio::test]
    async fn each_emit_equals_the_sql_over_every_row_so_far() {
        let parts = [rows(0, 40), rows(40, 3), rows(43, 100)];
        let mut running = planned(&parts[0]).await;
        for (i, part) in parts.iter().enumerate() {
            running.update(part.clone(), true).await.unwrap();
            let emitted = lines(&running.emit(None).await.unwrap());
            let expected = sql_over(&parts[..=i]).await;
            assert_eq!(expected.len(), 6);
            if part.num_rows() >= 6 {
                assert_eq!(emitted, expected, "after part {i}");
            } else {
                // Three rows touch three of the six groups: those are emitted, with the
                // values the SQL gives them.
                assert_eq!(emitted.len(), 3, "{emitted:?}");
                assert!(emitted.iter().all(|l| expected.contains(l)), "{emitted:?}");
            }
        }
    }

    /// Rows fed untouched (a restart's open rows) count but are not emitted by themselves.
    #[tokio::test]
    async fn untouched_rows_count_without_being_emitted() {
        let old = rows(0, 40);
        let mut running = planned(&old).await;
        running.update(old.clone(), false).await.unwrap();
        assert!(running.emit(None).await.unwrap().is_empty());
        let new = rows(40, 60);
        running.update(new.clone(), true).await.unwrap();
        let emitted = running.emit(None).await.unwrap();
        assert_eq!(lines(&emitted), sql_over(&[old, new]).await);
    }

    /// Windows that end by the watermark are forgotten after they are emitted.
    #[tokio::test]
    async fn final_windows_are_forgotten() {
        let batch = rows(0, 40);
        let mut running = planned(&batch).await;
        running.update(batch, true).await.unwrap();
        assert_eq!(running.open_groups(), 6);
        // The first window ends at 5 minutes, the second at 6.
        running.emit(Some(300_000_000)).await.unwrap();
        assert_eq!(running.open_groups(), 3);
        running.emit(Some(360_000_000)).await.unwrap();
        assert_eq!(running.open_groups(), 0);
    }

    #[tokio::test]
    async fn ordered_aggregates_are_left_to_the_sql() {
        let batch = rows(0, 1);
        let ordered = "SELECT window_start, window_end, page, array_agg(user_id ORDER BY amount) \
            FROM window_rows GROUP BY window_start, window_end, page";
        let planned = Running::plan(ordered, "window_rows", batch.schema(), 3)
            .await
            .unwrap();
        assert!(planned.is_none());
    }
}
