//! The open rows of a window job: the rows of windows and sessions not final yet, kept in
//! memory from unit to unit in chunks. A unit adds its on-time rows as a chunk and marks the
//! rows of the windows it emits final as gone; no row is copied until the gone rows are as
//! many as the live ones (or the chunks are many), when the live rows are copied into one
//! chunk. So a unit costs in proportion to its new rows and the rows it emits, plus a pass
//! over a small index of the open rows (their event times; for sessions their keys in the
//! row format and their order by key and time), instead of a copy of every open row.

use std::cmp::Ordering;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::SchemaRef;
use arrow::row::{RowConverter, Rows, SortField};
use lakehouse_core::{Error, Result};

/// More chunks than this are copied into one even when few rows are gone (sessions that stay
/// open for half an hour would otherwise keep a chunk per unit).
const MAX_CHUNKS: usize = 256;

pub struct OpenRows {
    schema: SchemaRef,
    chunks: Vec<RecordBatch>,
    /// Where each chunk's rows begin, and after the last, how many rows there are.
    starts: Vec<usize>,
    /// Each row's event time in microseconds.
    times: Vec<i64>,
    /// Rows of windows emitted final: they stay in their chunk until the next compaction.
    gone: Vec<bool>,
    gone_rows: usize,
    sessions: Option<SessionIndex>,
}

/// Sessions are found by key, then event time.
struct SessionIndex {
    columns: Vec<String>,
    converter: RowConverter,
    /// Each row's key in the row format.
    keys: Rows,
    /// The live rows by key, then event time; rows of equal key and time in the order they
    /// came (the sessions' rows are the same whatever the units' bounds).
    order: Vec<u32>,
}

impl OpenRows {
    /// No rows yet, of `schema`; `session_key` names the key columns of sessions.
    pub fn new(schema: SchemaRef, session_key: Option<&[String]>) -> Result<OpenRows> {
        let sessions = match session_key {
            None => None,
            Some(columns) => {
                let fields = columns
                    .iter()
                    .map(|c| {
                        Ok(SortField::new(
                            schema.field_with_name(c)?.data_type().clone(),
                        ))
                    })
                    .collect::<Result<Vec<_>>>()?;
                let converter = RowConverter::new(fields)?;
                Some(SessionIndex {
                    columns: columns.to_vec(),
                    keys: converter.empty_rows(0, 0),
                    converter,
                    order: Vec::new(),
                })
            }
        };
        Ok(OpenRows {
            schema,
            chunks: Vec::new(),
            starts: vec![0],
            times: Vec::new(),
            gone: Vec::new(),
            gone_rows: 0,
            sessions,
        })
    }

    /// Rows, gone ones included (what row indices range over).
    pub fn len(&self) -> usize {
        self.times.len()
    }

    pub fn live_len(&self) -> usize {
        self.len() - self.gone_rows
    }

    pub fn time(&self, row: usize) -> i64 {
        self.times[row]
    }

