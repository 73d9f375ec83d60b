//! The open rows of a window job: the rows of windows and sessions not final yet, kept in
//! memory from unit to unit in chunks. A unit adds its on-time rows as a chunk and marks the
//! rows of the windows it emits final as gone; no row is copied until the gone rows are as
//! many as the live ones (or the chunks are many), when the live rows are copied into one
//! chunk. An index finds the rows a unit needs without a pass over every open row: fixed
//! windows' rows by slide (the windows a unit emits hold the rows of a few slides), sessions'
//! by key with each key's sessions and the keys by when their first session ends (a unit
//! updates the keys its rows have and takes the sessions the watermark passed). So a unit
//! costs in proportion to its new rows and the rows it emits, not to the open rows.

use std::collections::{BTreeMap, BTreeSet};

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::SchemaRef;
use arrow::row::{RowConverter, SortField};
use lakehouse_core::{Error, Result};

use super::assign::{Fixed, Session, SessionRule};
use super::Windows;

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
    index: Index,
}

enum Index {
    /// The live rows by the start of the last window holding them (their event time rounded
    /// down to a multiple of the slide), in the order they came.
    Fixed {
        windows: Fixed,
        by_slide: BTreeMap<i64, Vec<u32>>,
    },
    Sessions(SessionIndex),
}

struct SessionIndex {
    rule: SessionRule,
    columns: Vec<String>,
    fields: Vec<SortField>,
    converter: RowConverter,
    /// Each key with live rows, in the row format.
    keys: BTreeMap<Box<[u8]>, KeyRows>,
    /// The keys by when their first session ends (a key's sessions end in order).
    by_end: BTreeSet<(i64, Box<[u8]>)>,
}

/// One key's live rows and their sessions.
#[derive(Default)]
struct KeyRows {
    /// (event time, row) by time; rows of equal time in the order they came, so that the
    /// sessions' rows are the same whatever the units' bounds.
    rows: Vec<(i64, u32)>,
    sessions: Vec<Session>,
}

impl KeyRows {
    /// Adds `new` (in the order they came) and updates the sessions: rows after every row the
    /// key has extend the last session (a live stream's); others, the sessions again.
    fn add(&mut self, mut new: Vec<(i64, u32)>, rule: SessionRule) {
        new.sort_by_key(|&(t, _)| t); // stable
        let at = self.rows.len();
        let after_all = (self.rows.last()).is_none_or(|&(last, _)| new[0].0 >= last);
        self.rows.extend(new);
        if after_all {
            for i in at..self.rows.len() {
                rule.add(&mut self.sessions, i, self.rows[i].0);
            }
        } else {
            // Equal times: the rows already here came first.
            self.rows.sort_by_key(|&(t, _)| t);
            self.sessions = rule.sessions(self.rows.iter().map(|&(t, _)| t));
        }
    }

    fn first_end(&self, rule: SessionRule) -> Option<i64> {
        self.sessions.first().map(|s| rule.end(s))
    }
}

/// What [`OpenRows::arrive`] made of a unit's rows.
pub struct Arrived {
    /// The index of the unit's first row.
    pub first: usize,
    /// The rows (by place among the unit's) late for every window they belong to: not
    /// counted in any, gone at once.
    pub late: Vec<Late>,
    /// How many rows were late for some of their windows only (hopping windows): they count
    /// in the others.
    pub partly_late: u64,
    /// Sessions final by the watermark some row met, taken out when it met it.
    pub finals: Vec<FinalSession>,
}

/// A row late for every window it belongs to: those windows (a session: the one it would
/// have joined or started), and the watermark they were final by when it arrived.
pub struct Late {
    pub row: usize,
    pub windows: Vec<(i64, i64)>,
    pub watermark: i64,
}

/// A session the watermark passed: its rows, in time order, and its bounds.
pub struct FinalSession {
    pub key: Box<[u8]>,
    pub rows: Vec<u32>,
    pub start: i64,
    pub end: i64,
}

impl OpenRows {
    /// No rows yet, of `schema`, indexed for `windows`.
    pub fn new(schema: SchemaRef, windows: &Windows) -> Result<OpenRows> {
        let index = match windows {
            Windows::Fixed(windows) => Index::Fixed {
                windows: *windows,
                by_slide: BTreeMap::new(),
            },
            Windows::Sessions { rule, key } => {
                let fields = key
                    .iter()
                    .map(|c| {
                        Ok(SortField::new(
                            schema.field_with_name(c)?.data_type().clone(),
                        ))
                    })
                    .collect::<Result<Vec<_>>>()?;
                Index::Sessions(SessionIndex::new(*rule, key.clone(), fields)?)
            }
        };
        Ok(OpenRows::empty(schema, index))
    }

