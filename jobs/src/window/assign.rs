//! Which window or session each row belongs to, on event times in microseconds since the
//! epoch. Pure functions: the job turns their answers into Arrow columns.

use std::collections::BTreeMap;
use std::ops::Range;

/// Tumbling (`slide == size`) or hopping windows: `[start, start + size)` for every start that
/// is a multiple of `slide` since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fixed {
    pub size: i64,
    pub slide: i64,
}

impl Fixed {
    /// The starts of the windows holding an event at `t`, latest first.
    pub fn starts(self, t: i64) -> impl Iterator<Item = i64> {
        let latest = t.div_euclid(self.slide) * self.slide;
        (0..)
            .map(move |k| latest - k * self.slide)
            .take_while(move |start| start + self.size > t)
    }

    /// The start of the last window holding an event at `t`: the row is needed until the
    /// watermark reaches that window's end.
    pub fn last_start(self, t: i64) -> i64 {
        t.div_euclid(self.slide) * self.slide
    }

    /// The event times of the windows that end in `(after, until]` (every window up to
    /// `until` without `after`): from the first one's start to the last one's end. `None`
    /// when no window ends there.
    pub fn times_ending_in(self, after: Option<i64>, until: i64) -> Option<Range<i64>> {
        let last = (until - self.size).div_euclid(self.slide);
        let first = match after {
            Some(after) => (after - self.size).div_euclid(self.slide) + 1,
            None => return Some(i64::MIN..last * self.slide + self.size),
        };
        (first <= last).then(|| first * self.slide..last * self.slide + self.size)
    }
}

/// Rows grouped window after window: the rows of window `i` are
/// `rows[windows[i - 1].until..windows[i].until]` (a row is in each of its windows).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Grouped {
    pub rows: Vec<u32>,
    pub windows: Vec<Bounds>,
}

/// One window (or session) of a [`Grouped`]: `[start, end)`, its rows ending at `until`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub until: usize,
    pub start: i64,
    pub end: i64,
}

impl Grouped {
    /// Adds the next window, of `rows`.
    pub fn push(&mut self, rows: impl IntoIterator<Item = u32>, start: i64, end: i64) {
        self.rows.extend(rows);
        self.windows.push(Bounds {
            until: self.rows.len(),
            start,
            end,
        });
    }

    /// Consecutive runs of whole windows of about `max_rows` rows each, and at most
    /// `max_windows` windows (one window larger than `max_rows` is a run of its own).
    pub fn runs(&self, max_rows: usize, max_windows: usize) -> Vec<Range<usize>> {
        let mut runs: Vec<Range<usize>> = Vec::new();
        let mut from = 0; // first window of the open run
        let mut rows_before = 0; // rows before it
        for (i, w) in self.windows.iter().enumerate() {
            if w.until - rows_before >= max_rows || i + 1 - from >= max_windows {
                runs.push(from..i + 1);
                from = i + 1;
                rows_before = w.until;
            }
        }
        if from < self.windows.len() {
            runs.push(from..self.windows.len());
        }
        runs
    }
}

/// Each of `rows` (row, event time) in each of its windows `wanted` accepts (given the row
/// and the window's end), window after window by start (rows in input order within one).
pub fn expand(
    rows: impl IntoIterator<Item = (u32, i64)>,
    windows: Fixed,
    wanted: impl Fn(u32, i64) -> bool,
) -> Grouped {
    let rows = rows.into_iter();
    let per_row = (windows.size + windows.slide - 1) / windows.slide;
    // At most: a filtered iterator's lower bound is 0.
    let most = rows.size_hint().1.unwrap_or(0);
    let mut pairs: Vec<(i64, u32)> = Vec::with_capacity(most * per_row as usize);
    for (row, t) in rows {
        let starts = windows.starts(t).filter(|s| wanted(row, s + windows.size));
        pairs.extend(starts.map(|start| (start, row)));
    }
    let (Some(lo), Some(hi)) = (
        pairs.iter().map(|p| p.0).min(),
        pairs.iter().map(|p| p.0).max(),
    ) else {
        return Grouped::default();
    };
    let windows_spanned = ((hi - lo) / windows.slide) as usize + 1;
    if windows_spanned > 4 * pairs.len() + 1024 {
        // A few rows far apart in time: sorting them beats a slot per window between.
        pairs.sort_unstable();
    } else {
        // Starts are whole slides apart: a counting sort by window, stable, so each
        // window's rows stay in input order.
        let slot = |start: i64| ((start - lo) / windows.slide) as usize;
        let mut at = vec![0usize; windows_spanned + 1];
        for p in &pairs {
            at[slot(p.0) + 1] += 1;
        }
        for i in 1..at.len() {
            at[i] += at[i - 1];
        }
        let mut sorted = vec![(0i64, 0u32); pairs.len()];
        for p in pairs {
            let i = &mut at[slot(p.0)];
            sorted[*i] = p;
            *i += 1;
        }
        pairs = sorted;
    }
    let mut out = Grouped::default();
    for same_start in pairs.chunk_by(|a, b| a.0 == b.0) {
        let start = same_start[0].0;
        out.push(same_start.iter().map(|p| p.1), start, start + windows.size);
    }
    out
}

