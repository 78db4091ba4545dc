//! The grammar of secret names, shared by the store and by grant patterns.

use crate::error::{Error, Result};

/// The longest secret name (and grant pattern) accepted, in characters.
pub const MAX_NAME_LEN: usize = 256;

/// Checks that `name` is a valid secret name.
///
/// A name is 1..=256 characters of `[A-Za-z0-9._/-]`, read as
/// `/`-separated segments: it must not start with `/`, and no segment may be
/// empty (`a//b`, `a/`), `.` or `..`. Names look like paths, so anything a
/// path would normalise away is rejected rather than letting two spellings
/// denote what a reader would take for the same secret.
pub fn validate_name(name: &str) -> Result<()> {
    check(name, false).map_err(|reason| Error::InvalidName {
        name: name.to_owned(),
        reason,
    })
}

/// The rules common to names and patterns; `wildcards` admits `*`.
pub(crate) fn check(s: &str, wildcards: bool) -> Result<(), &'static str> {
    if s.is_empty() {
        return Err("must not be empty");
    }
    let allowed = |c: char| {
        c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-') || (wildcards && c == '*')
    };
    if !s.chars().all(allowed) {
        return Err(if wildcards {
            "may only contain ASCII letters, digits, '.', '_', '/', '-' and '*'"
        } else {
            "may only contain ASCII letters, digits, '.', '_', '/' and '-'"
        });
    }
    // All ASCII from here on, so bytes are characters.
    if s.len() > MAX_NAME_LEN {
        return Err("is longer than 256 characters");
    }
    if s.starts_with('/') {
        return Err("must not start with '/'");
    }
    for segment in s.split('/') {
        match segment {
            "" => return Err("must not contain an empty segment ('//' or a trailing '/')"),
            "." | ".." => return Err("must not contain a '.' or '..' segment"),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for name in [
            "a",
            "stripe/api-key",
            "db/password",
            "svc.v2/key_1",
            "..hidden",
            "a/.b/c..d",
            &"x".repeat(MAX_NAME_LEN),
        ] {
            validate_name(name).unwrap_or_else(|e| panic!("{name:?}: {e}"));
        }
    }

    #[test]
    fn rejects_invalid_names() {
        for name in [
            "",
            "/abs",
            "a/../b",
            "..",
            "a/..",
            "./a",
            "a//b",
            "a/",
            "sp ace",
            "star*",
            "col:on",
            "ünï",
            "new\nline",
            &"x".repeat(MAX_NAME_LEN + 1),
        ] {
            match validate_name(name) {
                Err(Error::InvalidName { name: n, .. }) => assert_eq!(n, name),
                other => panic!("{name:?} gave {other:?}"),
            }
        }
    }
}
