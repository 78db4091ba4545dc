//! The address check: which resolved addresses a request may connect to.
//!
//! Blocked by default, whatever the allowlist says (the table in
//! [`V4_BLOCKED`] and [`V6_BLOCKED`]): loopback, the unspecified and "this
//! network" ranges (`0.0.0.0` reaches the local host on Linux), RFC 1918,
//! link-local (the cloud metadata service at `169.254.169.254` and ECS's
//! `169.254.170.2`), CGNAT `100.64.0.0/10` (Alibaba's metadata service is
//! `100.100.100.200`), multicast, broadcast and reserved, the documentation,
//! benchmarking and protocol-assignment ranges; IPv6 loopback, unspecified,
//! ULA `fc00::/7` (AWS's IPv6 metadata `fd00:ec2::254`), link-local,
//! site-local, multicast, discard and documentation.
//!
//! IPv4 embedded in IPv6 is judged by the IPv4 inside: mapped
//! `::ffff:0:0/96` and compatible `::/96` (a dual-stack socket connects to
//! the IPv4 address), NAT64 `64:ff9b::/96` (the translator does), 6to4
//! `2002::/16` and Teredo `2001::/32` (server and client addresses both).
//! The local-use NAT64 prefix `64:ff9b:1::/48` (RFC 8215) is blocked whole:
//! where it embeds the IPv4 address is the local operator's choice.
//!
//! The operator's exceptions (`[http] allow_private`) are CIDRs; an address
//! blocked for itself, or for the IPv4 it embeds, is let through when an
//! exception contains that address. An agent cannot set them.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::error::{Error, Result};

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8) -> Ipv4Net {
    Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), len)
}

#[expect(
    clippy::too_many_arguments,
    reason = "the eight groups of an IPv6 address"
)]
const fn v6(a: u16, b: u16, c: u16, d: u16, e: u16, f: u16, g: u16, h: u16, len: u8) -> Ipv6Net {
    Ipv6Net::new_assert(Ipv6Addr::new(a, b, c, d, e, f, g, h), len)
}

/// Blocked IPv4 ranges, each with the name logs and errors give it.
pub const V4_BLOCKED: &[(Ipv4Net, &str)] = &[
    (v4(0, 0, 0, 0, 8), "\"this network\" 0.0.0.0/8"),
    (v4(10, 0, 0, 0, 8), "private 10.0.0.0/8"),
    (
        v4(100, 64, 0, 0, 10),
        "shared address space (CGNAT) 100.64.0.0/10",
    ),
    (v4(127, 0, 0, 0, 8), "loopback 127.0.0.0/8"),
    (
        v4(169, 254, 0, 0, 16),
        "link-local (cloud metadata) 169.254.0.0/16",
    ),
    (v4(172, 16, 0, 0, 12), "private 172.16.0.0/12"),
    (
        v4(192, 0, 0, 0, 24),
        "IETF protocol assignments 192.0.0.0/24",
    ),
    (v4(192, 0, 2, 0, 24), "documentation 192.0.2.0/24"),
    (v4(192, 88, 99, 0, 24), "6to4 relay anycast 192.88.99.0/24"),
    (v4(192, 168, 0, 0, 16), "private 192.168.0.0/16"),
    (v4(198, 18, 0, 0, 15), "benchmarking 198.18.0.0/15"),
    (v4(198, 51, 100, 0, 24), "documentation 198.51.100.0/24"),
    (v4(203, 0, 113, 0, 24), "documentation 203.0.113.0/24"),
    (v4(224, 0, 0, 0, 4), "multicast 224.0.0.0/4"),
    (v4(240, 0, 0, 0, 4), "reserved and broadcast 240.0.0.0/4"),
];

