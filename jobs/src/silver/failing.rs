//! Rows a SQL step cannot compute. One such row (a CAST that fails, a function that refuses
//! its argument) fails the step for the whole unit, and would fail it again on every run:
//! the rows are found by running the step on halves, down to single rows, and leave the unit.

use std::future::Future;

use arrow::array::{BooleanArray, RecordBatch};
use lakehouse_core::{Error, Fault, Result};

/// A row `step` failed on alone, by its index in the rows given, and the error.
pub(super) type FailedRow = (usize, String);

/// Runs `step` over `rows`. When it fails for a reason in the data (not a service that is
/// down, not SQL that does not plan), finds each row it fails on alone, by halves, then runs
/// it once more over all the other rows together, so that a step comparing rows (a `unique`
/// expectation) sees them all as it would have. Returns the step's output and the rows it
/// failed on.
pub(super) async fn without_failing_rows<F, Fut>(
    rows: &RecordBatch,
    step: F,
) -> Result<(Vec<RecordBatch>, Vec<FailedRow>)>
where
    F: Fn(RecordBatch) -> Fut,
    Fut: Future<Output = Result<Vec<RecordBatch>>>,
{
    let error = match step(rows.clone()).await {
        Ok(out) => return Ok((out, Vec::new())),
        Err(e) if caused_by_data(&e) => e,
        Err(e) => return Err(e),
    };
    let mut failed = Vec::new();
    // Slices known to fail, by their first row.
    let mut failing = vec![(0, rows.clone(), error.to_string())];
    while let Some((first, part, message)) = failing.pop() {
        if part.num_rows() == 1 {
            failed.push((first, message));
            continue;
        }
        let half = part.num_rows() / 2;
        let halves = [
            (first, part.slice(0, half)),
            (first + half, part.slice(half, part.num_rows() - half)),
        ];
        for (start, slice) in halves {
            match step(slice.clone()).await {
                Ok(_) => {}
                Err(e) if caused_by_data(&e) => failing.push((start, slice, e.to_string())),
                Err(e) => return Err(e),
            }
        }
    }
    failed.sort_by_key(|(row, _)| *row);
    if failed.is_empty() {
        // It failed on the rows together but on no row alone: not one record's doing.
        return Err(error);
    }
    let mut keep = vec![true; rows.num_rows()];
    for (row, _) in &failed {
        keep[*row] = false;
    }
    let others = arrow::compute::filter_record_batch(rows, &BooleanArray::from(keep))?;
    Ok((step(others).await?, failed))
}

/// Whether `e`, from running a planned SQL step, may come from the values it ran on: an
/// execution error, not a service's and not the SQL's own.
fn caused_by_data(e: &Error) -> bool {
    matches!(e, Error::DataFusion(_) | Error::Arrow(_)) && e.fault() == Fault::Internal
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{AsArray, Int64Array};
    use arrow::datatypes::Int64Type;
    use std::sync::Arc;

    fn numbers(values: &[i64]) -> RecordBatch {
        RecordBatch::try_from_iter([("n", Arc::new(Int64Array::from(values.to_vec())) as _)])
            .unwrap()
    }

    /// A step that fails on any negative number, as a CAST fails on a bad value, and
    /// reports the rows it saw together.
    async fn step(
        batch: RecordBatch,
        seen: &std::sync::Mutex<Vec<usize>>,
    ) -> Result<Vec<RecordBatch>> {
        seen.lock().unwrap().push(batch.num_rows());
        let values = batch.column(0).as_primitive::<Int64Type>();
        if values.iter().flatten().any(|v| v < 0) {
            return Err(Error::DataFusion(
                datafusion::error::DataFusionError::Execution("Cast error: negative".into()),
            ));
        }
        Ok(vec![batch])
    }

    #[tokio::test]
    async fn the_failing_rows_leave_and_the_others_run_together() {
        let rows = numbers(&[1, -2, 3, 4, 5, -6, 7, 8, 9]);
        let seen = std::sync::Mutex::new(Vec::new());
        let (out, failed) = without_failing_rows(&rows, |b| step(b, &seen))
            .await
            .unwrap();
        assert_eq!(
            failed.iter().map(|(row, _)| *row).collect::<Vec<_>>(),
            [1, 5]
        );
        assert!(failed[0].1.contains("Cast error"));
        let kept: Vec<i64> = (out.iter())
            .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
            .collect();
        assert_eq!(kept, [1, 3, 4, 5, 7, 8, 9]);
        assert_eq!(
            *seen.lock().unwrap().last().unwrap(),
            7,
            "the good rows run at once"
        );
    }

    #[tokio::test]
    async fn errors_of_a_service_or_of_the_sql_are_not_the_rows() {
        let rows = numbers(&[1, 2]);
        let down = || async { Err::<Vec<RecordBatch>, _>(Error::unavailable("ballista", "gone")) };
        let err = without_failing_rows(&rows, |_| down()).await.unwrap_err();
        assert!(err.is_retryable());
        let plan = || async { Err::<Vec<RecordBatch>, _>(Error::Input("does not plan".into())) };
        let err = without_failing_rows(&rows, |_| plan()).await.unwrap_err();
        assert!(matches!(err, Error::Input(_)));
    }

    #[tokio::test]
    async fn a_failure_of_the_rows_together_but_of_none_alone_stands() {
        let rows = numbers(&[1, 2, 3, 4]);
        let together = |b: RecordBatch| async move {
            if b.num_rows() == 4 {
                Err(Error::DataFusion(
                    datafusion::error::DataFusionError::Execution("too many".into()),
                ))
            } else {
                Ok(vec![b])
            }
        };
        let err = without_failing_rows(&rows, together).await.unwrap_err();
        assert!(err.to_string().contains("too many"));
    }
}
