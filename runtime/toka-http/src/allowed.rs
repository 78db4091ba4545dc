//! `allowed_hosts`: the destinations one agent may ask for, in Spin's
//! grammar `scheme://host[:port]`.
//!
//! - scheme: `http`, `https` or `*` (either); required.
//! - host: a name (`api.stripe.com`, any case, one trailing dot ignored);
//!   `*.example.com`, every subdomain of `example.com` but not
//!   `example.com` itself; `*`, any host; a canonical IP literal
//!   (`127.0.0.1`, `[::1]`); or a CIDR (`10.0.0.0/8`, `[fd00::]/8`), any
//!   address literal inside it. A name entry matches only that name, never
//!   an address, and the reverse.
//! - port: `N`; `*`, any port; `A..B`, from `A` up to but not including `B`
//!   (Spin's half-open range: `8000..8003` is 8000, 8001 and 8002). Without a
//!   port, the scheme's default (80, 443); `*://host` has none and is an
//!   error.
//! - no path, query or userinfo (one trailing `/` is tolerated).
//!
//! `*://*:*` allows every destination and must be written out; an empty list
//! allows none. Allowing a host never allows a private address: the
//! resolved addresses are checked apart ([`crate::ranges`]).

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::error::{Error, Result};
use crate::target::{self, Host, Target};

/// The schemes an entry may name.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Schemes {
    Any,
    One(String),
}

/// The hosts an entry matches.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Hosts {
    Any,
    /// Subdomains of the name (not the name itself).
    Subdomains(String),
    Name(String),
    Ip(IpAddr),
    Net(IpNet),
}

/// The ports an entry matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ports {
    Any,
    /// `start..end`, half-open.
    Range(u32, u32),
}

/// One `allowed_hosts` entry, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHost {
    schemes: Schemes,
    hosts: Hosts,
    ports: Ports,
    written: String,
}

/// An agent's whole `allowed_hosts` list; empty allows nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedHosts {
    entries: Vec<AllowedHost>,
}

fn bad(entry: &str, why: impl Into<String>) -> Error {
    Error::AllowedHost {
        entry: entry.to_owned(),
        why: why.into(),
    }
}

impl AllowedHost {
    /// Parse one entry (see the module docs).
    pub fn parse(entry: &str) -> Result<AllowedHost> {
        let Some((scheme, rest)) = entry.split_once("://") else {
            return Err(bad(
                entry,
                format!("a scheme is required, e.g. `https://{entry}` (or `*://{entry}:*`)"),
            ));
        };
        let schemes = match scheme.to_ascii_lowercase().as_str() {
            "*" => Schemes::Any,
            s @ ("http" | "https") => Schemes::One(s.to_owned()),
            _ => {
                return Err(bad(
                    entry,
                    format!("scheme `{scheme}`: only `http`, `https` and `*` are served"),
                ));
            }
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('@') {
            return Err(bad(entry, "userinfo (`user@`) is not allowed"));
        }
        if rest.contains(['?', '#']) {
            return Err(bad(entry, "a query or fragment is not allowed"));
        }
        let (host, port) = split(entry, rest)?;
        let hosts = parse_hosts(entry, host)?;
        let ports = match (port, &schemes) {
            (Some(p), _) => parse_ports(entry, p)?,
            (None, Schemes::One(s)) => {
                let p = u32::from(target::default_port(s).expect("http or https"));
                Ports::Range(p, p + 1)
            }
            (None, Schemes::Any) => {
                return Err(bad(
                    entry,
                    "`*://` has no default port: write one (`:443`, `:8000..8080`, `:*`)",
                ));
            }
        };
        Ok(AllowedHost {
            schemes,
            hosts,
            ports,
            written: entry.to_owned(),
        })
    }

    /// True when this entry allows `target`.
    pub fn allows(&self, target: &Target) -> bool {
        let scheme = match &self.schemes {
            Schemes::Any => true,
            Schemes::One(s) => *s == target.scheme,
        };
        let port = match self.ports {
            Ports::Any => true,
            Ports::Range(start, end) => (start..end).contains(&u32::from(target.port)),
        };
        let host = match (&self.hosts, &target.host) {
            (Hosts::Any, _) => true,
            (Hosts::Name(n), Host::Name(h)) => n == h,
            (Hosts::Subdomains(sfx), Host::Name(h)) => h
                .strip_suffix(sfx.as_str())
                .is_some_and(|head| !head.is_empty()),
            (Hosts::Ip(ip), Host::Ip(h)) => ip == h,
            (Hosts::Net(net), Host::Ip(h)) => net.contains(h),
            _ => false,
        };
        scheme && port && host
    }

    /// The entry as the operator wrote it.
    pub fn as_str(&self) -> &str {
        &self.written
    }
}

impl fmt::Display for AllowedHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.written)
    }
}

