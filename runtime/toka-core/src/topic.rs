//! Event kinds (dotted topics) and the subscription/publish pattern grammar.
//!
//! # Grammar
//!
//! A **kind** is one or more segments joined by `.`: `orders.created`,
//! `toka.tick`. A segment is 1–64 characters of `A-Z a-z 0-9 _ -`; a kind is at
//! most 255 bytes.
//!
//! A **pattern** is a kind in which some segments are wildcards:
//! - `*` matches exactly one segment: `orders.*` matches `orders.created` but
//!   not `orders` or `orders.eu.created`;
//! - `>` matches one or more trailing segments and may only be last:
//!   `orders.>` matches `orders.created` and `orders.eu.created`, not `orders`;
//! - a pattern that is only `*` (or only `>`) matches every kind.
//!
//! This is NATS subject syntax, except for the bare `*` shorthand, so the bus
//! can later be bridged to NATS without translating grants.

use std::fmt;
use std::sync::Arc;

/// Longest kind accepted, in bytes.
pub const MAX_KIND_LEN: usize = 255;
/// Longest segment accepted, in bytes.
pub const MAX_SEGMENT_LEN: usize = 64;
/// The first segment reserved for the runtime's own events (in any case: see
/// [`is_system_segment`]).
pub const SYSTEM_PREFIX: &str = "toka";

/// Why a kind or pattern was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// The kind or pattern was empty.
    #[error("is empty")]
    Empty,
    /// Longer than [`MAX_KIND_LEN`].
    #[error("is longer than {MAX_KIND_LEN} bytes")]
    TooLong,
    /// A segment was empty (`a..b`, a leading or trailing `.`).
    #[error("has an empty segment")]
    EmptySegment,
    /// A segment was longer than [`MAX_SEGMENT_LEN`].
    #[error("has a segment longer than {MAX_SEGMENT_LEN} bytes")]
    SegmentTooLong,
    /// A segment held a character outside the allowed set.
    #[error("has an invalid character {0:?} (allowed: A-Z a-z 0-9 _ -)")]
    InvalidChar(char),
    /// A wildcard appeared in a kind, which must be concrete.
    #[error("contains a wildcard; a kind must be concrete")]
    Wildcard,
    /// `>` appeared somewhere other than the last segment.
    #[error("uses `>` before the last segment")]
    TailNotLast,
}

fn check_segment(seg: &str) -> Result<(), TopicError> {
    if seg.is_empty() {
        return Err(TopicError::EmptySegment);
    }
    if seg.len() > MAX_SEGMENT_LEN {
        return Err(TopicError::SegmentTooLong);
    }
    match seg
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        Some(c) => Err(TopicError::InvalidChar(c)),
        None => Ok(()),
    }
}

/// Validate a concrete event kind such as `orders.created`.
pub fn validate_kind(kind: &str) -> Result<(), TopicError> {
    if kind.is_empty() {
        return Err(TopicError::Empty);
    }
    if kind.len() > MAX_KIND_LEN {
        return Err(TopicError::TooLong);
    }
    for seg in kind.split('.') {
        if seg == "*" || seg == ">" {
            return Err(TopicError::Wildcard);
        }
        check_segment(seg)?;
    }
    Ok(())
}

/// Whether `segment` is the runtime's reserved first segment: `toka` in any
/// case (`TOKA`, `Toka`, ...), so no kind can pass for a runtime one.
pub fn is_system_segment(segment: &str) -> bool {
    segment.eq_ignore_ascii_case(SYSTEM_PREFIX)
}

/// Whether `kind` (or a pattern's text) is in the runtime's reserved space:
/// its first segment is `toka` in any case (`toka.tick`, `TOKA.tick`, `toka`).
pub fn is_system_kind(kind: &str) -> bool {
    kind.split('.').next().is_some_and(is_system_segment)
}

/// A validated, cheaply clonable event kind.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Kind(Arc<str>);

impl Kind {
    /// Validate and wrap `kind`.
    pub fn new(kind: &str) -> Result<Self, TopicError> {
        validate_kind(kind)?;
        Ok(Kind(Arc::from(kind)))
    }