    /// The live rows, in index order.
    pub fn live(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.len()).filter(|&i| !self.gone[i])
    }

    /// Sessions: the live rows by key, then event time.
    pub fn session_order(&self) -> &[u32] {
        self.sessions.as_ref().map_or(&[], |s| &s.order)
    }

    /// Sessions: whether two rows have the same key.
    pub fn same_key(&self, a: usize, b: usize) -> bool {
        self.sessions
            .as_ref()
            .is_some_and(|s| s.keys.row(a) == s.keys.row(b))
    }

    /// Adds `chunk` (its rows' event times `times`) and returns the index of its first row.
    /// An error when its columns are not the open rows'.
    pub fn push(&mut self, chunk: RecordBatch, times: Vec<i64>) -> Result<usize> {
        // The lake's copy may read back with other field flags than the source's.
        let chunk = RecordBatch::try_new(self.schema.clone(), chunk.columns().to_vec())?;
        let first = self.len();
        let n = chunk.num_rows();
        if let Some(sessions) = &mut self.sessions {
            let columns = key_columns(&chunk, &sessions.columns)?;
            sessions.converter.append(&mut sessions.keys, &columns)?;
        }
        self.times.extend(times);
        self.gone.resize(first + n, false);
        self.starts.push(first + n);
        self.chunks.push(chunk);
        if let Some(SessionIndex { keys, order, .. }) = &mut self.sessions {
            let times = &self.times;
            let by_key_time = |a: u32, b: u32| {
                let (a, b) = (a as usize, b as usize);
                (keys.row(a).cmp(&keys.row(b))).then(times[a].cmp(&times[b]))
            };
            let mut new: Vec<u32> = (first as u32..(first + n) as u32).collect();
            new.sort_by(|&a, &b| by_key_time(a, b));
            // A merge in which each new row goes after the open rows it does not sort before.
            // A few new rows each find their place by binary search (a live stream's unit);
            // many walk along the open rows (a backfill's).
            let mut merged = Vec::with_capacity(order.len() + n);
            let mut from = 0;
            let search = n * 16 < order.len();
            for row in new {
                let after = |o: &u32| by_key_time(*o, row) != Ordering::Greater;
                let at = if search {
                    from + order[from..].partition_point(after)
                } else {
                    from + order[from..].iter().take_while(|o| after(o)).count()
                };
                merged.extend_from_slice(&order[from..at]);
                merged.push(row);
                from = at;
            }
            merged.extend_from_slice(&order[from..]);
            *order = merged;
        }
        Ok(first)
    }

    /// Marks `rows` gone: their windows were emitted final.
    pub fn remove(&mut self, rows: impl IntoIterator<Item = usize>) {
        let before = self.gone_rows;
        for row in rows {
            if !std::mem::replace(&mut self.gone[row], true) {
                self.gone_rows += 1;
            }
        }
        if self.gone_rows == before {
            return;
        }
        if let Some(sessions) = &mut self.sessions {
            let gone = &self.gone;
            sessions.order.retain(|&row| !gone[row as usize]);
        }
    }

    /// Copies the live rows into one chunk once the gone rows are as many as the live ones,
    /// or the chunks too many: each row is copied about once, not once a unit.
    pub fn compact_if_due(&mut self) -> Result<()> {
        let due = (self.gone_rows > 0 && self.gone_rows >= self.live_len())
            || self.chunks.len() > MAX_CHUNKS;
        if !due {
            return Ok(());
        }
        let live = self.live_rows_in_order();
        let chunk = self.take(live.iter().copied())?;
        let times = live.iter().map(|&i| self.times[i]).collect();
        let mut compacted = OpenRows::new(
            self.schema.clone(),
            self.sessions.as_ref().map(|s| &s.columns[..]),
        )?;
        compacted.push(chunk, times)?;
        *self = compacted;
        Ok(())
    }

    /// The live rows as one batch (sessions': by key, then event time), for the lake's copy.
    pub fn live_batch(&self) -> Result<RecordBatch> {
        self.take(self.live_rows_in_order().into_iter())
    }

    fn live_rows_in_order(&self) -> Vec<usize> {
        match &self.sessions {
            Some(sessions) => sessions.order.iter().map(|&i| i as usize).collect(),
            None => self.live().collect(),
        }
    }

    /// A copy of `rows`, in the order given.
    pub fn take(&self, rows: impl Iterator<Item = usize>) -> Result<RecordBatch> {
        let at: Vec<(usize, usize)> = rows
            .map(|row| {
                let chunk = self.starts.partition_point(|&s| s <= row) - 1;
                (chunk, row - self.starts[chunk])
            })
            .collect();
        if self.chunks.is_empty() {
            return Ok(RecordBatch::new_empty(self.schema.clone()));
        }
        let chunks: Vec<&RecordBatch> = self.chunks.iter().collect();
        Ok(arrow::compute::interleave_record_batch(&chunks, &at)?)
    }
}

