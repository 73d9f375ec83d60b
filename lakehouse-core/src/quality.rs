//! Expectations: data-quality rules declared per table, each turned into a NULL-safe SQL
//! predicate, and the quality report every run appends to `<lake>/_lakectl/quality`.
//!
//! NULL-safety follows SQL `CHECK` constraints: a NULL value passes every rule except
//! `not_null`, and a `sql` predicate that evaluates to NULL passes. Declare `not_null`
//! beside a rule when absence is a failure too.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use tracing::warn;

use crate::error::Result;
use crate::storage::{Lake, Layer};

/// What happens to a row that fails a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Keep the row, count the failure.
    #[default]
    Warn,
    /// Leave the row out of the table, count it.
    Drop,
    /// Move the row to the quarantine table with the rule and the raw record.
    Quarantine,
    /// Stop the run before anything is committed.
    Fail,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Warn => "warn",
            Action::Drop => "drop",
            Action::Quarantine => "quarantine",
            Action::Fail => "fail",
        }
    }
}

/// A constant in a rule: `values`, `min`, `max`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Literal {
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

impl Literal {
    fn to_sql(&self) -> String {
        match self {
            Literal::Bool(b) => b.to_string(),
            Literal::Int(i) => i.to_string(),
            Literal::Float(f) => format!("{f:?}"),
            Literal::Text(s) => format!("'{}'", s.replace('\'', "''")),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Rule {
    NotNull {
        column: String,
    },
    /// No two rows of the table (after this run's merge) share a non-null value.
    Unique {
        column: String,
    },
    AcceptedValues {
        column: String,
        values: Vec<Literal>,
    },
    Range {
        column: String,
        min: Option<Literal>,
        max: Option<Literal>,
    },
    Regex {
        column: String,
        pattern: String,
    },
    /// Any SQL boolean expression over the row's columns.
    Sql {
        predicate: String,
    },
}

/// One declared expectation: `[[silver.<table>.expect]]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "ExpectationSpec")]
pub struct Expectation {
    pub name: String,
    pub rule: Rule,
    pub action: Action,
}

/// The file's flat form; every key a rule does not use is refused.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectationSpec {
    name: Option<String>,
    rule: String,
    column: Option<String>,
    values: Option<Vec<Literal>>,
    min: Option<Literal>,
    max: Option<Literal>,
    pattern: Option<String>,
    predicate: Option<String>,
    #[serde(default)]
    action: Action,
}

pub const RULE_NAMES: &str = "not_null, unique, accepted_values, range, regex, sql";

impl TryFrom<ExpectationSpec> for Expectation {
    type Error = String;

    fn try_from(spec: ExpectationSpec) -> Result<Expectation, String> {
        let rule_name = spec.rule.as_str();
        let mut used: Vec<&str> = Vec::new();
        let mut take = |key: &'static str, present: bool| {
            if present {
                used.push(key);
            }
            present
        };
        let column = || {
            spec.column
                .clone()
                .ok_or_else(|| format!("rule {rule_name:?} needs `column`"))
        };
        let has_column = take("column", spec.column.is_some());
        let rule = match rule_name {
            "not_null" => Rule::NotNull { column: column()? },
            "unique" => Rule::Unique { column: column()? },
            "accepted_values" => {
                take("values", spec.values.is_some());
                let values = spec.values.clone().unwrap_or_default();
                if values.is_empty() {
                    return Err("rule \"accepted_values\" needs a non-empty `values` list".into());
                }
                Rule::AcceptedValues {
                    column: column()?,
                    values,
                }
            }
            "range" => {
                take("min", spec.min.is_some());
                take("max", spec.max.is_some());
                if spec.min.is_none() && spec.max.is_none() {
                    return Err("rule \"range\" needs `min`, `max` or both".into());
                }
                for bound in [&spec.min, &spec.max].into_iter().flatten() {
                    if matches!(bound, Literal::Float(f) if !f.is_finite()) {
                        return Err("range bounds must be finite".into());
                    }
                }
                Rule::Range {
                    column: column()?,
                    min: spec.min.clone(),
                    max: spec.max.clone(),
                }
            }
            "regex" => {
                take("pattern", spec.pattern.is_some());
                let pattern = spec
                    .pattern
                    .clone()
                    .ok_or("rule \"regex\" needs `pattern`")?;
                regex::Regex::new(&pattern).map_err(|e| format!("bad `pattern`: {e}"))?;
                Rule::Regex {
                    column: column()?,
                    pattern,
                }
            }
            "sql" => {
                take("predicate", spec.predicate.is_some());
                if has_column {
                    return Err("rule \"sql\" takes `predicate`, not `column`".into());
                }
                Rule::Sql {
                    predicate: spec
                        .predicate
                        .clone()
                        .ok_or("rule \"sql\" needs `predicate`")?,
                }
            }
            other => return Err(format!("unknown rule {other:?}; known rules: {RULE_NAMES}")),
        };
        let given = [
            ("values", spec.values.is_some()),
            ("min", spec.min.is_some()),
            ("max", spec.max.is_some()),
            ("pattern", spec.pattern.is_some()),
            ("predicate", spec.predicate.is_some()),
        ];
        if let Some((key, _)) = given
            .iter()
            .find(|(k, present)| *present && !used.contains(k))
        {
            return Err(format!("`{key}` does not apply to rule {rule_name:?}"));
        }
        let name = spec.name.unwrap_or_else(|| rule.default_name());
        Ok(Expectation {
            name,
            rule,
            action: spec.action,
        })
    }
}

pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl Rule {
    fn default_name(&self) -> String {
        match self {
            Rule::NotNull { column } => format!("not_null({column})"),
            Rule::Unique { column } => format!("unique({column})"),
            Rule::AcceptedValues { column, .. } => format!("accepted_values({column})"),
            Rule::Range { column, .. } => format!("range({column})"),
            Rule::Regex { column, .. } => format!("regex({column})"),
            Rule::Sql { predicate } => format!("sql({predicate})"),
        }
    }

    /// The column the rule reads, if it names one.
    pub fn column(&self) -> Option<&str> {
        match self {
            Rule::NotNull { column }
            | Rule::Unique { column }
            | Rule::AcceptedValues { column, .. }
            | Rule::Range { column, .. }
            | Rule::Regex { column, .. } => Some(column),
            Rule::Sql { .. } => None,
        }
    }

    /// A SQL boolean, never NULL, true when the row passes. `unique_dups` is the alias of the
    /// relation holding the duplicated values of a `unique` rule's column.
    fn pass_sql(&self, row: &str, unique_dups: &str) -> String {
        let col = |c: &str| format!("{row}.{}", quote_ident(c));
        let null_passes = |check: String| format!("coalesce(({check}), true)");
        match self {
            Rule::NotNull { column } => format!("{} IS NOT NULL", col(column)),
            Rule::Unique { .. } => format!("{unique_dups}.v IS NULL"),
            Rule::AcceptedValues { column, values } => {
                let list: Vec<String> = values.iter().map(Literal::to_sql).collect();
                null_passes(format!("{} IN ({})", col(column), list.join(", ")))
            }
            Rule::Range { column, min, max } => {
                let mut checks = Vec::new();
                if let Some(min) = min {
                    checks.push(format!("{} >= {}", col(column), min.to_sql()));
                }
                if let Some(max) = max {
                    checks.push(format!("{} <= {}", col(column), max.to_sql()));
                }
                null_passes(checks.join(" AND "))
            }
            Rule::Regex { column, pattern } => null_passes(format!(
                "regexp_like({}, '{}')",
                col(column),
                pattern.replace('\'', "''")
            )),
            Rule::Sql { predicate } => null_passes(predicate.clone()),
        }
    }
}

/// The name of the boolean column that says whether a row passed expectation `i`.
pub fn pass_column(i: usize) -> String {
    format!("__pass_{i}")
}

/// Builds the query that evaluates every expectation on the rows of `input`: all of its
/// columns plus one never-NULL boolean [`pass_column`] per expectation.
///
/// `unique` looks at the table as the merge will leave it: the rows of `target` (when the
/// table exists) whose key is not being replaced, plus the rows of `input`.
pub fn evaluation_sql(
    expectations: &[Expectation],
    input: &str,
    key: &[String],
    target: Option<&str>,
) -> String {
    let mut ctes = Vec::new();
    let mut joins = String::new();
    let mut passes = Vec::new();
    for (i, e) in expectations.iter().enumerate() {
        let dups = format!("__dups_{i}");
        if let Rule::Unique { column } = &e.rule {
            let c = quote_ident(column);
            let mut values = format!("SELECT {c} AS v FROM {input}");
            if let Some(target) = target {
                let same_key: Vec<String> = key
                    .iter()
                    .map(|k| format!("i.{0} = t.{0}", quote_ident(k)))
                    .collect();
                write!(
                    values,
                    " UNION ALL SELECT t.{c} AS v FROM {target} t WHERE NOT EXISTS \
                     (SELECT 1 FROM {input} i WHERE {})",
                    same_key.join(" AND ")
                )
                .expect("write to String");
            }
            ctes.push(format!(
                "{dups} AS (SELECT v FROM ({values}) WHERE v IS NOT NULL GROUP BY v HAVING count(*) > 1)"
            ));
            write!(joins, " LEFT JOIN {dups} ON {input}.{c} = {dups}.v").expect("write to String");
        }
        passes.push(format!(
            "{} AS {}",
            e.rule.pass_sql(input, &dups),
            pass_column(i)
        ));
    }
    let with = if ctes.is_empty() {
        String::new()
    } else {
        format!("WITH {} ", ctes.join(", "))
    };
    let passes = if passes.is_empty() {
        String::new()
    } else {
        format!(", {}", passes.join(", "))
    };
    format!("{with}SELECT {input}.*{passes} FROM {input}{joins}")
}

/// Rows checked and failed by one rule (an expectation or a built-in step of the job).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleCount {
    pub rule: String,
    pub action: String,
    pub checked: u64,
    pub failed: u64,
    /// A failure means a bad or repeated record (parse, key, duplicates, expectations), not a
    /// deliberate filter or a superseded version: it counts in the quality score.
    pub check: bool,
}