    /// The kind as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is a runtime kind (`toka.*`, the first segment in any case).
    pub fn is_system(&self) -> bool {
        is_system_kind(&self.0)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl AsRef<str> for Kind {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Lets maps keyed by `Kind` be searched with a `&str` (the bus finds a
/// published kind's cached route without allocating a `Kind` first). Sound
/// because `Kind`'s `Hash` and `Eq` are those of its text.
impl std::borrow::Borrow<str> for Kind {
    fn borrow(&self) -> &str {
        &self.0
    }
}

#[derive(Clone, PartialEq, Eq, Hash)]
enum Segment {
    Literal(Box<str>),
    /// `*`: exactly one segment.
    One,
    /// `>`: one or more trailing segments.
    Tail,
}

/// A subscription or publish pattern, e.g. `orders.*` or `orders.>`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Pattern {
    text: Box<str>,
    segments: Box<[Segment]>,
}

impl Pattern {
    /// Parse a pattern (see the module docs for the grammar).
    pub fn parse(text: &str) -> Result<Self, TopicError> {
        if text.is_empty() {
            return Err(TopicError::Empty);
        }
        if text.len() > MAX_KIND_LEN {
            return Err(TopicError::TooLong);
        }
        let parts: Vec<&str> = text.split('.').collect();
        let last = parts.len() - 1;
        let segments = if text == "*" {
            vec![Segment::Tail]
        } else {
            parts
                .iter()
                .enumerate()
                .map(|(i, seg)| match *seg {
                    "*" => Ok(Segment::One),
                    ">" if i == last => Ok(Segment::Tail),
                    ">" => Err(TopicError::TailNotLast),
                    lit => check_segment(lit).map(|()| Segment::Literal(lit.into())),
                })
                .collect::<Result<_, _>>()?
        };
        Ok(Pattern {
            text: text.into(),
            segments: segments.into_boxed_slice(),
        })
    }

    /// The pattern as the operator wrote it.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `kind` matches this pattern.
    pub fn matches(&self, kind: &str) -> bool {
        let mut parts = kind.split('.');
        for seg in self.segments.iter() {
            match seg {
                Segment::Tail => return parts.next().is_some(),
                Segment::One => {
                    if parts.next().is_none() {
                        return false;
                    }
                }
                Segment::Literal(lit) => {
                    if parts.next() != Some(&**lit) {
                        return false;
                    }
                }
            }
        }
        parts.next().is_none()
    }

    /// Whether some kind matching this pattern is a runtime kind (`toka.*`).
    ///
    /// Used to reject publish grants that could never be honoured.
    pub fn may_match_system(&self) -> bool {
        match self.segments.first() {
            Some(Segment::Literal(l)) => is_system_segment(l),
            _ => true,
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.text, f)
    }
}

/// A set of patterns; matches a kind if any pattern does. Empty matches nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PatternSet(Vec<Pattern>);

impl PatternSet {
    /// Build a set from parsed patterns.
    pub fn new(patterns: Vec<Pattern>) -> Self {
        PatternSet(patterns)
    }

    /// Parse every pattern, failing on the first bad one (with its text).
    pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<Self, (String, TopicError)> {
        items
            .iter()
            .map(|s| Pattern::parse(s.as_ref()).map_err(|e| (s.as_ref().to_owned(), e)))
            .collect::<Result<Vec<_>, _>>()
            .map(PatternSet)
    }

    /// Whether any pattern matches `kind`.
    pub fn matches(&self, kind: &str) -> bool {
        self.0.iter().any(|p| p.matches(kind))
    }

    /// Whether the set has no patterns (matches nothing).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The patterns in the set.
    pub fn patterns(&self) -> &[Pattern] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, k: &str) -> bool {
        Pattern::parse(p).unwrap().matches(k)
    }

    #[test]
    fn literal_matches_only_itself() {
        assert!(m("orders.created", "orders.created"));
        assert!(!m("orders.created", "orders.created.eu"));
        assert!(!m("orders.created", "orders"));
        assert!(!m("orders.created", "orders.updated"));
    }

    #[test]
    fn star_matches_exactly_one_segment() {
        assert!(m("orders.*", "orders.created"));
        assert!(!m("orders.*", "orders"));
        assert!(!m("orders.*", "orders.eu.created"));
        assert!(m("*.created", "orders.created"));
        assert!(m("a.*.c", "a.b.c"));
        assert!(!m("a.*.c", "a.b.d"));
    }

    #[test]
    fn tail_matches_one_or_more() {
        assert!(m("orders.>", "orders.created"));
        assert!(m("orders.>", "orders.eu.created"));
        assert!(!m("orders.>", "orders"));
        assert!(!m("orders.>", "payments.created"));
    }

    #[test]
    fn bare_wildcards_match_everything() {
        for p in ["*", ">"] {
            assert!(m(p, "a"));
            assert!(m(p, "toka.tick"));
            assert!(m(p, "a.b.c.d"));
        }
    }

    #[test]
    fn bad_patterns_are_rejected() {
        assert_eq!(Pattern::parse(""), Err(TopicError::Empty));
        assert_eq!(Pattern::parse("a..b"), Err(TopicError::EmptySegment));
        assert_eq!(Pattern::parse("a.>.b"), Err(TopicError::TailNotLast));
        assert_eq!(Pattern::parse("a b"), Err(TopicError::InvalidChar(' ')));
        assert_eq!(Pattern::parse("a.b*"), Err(TopicError::InvalidChar('*')));
        assert_eq!(
            Pattern::parse(&"a".repeat(65)),
            Err(TopicError::SegmentTooLong)
        );
    }

    #[test]
    fn kinds_must_be_concrete_and_valid() {
        assert!(validate_kind("orders.created").is_ok());
        assert_eq!(validate_kind("orders.*"), Err(TopicError::Wildcard));
        assert_eq!(validate_kind("orders."), Err(TopicError::EmptySegment));
        assert_eq!(validate_kind(""), Err(TopicError::Empty));
        assert_eq!(validate_kind(&"a.".repeat(200)), Err(TopicError::TooLong));
    }

    #[test]
    fn system_kinds_are_recognised() {
        assert!(is_system_kind("toka.tick"));
        assert!(is_system_kind("toka"));
        assert!(!is_system_kind("tokamak.tick"));
        for k in ["TOKA.tick", "Toka.agent.failed", "tOkA", "TOKA"] {
            assert!(is_system_kind(k), "{k} is reserved whatever its case");
        }
        assert!(!is_system_kind("tokA_x.tick"));
        assert!(Pattern::parse("TOKA.>").unwrap().may_match_system());
        assert!(Pattern::parse("toka.>").unwrap().may_match_system());
        assert!(Pattern::parse("*.tick").unwrap().may_match_system());
        assert!(!Pattern::parse("orders.>").unwrap().may_match_system());
    }
}