/// Blocked IPv6 ranges (after the embedded-IPv4 forms are decoded).
pub const V6_BLOCKED: &[(Ipv6Net, &str)] = &[
    (v6(0, 0, 0, 0, 0, 0, 0, 0, 128), "unspecified ::/128"),
    (v6(0, 0, 0, 0, 0, 0, 0, 1, 128), "loopback ::1/128"),
    (
        v6(0x64, 0xff9b, 1, 0, 0, 0, 0, 0, 48),
        "local-use NAT64 64:ff9b:1::/48",
    ),
    (v6(0x100, 0, 0, 0, 0, 0, 0, 0, 64), "discard-only 100::/64"),
    (
        v6(0x2001, 0, 0, 0, 0, 0, 0, 0, 23),
        "IETF protocol assignments 2001::/23",
    ),
    (
        v6(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0, 32),
        "documentation 2001:db8::/32",
    ),
    (
        v6(0x3fff, 0, 0, 0, 0, 0, 0, 0, 20),
        "documentation 3fff::/20",
    ),
    (v6(0xfc00, 0, 0, 0, 0, 0, 0, 0, 7), "unique local fc00::/7"),
    (v6(0xfe80, 0, 0, 0, 0, 0, 0, 0, 10), "link-local fe80::/10"),
    (v6(0xfec0, 0, 0, 0, 0, 0, 0, 0, 10), "site-local fec0::/10"),
    (v6(0xff00, 0, 0, 0, 0, 0, 0, 0, 8), "multicast ff00::/8"),
];

/// Why an address is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blocked {
    /// The address as resolved (or written).
    pub addr: IpAddr,
    /// The IPv4 address it embeds, when that is what was judged.
    pub embedded: Option<Ipv4Addr>,
    /// The blocked range, named.
    pub range: &'static str,
}

impl fmt::Display for Blocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.embedded {
            Some(v4) => write!(f, "{} embeds {v4}, in {}", self.addr, self.range),
            None => write!(f, "{} is in {}", self.addr, self.range),
        }
    }
}

/// The IPv4 addresses an IPv6 address carries, and the form that carries
/// them (`None`: a native IPv6 address).
pub fn embedded_v4(ip: Ipv6Addr) -> Option<(&'static str, Vec<Ipv4Addr>)> {
    let s = ip.segments();
    let o = ip.octets();
    let tail = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    if s[..5] == [0; 5] && s[5] == 0xffff {
        return Some(("IPv4-mapped", vec![tail]));
    }
    // `::` and `::1` are IPv6's own; the rest of ::/96 is IPv4-compatible.
    if s[..6] == [0; 6] && !(s[6] == 0 && s[7] <= 1) {
        return Some(("IPv4-compatible", vec![tail]));
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(("NAT64", vec![tail]));
    }
    if s[0] == 0x2002 {
        return Some(("6to4", vec![Ipv4Addr::new(o[2], o[3], o[4], o[5])]));
    }
    if s[0] == 0x2001 && s[1] == 0 {
        let server = Ipv4Addr::new(o[4], o[5], o[6], o[7]);
        let client = Ipv4Addr::new(!o[12], !o[13], !o[14], !o[15]);
        return Some(("Teredo", vec![server, client]));
    }
    None
}

fn v4_range(ip: Ipv4Addr) -> Option<&'static str> {
    V4_BLOCKED
        .iter()
        .find(|(net, _)| net.contains(&ip))
        .map(|(_, name)| *name)
}

/// Whether `ip` is in a blocked range, ignoring exceptions.
pub fn blocked(ip: IpAddr) -> Option<Blocked> {
    match ip {
        IpAddr::V4(v4) => v4_range(v4).map(|range| Blocked {
            addr: ip,
            embedded: None,
            range,
        }),
        IpAddr::V6(v6) => {
            if let Some((_, inner)) = embedded_v4(v6) {
                for v4 in inner {
                    if let Some(range) = v4_range(v4) {
                        return Some(Blocked {
                            addr: ip,
                            embedded: Some(v4),
                            range,
                        });
                    }
                }
            }
            // Teredo is inside 2001::/23; its embedded addresses decided.
            let teredo = v6.segments()[..2] == [0x2001, 0];
            V6_BLOCKED
                .iter()
                .filter(|(net, _)| !(teredo && net.prefix_len() == 23))
                .find(|(net, _)| net.contains(&v6))
                .map(|(_, range)| Blocked {
                    addr: ip,
                    embedded: None,
                    range,
                })
        }
    }
}