/// `times` as (row, event time), every row numbered by its place.
#[cfg(test)]
pub fn numbered(times: &[i64]) -> impl Iterator<Item = (u32, i64)> + '_ {
    (0u32..).zip(times.iter().copied())
}

/// One session of a key: rows `rows` of the key's rows sorted by time, events from `first`
/// to `last`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub rows: Range<usize>,
    pub first: i64,
    pub last: i64,
}

/// How rows make sessions: a gap of `gap` or more ends one, and so does reaching
/// `max_duration` from its first event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionRule {
    pub gap: i64,
    pub max_duration: Option<i64>,
}

impl SessionRule {
    /// When a session ends: `gap` after its last event (as Spark's `session_window`), or
    /// at its maximum duration if that comes first. No later event can join it from then on,
    /// so a key's sessions end in the order they start.
    pub fn end(self, session: &Session) -> i64 {
        let by_gap = session.last + self.gap;
        self.max_duration
            .map_or(by_gap, |max| by_gap.min(session.first + max))
    }

    /// Adds row `i` of a key's rows sorted by time (at `t`) to the key's sessions of the rows
    /// before it: it ends the last session when it comes `gap` or more after that session's
    /// last event, or `max_duration` or more after its first.
    pub fn add(self, sessions: &mut Vec<Session>, i: usize, t: i64) {
        match sessions.last_mut() {
            Some(s)
                if t - s.last < self.gap
                    && self.max_duration.is_none_or(|max| t - s.first < max) =>
            {
                s.rows.end = i + 1;
                s.last = t;
            }
            _ => sessions.push(Session {
                rows: i..i + 1,
                first: t,
                last: t,
            }),
        }
    }

    /// The sessions of one key's event times, sorted.
    pub fn sessions(self, times: impl IntoIterator<Item = i64>) -> Vec<Session> {
        let mut out = Vec::new();
        for (i, t) in times.into_iter().enumerate() {
            self.add(&mut out, i, t);
        }
        out
    }
}

/// Event-time progress per Kafka partition: each partition is an ordered stream of its own,
/// with its own watermark `delay` behind the largest event time it has shown. A row is judged
/// by its partition's watermark; windows are emitted by the slowest partition's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Watermarks {
    pub max_seen: BTreeMap<i32, i64>,
    /// The watermark windows were last emitted by: the slowest partition's at the end of the
    /// last unit, never going back.
    pub floor: Option<i64>,
    pub delay: i64,
}

impl Watermarks {
    /// The watermark windows are final by: the slowest of the `partitions` partitions', never
    /// going back. It waits until every partition has shown a row: one that has not may
    /// still bring rows of any age.
    pub fn global(&self, partitions: i32) -> Option<i64> {
        let slowest = (0..partitions)
            .map(|p| self.max_seen.get(&p).map(|max| max - self.delay))
            .collect::<Option<Vec<i64>>>()
            .and_then(|marks| marks.into_iter().min());
        slowest.max(self.floor)
    }

