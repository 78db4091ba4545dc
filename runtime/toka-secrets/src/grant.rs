//! Per-agent permission to read secrets: `secrets = ["stripe/*", "db/password"]`.

use crate::error::{Error, Result};
use crate::name;

/// The set of secrets one agent may read, built from the operator's patterns.
///
/// Deny by default: an empty grant (including [`Grant::default`]) allows
/// nothing.
///
/// # Pattern grammar
///
/// A pattern is a secret name (see [`validate_name`](crate::validate_name))
/// whose segments may also contain wildcards:
///
/// - `*` matches any run of characters, possibly empty, *within one*
///   `/`-separated segment. A segment may hold several (`*_key*`).
///   `stripe/*` allows `stripe/live` but neither `stripe/a/b` nor
///   `stripeX/a`.
/// - `**` as the whole last segment matches one or more further segments at
///   any depth: `stripe/**` allows `stripe/live` and `stripe/a/b`, but not
///   `stripe` itself. The pattern `**` alone allows every secret.
/// - `**` anywhere else (`a/**/b`, `x**`) is rejected rather than guessed at.
///
/// Anything else matches literally. Matching is exact and case-sensitive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grant {
    patterns: Vec<Pattern>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    /// Kept for error messages and config round trips.
    source: String,
    /// Segments before any trailing `**`, each a literal or `*`-glob.
    segments: Vec<String>,
    /// A trailing `**` was given.
    any_depth: bool,
}

impl Grant {
    /// Builds a grant from patterns, validating each; the first invalid one
    /// is reported by name.
    pub fn new<I, S>(patterns: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let patterns = patterns
            .into_iter()
            .map(|p| Pattern::parse(p.as_ref()))
            .collect::<Result<_>>()?;
        Ok(Self { patterns })
    }

    /// Whether this grant lets the agent read `name`. Invalid names are
    /// never allowed.
    pub fn allows(&self, name: &str) -> bool {
        if name::check(name, false).is_err() {
            return false;
        }
        let segments: Vec<&str> = name.split('/').collect();
        self.patterns.iter().any(|p| p.matches(&segments))
    }

    /// Whether the grant allows nothing at all.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The patterns as the operator wrote them.
    pub fn patterns(&self) -> impl Iterator<Item = &str> {
        self.patterns.iter().map(|p| p.source.as_str())
    }
}

impl Pattern {
    fn parse(source: &str) -> Result<Self> {
        let invalid = |reason| Error::InvalidPattern {
            pattern: source.to_owned(),
            reason,
        };
        name::check(source, true).map_err(invalid)?;
        let mut segments: Vec<String> = source.split('/').map(str::to_owned).collect();
        let any_depth = segments.last().is_some_and(|s| s == "**");
        if any_depth {
            segments.pop();
        }
        if segments.iter().any(|s| s.contains("**")) {
            return Err(invalid("'**' is only allowed as the whole last segment"));
        }
        Ok(Self {
            source: source.to_owned(),
            segments,
            any_depth,
        })
    }

    fn matches(&self, name: &[&str]) -> bool {
        let depth_ok = if self.any_depth {
            name.len() > self.segments.len()
        } else {
            name.len() == self.segments.len()
        };
        depth_ok
            && self
                .segments
                .iter()
                .zip(name)
                .all(|(p, s)| glob(p.as_bytes(), s.as_bytes()))
    }
}

/// Matches one segment against a pattern segment where `*` is any run of
/// bytes. Greedy with single backtrack point, so linear in practice and never
/// exponential.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // Position of the last `*` seen and the text position it currently
    // absorbs up to.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if pattern.get(p) == Some(&b'*') {
            star = Some((p, t));
            p += 1;
        } else if pattern.get(p) == Some(&text[t]) {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(patterns: &[&str]) -> Grant {
        Grant::new(patterns).unwrap()
    }

    #[track_caller]
    fn check(patterns: &[&str], allowed: &[&str], denied: &[&str]) {
        let g = grant(patterns);
        for name in allowed {
            assert!(g.allows(name), "{patterns:?} should allow {name:?}");
        }
        for name in denied {
            assert!(!g.allows(name), "{patterns:?} should deny {name:?}");
        }
    }

    #[test]
    fn empty_grant_denies_everything() {
        for g in [Grant::default(), Grant::new(Vec::<String>::new()).unwrap()] {
            assert!(g.is_empty());
            assert!(!g.allows("a"));
            assert!(!g.allows("stripe/key"));
        }
    }

    #[test]
    fn literal_patterns_match_exactly() {
        check(
            &["db/password"],
            &["db/password"],
            &[
                "db/password2",
                "db/Password",
                "db",
                "db/password/x",
                "xdb/password",
                "password",
            ],
        );
    }

    #[test]
    fn star_stays_within_one_segment() {
        check(
            &["stripe/*"],
            &["stripe/a", "stripe/live-key", "stripe/..x"],
            &[
                "stripe/a/b",
                "stripeX/a",
                "stripe",
                "x/stripe/a",
                "Stripe/a",
            ],
        );
    }

    #[test]
    fn star_in_part_of_a_segment() {
        check(
            &["svc/*_key", "db-*/pass*"],
            &["svc/a_key", "svc/_key", "db-prod/pass", "db-x/password"],
            &[
                "svc/a_key/b",
                "svc/a_keyx",
                "db-/x",
                "dbx/pass",
                "db-a/b/pass",
            ],
        );
        check(
            &["a*b*c"],
            &["abc", "aXbYc", "abbbc", "aXbYbZc"],
            &["ab", "acb", "aXbYcZ"],
        );
    }

    #[test]
    fn star_segments_in_the_middle() {
        check(
            &["*/token"],
            &["github/token", "x/token"],
            &["token", "a/b/token", "github/tokens"],
        );
    }

    #[test]
    fn double_star_matches_any_depth_below() {
        check(
            &["stripe/**"],
            &["stripe/a", "stripe/a/b", "stripe/a/b/c"],
            &["stripe", "stripeX/a", "other/a"],
        );
        check(&["**"], &["a", "a/b", "x/y/z"], &[]);
        check(
            &["team-*/**"],
            &["team-a/x", "team-a/x/y"],
            &["team-a", "teamb/x"],
        );
    }

    #[test]
    fn several_patterns_union() {
        check(
            &["stripe/*", "db/password"],
            &["stripe/a", "db/password"],
            &["db/user", "stripe/a/b"],
        );
    }

    #[test]
    fn invalid_names_are_never_allowed() {
        check(&["**"], &[], &["", "/a", "a/../b", "a//b", "a b", "a/*"]);
    }

    #[test]
    fn invalid_patterns_rejected() {
        for p in [
            "", "/a", "a/**/b", "a**", "**a", "a/***", "a/../b", "a//b", "a/", "sp ace", "a:b",
        ] {
            match Grant::new([p]) {
                Err(Error::InvalidPattern { pattern, .. }) => assert_eq!(pattern, p),
                other => panic!("{p:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn patterns_round_trip() {
        let g = grant(&["stripe/*", "db/**"]);
        assert_eq!(g.patterns().collect::<Vec<_>>(), ["stripe/*", "db/**"]);
    }
}
