//! The config loader on arbitrary text: it must return a config or an error
//! naming a location, never panic or hang.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use toka_core::RuntimeConfig;

fuzz_target!(|text: &str| {
    let env = |name: &str| (name == "SET").then(|| "value".to_owned());
    if let Err(e) = RuntimeConfig::parse_str_with_env(
        text,
        Path::new("fuzz.toml"),
        Path::new("/base"),
        &["drivers"],
        &env,
    ) {
        // Every error renders (Display must not panic either).
        let _ = e.to_string();
    }
});
