//! `lakectl produce`: replays a CSV file into a Kafka topic, one JSON object per row.
//!
//! Encoding rules: header names are the keys, in file order; an empty cell is `null`; a cell
//! that is a JSON number token (e.g. `1859`, `-2.5`, `1e3`) stays a number, written exactly as
//! in the file; everything else is a string exactly as in the file (spaces kept). Each record
//! carries the headers `source_file` and `source_line`.
//!
//! `--loop N` replays the file N times. From the second pass on, the key column's value gets
//! the suffix `#<pass>` (in the Kafka key and in the JSON) so every record stays unique, and
//! every record of a looped run carries a `loop` header with its pass number (0-based).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use lakehouse_core::telemetry::Progress;
use lakehouse_core::{Error, Pipeline, Result};
use rdkafka::message::{Header, OwnedHeaders};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::topic_producer::TopicProducer;

/// How many times to replay the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Passes {
    Times(u64),
    Forever,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OnBadRow {
    /// Stop at the first bad row; nothing after it is sent.
    #[default]
    Fail,
    /// Count and report bad rows, send the rest.
    Skip,
}

#[derive(Debug, Clone)]
pub struct ProduceOptions {
    pub file: PathBuf,
    pub topic: String,
    pub key: Option<String>,
    /// Records per second; `None` is as fast as the broker takes them.
    pub rate: Option<f64>,
    pub passes: Passes,
    /// Stop after this many records in all.
    pub limit: Option<u64>,
    pub on_bad_row: OnBadRow,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProduceReport {
    pub sent: u64,
    pub delivered: u64,
    pub failed: u64,
    /// `line N: reason` for each bad row met.
    pub bad_rows: Vec<String>,
    pub elapsed: Duration,
}

impl ProduceOptions {
    /// Options from the pipeline's `[producer]` section; CLI flags overwrite fields after.
    pub fn from_pipeline(pipeline: &Pipeline) -> Option<ProduceOptions> {
        let producer = pipeline.producer.as_ref()?;
        Some(ProduceOptions {
            file: pipeline.resolve_path(&producer.file),
            topic: producer.topic.clone(),
            key: producer.key.clone(),
            rate: producer.rate,
            passes: Passes::Times(1),
            limit: None,
            on_bad_row: OnBadRow::Fail,
        })
    }
}

/// Turns CSV rows into JSON objects, keeping header order.
pub struct RowEncoder {
    /// Header names already JSON-encoded, with the colon: `"Book":`.
    keys: Vec<Vec<u8>>,
    key_column: Option<usize>,
}

impl RowEncoder {
    pub fn new(headers: &[String], key_column: Option<&str>) -> Result<RowEncoder> {
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = headers.iter().find(|h| !seen.insert(h.as_str())) {
            return Err(Error::Input(format!("header {dup:?} appears twice")));
        }
        let key_column = key_column
            .map(|name| {
                headers.iter().position(|h| h == name).ok_or_else(|| {
                    Error::Input(format!(
                        "key column {name:?} is not in the header ({})",
                        headers.join(", ")
                    ))
                })
            })
            .transpose()?;
        let keys = headers
            .iter()
            .map(|h| {
                let mut k = serde_json::to_vec(h).expect("strings serialize");
                k.push(b':');
                k
            })
            .collect();
        Ok(RowEncoder { keys, key_column })
    }

    /// Number of columns in the header.
    pub fn width(&self) -> usize {
        self.keys.len()
    }

    /// Writes the JSON object for `cells` into `out` and returns the Kafka key, if any.
    /// `pass` > 0 suffixes the key column's value (see the module docs).
    pub fn encode(&self, cells: &[&str], pass: u64, out: &mut Vec<u8>) -> Option<String> {
        out.clear();
        out.push(b'{');
        let mut key = None;
        for (i, (name, cell)) in self.keys.iter().zip(cells).enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(name);
            let suffixed;
            let cell = if Some(i) == self.key_column && !cell.is_empty() {
                if pass > 0 {
                    suffixed = format!("{cell}#{pass}");
                    key = Some(suffixed.clone());
                    suffixed.as_str()
                } else {
                    key = Some(cell.to_string());
                    cell
                }
            } else {
                cell
            };
            if cell.is_empty() {
                out.extend_from_slice(b"null");
            } else if is_json_number(cell) {
                out.extend_from_slice(cell.as_bytes());
            } else {
                serde_json::to_writer(&mut *out, cell).expect("write to Vec");
            }
        }
        out.push(b'}');
        key
    }
}

/// A JSON number token (RFC 8259) that is finite as a double. `007`, ` 1`, `NaN`, `1.` and
/// `+1` are not numbers and stay strings.
pub fn is_json_number(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i > start
    };
    if b.first() == Some(&b'-') {
        i += 1;
    }
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => {
            digits(&mut i);
        }
        _ => return false,
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        if !digits(&mut i) {
            return false;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if !digits(&mut i) {
            return false;
        }
    }
    i == b.len() && s.parse::<f64>().is_ok_and(f64::is_finite)
}

