//! A client for a Confluent-compatible schema registry, speaking only the documented REST API
//! (`GET /schemas/ids/{id}`, `GET /subjects/{subject}/versions/latest`,
//! `POST /subjects/{subject}/versions`), so it works unchanged against Confluent Schema
//! Registry, Karapace and the small registry `scripts/services.sh` runs.
//!
//! Schemas by id never change, so they are cached for the life of the client. A registry that
//! does not answer (or answers 5xx) is retried a few times, then reported as
//! [`Error::Unavailable`] naming it: the runner retries the unit and finally exits 69.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use serde::Deserialize;

use crate::redact::without_credentials;
use crate::{Error, Result};

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";
/// Attempts per request before the registry counts as unavailable.
const ATTEMPTS: u32 = 3;

/// A schema registered under a subject.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SubjectVersion {
    pub subject: String,
    pub version: u32,
    pub id: u32,
    pub schema: String,
}

#[derive(Debug, Deserialize)]
struct SchemaById {
    schema: String,
}

#[derive(Debug, Deserialize)]
struct Registered {
    id: u32,
}

/// The registry's error body.
#[derive(Debug, Deserialize)]
struct ErrorBody {
    error_code: i64,
    message: String,
}

pub struct SchemaRegistry {
    /// Where requests go: the URL as configured, credentials included.
    address: String,
    /// The URL without credentials: what messages, run records and metrics show.
    url: String,
    http: reqwest::Client,
    by_id: Mutex<HashMap<u32, String>>,
}

impl SchemaRegistry {
    pub fn new(url: &str) -> Result<SchemaRegistry> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| Error::Internal(format!("HTTP client: {e}")))?;
        let address = url.trim_end_matches('/').to_string();
        Ok(SchemaRegistry {
            url: without_credentials(&address),
            address,
            http,
            by_id: Mutex::new(HashMap::new()),
        })
    }

    /// The registry's URL without credentials.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The schema with this global id, or `None` when the registry has no such id
    /// (error 40403).
    pub async fn schema_by_id(&self, id: u32) -> Result<Option<String>> {
        if let Some(schema) = self.by_id.lock().expect("not poisoned").get(&id) {
            return Ok(Some(schema.clone()));
        }
        let found: Option<SchemaById> = self
            .send(
                |http| http.get(format!("{}/schemas/ids/{id}", self.address)),
                40403,
            )
            .await?;
        let schema = found.map(|s| s.schema);
        if let Some(s) = &schema {
            self.by_id
                .lock()
                .expect("not poisoned")
                .insert(id, s.clone());
        }
        Ok(schema)
    }

    /// The subject's latest version, or `None` when the subject has none (error 40401).
    pub async fn latest(&self, subject: &str) -> Result<Option<SubjectVersion>> {
        let url = format!(
            "{}/subjects/{}/versions/latest",
            self.address,
            path_segment(subject)
        );
        self.send(|http| http.get(url.clone()), 40401).await
    }

    /// Registers `schema` (Avro JSON) under `subject` and returns its global id; the same
    /// schema again gives the same id.
    pub async fn register(&self, subject: &str, schema: &str) -> Result<u32> {
        let url = format!(
            "{}/subjects/{}/versions",
            self.address,
            path_segment(subject)
        );
        let body = serde_json::json!({ "schema": schema }).to_string();
        let registered: Option<Registered> = self
            .send(
                |http| {
                    http.post(url.clone())
                        .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
                        .body(body.clone())
                },
                0,
            )
            .await?;
        registered
            .map(|r| r.id)
            .ok_or_else(|| Error::Internal("the registry answered no id".into()))
    }

    /// Sends a request (retried while the registry is unreachable or answers 5xx) and parses
    /// the JSON answer; the registry error `absent` becomes `None`, any other 4xx an input
    /// error quoting the registry.
    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        request: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
        absent: i64,
    ) -> Result<Option<T>> {
        let service = format!("schema registry at {}", self.url);
        let mut last = String::new();
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
            let response = match request(&self.http)
                .header(reqwest::header::ACCEPT, CONTENT_TYPE)
                .send()
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    last = error_chain(&e.without_url());
                    continue;
                }
            };
            let status = response.status();
            let body = match response.bytes().await {
                Ok(b) => b,
                Err(e) => {
                    last = error_chain(&e.without_url());
                    continue;
                }
            };
            if status.is_server_error() {
                last = format!("HTTP {status}: {}", String::from_utf8_lossy(&body));
                continue;
            }
            if status.is_success() {
                return serde_json::from_slice(&body).map(Some).map_err(|e| {
                    Error::unavailable(
                        service,
                        format!("answered something that is not its API: {e}"),
                    )
                });
            }
            return match serde_json::from_slice::<ErrorBody>(&body) {
                Ok(e) if e.error_code == absent => Ok(None),
                Ok(e) => Err(Error::Input(format!(
                    "{service} refused the request: {} (error {})",
                    e.message, e.error_code
                ))),
                Err(_) => Err(Error::Input(format!(
                    "{service} answered HTTP {status}: {}",
                    String::from_utf8_lossy(&body)
                ))),
            };
        }
        Err(Error::unavailable(
            service,
            format!("no answer after {ATTEMPTS} attempts: {last}"),
        ))
    }
}

/// A subject as one URL path segment.
fn path_segment(subject: &str) -> String {
    url::form_urlencoded::byte_serialize(subject.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// The error and its causes in one line ("error sending request: … connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The password reached error messages, run records (their text) and the `service`
    /// label of `lakectl_retries_total`.
    #[tokio::test]
    async fn a_registry_that_does_not_answer_is_named_without_its_password() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let registry =
            SchemaRegistry::new(&format!("http://reader:hunter2@127.0.0.1:{port}")).unwrap();
        let err = registry.schema_by_id(1).await.unwrap_err();
        let said = format!("{err} | {err:?} | {}", err.service());
        assert!(err.is_retryable(), "{said}");
        assert!(!said.contains("hunter2"), "{said}");
        assert!(said.contains(&format!("127.0.0.1:{port}")), "{said}");
    }
}