/// The blocked ranges with the operator's exceptions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressPolicy {
    allow_private: Vec<IpNet>,
}

impl AddressPolicy {
    /// Block every range of the table, no exceptions.
    pub fn new() -> Self {
        AddressPolicy::default()
    }

    /// Also let through addresses in `nets` (`[http] allow_private`).
    pub fn with_exceptions(nets: Vec<IpNet>) -> Self {
        AddressPolicy {
            allow_private: nets,
        }
    }

    /// Parse `allow_private`: CIDRs, or bare addresses (one address each).
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self> {
        entries
            .iter()
            .map(|e| parse_cidr(e.as_ref()))
            .collect::<Result<Vec<_>>>()
            .map(AddressPolicy::with_exceptions)
    }

    /// The exceptions.
    pub fn exceptions(&self) -> &[IpNet] {
        &self.allow_private
    }

    /// `Ok` when a request may connect to `ip`.
    pub fn check(&self, ip: IpAddr) -> Result<(), Blocked> {
        let Some(b) = blocked(ip) else {
            return Ok(());
        };
        let judged = b.embedded.map_or(b.addr, IpAddr::V4);
        let excepted = self
            .allow_private
            .iter()
            .any(|net| net.contains(&b.addr) || net.contains(&judged));
        if excepted { Ok(()) } else { Err(b) }
    }
}

