//! [`ConfigError`] and the pieces of its messages: `file:line:column`
//! positions and dotted key paths (`event_bus.buffer_size`,
//! `agents[0].secrets`, `drivers."s3 west"`).
//!
//! Everything else in [`crate::config`] builds its errors from these, so every
//! message has the same `{file}:{line}:{column}: {key}: {message}` shape.

use std::borrow::Cow;
use std::path::PathBuf;

/// Result type of the loader.
pub type Result<T, E = ConfigError> = std::result::Result<T, E>;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Could not read the file.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file that could not be read.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// Anything wrong with the content: syntax, types, ranges, names, patterns,
    /// unset environment variables.
    ///
    /// Displays as `{file}:{line}:{column}: {key}: {message}`, or
    /// `{file}:{line}:{column}: {message}` when there is no key (syntax errors).
    #[error("{}:{line}:{column}: {}{message}", .file.display(), key_prefix(.key))]
    Invalid {
        /// The configuration file (or the name given to
        /// [`RuntimeConfig::parse_str`](super::RuntimeConfig::parse_str)).
        file: PathBuf,
        /// 1-based line of the offending value.
        line: usize,
        /// 1-based column (in characters) of the offending value.
        column: usize,
        /// Dotted path of the offending key, e.g. `event_bus.buffer_size` or
        /// `agents[0].subscribe` (agent indices are 0-based).
        key: Option<String>,
        /// What is wrong, in one line.
        message: String,
    },
}

fn key_prefix(key: &Option<String>) -> String {
    key.as_ref().map(|k| format!("{k}: ")).unwrap_or_default()
}

impl ConfigError {
    /// 1-based line of the problem, if it is about the content.
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::Invalid { line, .. } => Some(*line),
            ConfigError::Io { .. } => None,
        }
    }

    /// 1-based column of the problem, if it is about the content.
    pub fn column(&self) -> Option<usize> {
        match self {
            ConfigError::Invalid { column, .. } => Some(*column),
            ConfigError::Io { .. } => None,
        }
    }

    /// Dotted key the problem is about, if any.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => key.as_deref(),
            ConfigError::Io { .. } => None,
        }
    }
}

/// 1-based line and column (in characters, as editors count) of byte
/// `offset` in `text`; offsets past the end count as the end.
pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text.as_bytes()[..offset];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    // Editors count characters, not bytes.
    let column = match text.get(line_start..offset) {
        Some(s) => s.chars().count() + 1,
        None => offset - line_start + 1,
    };
    (line, column)
}

/// `prefix.key`, quoting `key` the way TOML would need it if it is not bare.
pub(super) fn child(prefix: &str, key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let key = if bare {
        Cow::Borrowed(key)
    } else {
        Cow::Owned(format!("{key:?}"))
    };
    if prefix.is_empty() {
        key.into_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::parse_err;

    #[test]
    fn syntax_error_reports_line_and_column() {
        let err = parse_err("[event_bus]\nbuffer_size = 10\nscheduler_tick_ms = = 5\n");
        assert_eq!(err.line(), Some(3));
        assert_eq!(err.column(), Some(21));
        assert_eq!(err.key(), None);
        let shown = err.to_string();
        assert!(shown.starts_with("config/x.toml:3:21: "), "{shown}");
        assert!(!shown.contains('\n'), "{shown}");
    }

    #[test]
    fn positions_count_characters_and_keys_are_quoted_when_not_bare() {
        assert_eq!(line_col("a\nbé = 1", 8), (2, 6));
        assert_eq!(line_col("ab", 99), (1, 3));
        assert_eq!(child("", "vault"), "vault");
        assert_eq!(child("agents[0]", "secrets"), "agents[0].secrets");
        assert_eq!(child("drivers", "s3 west"), "drivers.\"s3 west\"");
    }
}
