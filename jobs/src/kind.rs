//! The job types of `lakectl run`, in one list: [`kinds`]. The CLI, the catalog of tables
//! `lakectl query` sees and `lakectl status` loop over it, so a new job type is its own module
//! plus one line here (docs/adding-a-job-type.md).

use futures::future::BoxFuture;
use lakehouse_core::{Layer, Mode, Pipeline, Result};

/// How `lakectl run <kind>` was asked to run.
#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    pub mode: Mode,
    /// `--full-refresh`: only kinds with [`JobKind::full_refresh`] take it.
    pub full_refresh: bool,
}

/// One job type.
pub struct JobKind {
    /// `lakectl run <name>`, the pipeline file's `[<name>.<table>]` sections, and the first half
    /// of its jobs' names (`silver:books`).
    pub name: &'static str,
    /// One line for `lakectl run --help`.
    pub summary: &'static str,
    /// The mode without `--once` or `--continuous`.
    pub default_mode: Mode,
    /// Whether `--full-refresh` means something to it.
    pub full_refresh: bool,
    /// The tables the pipeline declares for it.
    pub declared: fn(&Pipeline) -> Vec<String>,
    /// The lake tables one of its jobs writes, for SQL to read.
    pub writes: fn(&str) -> Vec<(Layer, String)>,
    /// Runs the named tables (all declared ones when none are named).
    pub run: for<'a> fn(&'a Pipeline, &'a [String], RunOptions) -> BoxFuture<'a, Result<()>>,
}

/// Every job type, in the order data flows through them.
pub fn kinds() -> &'static [JobKind] {
    &[
        crate::bronze::KIND,
        crate::silver::KIND,
        crate::window::KIND,
        crate::gold::KIND,
        crate::sink::KIND,
        crate::load::KIND,
    ]
}

/// The job type called `name`.
pub fn kind(name: &str) -> Option<&'static JobKind> {
    kinds().iter().find(|k| k.name == name)
}

/// The lake tables one job of a kind writes when it writes its table in `layer` and keeps the
/// rows it refuses in quarantine under the same name (silver, windows).
pub fn table_and_quarantine(layer: Layer, table: &str) -> Vec<(Layer, String)> {
    vec![
        (layer, table.to_string()),
        (Layer::Quarantine, table.to_string()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_have_distinct_names_each_found_by_its_name() {
        let names: std::collections::BTreeSet<&str> = kinds().iter().map(|k| k.name).collect();
        assert_eq!(names.len(), kinds().len());
        for name in names {
            assert_eq!(kind(name).map(|k| k.name), Some(name));
        }
        assert!(kind("platinum").is_none());
    }
}
