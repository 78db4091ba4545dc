//! Validation of namespaces, blob names and content types.
//!
//! None of these ever becomes part of a file path (blob files are named by random ids), so
//! the rules exist for the callers: names a CLI can print and a host can map to paths
//! without surprises.

use crate::error::excerpt;
use crate::{Error, Result};

/// Longest namespace, in characters.
pub const MAX_NAMESPACE_LEN: usize = 128;
/// Longest blob name, in characters.
pub const MAX_NAME_LEN: usize = 512;
/// Longest content type, in characters.
pub const MAX_CONTENT_TYPE_LEN: usize = 255;

/// 1..=128 characters from `[A-Za-z0-9._-]`.
pub(crate) fn validate_namespace(namespace: &str) -> Result<()> {
    let reason = if namespace.is_empty() {
        Some("must not be empty")
    } else if namespace.len() > MAX_NAMESPACE_LEN {
        Some("longer than 128 characters")
    } else if !namespace.bytes().all(|b| is_name_byte(b) && b != b'/') {
        Some("may only contain ASCII letters, digits, '.', '_' and '-'")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidNamespace {
            namespace: excerpt(namespace),
            reason,
        }),
        None => Ok(()),
    }
}

/// 1..=512 characters from `[A-Za-z0-9._/-]`, not starting with `/`, no `..` segment.
pub(crate) fn validate_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("must not be empty")
    } else if name.len() > MAX_NAME_LEN {
        Some("longer than 512 characters")
    } else if !name.bytes().all(is_name_byte) {
        Some("may only contain ASCII letters, digits, '.', '_', '-' and '/'")
    } else if name.starts_with('/') {
        Some("must not start with '/'")
    } else if name.split('/').any(|segment| segment == "..") {
        Some("must not contain a '..' segment")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidName {
            name: excerpt(name),
            reason,
        }),
        None => Ok(()),
    }
}

/// Up to 255 characters of printable ASCII; empty means "unknown".
pub(crate) fn validate_content_type(content_type: &str) -> Result<()> {
    let reason = if content_type.len() > MAX_CONTENT_TYPE_LEN {
        Some("longer than 255 characters")
    } else if !content_type
        .bytes()
        .all(|b| b.is_ascii_graphic() || b == b' ')
    {
        Some("must be printable ASCII")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidContentType { reason }),
        None => Ok(()),
    }
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces() {
        for ok in ["a", "agent-1", "A.b_c-9", &"x".repeat(128)] {
            assert!(validate_namespace(ok).is_ok(), "{ok:?}");
        }
        for bad in ["", "a/b", "a b", "ü", "a\0", &"x".repeat(129)] {
            assert!(
                matches!(validate_namespace(bad), Err(Error::InvalidNamespace { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn names() {
        for ok in [
            "a",
            "dir/file.txt",
            "a..b",
            "a/.../b",
            "x/",
            &"n".repeat(512),
        ] {
            assert!(validate_name(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            "",
            "/abs",
            "..",
            "../x",
            "a/../b",
            "a/..",
            "sp ace",
            "tab\t",
            "ü",
            "back\\slash",
            &"n".repeat(513),
        ] {
            assert!(
                matches!(validate_name(bad), Err(Error::InvalidName { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn content_types() {
        for ok in ["", "text/plain; charset=utf-8", "application/octet-stream"] {
            assert!(validate_content_type(ok).is_ok(), "{ok:?}");
        }
        for bad in ["text/\nplain", "tëxt", &"t".repeat(256)] {
            assert!(validate_content_type(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn long_invalid_input_is_shortened_in_the_error() {
        let err = validate_name(&"/".repeat(10_000)).unwrap_err();
        assert!(err.to_string().len() < 200, "{err}");
    }
}