/// The rule of the quality score's row: records checked, and those that passed every check.
pub const SCORE_RULE: &str = "all_checks";
pub const SCORE_ACTION: &str = "score";

/// Per-rule counts of a unit or a whole run, in the order rules were applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QualityReport {
    pub rules: Vec<RuleCount>,
}

impl QualityReport {
    /// Counts a check: its failures are bad or repeated records.
    pub fn count(&mut self, rule: &str, action: &str, checked: u64, failed: u64) {
        self.add(rule, action, checked, failed, true);
    }

    /// Counts a step that removes rows on purpose (a filter, an older version of a key).
    pub fn count_step(&mut self, rule: &str, action: &str, checked: u64, removed: u64) {
        self.add(rule, action, checked, removed, false);
    }

    /// The score of `records`: how many passed every check.
    pub fn score(&mut self, records: u64, passed_all: u64) {
        self.add(
            SCORE_RULE,
            SCORE_ACTION,
            records,
            records - passed_all,
            false,
        );
    }

    fn add(&mut self, rule: &str, action: &str, checked: u64, failed: u64, check: bool) {
        match self
            .rules
            .iter_mut()
            .find(|r| r.rule == rule && r.action == action)
        {
            Some(r) => {
                r.checked += checked;
                r.failed += failed;
            }
            None => self.rules.push(RuleCount {
                rule: rule.to_string(),
                action: action.to_string(),
                checked,
                failed,
                check,
            }),
        }
    }