/// Replays the file. Runs on a blocking thread: CSV reading and librdkafka are synchronous.
pub async fn run(
    pipeline: &Pipeline,
    options: ProduceOptions,
    cancel: CancellationToken,
) -> Result<ProduceReport> {
    // An unreachable broker is a clear error up front, not a silent five-minute queue.
    lakehouse_core::kafka::probe(&pipeline.kafka, Duration::from_secs(10)).await?;
    let kafka = pipeline.kafka.clone();
    tokio::task::spawn_blocking(move || {
        let mut producer = TopicProducer::new(&kafka, &options.topic, options.rate, &[])?;
        replay(&mut producer, &options, &cancel)
    })
    .await
    .map_err(|e| Error::Internal(format!("producer thread: {e}")))?
}

fn replay(
    producer: &mut TopicProducer,
    options: &ProduceOptions,
    cancel: &CancellationToken,
) -> Result<ProduceReport> {
    let file_name = options
        .file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let progress = Progress::new(&format!("produce:{}", options.topic));
    let mut bad_rows = Vec::new();
    let mut buf = Vec::with_capacity(1024);
    let looped = options.passes != Passes::Times(1);
    let mut pass = 0;
    let outcome = 'passes: loop {
        if let Passes::Times(n) = options.passes {
            if pass >= n {
                break Ok(());
            }
        }
        // Every exit from this loop goes through the flush below, errors included.
        let (mut reader, encoder, lines) = match open_csv(&options.file, options.key.as_deref()) {
            Ok(opened) => opened,
            Err(e) => break 'passes Err(e),
        };
        let mut record = csv::ByteRecord::new();
        loop {
            if cancel.is_cancelled() || options.limit.is_some_and(|l| producer.sent() >= l) {
                break 'passes Ok(());
            }
            match reader.read_byte_record(&mut record) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    break 'passes Err(Error::Input(format!("{}: {e}", options.file.display())))
                }
            }
            let line = lines.line_at(record.position().map_or(0, |p| p.byte()));
            let cells = if record.len() == encoder.width() {
                utf8_cells(&record)
            } else {
                Err(format!(
                    "expected {} fields, found {}",
                    encoder.width(),
                    record.len()
                ))
            };
            let cells = match cells {
                Ok(cells) => cells,
                Err(reason) => {
                    let bad = format!("line {line}: {reason}");
                    match options.on_bad_row {
                        OnBadRow::Fail => {
                            break 'passes Err(Error::Input(format!(
                            "{}: bad row at {bad} (use --on-bad-row skip to send the other rows)",
                            options.file.display()
                        )))
                        }
                        OnBadRow::Skip => {
                            warn!("skipping bad row at {bad}");
                            bad_rows.push(bad);
                            continue;
                        }
                    }
                }
            };
            let key = encoder.encode(&cells, pass, &mut buf);
            let mut headers = OwnedHeaders::new_with_capacity(3)
                .insert(Header {
                    key: "source_file",
                    value: Some(file_name.as_bytes()),
                })
                .insert(Header {
                    key: "source_line",
                    value: Some(line.to_string().as_bytes()),
                });
            if looped {
                headers = headers.insert(Header {
                    key: "loop",
                    value: Some(pass.to_string().as_bytes()),
                });
            }
            if let Err(e) = producer.send(&buf, key.as_deref().map(str::as_bytes), headers, None) {
                break 'passes Err(e);
            }
            if producer.sent().is_multiple_of(1_000) {
                progress.update(|| {
                    format!(
                        "pass {}, {} sent, {} delivered",
                        pass + 1,
                        producer.sent(),
                        producer.delivered()
                    )
                });
            }
        }
        pass += 1;
    };
    progress.finish();
    // Whatever happened, wait for every delivery report of what was sent.
    let delivery = producer.finish(outcome)?;
    info!(bad_rows = bad_rows.len(), "produce finished");
    Ok(ProduceReport {
        sent: delivery.sent,
        delivered: delivery.delivered,
        failed: delivery.failed,
        bad_rows,
        elapsed: producer.elapsed(),
    })
}

/// Physical line numbers of byte offsets. The csv crate's own line count is one short on CRLF
/// files, so we count `\n` bytes ourselves as they stream past.
#[derive(Clone, Default)]
struct LineIndex(Rc<RefCell<LineState>>);

#[derive(Default)]
struct LineState {
    /// Newlines before `pending[0]`.
    counted: u64,
    /// Offsets of newlines not yet passed by a query.
    pending: VecDeque<u64>,
    offset: u64,
}

impl LineIndex {
    /// The 1-based line of `byte`. Queries must not go backwards.
    fn line_at(&self, byte: u64) -> u64 {
        let mut state = self.0.borrow_mut();
        // `<=`: on CRLF files csv puts a record's start on the `\n` ending the line before.
        while state.pending.front().is_some_and(|&nl| nl <= byte) {
            state.pending.pop_front();
            state.counted += 1;
        }
        state.counted + 1
    }
}

/// Passes bytes through to the csv reader, noting where the newlines are.
struct CountingReader<R> {
    inner: R,
    index: LineIndex,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut state = self.index.0.borrow_mut();
        let base = state.offset;
        let newlines = buf[..n]
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .map(|(i, _)| base + i as u64);
        state.pending.extend(newlines);
        state.offset += n as u64;
        Ok(n)
    }
}