    /// Takes a unit's rows in, in arrival order (rows of partition `partition[i]` with event
    /// times `times[i]`, of a source of `partitions` partitions). Returns the watermark each
    /// row met: its partition's, as the rows of that partition before it made it (never below
    /// the `floor`, which is at most every partition's). A row counts in its windows not final
    /// by it. It depends on nothing but the partition's own rows: not on how rows were cut
    /// into units, nor on how partitions interleave. Then moves the floor to the slowest
    /// partition's watermark. `None` times move nothing.
    pub fn arrive(
        &mut self,
        times: &[Option<i64>],
        partition: &[i32],
        partitions: i32,
    ) -> Vec<Option<i64>> {
        let mut met = Vec::with_capacity(times.len());
        for (&t, &p) in times.iter().zip(partition) {
            let own = self.max_seen.get(&p).map(|max| max - self.delay);
            met.push(own.max(self.floor));
            if let Some(t) = t {
                let max = self.max_seen.entry(p).or_insert(t);
                *max = (*max).max(t);
            }
        }
        self.floor = self.global(partitions);
        met
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000_000;

    #[test]
    fn tumbling_windows_hold_each_event_once_start_inclusive() {
        let minute = Fixed {
            size: MIN,
            slide: MIN,
        };
        assert_eq!(minute.starts(0).collect::<Vec<_>>(), [0]);
        assert_eq!(minute.starts(MIN - 1).collect::<Vec<_>>(), [0]);
        assert_eq!(minute.starts(MIN).collect::<Vec<_>>(), [MIN]);
        // Before the epoch too: floor, not truncation.
        assert_eq!(minute.starts(-1).collect::<Vec<_>>(), [-MIN]);
        assert_eq!(minute.last_start(MIN + 5), MIN);
    }

    #[test]
    fn times_ending_in_span_exactly_the_windows_ending_there() {
        let five_by_one = Fixed {
            size: 5 * MIN,
            slide: MIN,
        };
        // Windows end on whole minutes: those ending in (7.5, 10] end at 8, 9 and 10.
        assert_eq!(
            five_by_one.times_ending_in(Some(15 * MIN / 2), 10 * MIN),
            Some(3 * MIN..10 * MIN)
        );
        // An end at `after` is not in; one at `until` is.
        assert_eq!(
            five_by_one.times_ending_in(Some(8 * MIN), 9 * MIN),
            Some(4 * MIN..9 * MIN)
        );
        assert_eq!(
            five_by_one.times_ending_in(Some(8 * MIN), 8 * MIN + 1),
            None
        );
        assert_eq!(
            five_by_one.times_ending_in(None, 9 * MIN + 1),
            Some(i64::MIN..9 * MIN)
        );
        // Before the epoch too.
        assert_eq!(
            five_by_one.times_ending_in(Some(-11 * MIN / 2), -4 * MIN),
            Some(-10 * MIN..-4 * MIN)
        );
    }

    #[test]
    fn hopping_windows_hold_each_event_size_over_slide_times() {
        let five_by_one = Fixed {
            size: 5 * MIN,
            slide: MIN,
        };
        let t = 7 * MIN + 30_000_000;
        assert_eq!(
            five_by_one.starts(t).collect::<Vec<_>>(),
            [7 * MIN, 6 * MIN, 5 * MIN, 4 * MIN, 3 * MIN]
        );
        assert_eq!(five_by_one.last_start(t), 7 * MIN);
        // A slide that does not divide the size: 2 or 3 windows.
        let uneven = Fixed {
            size: 5 * MIN,
            slide: 2 * MIN,
        };
        assert_eq!(uneven.starts(MIN).collect::<Vec<_>>(), [0, -2 * MIN]);
        assert_eq!(
            uneven.starts(0).collect::<Vec<_>>(),
            [0, -2 * MIN, -4 * MIN]
        );
    }

    /// Whether rows are near in time (a slot per window) or far apart (a sort), each row is
    /// in each of its windows, windows by start, rows in input order within one.
    #[test]
    fn expand_orders_windows_by_start_and_rows_by_input_order() {
        let five_by_one = Fixed {
            size: 5 * MIN,
            slide: MIN,
        };
        let near: Vec<i64> = (0..200).map(|i| (i * 7919 % 600) * MIN / 10).collect();
        let far: Vec<i64> = vec![3 * MIN, 1_000_000 * MIN, -2 * MIN, 1_000_000 * MIN + 1];
        for times in [near, far] {
            let mut expected: Vec<(i64, u32)> = (0u32..)
                .zip(&times)
                .flat_map(|(row, &t)| five_by_one.starts(t).map(move |s| (s, row)))
                .collect();
            expected.sort();
            let got = expand(numbered(&times), five_by_one, |_, _| true);
            let mut flat = Vec::new();
            let mut from = 0;
            for w in &got.windows {
                assert_eq!(w.end, w.start + 5 * MIN);
                flat.extend(got.rows[from..w.until].iter().map(|&r| (w.start, r)));
                from = w.until;
            }
            assert_eq!(flat, expected);
        }
    }

    #[test]
    fn expand_keeps_only_the_windows_asked_for() {
        let five_by_one = Fixed {
            size: 5 * MIN,
            slide: MIN,
        };
        let got = expand(numbered(&[0, 2 * MIN]), five_by_one, |_, end| {
            end <= 5 * MIN
        });
        assert_eq!(got.rows, [0, 0, 0, 1, 0, 1, 0, 1]);
        let bounds: Vec<(usize, i64, i64)> = got
            .windows
            .iter()
            .map(|w| (w.until, w.start, w.end))
            .collect();
        assert_eq!(
            bounds,
            [
                (1, -4 * MIN, MIN),
                (2, -3 * MIN, 2 * MIN),
                (4, -2 * MIN, 3 * MIN),
                (6, -MIN, 4 * MIN),
                (8, 0, 5 * MIN)
            ]
        );
    }

    #[test]
    fn runs_hold_whole_windows_and_respect_both_limits() {
        let mut grouped = Grouped::default();
        for (rows, start) in [(3, 0), (1, 1), (5, 2), (1, 3), (1, 4)] {
            let from = grouped.rows.len() as u32;
            grouped.push(from..from + rows, start, start + 1);
        }
        // About 4 rows a run: a window of 5 rows is a run of its own.
        assert_eq!(grouped.runs(4, 10), [0..2, 2..3, 3..5]);
        // At most 2 windows a run.
        assert_eq!(grouped.runs(100, 2), [0..2, 2..4, 4..5]);
        assert_eq!(Grouped::default().runs(4, 10), Vec::<Range<usize>>::new());
    }

    #[test]
    fn a_gap_of_exactly_the_session_gap_starts_a_new_session() {
        let rule = SessionRule {
            gap: 30 * MIN,
            max_duration: None,
        };
        let got = rule.sessions([0, 29 * MIN, 58 * MIN, 100 * MIN]);
        assert_eq!(
            got,
            [
                Session {
                    rows: 0..3,
                    first: 0,
                    last: 58 * MIN
                },
                Session {
                    rows: 3..4,
                    first: 100 * MIN,
                    last: 100 * MIN
                },
            ]
        );
        assert_eq!(rule.end(&got[0]), 88 * MIN);
        assert_eq!(
            rule.sessions([0, rule.gap]).len(),
            2,
            "exactly the gap apart"
        );
    }

    #[test]
    fn a_session_that_reaches_its_maximum_duration_ends_there() {
        let rule = SessionRule {
            gap: 30 * MIN,
            max_duration: Some(60 * MIN),
        };
        // Events every 20 minutes, for ever: sessions of an hour at most.
        let got = rule.sessions((0..7).map(|i| i * 20 * MIN));
        let bounds: Vec<(i64, i64, i64)> = got
            .iter()
            .map(|s| (s.first / MIN, s.last / MIN, rule.end(s) / MIN))
            .collect();
        assert_eq!(bounds, [(0, 40, 60), (60, 100, 120), (120, 120, 150)]);
    }

    /// A row meets its partition's watermark as that partition's rows before it made it,
    /// whatever the units and however partitions interleave; the floor follows the slowest.
    #[test]
    fn each_row_meets_its_partitions_watermark_whatever_the_units() {
        let marks = Watermarks {
            delay: 10,
            ..Default::default()
        };
        let times = [
            Some(100),
            Some(50),
            None,
            Some(95),
            Some(200),
            Some(60),
            Some(40),
        ];
        let partition = [0, 1, 1, 0, 0, 1, 1];
        let mut whole = marks.clone();
        let all = whole.arrive(&times, &partition, 2);
        assert_eq!(
            all,
            [None, None, Some(40), Some(90), Some(90), Some(40), Some(50)]
        );
        assert_eq!(whole.floor, Some(50), "the slower partition's: 60 - 10");
        // Cut into units, or with the partitions' rows in another interleaving: the same.
        let mut cut = marks.clone();
        let mut got = Vec::new();
        for (from, to) in [(0, 3), (3, 4), (4, 7)] {
            got.extend(cut.arrive(&times[from..to], &partition[from..to], 2));
        }
        assert_eq!(got, all);
        let order = [1, 2, 5, 6, 0, 3, 4];
        let mut other = marks.clone();
        let reordered = other.arrive(&order.map(|i| times[i]), &order.map(|i| partition[i]), 2);
        assert_eq!(order.map(|i| all[i]).to_vec(), reordered);
        // A partition with no row yet holds the floor back; the floor never goes back.
        assert_eq!(whole.global(3), Some(50));
        whole.arrive(&[Some(0)], &[1], 2);
        assert_eq!(whole.floor, Some(50));
    }
}