    pub fn absorb(&mut self, other: &QualityReport) {
        for r in &other.rules {
            self.add(&r.rule, &r.action, r.checked, r.failed, r.check);
        }
    }

    /// The share of records that passed every check, and the checks without a failure out of
    /// all checks; `None` before any record was scored.
    pub fn quality_score(&self) -> Option<(f64, usize, usize)> {
        let score = self.rules.iter().find(|r| r.rule == SCORE_RULE)?;
        let checks: Vec<&RuleCount> = self.rules.iter().filter(|r| r.check).collect();
        let clean = checks.iter().filter(|r| r.failed == 0).count();
        let share = if score.checked == 0 {
            1.0
        } else {
            (score.checked - score.failed) as f64 / score.checked as f64
        };
        Some((share, clean, checks.len()))
    }

    pub fn failed(&self, rule: &str) -> Option<u64> {
        self.rules.iter().find(|r| r.rule == rule).map(|r| r.failed)
    }

    /// A short aligned table for the end of a run.
    pub fn render(&self) -> String {
        let width = self
            .rules
            .iter()
            .map(|r| r.rule.len())
            .max()
            .unwrap_or(4)
            .max(4);
        let action = self
            .rules
            .iter()
            .map(|r| r.action.len())
            .max()
            .unwrap_or(6)
            .max(6);
        let mut out = format!(
            "  {:<width$}  {:<action$}  {:>10}  {:>10}  {:>10}\n",
            "rule", "action", "checked", "passed", "failed"
        );
        for r in &self.rules {
            writeln!(
                out,
                "  {:<width$}  {:<action$}  {:>10}  {:>10}  {:>10}",
                r.rule,
                r.action,
                r.checked,
                r.checked - r.failed,
                r.failed
            )
            .expect("write to String");
        }
        if let Some((share, clean, checks)) = self.quality_score() {
            writeln!(
                out,
                "  quality score: {:.1} % of records passed every check ({clean} of {checks} checks without a failure)",
                share * 100.0
            )
            .expect("write to String");
        }
        out
    }
}

