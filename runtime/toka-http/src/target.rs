//! The destination a request names, parsed so that it cannot mean two
//! things.
//!
//! Resolvers read numeric hosts in forms a name check never sees: glibc
//! resolves `2130706433`, `0177.0.0.1`, `127.1` and `0x7f.1` to `127.0.0.1`.
//! A host is therefore either a canonical IP literal (dotted-quad IPv4 with
//! no leading zeros, or bracketed IPv6 without a zone) or a DNS name of
//! letters, digits and hyphens whose last label is not numeric (the WHATWG
//! URL rule: a host ending in a number is an IPv4 address); anything else is
//! refused before the allowlist is consulted. Names are lower-cased and lose
//! one trailing dot (`Example.COM.` is `example.com`); userinfo
//! (`user@host`), percent-escapes, zones (`%eth0`) and empty or zero ports
//! are refused.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::error::{Error, Result};

/// Longest DNS name, without the trailing dot (RFC 1035).
pub const MAX_NAME_LEN: usize = 253;
/// Longest DNS label (RFC 1035).
pub const MAX_LABEL_LEN: usize = 63;

/// The host part of a destination.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A DNS name: lower case, no trailing dot, validated.
    Name(String),
    /// An IP literal.
    Ip(IpAddr),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n),
            Host::Ip(IpAddr::V4(ip)) => write!(f, "{ip}"),
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
        }
    }
}

/// A request's destination: scheme, host and port (the scheme's default
/// when none is written).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// `http` or `https`.
    pub scheme: String,
    /// The host.
    pub host: Host,
    /// The port.
    pub port: u16,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
    }
}

/// The port `scheme` uses when none is written (`http` 80, `https` 443).
pub fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

fn refused(why: impl Into<String>) -> Error {
    Error::Destination(why.into())
}

impl Target {
    /// The destination of a request to `scheme` (`http`/`https`, any case)
    /// and `authority` (`host[:port]`, as the guest set it).
    pub fn parse(scheme: &str, authority: &str) -> Result<Target> {
        let scheme = scheme.to_ascii_lowercase();
        let default = default_port(&scheme)
            .ok_or_else(|| refused(format!("scheme `{scheme}` is not served")))?;
        if authority.contains('@') {
            return Err(refused("userinfo (`user@host`) is not allowed"));
        }
        let (host, port) = split_host_port(authority)?;
        let host = parse_host(host)?;
        let port = match port {
            None => default,
            Some(p) => parse_port(p)?,
        };
        Ok(Target { scheme, host, port })
    }
}

/// `host[:port]` or `[v6][:port]`, split; the host keeps its brackets.
pub(crate) fn split_host_port(authority: &str) -> Result<(&str, Option<&str>)> {
    if authority.is_empty() {
        return Err(refused("no host"));
    }
    if authority.starts_with('[') {
        let end = authority
            .find(']')
            .ok_or_else(|| refused("unclosed `[` in the host"))?;
        let (host, rest) = authority.split_at(end + 1);
        return match rest {
            "" => Ok((host, None)),
            _ => match rest.strip_prefix(':') {
                Some(port) => Ok((host, Some(port))),
                None => Err(refused("unexpected text after `]`")),
            },
        };
    }
    match authority.split_once(':') {
        Some((_, port)) if port.contains(':') => Err(refused(
            "more than one `:` (an IPv6 address must be in brackets)",
        )),
        Some((host, port)) => Ok((host, Some(port))),
        None => Ok((authority, None)),
    }
}

/// A port: 1-65535 in plain decimal (no sign, no empty port).
pub(crate) fn parse_port(port: &str) -> Result<u16> {
    if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(refused(format!("bad port `{port}`")));
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err(refused(format!("bad port `{port}`"))),
        Ok(p) => Ok(p),
    }
}

/// A host: `[v6]`, a canonical dotted-quad IPv4, or a DNS name (see the
/// module docs).
pub fn parse_host(host: &str) -> Result<Host> {
    if let Some(inner) = host.strip_prefix('[') {
        let inner = inner
            .strip_suffix(']')
            .ok_or_else(|| refused("unclosed `[` in the host"))?;
        return inner
            .parse::<Ipv6Addr>()
            .map(|ip| Host::Ip(IpAddr::V6(ip)))
            .map_err(|_| refused("not an IPv6 address inside `[...]` (zones are not allowed)"));
    }
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return Ok(Host::Ip(IpAddr::V4(ip)));
    }
    parse_name(host).map(Host::Name)
}

/// A DNS name, lower-cased without one trailing dot.
pub(crate) fn parse_name(name: &str) -> Result<String> {
    if !name.is_ascii() {
        return Err(refused(
            "a host must be ASCII (write an internationalised name in its `xn--` form)",
        ));
    }
    let lower = name.to_ascii_lowercase();
    let trimmed = lower.strip_suffix('.').unwrap_or(&lower);
    if trimmed.is_empty() {
        return Err(refused("no host"));
    }
    if trimmed.len() > MAX_NAME_LEN {
        return Err(refused(format!(
            "a host name is at most {MAX_NAME_LEN} characters"
        )));
    }
    let labels: Vec<&str> = trimmed.split('.').collect();
    for label in &labels {
        let ok = !label.is_empty()
            && label.len() <= MAX_LABEL_LEN
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(refused(format!(
                "`{}` is not a host name (labels of letters, digits and inner `-`)",
                bounded(name)
            )));
        }
    }
    if ends_in_number(labels.last().expect("split yields one")) {
        return Err(refused(format!(
            "`{}` is a numeric host in a form resolvers disagree on (write an IPv4 address as a plain dotted quad, e.g. 127.0.0.1)",
            bounded(name)
        )));
    }
    Ok(trimmed.to_owned())
}