/// `host[:port]`, where the host may be `[v6]`, `[v6]/len` or `a.b.c.d/len`.
fn split<'a>(entry: &str, rest: &'a str) -> Result<(&'a str, Option<&'a str>)> {
    if rest.is_empty() {
        return Err(bad(entry, "no host"));
    }
    if rest.starts_with('[') {
        let end = rest
            .find(']')
            .ok_or_else(|| bad(entry, "unclosed `[` in the host"))?;
        let after = &rest[end + 1..];
        // `[v6]/len` keeps its prefix length with the host.
        let host_end = match after.strip_prefix('/') {
            Some(len) => end + 2 + len.find(':').unwrap_or(len.len()),
            None => end + 1,
        };
        let (host, tail) = rest.split_at(host_end);
        return match tail {
            "" => Ok((host, None)),
            _ => match tail.strip_prefix(':') {
                Some(p) => Ok((host, Some(p))),
                None => Err(bad(entry, "unexpected text after the host")),
            },
        };
    }
    match rest.split_once(':') {
        Some((_, p)) if p.contains(':') => Err(bad(
            entry,
            "more than one `:` (write an IPv6 address in brackets: `[::1]`)",
        )),
        Some((h, p)) => Ok((h, Some(p))),
        None => Ok((rest, None)),
    }
}

fn parse_hosts(entry: &str, host: &str) -> Result<Hosts> {
    if host == "*" {
        return Ok(Hosts::Any);
    }
    if let Some(sfx) = host.strip_prefix("*.") {
        let name = target::parse_name(sfx).map_err(|e| bad(entry, strip(e)))?;
        return Ok(Hosts::Subdomains(format!(".{name}")));
    }
    if host.contains('*') {
        return Err(bad(
            entry,
            "`*` stands only for the whole host or a leading `*.` label",
        ));
    }
    if host.contains('/') {
        let cidr = host.replace(['[', ']'], "");
        let net: IpNet = cidr
            .parse()
            .map_err(|_| bad(entry, "a path is not allowed (and this is no CIDR)"))?;
        if net.trunc() != net {
            return Err(bad(
                entry,
                format!(
                    "CIDR `{net}` has host bits set (did you mean `{}`?)",
                    net.trunc()
                ),
            ));
        }
        return Ok(Hosts::Net(net));
    }
    match target::parse_host(host).map_err(|e| bad(entry, strip(e)))? {
        Host::Ip(ip) => Ok(Hosts::Ip(ip)),
        Host::Name(n) => Ok(Hosts::Name(n)),
    }
}

/// The reason inside a destination error, for an entry's message.
fn strip(e: Error) -> String {
    match e {
        Error::Destination(why) => why,
        other => other.to_string(),
    }
}

fn parse_ports(entry: &str, port: &str) -> Result<Ports> {
    if port == "*" {
        return Ok(Ports::Any);
    }
    let num = |p: &str, max: u32| -> Result<u32> {
        match p.parse::<u32>() {
            Ok(n) if (1..=max).contains(&n) && p.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
            _ => Err(bad(
                entry,
                format!("port `{port}`: write N (1-65535), `*` or `A..B` (B not included)"),
            )),
        }
    };
    match port.split_once("..") {
        Some((a, b)) => {
            let (a, b) = (num(a, 65535)?, num(b, 65536)?);
            if a >= b {
                return Err(bad(
                    entry,
                    format!("port range `{port}` is empty (`A..B` includes A, not B)"),
                ));
            }
            Ok(Ports::Range(a, b))
        }
        None => {
            let n = num(port, 65535)?;
            Ok(Ports::Range(n, n + 1))
        }
    }
}