/// The Delta table `<lake>/_lakectl/quality`: one row per rule per committed unit. A job's
/// rows are committed together every [`QUALITY_FLUSH`] and when its run ends: a commit per
/// unit of every continuous job (several a second) would grow one shared table's log and
/// files without bound and make each writer catch up on all the others' commits. A crash
/// loses the rows not yet committed, as it could lose one unit's row before (the quarantined
/// records themselves commit with their unit).
#[derive(Debug)]
pub struct QualityLog {
    lake: Lake,
    pending: Vec<RecordBatch>,
    flushed_at: Instant,
}

/// How long a job's quality rows may wait for their commit.
pub const QUALITY_FLUSH: Duration = Duration::from_secs(5);

/// What a quality row is about: which run of which job, over which input versions.
pub struct QualityScope<'a> {
    pub run_id: &'a str,
    pub pipeline: &'a str,
    pub job: &'a str,
    pub first_version: i64,
    pub last_version: i64,
    pub at: DateTime<Utc>,
}

pub const QUALITY_TABLE: &str = "quality";

fn quality_schema() -> SchemaRef {
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    Arc::new(Schema::new(vec![
        Field::new("run_id", DataType::Utf8, false),
        Field::new("pipeline", DataType::Utf8, false),
        Field::new("job", DataType::Utf8, false),
        Field::new("first_version", DataType::Int64, false),
        Field::new("last_version", DataType::Int64, false),
        Field::new("rule", DataType::Utf8, false),
        Field::new("action", DataType::Utf8, false),
        Field::new("rows_checked", DataType::Int64, false),
        Field::new("rows_passed", DataType::Int64, false),
        Field::new("rows_failed", DataType::Int64, false),
        Field::new("checked_at", ts, false),
    ]))
}

impl QualityLog {
    pub fn new(lake: Lake) -> QualityLog {
        QualityLog {
            lake,
            pending: Vec::new(),
            flushed_at: Instant::now(),
        }
    }