    fn empty(schema: SchemaRef, index: Index) -> OpenRows {
        OpenRows {
            schema,
            chunks: Vec::new(),
            starts: vec![0],
            times: Vec::new(),
            gone: Vec::new(),
            gone_rows: 0,
            index,
        }
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
        self.live_from(0)
    }

    /// The live rows from `first` on, in index order.
    pub fn live_from(&self, first: usize) -> impl Iterator<Item = usize> + '_ {
        (first..self.len()).filter(|&i| !self.gone[i])
    }

    /// Adds `chunk` (its rows' event times `times`) and returns the index of its first row.
    /// An error when its columns are not the open rows'.
    pub fn push(&mut self, chunk: RecordBatch, times: Vec<i64>) -> Result<usize> {
        // The lake's copy may read back with other field flags than the source's.
        let chunk = RecordBatch::try_new(self.schema.clone(), chunk.columns().to_vec())?;
        let first = self.len();
        let rows = (first as u32..).zip(times.iter().copied());
        match &mut self.index {
            Index::Fixed { windows, by_slide } => {
                for (row, t) in rows {
                    by_slide.entry(windows.last_start(t)).or_default().push(row);
                }
            }
            Index::Sessions(index) => {
                let columns = key_columns(&chunk, &index.columns)?;
                let keys = index.converter.convert_columns(&columns)?;
                let mut by_key: BTreeMap<&[u8], Vec<(i64, u32)>> = BTreeMap::new();
                for (i, (row, t)) in rows.enumerate() {
                    by_key.entry(keys.row(i).data()).or_default().push((t, row));
                }
                for (key, new) in by_key {
                    index.add(key, new);
                }
            }
        }
        self.times.extend(times);
        self.gone.resize(self.times.len(), false);
        self.starts.push(self.times.len());
        self.chunks.push(chunk);
        Ok(first)
    }

    /// Adds a unit's rows `chunk` (event times `times`, in arrival order), each of which met
    /// the watermark `arrived_at` (its partition's: [`Watermarks::arrive`]). A row counts in
    /// each of its windows not final by that watermark, and is late for the others. A session
    /// row first closes its key's sessions final by it (they are taken out: it cannot join
    /// them, nor can any later row of the key), then is late when the session it joins or
    /// starts, after merging with the key's open sessions, is final by it. So what counts
    /// where depends on the rows of each partition alone, not on how rows were cut into units.
    /// Late rows are gone at once.
    ///
    /// [`Watermarks::arrive`]: super::assign::Watermarks::arrive
    pub fn arrive(
        &mut self,
        chunk: RecordBatch,
        times: Vec<i64>,
        arrived_at: &[Option<i64>],
    ) -> Result<Arrived> {
        let chunk = RecordBatch::try_new(self.schema.clone(), chunk.columns().to_vec())?;
        let first = self.len();
        let session_keys = match &self.index {
            Index::Sessions(index) => Some(
                index
                    .converter
                    .convert_columns(&key_columns(&chunk, &index.columns)?)?,
            ),
            Index::Fixed { .. } => None,
        };
        self.times.extend(&times);
        self.gone.resize(self.times.len(), false);
        self.starts.push(self.times.len());
        self.chunks.push(chunk);
        let mut arrived = Arrived {
            first,
            late: Vec::new(),
            partly_late: 0,
            finals: Vec::new(),
        };
        for (k, (&t, &watermark)) in times.iter().zip(arrived_at).enumerate() {
            let row = first + k;
            let late_windows = match &mut self.index {
                Index::Fixed { windows, by_slide } => {
                    let all: Vec<(i64, i64)> =
                        windows.starts(t).map(|s| (s, s + windows.size)).collect();
                    let final_ = |&(_, end): &(i64, i64)| watermark.is_some_and(|w| end <= w);
                    // Windows start latest first: the first ends last.
                    if final_(&all[0]) {
                        Some(all.into_iter().rev().collect())
                    } else {
                        if final_(all.last().expect("a row is in a window")) {
                            arrived.partly_late += 1;
                        }
                        by_slide
                            .entry(windows.last_start(t))
                            .or_default()
                            .push(row as u32);
                        None
                    }
                }
                Index::Sessions(index) => {
                    let key = session_keys.as_ref().expect("made for sessions").row(k);
                    if let Some(w) = watermark {
                        arrived.finals.extend(index.take_final_of(key.data(), w));
                    }
                    let (start, end) = index.session_with(key.data(), t);
                    if watermark.is_some_and(|w| end <= w) {
                        Some(vec![(start, end)])
                    } else {
                        index.add(key.data(), vec![(t, row as u32)]);
                        None
                    }
                }
            };
            if let Some(windows) = late_windows {
                self.gone[row] = true;
                self.gone_rows += 1;
                arrived.late.push(Late {
                    row: k,
                    windows,
                    watermark: watermark.expect("late by a watermark"),
                });
            }
        }
        for session in &arrived.finals {
            for &row in &session.rows {
                self.gone[row as usize] = true;
            }
            self.gone_rows += session.rows.len();
        }
        Ok(arrived)
    }

    /// Fixed windows: the live rows with event times in `times`, in index order.
    pub fn rows_in(&self, times: std::ops::Range<i64>) -> Vec<(u32, i64)> {
        let Index::Fixed { windows, by_slide } = &self.index else {
            return Vec::new();
        };
        if times.is_empty() {
            return Vec::new();
        }
        let from = windows.last_start(times.start.max(i64::MIN + windows.slide));
        let mut rows: Vec<(u32, i64)> =
            (by_slide.range(from..times.end).flat_map(|(_, rows)| rows))
                .map(|&row| (row, self.times[row as usize]))
                .filter(|(_, t)| times.contains(t))
                .collect();
        rows.sort_unstable_by_key(|&(row, _)| row);
        rows
    }

    /// Fixed windows: marks gone the rows whose last window ends by `watermark` (none
    /// without one).
    pub fn remove_final_windows(&mut self, watermark: Option<i64>) {
        let (Index::Fixed { windows, by_slide }, Some(watermark)) = (&mut self.index, watermark)
        else {
            return;
        };
        while let Some(entry) = by_slide.first_entry() {
            if *entry.key() + windows.size > watermark {
                break;
            }
            for row in entry.remove() {
                self.gone[row as usize] = true;
                self.gone_rows += 1;
            }
        }
    }

    /// Sessions: takes the sessions that end by `watermark`, by key then start; their rows
    /// are gone.
    pub fn take_final_sessions(&mut self, watermark: i64) -> Vec<FinalSession> {
        let Index::Sessions(index) = &mut self.index else {
            return Vec::new();
        };
        let mut out = index.take_final(watermark);
        for session in &out {
            for &row in &session.rows {
                self.gone[row as usize] = true;
            }
            self.gone_rows += session.rows.len();
        }
        out.sort_by(|a, b| (&a.key, a.start).cmp(&(&b.key, b.start)));
        out
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
        let mut compacted = OpenRows::empty(self.schema.clone(), self.index.emptied());
        compacted.push(chunk, times)?;
        *self = compacted;
        Ok(())
    }

    /// The live rows as one batch (sessions': by key, then event time), for the lake's copy.
    pub fn live_batch(&self) -> Result<RecordBatch> {
        self.take(self.live_rows_in_order().into_iter())
    }

    fn live_rows_in_order(&self) -> Vec<usize> {
        match &self.index {
            Index::Sessions(index) => (index.keys.values())
                .flat_map(|k| k.rows.iter().map(|&(_, row)| row as usize))
                .collect(),
            Index::Fixed { .. } => self.live().collect(),
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

impl Index {
    /// The same index without rows.
    fn emptied(&self) -> Index {
        match self {
            Index::Fixed { windows, .. } => Index::Fixed {
                windows: *windows,
                by_slide: BTreeMap::new(),
            },
            Index::Sessions(index) => Index::Sessions(
                SessionIndex::new(index.rule, index.columns.clone(), index.fields.clone())
                    .expect("the fields made a converter before"),
            ),
        }
    }
}

impl SessionIndex {
    /// No rows yet; sessions of `rule` per key of the `columns` (of types `fields`).
    fn new(rule: SessionRule, columns: Vec<String>, fields: Vec<SortField>) -> Result<Self> {
        Ok(SessionIndex {
            rule,
            columns,
            converter: RowConverter::new(fields.clone())?,
            fields,
            keys: BTreeMap::new(),
            by_end: BTreeSet::new(),
        })
    }

    /// The bounds of the session a row of `key` at `t` would be in, with the key's open
    /// sessions: the last one extended, a new one, or (a row out of order) the sessions of
    /// the key's rows and it.
    fn session_with(&self, key: &[u8], t: i64) -> (i64, i64) {
        let alone = Session {
            rows: 0..1,
            first: t,
            last: t,
        };
        let bounds = |s: &Session| (s.first, self.rule.end(s));
        let Some(rows) = self.keys.get(key) else {
            return bounds(&alone);
        };
        if rows.rows.last().is_none_or(|&(last, _)| t >= last) {
            let mut sessions: Vec<Session> = rows.sessions.last().cloned().into_iter().collect();
            self.rule.add(&mut sessions, rows.rows.len(), t);
            return bounds(sessions.last().expect("the row's session"));
        }
        // Equal times: the row comes after the ones already here.
        let at = rows.rows.partition_point(|&(time, _)| time <= t);
        let mut times: Vec<i64> = rows.rows.iter().map(|&(time, _)| time).collect();
        times.insert(at, t);
        let sessions = self.rule.sessions(times);
        let session = (sessions.iter())
            .find(|s| s.rows.contains(&at))
            .expect("every row is in a session");
        bounds(session)
    }

    /// Adds a key's new rows (in the order they came).
    fn add(&mut self, key: &[u8], new: Vec<(i64, u32)>) {
        if !self.keys.contains_key(key) {
            self.keys.insert(key.into(), KeyRows::default());
        }
        let rows = self.keys.get_mut(key).expect("inserted above");
        let before = rows.first_end(self.rule);
        rows.add(new, self.rule);
        let after = rows.first_end(self.rule);
        if before != after {
            if let Some(end) = before {
                self.by_end.remove(&(end, key.into()));
            }
            self.by_end
                .insert((after.expect("a key with rows"), key.into()));
        }
    }

    /// Takes the sessions that end by `watermark` out of their keys.
    fn take_final(&mut self, watermark: i64) -> Vec<FinalSession> {
        let mut out = Vec::new();
        while let Some((end, key)) = self.by_end.first().cloned() {
            if end > watermark {
                break;
            }
            let taken = self.take_final_of(&key, watermark);
            if taken.is_empty() {
                // Not the key's first end (cannot be): do not loop on it.
                self.by_end.remove(&(end, key));
            }
            out.extend(taken);
        }
        out
    }

    /// Takes `key`'s sessions that end by `watermark` out of it.
    fn take_final_of(&mut self, key: &[u8], watermark: i64) -> Vec<FinalSession> {
        let Some(rows) = self.keys.get_mut(key) else {
            return Vec::new();
        };
        let ending = (rows.sessions.iter())
            .take_while(|s| self.rule.end(s) <= watermark)
            .count();
        if ending == 0 {
            return Vec::new();
        }
        let key: Box<[u8]> = key.into();
        let first_end = rows.first_end(self.rule).expect("a key with sessions");
        self.by_end.remove(&(first_end, key.clone()));
        let gone = rows.sessions[ending - 1].rows.end;
        let mut taken = rows.rows.drain(..gone).map(|(_, row)| row);
        let mut out = Vec::with_capacity(ending);
        for session in rows.sessions.drain(..ending) {
            out.push(FinalSession {
                key: key.clone(),
                rows: taken.by_ref().take(session.rows.len()).collect(),
                start: session.first,
                end: self.rule.end(&session),
            });
        }
        drop(taken);
        for session in &mut rows.sessions {
            session.rows = session.rows.start - gone..session.rows.end - gone;
        }
        match rows.first_end(self.rule) {
            Some(end) => {
                self.by_end.insert((end, key));
            }
            None => {
                self.keys.remove(&key);
            }
        }
        out
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
    use rand_core::{Rng, SeedableRng};
    use std::sync::Arc;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, false),
            Field::new("t", DataType::Int64, false),
        ]))
    }

    fn chunk(rows: &[(String, i64)]) -> (RecordBatch, Vec<i64>) {
        let batch = RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.0))),
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

    /// Units of random rows (5 keys; times mostly rising, some out of order by less than
    /// the watermark's delay, some equal) with a watermark that follows them: `check` sees
    /// the open rows after each unit (before their compaction), the watermark and every row
    /// pushed so far. Returns the open rows, every row pushed and the last watermark.
    fn stream(
        windows: &Windows,
        mut check: impl FnMut(&mut OpenRows, i64, &[(String, i64)]),
    ) -> (OpenRows, Vec<(String, i64)>, i64) {
        let mut rng = rand_pcg::Pcg64Mcg::seed_from_u64(7);
        let mut open = OpenRows::new(schema(), windows).unwrap();
        let (mut every, mut now) = (Vec::new(), 0);
        for _ in 0..60 {
            let rows: Vec<(String, i64)> = (0..rng.next_u32() % 12)
                .map(|_| {
                    now += (rng.next_u32() % 7) as i64;
                    let back = if rng.next_u32() % 5 == 0 { 15 } else { 0 };
                    (format!("k{}", rng.next_u32() % 5), now - back)
                })
                .collect();
            let (batch, times) = chunk(&rows);
            open.push(batch, times).unwrap();
            every.extend(rows);
            check(&mut open, now - 20, &every);
            open.compact_if_due().unwrap();
        }
        (open, every, now - 20)
    }

    fn values(open: &OpenRows, rows: impl IntoIterator<Item = u32>) -> Vec<(String, i64)> {
        pairs(&open.take(rows.into_iter().map(|r| r as usize)).unwrap())
    }

    /// The sessions taken unit by unit are those of the whole stream that end by the last
    /// watermark, with their rows in time order (equal times as they came); the rows left are
    /// those of the others, by key and time.
    #[test]
    fn sessions_taken_unit_by_unit_are_the_whole_streams() {
        let rule = SessionRule {
            gap: 10,
            max_duration: Some(40),
        };
        let windows = Windows::Sessions {
            rule,
            key: vec!["k".into()],
        };
        let mut taken = Vec::new();
        let (open, every, watermark) = stream(&windows, |open, watermark, _| {
            for s in open.take_final_sessions(watermark) {
                assert!(s.end <= watermark);
                taken.push((values(open, s.rows), s.start, s.end));
            }
        });
        let mut sorted = every;
        sorted.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1))); // stable
        let (mut ended, mut left) = (Vec::new(), Vec::new());
        for same_key in sorted.chunk_by(|a, b| a.0 == b.0) {
            for s in rule.sessions(same_key.iter().map(|r| r.1)) {
                let rows = same_key[s.rows.clone()].to_vec();
                match rule.end(&s) {
                    end if end <= watermark => ended.push((rows, s.first, end)),
                    _ => left.extend(rows),
                }
            }
        }
        assert!(ended.len() > 20 && left.len() > 5, "the test wants both");
        taken.sort_by(|a, b| (&a.0[0].0, a.1).cmp(&(&b.0[0].0, b.1)));
        assert_eq!(taken, ended);
        assert_eq!(pairs(&open.live_batch().unwrap()), left);
    }

    /// Fixed windows: the rows of a span of times are the live rows pushed with a time in it,
    /// in the order they came; rows leave when their last window ends by the watermark.
    #[test]
    fn fixed_window_rows_are_found_by_time_and_leave_with_their_last_window() {
        let windows = Fixed { size: 9, slide: 3 };
        let (mut spans, mut removed_by) = (0, i64::MIN);
        let live = |every: &[(String, i64)], by: i64| -> Vec<(String, i64)> {
            (every.iter())
                .filter(|r| windows.last_start(r.1) + windows.size > by)
                .cloned()
                .collect()
        };
        let (open, every, watermark) =
            stream(&Windows::Fixed(windows), |open, watermark, every| {
                let every = live(every, removed_by);
                let open_live = open.live().map(|i| i as u32);
                assert_eq!(values(open, open_live), every);
                for times in [
                    watermark - 10..watermark,
                    0..watermark + 30,
                    watermark..watermark,
                ] {
                    let expected: Vec<(String, i64)> = (every.iter())
                        .filter(|r| times.contains(&r.1))
                        .cloned()
                        .collect();
                    assert_eq!(
                        values(open, open.rows_in(times).into_iter().map(|r| r.0)),
                        expected
                    );
                    spans += 1;
                }
                open.remove_final_windows(Some(watermark));
                removed_by = watermark;
            });
        assert!(spans > 0 && open.chunks.len() < 60, "compacted on the way");
        assert_eq!(pairs(&open.live_batch().unwrap()), live(&every, watermark));
    }
}
