//! Helpers for the loader's unit tests: parse a snippet as `config/x.toml`
//! under `/etc/toka`, with no environment unless one is given.

use std::path::{Path, PathBuf};

use super::{ConfigError, Result, RuntimeConfig};

pub(super) fn no_env(_: &str) -> Option<String> {
    None
}

pub(super) fn parse(text: &str) -> Result<RuntimeConfig> {
    parse_env(text, &no_env)
}

pub(super) fn parse_env(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<RuntimeConfig> {
    RuntimeConfig::parse_str_with_env(
        text,
        Path::new("config/x.toml"),
        Path::new("/etc/toka"),
        &[],
        env,
    )
}

pub(super) fn parse_err(text: &str) -> ConfigError {
    parse(text).expect_err("config should be rejected")
}

/// A fresh directory under the system temp dir, unique per test and process.
pub(super) fn scratch_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("toka-core-config-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("modules")).unwrap();
    dir
}

pub(super) const MINIMAL: &str = r#"
[event_bus]
buffer_size = 1024
scheduler_tick_ms = 100
secret_store = "secrets.db"

[[agents]]
name = "Logger"
subscribe = ["*"]
"#;