    /// Counts a committed unit's report: in the metrics now, in the table with the next
    /// flush ([`QualityLog::flush_if_due`] after every unit, idle ones too).
    pub fn append(&mut self, scope: &QualityScope<'_>, report: &QualityReport) {
        for r in report
            .rules
            .iter()
            .filter(|r| r.action == Action::Quarantine.as_str())
        {
            crate::metrics::quarantined(scope.job, &r.rule, r.failed);
        }
        if !report.rules.is_empty() {
            match quality_batch(scope, report) {
                Ok(rows) => self.pending.push(rows),
                Err(e) => warn!(error = %e, "could not make the unit's quality rows"),
            }
        }
    }

    /// Flushes when [`QUALITY_FLUSH`] has passed since the last flush, so the rows of the
    /// units before a quiet spell do not wait for the run's end.
    pub async fn flush_if_due(&mut self) {
        if self.flushed_at.elapsed() >= QUALITY_FLUSH {
            self.flush().await;
        }
    }

    /// Commits the rows appended since the last flush. The data they count is committed
    /// already: a failure is a warning (like a lost run record), and the rows wait for the
    /// next flush.
    pub async fn flush(&mut self) {
        self.flushed_at = Instant::now();
        if self.pending.is_empty() {
            return;
        }
        let committed = match arrow::compute::concat_batches(&quality_schema(), &self.pending) {
            Ok(rows) => self.lake.append(Layer::System, QUALITY_TABLE, rows).await,
            Err(e) => Err(e.into()),
        };
        match committed {
            Ok(()) => self.pending.clear(),
            Err(e) => warn!(error = %e, "could not append to the quality table"),
        }
    }
}