impl AllowedHosts {
    /// Parse every entry of `allowed_hosts`; the first bad one is the error.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<AllowedHosts> {
        entries
            .iter()
            .map(|e| AllowedHost::parse(e.as_ref()))
            .collect::<Result<Vec<_>>>()
            .map(|entries| AllowedHosts { entries })
    }

    /// True when some entry allows `target`.
    pub fn allows(&self, target: &Target) -> bool {
        self.entries.iter().any(|e| e.allows(target))
    }

    /// True when nothing is allowed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries, in the order written.
    pub fn entries(&self) -> &[AllowedHost] {
        &self.entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(list: &[&str]) -> AllowedHosts {
        AllowedHosts::parse(list).unwrap_or_else(|e| panic!("{e}"))
    }

    fn allows(list: &[&str], url: &str) -> bool {
        let (scheme, authority) = url.split_once("://").unwrap();
        hosts(list).allows(&Target::parse(scheme, authority).unwrap())
    }

    fn error(entry: &str) -> String {
        AllowedHost::parse(entry).unwrap_err().to_string()
    }

    #[test]
    fn exact_hosts_with_default_ports() {
        let l = &["https://api.stripe.com"];
        assert!(allows(l, "https://api.stripe.com"));
        assert!(allows(l, "https://API.Stripe.com."));
        assert!(allows(l, "https://api.stripe.com:443"));
        assert!(!allows(l, "http://api.stripe.com"), "wrong scheme");
        assert!(!allows(l, "https://api.stripe.com:8443"), "wrong port");
        assert!(!allows(l, "https://files.stripe.com"));
        assert!(!allows(l, "https://api.stripe.com.evil.example"));
        assert!(!allows(l, "https://evilapi.stripe.com"));
        assert!(allows(&["http://example.com"], "http://example.com:80"));
        assert!(!allows(&["http://example.com"], "http://example.com:443"));
        assert!(allows(&["HTTP://Example.COM./"], "http://example.com"));
    }

    #[test]
    fn subdomain_wildcards_exclude_the_domain_itself() {
        let l = &["https://*.example.com"];
        assert!(allows(l, "https://a.example.com"));
        assert!(allows(l, "https://a.b.example.com"));
        assert!(!allows(l, "https://example.com"));
        assert!(!allows(l, "https://badexample.com"));
        assert!(!allows(l, "https://example.com.evil.example"));
    }

    #[test]
    fn port_forms() {
        assert!(allows(&["http://h:*"], "http://h:1"));
        assert!(allows(&["http://h:*"], "http://h:65535"));
        let r = &["http://h:8000..8003"];
        assert!(!allows(r, "http://h:7999"), "below the range");
        assert!(allows(r, "http://h:8000"), "the start is included");
        assert!(allows(r, "http://h:8002"));
        assert!(!allows(r, "http://h:8003"), "the end is not");
        assert!(allows(&["http://h:1..65536"], "http://h:65535"));
        assert!(allows(&["http://h:9000"], "http://h:9000"));
        assert!(!allows(&["http://h:9000"], "http://h"));
    }

    #[test]
    fn wildcards_and_allow_all() {
        let all = &["*://*:*"];
        assert!(allows(all, "http://anything.example:1"));
        assert!(allows(all, "https://[::1]:443"));
        assert!(allows(all, "https://10.0.0.1"));
        assert!(allows(&["*://example.com:443"], "http://example.com:443"));
        assert!(allows(&["*://example.com:443"], "https://example.com"));
        assert!(allows(&["https://*"], "https://x.example"));
        assert!(!allows(&["https://*"], "http://x.example"));
        assert!(!hosts(&[]).allows(&Target::parse("https", "example.com").unwrap()));
        assert!(hosts(&[]).is_empty());
    }

    #[test]
    fn ip_literals_and_cidrs() {
        assert!(allows(&["http://127.0.0.1:9000"], "http://127.0.0.1:9000"));
        assert!(!allows(&["http://127.0.0.1:9000"], "http://localhost:9000"));
        assert!(!allows(&["http://localhost:9000"], "http://127.0.0.1:9000"));
        assert!(!allows(
            &["http://127.0.0.1:9000"],
            "http://[::ffff:127.0.0.1]:9000"
        ));
        assert!(allows(&["http://[::1]:8080"], "http://[::1]:8080"));
        assert!(allows(&["*://127.0.0.0/24:80"], "http://127.0.0.9"));
        assert!(!allows(&["*://127.0.0.0/24:80"], "http://127.0.1.9"));
        assert!(allows(&["https://[fd00::]/8"], "https://[fd12::1]"));
        assert!(allows(&["https://[fd00::]/8:*"], "https://[fd12::1]:1"));
    }

    #[test]
    fn errors_say_what_to_write() {
        assert_eq!(
            error("example.com"),
            "`example.com`: a scheme is required, e.g. `https://example.com` (or `*://example.com:*`)"
        );
        assert_eq!(
            error("ftp://example.com"),
            "`ftp://example.com`: scheme `ftp`: only `http`, `https` and `*` are served"
        );
        assert!(error("*://example.com").contains("no default port"));
        assert!(error("https://example.com/path").contains("path is not allowed"));
        assert!(error("https://example.com/a/").contains("path is not allowed"));
        assert!(error("https://user@example.com").contains("userinfo"));
        assert!(error("https://example.com?q").contains("query"));
        assert!(error("https://").contains("no host"));
        assert!(error("https://ex*ample.com").contains("`*` stands only"));
        assert!(error("https://*example.com").contains("`*` stands only"));
        assert!(error("https://a.*.com").contains("`*` stands only"));
        assert!(error("http://h:0").contains("write N (1-65535)"));
        assert!(error("http://h:65536").contains("write N"));
        assert!(error("http://h:x").contains("write N"));
        assert!(error("http://h:").contains("write N"));
        assert!(error("http://h:9..9").contains("is empty"));
        assert!(error("http://h:10..9").contains("is empty"));
        assert!(error("http://h:1..").contains("write N"));
        assert!(error("http://::1").contains("brackets"));
        assert!(error("http://[::1").contains("unclosed"));
        assert!(error("http://127.1").contains("numeric host"));
        assert!(error("http://2130706433").contains("numeric host"));
        assert!(error("http://10.0.0.1/8").contains("host bits"));
        assert!(error("http://bad_name").contains("not a host name"));
        assert_eq!(
            AllowedHosts::parse(&["https://ok.example", "nope"])
                .unwrap_err()
                .to_string(),
            "`nope`: a scheme is required, e.g. `https://nope` (or `*://nope:*`)"
        );
    }
}