/// One `allow_private` entry: `a.b.c.d/len`, `v6/len` (brackets optional) or
/// a bare address; host bits must be clear.
pub fn parse_cidr(entry: &str) -> Result<IpNet> {
    let bad = |why: &str| Error::Cidr {
        entry: entry.to_owned(),
        why: why.to_owned(),
    };
    let plain = entry.trim().replace(['[', ']'], "");
    let net = if plain.contains('/') {
        plain
            .parse::<IpNet>()
            .map_err(|_| bad("expected address/prefix-length"))?
    } else {
        let ip: IpAddr = plain.parse().map_err(|_| bad("not an address"))?;
        IpNet::from(ip)
    };
    if net.trunc() != net {
        return Err(bad(&format!(
            "host bits are set (did you mean `{}`?)",
            net.trunc()
        )));
    }
    Ok(net)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|_| panic!("{s}"))
    }

    fn is_blocked(s: &str) -> bool {
        blocked(ip(s)).is_some()
    }

    #[test]
    fn every_blocked_ipv4_range_edges() {
        for (net, name) in V4_BLOCKED {
            assert!(is_blocked(&net.network().to_string()), "{name}: first");
            assert!(is_blocked(&net.broadcast().to_string()), "{name}: last");
        }
        for s in [
            "0.0.0.0",
            "127.0.0.1",
            "127.255.255.254",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "169.254.170.2",
            "100.64.0.1",
            "100.100.100.200",
            "100.127.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "198.18.0.1",
            "198.19.255.255",
            "192.88.99.1",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
        ] {
            assert!(is_blocked(s), "{s}");
        }
        // Just outside.
        for s in [
            "1.1.1.1",
            "8.8.8.8",
            "9.255.255.255",
            "11.0.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "126.255.255.255",
            "128.0.0.0",
            "169.253.255.255",
            "169.255.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.167.255.255",
            "192.169.0.0",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "192.0.1.1",
            "203.0.114.1",
        ] {
            assert!(!is_blocked(s), "{s}");
        }
        assert_eq!(
            blocked(ip("169.254.169.254")).unwrap().range,
            "link-local (cloud metadata) 169.254.0.0/16"
        );
    }

    #[test]
    fn every_blocked_ipv6_range() {
        for s in [
            "::",
            "::1",
            "fc00::1",
            "fd00:ec2::254",
            "fdff:ffff::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "feff::1",
            "ff02::1",
            "ff0e::1",
            "2001:db8::1",
            "2001:db8:ffff::1",
            "100::1",
            "64:ff9b:1::1",
            "64:ff9b:1:ffff::1",
            "2001:2::1",
            "3fff::1",
        ] {
            assert!(is_blocked(s), "{s}");
        }
        for s in [
            "2606:4700:4700::1111",
            "2a00:1450::1",
            "fbff::1",
            "2001:db9::1",
            "2001:200::1",
            "64:ff9b:2::1",
            "100:0:0:1::1",
        ] {
            assert!(!is_blocked(s), "{s}");
        }
    }

    #[test]
    fn embedded_ipv4_is_judged_by_the_ipv4_inside() {
        for s in [
            "::ffff:127.0.0.1",
            "::ffff:7f00:1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "::10.0.0.1",
            "::0.0.0.2",
            "64:ff9b::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::192.168.0.1",
            "2002:7f00:1::",
            "2002:a9fe:a9fe::1",
            "2002:c0a8:101::",
            // Teredo server 127.0.0.1 / client 10.0.0.1 (obfuscated).
            "2001:0:7f00:1::",
            "2001:0:808:808::f5ff:fffe",
        ] {
            let b = blocked(ip(s)).unwrap_or_else(|| panic!("{s} let through"));
            assert!(b.embedded.is_some(), "{s}: {b}");
        }
        for s in [
            "::ffff:8.8.8.8",
            "::8.8.8.8",
            "64:ff9b::8.8.8.8",
            "2002:808:808::1",
            "2001:0:808:808::f7f7:f7f7",
        ] {
            assert!(!is_blocked(s), "{s}");
        }
        assert_eq!(
            blocked(ip("::ffff:127.0.0.1")).unwrap().to_string(),
            "::ffff:127.0.0.1 embeds 127.0.0.1, in loopback 127.0.0.0/8"
        );
        assert_eq!(embedded_v4("2606:4700::1".parse().unwrap()), None);
        assert_eq!(
            embedded_v4("2001:0:808:808::f5ff:fffe".parse().unwrap())
                .unwrap()
                .1,
            [Ipv4Addr::new(8, 8, 8, 8), Ipv4Addr::new(10, 0, 0, 1)]
        );
    }

    #[test]
    fn exceptions_are_the_operators_cidrs() {
        let p = AddressPolicy::parse(&["127.0.0.1/32", "fd00::/8"]).unwrap();
        assert!(p.check(ip("127.0.0.1")).is_ok());
        assert!(
            p.check(ip("::ffff:127.0.0.1")).is_ok(),
            "judged by the IPv4 inside"
        );
        assert!(p.check(ip("127.0.0.2")).is_err());
        assert!(p.check(ip("::1")).is_err());
        assert!(p.check(ip("fd12::1")).is_ok());
        assert!(p.check(ip("fe80::1")).is_err());
        assert!(
            p.check(ip("8.8.8.8")).is_ok(),
            "public addresses need no exception"
        );
        let none = AddressPolicy::new();
        assert_eq!(
            none.check(ip("127.0.0.1")).unwrap_err().to_string(),
            "127.0.0.1 is in loopback 127.0.0.0/8"
        );
        let bare = AddressPolicy::parse(&["127.0.0.1", "[::1]"]).unwrap();
        assert_eq!(bare.exceptions().len(), 2);
        assert!(bare.check(ip("::1")).is_ok());
    }

    #[test]
    fn cidr_errors() {
        assert!(
            parse_cidr("10.0.0.1/8")
                .unwrap_err()
                .to_string()
                .contains("did you mean `10.0.0.0/8`")
        );
        assert!(
            parse_cidr("10.0.0.0/33")
                .unwrap_err()
                .to_string()
                .contains("address/prefix-length")
        );
        assert!(
            parse_cidr("localhost")
                .unwrap_err()
                .to_string()
                .contains("not an IP address or CIDR")
        );
        assert_eq!(parse_cidr("::1").unwrap().to_string(), "::1/128");
        assert_eq!(
            parse_cidr(" 127.0.0.0/8 ").unwrap().to_string(),
            "127.0.0.0/8"
        );
    }
}