fn quality_batch(scope: &QualityScope<'_>, report: &QualityReport) -> Result<RecordBatch> {
    let n = report.rules.len();
    let text = |s: &str| Arc::new(StringArray::from(vec![s; n])) as ArrayRef;
    let each = |f: &dyn Fn(&RuleCount) -> i64| {
        Arc::new(Int64Array::from_iter_values(report.rules.iter().map(f))) as ArrayRef
    };
    let batch = RecordBatch::try_new(
        quality_schema(),
        vec![
            text(scope.run_id),
            text(scope.pipeline),
            text(scope.job),
            Arc::new(Int64Array::from(vec![scope.first_version; n])),
            Arc::new(Int64Array::from(vec![scope.last_version; n])),
            Arc::new(StringArray::from_iter_values(
                report.rules.iter().map(|r| &r.rule),
            )),
            Arc::new(StringArray::from_iter_values(
                report.rules.iter().map(|r| &r.action),
            )),
            each(&|r| r.checked as i64),
            each(&|r| (r.checked - r.failed) as i64),
            each(&|r| r.failed as i64),
            Arc::new(
                TimestampMicrosecondArray::from(vec![scope.at.timestamp_micros(); n])
                    .with_timezone("UTC"),
            ),
        ],
    )?;
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray, Int64Array as I64};
    use datafusion::datasource::MemTable;
    use datafusion::prelude::SessionContext;

    fn parse(toml_text: &str) -> Result<Expectation, String> {
        toml::from_str::<Expectation>(toml_text).map_err(|e| e.message().to_string())
    }

    #[test]
    fn the_score_is_the_share_of_records_that_passed_every_check() {
        let mut unit = QualityReport::default();
        unit.count("parse", "quarantine", 1000, 10);
        unit.count_step("cleaning_sql", "drop", 990, 40);
        unit.count("range(price)", "quarantine", 950, 17);
        unit.count("accepted_values(event_type)", "drop", 950, 0);
        unit.score(1000, 973);
        let mut run = QualityReport::default();
        run.absorb(&unit);
        run.absorb(&unit);
        let (share, clean, checks) = run.quality_score().unwrap();
        assert_eq!((clean, checks), (1, 3), "the filter is no check");
        assert!((share - 0.973).abs() < 1e-9, "{share}");
        let text = run.render();
        assert!(text.contains("quality score: 97.3 % of records passed every check (1 of 3 checks without a failure)"), "{text}");
        assert!(
            text.contains("all_checks") && text.contains("2000"),
            "{text}"
        );
        assert_eq!(QualityReport::default().quality_score(), None);
    }

    #[test]
    fn each_rule_needs_its_keys_and_refuses_others() {
        let e =
            parse("rule = \"range\"\ncolumn = \"x\"\nmin = 0\naction = \"quarantine\"").unwrap();
        assert_eq!(e.name, "range(x)");
        assert_eq!(e.action, Action::Quarantine);
        assert_eq!(
            parse("rule = \"not_null\"\ncolumn = \"x\"").unwrap().action,
            Action::Warn
        );
        for (text, want) in [
            ("rule = \"range\"\ncolumn = \"x\"", "needs `min`, `max`"),
            ("rule = \"not_null\"", "needs `column`"),
            (
                "rule = \"not_null\"\ncolumn = \"x\"\nvalues = [1]",
                "`values` does not apply",
            ),
            (
                "rule = \"regex\"\ncolumn = \"x\"\npattern = \"(\"",
                "bad `pattern`",
            ),
            ("rule = \"nope\"", "unknown rule"),
            (
                "rule = \"sql\"\npredicate = \"x > 1\"\ncolumn = \"x\"",
                "not `column`",
            ),
            (
                "rule = \"accepted_values\"\ncolumn = \"x\"\nvalues = []",
                "non-empty",
            ),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    /// Runs the evaluation query over a one-column table and returns each rule's pass flags.
    /// A table (k, n, s) registered as `name`.
    fn register(
        ctx: &SessionContext,
        name: &str,
        keys: Vec<i64>,
        n: Vec<Option<i64>>,
        s: Vec<Option<&str>>,
    ) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("n", DataType::Int64, true),
            Field::new("s", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(I64::from(keys)),
                Arc::new(I64::from(n)),
                Arc::new(StringArray::from(s)),
            ],
        )
        .unwrap();
        let table = MemTable::try_new(schema, vec![vec![batch]]).unwrap();
        ctx.register_table(name, Arc::new(table)).unwrap();
    }

    /// Runs the evaluation query over rows keyed 0.. (and `target`, when given) and returns
    /// each rule's pass flags in key order.
    async fn passes(
        rules: &[&str],
        values: Vec<Option<i64>>,
        names: Vec<&str>,
        target: Option<(Vec<i64>, Vec<Option<i64>>)>,
    ) -> Vec<Vec<bool>> {
        let expectations: Vec<Expectation> = rules.iter().map(|r| parse(r).unwrap()).collect();
        let ctx = SessionContext::new();
        let keys: Vec<i64> = (0..values.len() as i64).collect();
        register(
            &ctx,
            "rows",
            keys,
            values,
            names.into_iter().map(Some).collect(),
        );
        let target = target.map(|(keys, n)| {
            let s = vec![None; keys.len()];
            register(&ctx, "target", keys, n, s);
            "target"
        });
        let sql = evaluation_sql(&expectations, "rows", &["k".into()], target);
        let out = ctx
            .sql(&sql)
            .await
            .unwrap()
            .sort_by(vec![datafusion::prelude::col("k")])
            .unwrap()
            .collect()
            .await
            .unwrap();
        let batch = arrow::compute::concat_batches(&out[0].schema(), &out).unwrap();
        (0..rules.len())
            .map(|i| {
                let c = batch.column_by_name(&pass_column(i)).unwrap().as_boolean();
                assert_eq!(c.null_count(), 0, "pass flags are never NULL");
                c.iter().map(|v| v.unwrap()).collect()
            })
            .collect()
    }

    #[tokio::test]
    async fn rules_are_null_safe_like_check_constraints() {
        let values = vec![Some(5), None, Some(-1), Some(5)];
        let names = vec!["Ann", "bob", "", "Ann"];
        let got = passes(
            &[
                "rule = \"not_null\"\ncolumn = \"n\"",
                "rule = \"range\"\ncolumn = \"n\"\nmin = 0\nmax = 10",
                "rule = \"accepted_values\"\ncolumn = \"n\"\nvalues = [5, 7]",
                "rule = \"regex\"\ncolumn = \"s\"\npattern = \"^[A-Z]\"",
                "rule = \"sql\"\npredicate = \"n * 2 > 0\"",
                "rule = \"unique\"\ncolumn = \"n\"",
                "rule = \"unique\"\ncolumn = \"s\"",
            ],
            values,
            names,
            None,
        )
        .await;
        assert_eq!(got[0], [true, false, true, true], "not_null");
        assert_eq!(got[1], [true, true, false, true], "range: NULL passes");
        assert_eq!(got[2], [true, true, false, true], "accepted_values");
        assert_eq!(
            got[3],
            [true, false, false, true],
            "regex: '' and 'bob' fail"
        );
        assert_eq!(got[4], [true, true, false, true], "sql: NULL result passes");
        assert_eq!(
            got[5],
            [false, true, true, false],
            "unique: both 5s fail, NULL passes"
        );
        assert_eq!(got[6], [false, true, true, false], "unique on text");
    }

    #[tokio::test]
    async fn unique_looks_at_the_table_as_the_merge_leaves_it() {
        // Target: key 10 holds 6 (kept), key 2 holds 7 (replaced by incoming key 2).
        let target = (vec![10, 2], vec![Some(6), Some(7)]);
        let got = passes(
            &["rule = \"unique\"\ncolumn = \"n\""],
            vec![Some(5), Some(6), Some(7)],
            vec!["a", "b", "c"],
            Some(target),
        )
        .await;
        assert_eq!(got[0], [true, false, true]);
    }

    #[test]
    fn identifiers_and_literals_are_quoted() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(Literal::Text("it's".into()).to_sql(), "'it''s'");
        assert_eq!(Literal::Float(1.0).to_sql(), "1.0");
    }

    #[test]
    fn reports_add_up_per_rule_and_render_aligned() {
        let mut a = QualityReport::default();
        a.count("parse", "quarantine", 10, 1);
        let mut b = QualityReport::default();
        b.count("parse", "quarantine", 5, 2);
        b.count("range(x)", "warn", 4, 0);
        b.count("dedupe_key", "keep latest", 4, 1);
        a.absorb(&b);
        assert_eq!(a.failed("parse"), Some(3));
        assert_eq!(a.rules[0].checked, 15);
        let text = a.render();
        assert!(text.lines().nth(1).unwrap().contains("15"), "{text}");
        assert_eq!(text.lines().count(), 4);
        let header = text.lines().next().unwrap();
        assert!(text.lines().all(|l| l.len() == header.len()), "{text}");
    }

    #[tokio::test]
    async fn units_within_the_flush_interval_share_one_commit() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path().to_str().unwrap(), &Default::default()).unwrap();
        let mut log = QualityLog::new(lake.clone());
        let mut report = QualityReport::default();
        report.count("not_null(x)", "quarantine", 10, 1);
        for version in [1, 2, 3] {
            let scope = QualityScope {
                run_id: "r",
                pipeline: "p",
                job: "silver:t",
                first_version: version,
                last_version: version,
                at: Utc::now(),
            };
            log.append(&scope, &report);
            log.flush_if_due().await;
        }
        let table = || lake.load_table(Layer::System, QUALITY_TABLE);
        assert!(table().await.unwrap().is_none(), "nothing due yet");
        log.flush().await;
        let table = table().await.unwrap().expect("flushed");
        assert_eq!(table.version(), Some(0), "one commit for three units");
        let ctx = SessionContext::new();
        ctx.register_table("q", table.table_provider().await.unwrap())
            .unwrap();
        let batches = ctx
            .sql("SELECT last_version, rows_failed FROM q ORDER BY last_version")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let rows = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
        let versions = rows.column(0).as_primitive::<arrow::datatypes::Int64Type>();
        assert_eq!(versions.values(), &[1, 2, 3], "a row per unit, as before");
        log.flush().await;
        let again = lake.load_table(Layer::System, QUALITY_TABLE).await.unwrap();
        assert_eq!(
            again.unwrap().version(),
            Some(0),
            "an empty flush commits nothing"
        );
    }
}
