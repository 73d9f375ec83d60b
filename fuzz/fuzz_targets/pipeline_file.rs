//! The pipeline file loader on any text: the TOML, the sections, every check after it.
#![no_main]
use std::path::Path;

use lakehouse_core::Pipeline;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let no_env = |_: &str| None;
    if let Err(e) = Pipeline::from_text(text, Path::new("fuzz.toml"), &no_env, &[]) {
        let _ = e.to_string();
    }
});
