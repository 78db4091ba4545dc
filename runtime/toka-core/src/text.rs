//! Guest-controlled text, bounded before the host logs, stores or
//! republishes it.
//!
//! Whatever a guest hands the host as text (log messages and fields, error
//! values from `init`/`handle`, kinds it was refused) passes through
//! [`bounded`] first: cut on a character boundary to a documented size, with
//! a marker saying how much was cut (`…[cut 99999744 bytes]`), and with
//! control characters escaped (`\n`, `\r`, `\t`, `\\`, `\u{1b}`), so a guest
//! can neither fill the host's log nor forge a line (or a terminal sequence)
//! in its text format.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Longest guest `log` message kept, in bytes (escaped, before the marker).
pub const MAX_LOG_MESSAGE: usize = 8 * 1024;
/// Longest guest `log` field key kept.
pub const MAX_FIELD_KEY: usize = 64;
/// Longest guest `log` field value kept.
pub const MAX_FIELD_VALUE: usize = 1024;
/// Fields kept per guest `log` record; the rest are dropped (and marked).
pub const MAX_FIELDS: usize = 32;
/// Longest guest error string (returned from `init` or `handle`, or a fault
/// message) kept in a log record or a `toka.*` payload.
pub const MAX_ERROR: usize = 1024;
/// Longest refused kind kept in a log record (a valid kind is never cut).
pub const MAX_KIND: usize = crate::topic::MAX_KIND_LEN;
/// Upper bound on the marker [`bounded`] appends: its output is at most
/// `max + MARKER_MAX` bytes.
pub const MARKER_MAX: usize = 40;

/// Whether `c` is written escaped: control characters (C0, DEL, C1), the
/// Unicode line and paragraph separators, bidirectional overrides, and the
/// backslash itself (so the escaping is unambiguous).
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\\' | '\u{2028}'
                | '\u{2029}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\\' => out.push_str("\\\\"),
        c if needs_escape(c) => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
        c => out.push(c),
    }
}

/// `s` made safe to log: control characters escaped, and cut to at most
/// `max` bytes (counted after escaping, on a character boundary) followed by
/// `…[cut N bytes]`, N being the bytes of `s` left out. The result is at
/// most `max + MARKER_MAX` bytes; `s` is borrowed unchanged when it is short
/// and has nothing to escape. Reads at most about `max` bytes of `s`.
pub fn bounded(s: &str, max: usize) -> Cow<'_, str> {
    if s.len() <= max && !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len().min(max) + MARKER_MAX);
    let mut kept = s.len();
    for (i, c) in s.char_indices() {
        let before = out.len();
        push_escaped(&mut out, c);
        if out.len() > max {
            out.truncate(before);
            kept = i;
            break;
        }
    }
    if kept < s.len() {
        let _ = write!(out, "…[cut {} bytes]", s.len() - kept);
    }
    Cow::Owned(out)
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character
/// boundary (no marker, no escaping: for text logged through `Debug`, which
/// escapes it).
pub fn prefix(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_plain_text_is_borrowed() {
        assert!(matches!(bounded("hello", 5), Cow::Borrowed("hello")));
        assert!(matches!(bounded("", 0), Cow::Borrowed("")));
    }

    #[test]
    fn long_text_is_cut_with_a_marker() {
        let s = "e".repeat(100_000_000);
        let b = bounded(&s, 256);
        assert_eq!(b, format!("{}…[cut 99999744 bytes]", "e".repeat(256)));
        assert!(b.len() <= 256 + MARKER_MAX);
        let max_marker = format!("…[cut {} bytes]", u64::MAX);
        assert!(max_marker.len() <= MARKER_MAX);
    }

    #[test]
    fn cuts_on_a_char_boundary() {
        let s = "é".repeat(10); // 2 bytes each
        assert_eq!(bounded(&s, 5), format!("{}…[cut 16 bytes]", "é".repeat(2)));
        assert_eq!(prefix(&s, 5), "éé");
        assert_eq!(prefix("abc", 5), "abc");
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(
            bounded("a\nb\rc\u{1b}[31md\\e\u{7}\u{85}\u{2028}\u{202e}\t", 100),
            "a\\nb\\rc\\u{1b}[31md\\\\e\\u{7}\\u{85}\\u{2028}\\u{202e}\\t"
        );
        assert!(!bounded("x\ny", 100).contains('\n'));
    }

    #[test]
    fn escapes_count_against_the_bound() {
        let s = "\n".repeat(100);
        let b = bounded(&s, 11);
        assert_eq!(b, format!("{}…[cut 95 bytes]", "\\n".repeat(5)));
        // An escape never straddles the cut.
        assert_eq!(bounded("ab\u{1b}", 5), "ab…[cut 1 bytes]");
    }

    #[test]
    fn bound_holds_for_any_input() {
        for s in ["", "plain", "\u{1b}\u{1b}\u{1b}", "ü\nü\nü", "\\\\\\\\"] {
            for max in 0..12 {
                assert!(bounded(s, max).len() <= max + MARKER_MAX, "{s:?} {max}");
            }
        }
    }
}
