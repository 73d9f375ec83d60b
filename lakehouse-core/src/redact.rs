//! Secrets out of what lakectl shows: URLs in messages, run records, metric labels and
//! `Debug` output.

/// `url` without the `user:password@` it may carry.
pub fn without_credentials(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if !parsed.username().is_empty() || parsed.password().is_some() => {
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.as_str().trim_end_matches('/').to_string()
        }
        Ok(_) => url.to_string(),
        // Not a URL: it cannot be used either, and may hold anything.
        Err(_) => "(a URL that does not parse)".to_string(),
    }
}

/// A connection URL with its password replaced by `***`.
pub fn without_password(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(_) => url.to_string(),
        Err(_) => "***".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_leave_urls() {
        assert_eq!(
            without_credentials("https://reader:hunter2@registry.example:8081/"),
            "https://registry.example:8081"
        );
        assert_eq!(without_credentials("http://h:1"), "http://h:1");
        assert!(!without_credentials("http://a:hunter2@[bad").contains("hunter2"));
        assert_eq!(
            without_password("postgres://u:hunter2@db:5432/x"),
            "postgres://u:***@db:5432/x"
        );
    }
}