type CsvReader = csv::Reader<CountingReader<BufReader<File>>>;

fn open_csv(path: &Path, key: Option<&str>) -> Result<(CsvReader, RowEncoder, LineIndex)> {
    let file = File::open(path)
        .map_err(|e| Error::Input(format!("cannot open {}: {e}", path.display())))?;
    let lines = LineIndex::default();
    let counting = CountingReader {
        inner: BufReader::with_capacity(1 << 20, file),
        index: lines.clone(),
    };
    // Flexible: we check the field count ourselves, so a bad row still reads as a row.
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(counting);
    let headers = reader
        .byte_headers()
        .map_err(|e| Error::Input(format!("{}: header: {e}", path.display())))?
        .clone();
    let headers = utf8_cells(&headers)
        .map_err(|reason| Error::Input(format!("{}: header: {reason}", path.display())))?;
    if headers.iter().all(|h| h.is_empty()) {
        return Err(Error::Input(format!("{}: no header row", path.display())));
    }
    // A UTF-8 byte order mark is not part of the first column's name.
    let headers: Vec<String> = headers
        .iter()
        .enumerate()
        .map(|(i, h)| {
            if i == 0 {
                h.trim_start_matches('\u{feff}')
            } else {
                h
            }
            .to_string()
        })
        .collect();
    let encoder = RowEncoder::new(&headers, key)?;
    Ok((reader, encoder, lines))
}

fn utf8_cells(record: &csv::ByteRecord) -> std::result::Result<Vec<&str>, String> {
    record
        .iter()
        .enumerate()
        .map(|(i, cell)| {
            std::str::from_utf8(cell)
                .map_err(|e| format!("field {} is not valid UTF-8 ({e})", i + 1))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_numbers_are_recognised_strictly() {
        for yes in ["0", "1859", "-2.5", "200", "1e3", "5236.9", "0.5", "-0"] {
            assert!(is_json_number(yes), "{yes}");
        }
        for no in [
            "", "007", " 1", "1 ", "NaN", "nan", "inf", "1.", ".5", "+1", "1e", "0x10", "1,000",
            "1e999",
        ] {
            assert!(!is_json_number(no), "{no}");
        }
    }

    fn encode(
        headers: &[&str],
        key: Option<&str>,
        cells: &[&str],
        pass: u64,
    ) -> (String, Option<String>) {
        let headers: Vec<String> = headers.iter().map(|s| s.to_string()).collect();
        let enc = RowEncoder::new(&headers, key).unwrap();
        let mut out = Vec::new();
        let k = enc.encode(cells, pass, &mut out);
        (String::from_utf8(out).unwrap(), k)
    }

    #[test]
    fn rows_become_json_in_header_order() {
        let (json, key) = encode(
            &["Book", "Year", "Genre", "Sales"],
            None,
            &["Le Petit Prince, \"Saint\"  ", "1943", "", "007"],
            0,
        );
        assert_eq!(
            json,
            r#"{"Book":"Le Petit Prince, \"Saint\"  ","Year":1943,"Genre":null,"Sales":"007"}"#
        );
        assert_eq!(key, None);
    }

    #[test]
    fn key_column_is_suffixed_from_the_second_pass() {
        let (json, key) = encode(&["id", "n"], Some("id"), &["42", "1"], 0);
        assert_eq!(
            (json.as_str(), key.as_deref()),
            (r#"{"id":42,"n":1}"#, Some("42"))
        );
        let (json, key) = encode(&["id", "n"], Some("id"), &["42", "1"], 3);
        assert_eq!(
            (json.as_str(), key.as_deref()),
            (r#"{"id":"42#3","n":1}"#, Some("42#3"))
        );
    }

    #[test]
    fn line_numbers_are_physical_lines_for_lf_crlf_and_multiline_cells() {
        for (data, expected) in [
            ("h1,h2\na,b\nc,d\n", vec![2, 3]),
            ("h1,h2\r\na,b\r\nc,d\r\n", vec![2, 3]),
            ("h1,h2\n\"x\ny\",b\nc,d\n", vec![2, 4]),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("x.csv");
            std::fs::write(&path, data).unwrap();
            let (mut reader, _, lines) = open_csv(&path, None).unwrap();
            let mut record = csv::ByteRecord::new();
            let mut got = Vec::new();
            while reader.read_byte_record(&mut record).unwrap() {
                got.push(lines.line_at(record.position().unwrap().byte()));
            }
            assert_eq!(got, expected, "{data:?}");
        }
    }

    #[test]
    fn unknown_key_column_and_duplicate_headers_are_user_errors() {
        let headers = vec!["a".to_string(), "b".to_string()];
        let err = RowEncoder::new(&headers, Some("c")).err().unwrap();
        assert!(err.to_string().contains("\"c\""), "{err}");
        let dup = vec!["a".to_string(), "a".to_string()];
        assert!(RowEncoder::new(&dup, None).is_err());
    }
}
