//! `lakectl generate`'s settings: each flag over the same key of the pipeline's `[generate]`
//! section over the built-in default, and an error for a bad value that names where it came
//! from (`--late-fraction` or `generate.late_fraction` in the file).

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::ValueEnum;
use lakehouse_core::config::{GenerateConfig, RecordFormat, Span};
use lakehouse_core::{ConfigError, Error, Result};

use super::{GenerateOptions, ProfileName, Stop};

/// Flags that have no key in the pipeline file.
#[derive(Debug, Clone, Default)]
pub struct RunFlags {
    pub out: Option<PathBuf>,
    pub truth: Option<PathBuf>,
    pub duration: Option<Duration>,
    pub forever: bool,
}

/// The default `--start`: fixed, so a stream is the same whenever it is generated.
pub const DEFAULT_START: &str = "2026-01-01T00:00:00Z";
/// Events per second of event time when neither `--event-rate` nor `--rate` says.
pub const DEFAULT_EVENT_RATE: f64 = 100.0;

/// Where a value came from, to name it in an error.
struct Origin<'a> {
    key: &'static str,
    from_flag: bool,
    file: &'a Path,
}

impl Origin<'_> {
    fn error(&self, message: String) -> Error {
        if self.from_flag {
            Error::Input(format!("--{}: {message}", self.key.replace('_', "-")))
        } else {
            ConfigError::Invalid {
                file: self.file.to_path_buf(),
                key: format!("generate.{}", self.key),
                message,
            }
            .into()
        }
    }
}