fn key_columns(chunk: &RecordBatch, columns: &[String]) -> Result<Vec<ArrayRef>> {
    columns
        .iter()
        .map(|c| {
            chunk.column_by_name(c).cloned().ok_or_else(|| {
                Error::Input(format!("the session key column {c} is not in the rows"))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{AsArray, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Int64Type, Schema};
    use std::sync::Arc;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, false),
            Field::new("t", DataType::Int64, false),
        ]))
    }

    fn chunk(rows: &[(&str, i64)]) -> (RecordBatch, Vec<i64>) {
        let batch = RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
            ],
        )
        .unwrap();
        (batch, rows.iter().map(|r| r.1).collect())
    }

    fn pairs(batch: &RecordBatch) -> Vec<(String, i64)> {
        let k = batch.column(0).as_string::<i32>();
        let t = batch.column(1).as_primitive::<Int64Type>();
        (0..batch.num_rows())
            .map(|i| (k.value(i).to_string(), t.value(i)))
            .collect()
    }

    /// Pushed chunks keep the session order a stable sort of every row would give; removed
    /// rows leave it; a compaction keeps the live rows in that order.
    #[test]
    fn session_order_is_a_stable_sort_of_the_live_rows_across_chunks() {
        let key = vec!["k".to_string()];
        let mut open = OpenRows::new(schema(), Some(&key)).unwrap();
        let units: [&[(&str, i64)]; 3] = [
            &[("b", 5), ("a", 3), ("b", 1)],
            &[("a", 3), ("c", 0), ("a", 1), ("b", 9)],
            &[("b", 5), ("a", 2)],
        ];
        let mut every: Vec<(usize, (&str, i64))> = Vec::new();
        for rows in units {
            let (batch, times) = chunk(rows);
            let first = open.push(batch, times).unwrap();
            every.extend(rows.iter().enumerate().map(|(i, r)| (first + i, *r)));
        }
        let mut expected = every.clone();
        expected.sort_by_key(|(_, (k, t))| (*k, *t)); // stable: equal rows in arrival order
        let order: Vec<usize> = open.session_order().iter().map(|&i| i as usize).collect();
        assert_eq!(order, expected.iter().map(|e| e.0).collect::<Vec<_>>());
        assert!(open.same_key(0, 2) && !open.same_key(0, 1));

        open.remove([1, 3]); // ("a", 3) twice
        assert_eq!(open.live_len(), 7);
        let live: Vec<(String, i64)> = expected
            .iter()
            .filter(|e| e.0 != 1 && e.0 != 3)
            .map(|e| (e.1 .0.to_string(), e.1 .1))
            .collect();
        assert_eq!(pairs(&open.live_batch().unwrap()), live);

        open.remove([0, 2, 4, 5]);
        open.compact_if_due().unwrap();
        assert_eq!((open.len(), open.live_len(), open.chunks.len()), (3, 3, 1));
        assert_eq!(
            pairs(&open.live_batch().unwrap()),
            [("a".into(), 2), ("b".into(), 5), ("b".into(), 9)]
        );
        assert_eq!(open.session_order(), [0, 1, 2]);
    }

    /// Fixed windows: the live rows in the order they came, and nothing copied while the gone
    /// rows are fewer than the live ones.
    #[test]
    fn fixed_window_rows_stay_in_their_chunks_until_half_are_gone() {
        let mut open = OpenRows::new(schema(), None).unwrap();
        for rows in [&[("x", 1), ("y", 2)][..], &[("z", 3), ("w", 4)]] {
            let (batch, times) = chunk(rows);
            open.push(batch, times).unwrap();
        }
        open.remove([0]);
        open.compact_if_due().unwrap();
        assert_eq!(open.chunks.len(), 2, "1 gone of 4: not copied yet");
        assert_eq!(open.live().collect::<Vec<_>>(), [1, 2, 3]);
        open.remove([2]);
        open.compact_if_due().unwrap();
        assert_eq!(open.chunks.len(), 1);
        assert_eq!(
            pairs(&open.live_batch().unwrap()),
            [("y".into(), 2), ("w".into(), 4)]
        );
        assert_eq!(open.time(1), 4);
    }
}