/// The WHATWG URL "ends in a number" test on a name's last label: decimal
/// digits, or `0x` and hex digits.
fn ends_in_number(label: &str) -> bool {
    if label.bytes().all(|b| b.is_ascii_digit()) {
        return true;
    }
    match label.strip_prefix("0x") {
        Some(hex) => hex.bytes().all(|b| b.is_ascii_hexdigit()),
        None => false,
    }
}

/// A guest-supplied string cut for an error message.
fn bounded(s: &str) -> String {
    const MAX: usize = 80;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(scheme: &str, authority: &str) -> Target {
        Target::parse(scheme, authority).unwrap_or_else(|e| panic!("{authority}: {e}"))
    }

    fn refused(authority: &str) -> String {
        match Target::parse("http", authority) {
            Ok(t) => panic!("{authority} was accepted as {t}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn names_are_lower_cased_and_lose_one_trailing_dot() {
        let t = ok("HTTPS", "Api.Stripe.COM.");
        assert_eq!(t.scheme, "https");
        assert_eq!(t.host, Host::Name("api.stripe.com".into()));
        assert_eq!(t.port, 443);
        assert_eq!(
            ok("http", "localhost.").host,
            Host::Name("localhost".into())
        );
        assert_eq!(ok("http", "a-b.example:8080").port, 8080);
        assert_eq!(
            ok("http", "example.com").to_string(),
            "http://example.com:80"
        );
        refused("example.com..");
        refused(".example.com");
        refused("a..b");
    }

    #[test]
    fn ip_literals_are_canonical_only() {
        assert_eq!(
            ok("http", "127.0.0.1:9000").host,
            Host::Ip("127.0.0.1".parse().unwrap())
        );
        assert_eq!(
            ok("http", "[::1]:80").host,
            Host::Ip("::1".parse().unwrap())
        );
        assert_eq!(
            ok("http", "[::ffff:127.0.0.1]").host,
            Host::Ip("::ffff:127.0.0.1".parse().unwrap())
        );
        assert_eq!(
            ok("https", "[2001:db8::1]").to_string(),
            "https://[2001:db8::1]:443"
        );
    }

    #[test]
    fn numeric_forms_resolvers_read_as_loopback_are_refused() {
        for host in [
            "2130706433",
            "0177.0.0.1",
            "0177.1",
            "127.1",
            "127.0.1",
            "0x7f.1",
            "0x7f000001",
            "0X7F.0.0.1",
            "017700000001",
            "127.0.0.1.",
            "1.2.3.4.5",
            "example.123",
        ] {
            let e = refused(host);
            assert!(
                e.contains("numeric host") || e.contains("not a host name"),
                "{host}: {e}"
            );
        }
        // A hex-looking label that is not last is an ordinary name.
        assert_eq!(
            ok("http", "0x7f.example.com").host,
            Host::Name("0x7f.example.com".into())
        );
    }

    #[test]
    fn odd_authorities_are_refused() {
        assert!(refused("user@example.com").contains("userinfo"));
        assert!(refused("user:pw@127.0.0.1").contains("userinfo"));
        assert!(refused("").contains("no host"));
        assert!(refused(".").contains("no host"));
        assert!(refused("example.com:").contains("bad port"));
        assert!(refused("example.com:0").contains("bad port"));
        assert!(refused("example.com:65536").contains("bad port"));
        assert!(refused("example.com:+80").contains("bad port"));
        assert!(refused("example.com:8o").contains("bad port"));
        assert!(refused("::1").contains("brackets"));
        assert!(refused("[::1").contains("unclosed"));
        assert!(refused("[::1]x").contains("after"));
        assert!(refused("[fe80::1%25eth0]").contains("IPv6"));
        assert!(refused("[127.0.0.1]").contains("IPv6"));
        assert!(refused("exa%6dple.com").contains("not a host name"));
        assert!(refused("exa_mple.com").contains("not a host name"));
        assert!(refused("-a.example").contains("not a host name"));
        assert!(refused("bücher.example").contains("ASCII"));
        assert!(refused(&"a".repeat(64)).contains("not a host name"));
        assert!(refused(&["abc"; 70].join(".")).contains("at most 253"));
        assert!(
            Target::parse("ftp", "example.com")
                .unwrap_err()
                .to_string()
                .contains("not served")
        );
    }

    #[test]
    fn ports_default_per_scheme() {
        assert_eq!(default_port("http"), Some(80));
        assert_eq!(default_port("https"), Some(443));
        assert_eq!(default_port("ftp"), None);
        assert_eq!(ok("http", "example.com:65535").port, 65535);
        assert_eq!(ok("http", "example.com:1").port, 1);
    }
}
