//! The lake's address: a URI parsed once into an absolute URL that ends in `/`.

use url::Url;

/// A parsed lake URI: always absolute and always ending in `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LakeUri(Url);

impl LakeUri {
    /// Accepts `file://./rel`, `file:///abs`, a bare path, `s3://bucket[/prefix]` and `memory://`.
    /// Relative local paths resolve against the working directory.
    pub fn parse(uri: &str) -> std::result::Result<LakeUri, String> {
        let uri = uri.trim();
        let local = |path: &str| -> std::result::Result<Url, String> {
            let path = std::path::Path::new(if path.is_empty() { "." } else { path });
            let absolute = if path.is_absolute() {
                path.to_path_buf()
            } else {
                std::env::current_dir()
                    .map_err(|e| format!("cannot resolve {path:?}: {e}"))?
                    .join(path)
            };
            Url::from_directory_path(&absolute)
                .map_err(|_| format!("{} is not a usable folder path", absolute.display()))
        };
        let url = if let Some(path) = uri.strip_prefix("file://") {
            local(path)?
        } else if !uri.contains("://") {
            local(uri)?
        } else {
            let url = Url::parse(uri).map_err(|e| format!("{uri:?} is not a URI: {e}"))?;
            match url.scheme() {
                "s3" | "s3a" if url.host_str().is_some_and(|h| !h.is_empty()) => url,
                "s3" | "s3a" => return Err(format!("{uri:?} names no bucket")),
                "memory" => Url::parse("memory:///").expect("static URL"),
                other => {
                    return Err(format!(
                        "unsupported scheme {other:?}; use file://, s3:// or memory://"
                    ))
                }
            }
        };
        Ok(LakeUri(with_trailing_slash(url)))
    }

    pub fn url(&self) -> &Url {
        &self.0
    }
}

fn with_trailing_slash(mut url: Url) -> Url {
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_file_uris_become_absolute_folders() {
        let cwd = std::env::current_dir().unwrap();
        let uri = LakeUri::parse("file://./lake").unwrap();
        assert_eq!(uri.url().scheme(), "file");
        assert_eq!(uri.url().to_file_path().unwrap(), cwd.join("./lake"));
        assert!(uri.url().path().ends_with('/'));
        assert_eq!(
            LakeUri::parse("lake")
                .unwrap()
                .url()
                .to_file_path()
                .unwrap(),
            cwd.join("lake")
        );
        assert_eq!(
            LakeUri::parse("/tmp/l").unwrap().url().as_str(),
            "file:///tmp/l/"
        );
    }

    #[test]
    fn s3_and_memory_uris_parse_and_others_are_refused() {
        assert_eq!(
            LakeUri::parse("s3://lake/p").unwrap().url().as_str(),
            "s3://lake/p/"
        );
        assert_eq!(
            LakeUri::parse("memory://").unwrap().url().as_str(),
            "memory:///"
        );
        assert!(LakeUri::parse("s3:///nobucket").is_err());
        assert!(LakeUri::parse("gs://b/x")
            .unwrap_err()
            .contains("unsupported scheme"));
    }
}