impl GenerateOptions {
    /// Merges `flags` over `file` (the pipeline's `[generate]`, from `source`).
    pub fn resolve(
        file: &GenerateConfig,
        source: &Path,
        flags: &GenerateConfig,
        run: RunFlags,
    ) -> Result<GenerateOptions> {
        macro_rules! layered {
            ($key:ident) => {{
                let from_flag = flags.$key.is_some();
                let value = flags.$key.clone().or_else(|| file.$key.clone());
                let origin = Origin {
                    key: stringify!($key),
                    from_flag,
                    file: source,
                };
                (value, origin)
            }};
        }
        let fraction = |(value, origin): (Option<f64>, Origin)| -> Result<f64> {
            match value {
                None => Ok(0.0),
                Some(f) if (0.0..=1.0).contains(&f) => Ok(f),
                Some(f) => Err(origin.error(format!("expected a fraction from 0 to 1, got {f}"))),
            }
        };
        let positive_rate = |(value, origin): (Option<f64>, Origin)| -> Result<Option<f64>> {
            match value {
                Some(r) if !(r > 0.0 && r.is_finite()) => Err(origin.error(format!(
                    "expected a positive number of events per second, got {r}"
                ))),
                other => Ok(other),
            }
        };
        let span = |(value, _): (Option<Span>, Origin)| value.map_or(Duration::ZERO, |s| s.0);

        let (profile, origin) = layered!(profile);
        let profile = match profile {
            Some(name) => ProfileName::from_str(&name, true).map_err(|_| {
                let known: Vec<&str> = ProfileName::value_variants()
                    .iter()
                    .map(|p| p.name())
                    .collect();
                origin.error(format!(
                    "unknown profile {name:?}; profiles: {}",
                    known.join(", ")
                ))
            })?,
            None => {
                return Err(Error::Input(
                    "no profile: name one (user-activity, customer-events, ecommerce, orders) \
                     or set `profile` in the [generate] section"
                        .into(),
                ))
            }
        };
        let late_fraction = fraction(layered!(late_fraction))?;
        let duplicate_fraction = fraction(layered!(duplicate_fraction))?;
        let corrupt_fraction = fraction(layered!(corrupt_fraction))?;
        if late_fraction + duplicate_fraction + corrupt_fraction > 1.0 {
            return Err(Error::Input(format!(
                "late ({late_fraction}), duplicate ({duplicate_fraction}) and corrupt \
                 ({corrupt_fraction}) fractions add up to more than 1"
            )));
        }
        let rate = positive_rate(layered!(rate))?;
        let event_rate = positive_rate(layered!(event_rate))?
            .or(rate)
            .unwrap_or(DEFAULT_EVENT_RATE);
        let (start, origin) = layered!(start);
        let start_ms = match start.as_deref().unwrap_or(DEFAULT_START) {
            "now" => chrono::Utc::now().timestamp_millis(),
            text => chrono::DateTime::parse_from_rfc3339(text)
                .map_err(|e| {
                    origin.error(format!(
                        "expected an RFC 3339 time like {DEFAULT_START}, or `now`, got {text:?} ({e})"
                    ))
                })?
                .timestamp_millis(),
        };
        let (partitions, origin) = layered!(partitions);
        if let Some(p) = partitions.filter(|p| *p < 1) {
            return Err(origin.error(format!("expected at least 1 partition, got {p}")));
        }
        let (count, _) = layered!(count);
        let stop = match (run.forever, run.duration, count) {
            (true, _, _) => Stop::Forever,
            (false, Some(d), _) => Stop::After(d),
            (false, None, Some(n)) => Stop::Count(n),
            (false, None, None) => {
                return Err(Error::Input(
                    "say how much to generate: --count N (or [generate] count), --duration D \
                     or --forever"
                        .into(),
                ))
            }
        };
        let (format, origin) = layered!(format);
        let format = format.unwrap_or_default();
        if format == RecordFormat::Avro && profile.avro_schema().is_none() {
            return Err(origin.error(format!(
                "profile {} has no Avro schema; avro is for customer-events",
                profile.name()
            )));
        }
        Ok(GenerateOptions {
            profile,
            format,
            topic: layered!(topic).0,
            partitions,
            out: run.out,
            truth: run.truth,
            stop,
            rate,
            event_rate,
            seed: layered!(seed).0.unwrap_or(0),
            start_ms,
            out_of_order: span(layered!(out_of_order)),
            late_fraction,
            late_by: span(layered!(late_by)),
            duplicate_fraction,
            corrupt_fraction,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(file: GenerateConfig, flags: GenerateConfig) -> Result<GenerateOptions> {
        GenerateOptions::resolve(&file, Path::new("p.toml"), &flags, RunFlags::default())
    }

    fn config(profile: &str, count: u64) -> GenerateConfig {
        GenerateConfig {
            profile: Some(profile.into()),
            count: Some(count),
            ..Default::default()
        }
    }

    #[test]
    fn flags_beat_the_file_and_defaults_fill_the_rest() {
        let flags = GenerateConfig {
            count: Some(5),
            late_fraction: Some(0.1),
            ..Default::default()
        };
        let o = resolve(config("orders", 100), flags).unwrap();
        assert_eq!(o.profile, ProfileName::Orders);
        assert_eq!(o.stop, Stop::Count(5));
        assert_eq!(o.late_fraction, 0.1);
        assert_eq!(o.seed, 0);
        assert_eq!(o.event_rate, DEFAULT_EVENT_RATE);
        assert_eq!(o.start_ms, 1_767_225_600_000);
    }

    #[test]
    fn the_event_rate_follows_the_rate_unless_given() {
        let flags = GenerateConfig {
            rate: Some(500.0),
            ..Default::default()
        };
        assert_eq!(
            resolve(config("ecommerce", 1), flags.clone())
                .unwrap()
                .event_rate,
            500.0
        );
        let flags = GenerateConfig {
            event_rate: Some(7.0),
            ..flags
        };
        assert_eq!(
            resolve(config("ecommerce", 1), flags).unwrap().event_rate,
            7.0
        );
    }

    #[test]
    fn bad_values_name_the_flag_or_the_file_key() {
        let file = GenerateConfig {
            late_fraction: Some(1.5),
            ..config("user-activity", 1)
        };
        let err = resolve(file.clone(), GenerateConfig::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("p.toml") && err.contains("generate.late_fraction"),
            "{err}"
        );
        let flags = GenerateConfig {
            late_fraction: Some(-0.1),
            ..Default::default()
        };
        let err = resolve(file, flags).unwrap_err().to_string();
        assert!(err.starts_with("--late-fraction:"), "{err}");

        let err = resolve(config("clickstream", 1), GenerateConfig::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"clickstream\"") && err.contains("user-activity"),
            "{err}"
        );

        let flags = GenerateConfig {
            start: Some("yesterday".into()),
            ..Default::default()
        };
        let err = resolve(config("orders", 1), flags).unwrap_err().to_string();
        assert!(err.starts_with("--start:"), "{err}");

        let flags = GenerateConfig {
            late_fraction: Some(0.6),
            corrupt_fraction: Some(0.5),
            ..Default::default()
        };
        assert!(resolve(config("orders", 1), flags).is_err());

        let mut none = config("orders", 1);
        none.count = None;
        let err = resolve(none, GenerateConfig::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("--count"), "{err}");
    }
}
