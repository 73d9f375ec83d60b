//! Helpers for integration tests against the real services `scripts/services.sh` starts.

/// Reads a service address from the environment. When it is missing, a run with `CI` set
/// panics (a missing service must fail CI, never pass it silently); a developer's run gets
/// `None` and a note on stderr, so the caller can skip.
pub fn service_env(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(value) if !value.is_empty() => Some(value),
        _ if std::env::var_os("CI").is_some() => {
            panic!("{var} is not set: run the tests through scripts/test.sh, which starts the services")
        }
        _ => {
            eprintln!("skipping: {var} is not set (source .lakectl/services.env after scripts/services.sh up)");
            None
        }
    }
}

/// A name no other test run uses, for topics, tables and lake prefixes.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}
