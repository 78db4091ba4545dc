//! The inbound half of `[http]`: the listener's address and bounds, and the
//! routes that map a request path to the agent that serves it.
//!
//! ```toml
//! [http]
//! listen = "127.0.0.1:8080"   # off unless set
//! max_body_bytes = 1048576    # default 1 MiB; larger bodies get 413 before any guest runs
//! max_headers = 64            # default 64 header fields; more gets 431
//! header_timeout = "10s"      # a client that has not sent its whole head by then is cut off
//! body_timeout = "10s"        # nor its whole body (408)
//! max_connections = 1024      # open at once (idle keep-alive included); more are closed at once
//!
//! [[http.routes]]
//! path = "/webhooks/stripe"   # exact: only this path
//! agent = "StripeProvider"
//! max_concurrent = 32         # default 32 requests in the guest at once; more get 503
//!
//! [[http.routes]]
//! path = "/api/..."           # prefix: `/api` and everything under `/api/`
//! agent = "Api"
//! ```
//!
//! Routing looks at the path only, never at the `Host` header (which a
//! client chooses freely: Spin's CVE-2024-32980). An exact route wins over
//! a prefix; among prefixes the longest wins; no match is 404 without any
//! guest running. Two routes with the same path are a config error.

use std::net::SocketAddr;
use std::time::Duration;

use toka_core::config::Section;
use toka_core::{ConfigError, RuntimeConfig};

/// The keys of `[http]` (outbound's `allow_private` included).
pub const SECTION_KEYS: &[&str] = &[
    "allow_private",
    "resolve",
    "listen",
    "max_body_bytes",
    "max_headers",
    "header_timeout",
    "body_timeout",
    "max_connections",
    "routes",
];

/// Default cap on a request body (1 MiB).
pub const DEFAULT_MAX_BODY_BYTES: u64 = 1 << 20;
/// Most a body cap may be set to (64 MiB): bodies are buffered before the
/// guest runs, so this bounds the host memory one request can hold.
pub const MAX_BODY_BYTES: u64 = 64 << 20;
/// Default cap on header fields per request.
pub const DEFAULT_MAX_HEADERS: usize = 64;
/// Most header fields a request may be allowed.
pub const MAX_HEADERS: u64 = 512;
/// Most bytes of a request head (request line and headers): hyper's read
/// buffer, so a longer head is refused (431) without growing it.
pub const MAX_HEAD_BYTES: usize = 64 << 10;
/// Default time a client has to send its request head, then its body.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default cap on connections open at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Most connections the listener may be allowed at once.
pub const MAX_CONNECTIONS: u64 = 65_536;
/// Default cap on requests one route runs at once.
pub const DEFAULT_ROUTE_CONCURRENCY: usize = 32;
/// Most requests one route may run at once.
pub const MAX_ROUTE_CONCURRENCY: u64 = 4096;
/// Longest route path accepted in config.
pub const MAX_PATH_LEN: usize = 1024;

/// One `[[http.routes]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The path as written (`/webhooks/stripe`, `/api/...`).
    pub path: String,
    /// The path without `/...` for a prefix route.
    pub base: String,
    /// Whether the route matches everything under `base` too.
    pub prefix: bool,
    /// The agent that serves it.
    pub agent: String,
    /// Requests in the guest at once before 503.
    pub max_concurrent: usize,
    /// Where the entry is, for errors (`config/x.toml:12:1`).
    pub location: String,
}

impl Route {
    /// Whether `path` (a request's path, query removed) is this route's.
    pub fn matches(&self, path: &str) -> bool {
        if !self.prefix {
            return path == self.base;
        }
        if self.base.is_empty() {
            return true;
        }
        match path.strip_prefix(self.base.as_str()) {
            Some(rest) => rest.is_empty() || rest.starts_with('/'),
            None => false,
        }
    }
}

/// The listener and its routes, from `[http]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    /// `listen`.
    pub listen: SocketAddr,
    /// `max_body_bytes`.
    pub max_body_bytes: u64,
    /// `max_headers`.
    pub max_headers: usize,
    /// `header_timeout`.
    pub header_timeout: Duration,
    /// `body_timeout`.
    pub body_timeout: Duration,
    /// `max_connections`: connections open at once, idle keep-alive ones
    /// included; one more is closed as soon as it is accepted.
    pub max_connections: usize,
    /// `[[http.routes]]`, in file order.
    pub routes: Vec<Route>,
}

impl Inbound {
    /// The listener `config` asks for, if its `[http]` has `listen`. Routes
    /// naming an agent the config does not have are an error here.
    pub fn from_config(config: &RuntimeConfig) -> Result<Option<Inbound>, ConfigError> {
        let Some(s) = config.section(super::SECTION) else {
            return Ok(None);
        };
        let mut inbound = Self::parse(&s)?;
        if let Some(inbound) = &mut inbound {
            // A provider's `webhook` route, beside the written ones.
            for r in &config.service_routes {
                let (base, prefix) = check_path(&r.path).map_err(|m| {
                    s.invalid("routes", format!("{} (at {}): {m}", r.agent, r.location))
                })?;
                if let Some(j) = inbound.routes.iter().position(|w| w.path == r.path) {
                    return Err(s.invalid(
                        "routes",
                        format!(
                            "routes[{j}]: `{}` is the webhook of `{}` (at {})",
                            r.path, r.agent, r.location
                        ),
                    ));
                }
                inbound.routes.push(Route {
                    path: r.path.clone(),
                    base,
                    prefix,
                    agent: r.agent.clone(),
                    max_concurrent: DEFAULT_ROUTE_CONCURRENCY,
                    location: r.location.clone(),
                });
            }
            for (i, route) in inbound.routes.iter().enumerate() {
                if !config.agents.iter().any(|a| a.name == route.agent) {
                    return Err(s.invalid(
                        "routes",
                        format!(
                            "routes[{i}] (at {}): no agent is named `{}`",
                            route.location, route.agent
                        ),
                    ));
                }
            }
        }
        Ok(inbound)
    }

    /// Parse the inbound keys of an `[http]` section; `None` without
    /// `listen` (routes without a listener are an error: they would never
    /// be served).
    pub fn parse(s: &Section<'_>) -> Result<Option<Inbound>, ConfigError> {
        let routes = parse_routes(s)?;
        let Some(listen) = s.get_str("listen")? else {
            if !routes.is_empty() {
                return Err(s.invalid(
                    "routes",
                    "routes need a listener: set `listen` (for example \"127.0.0.1:8080\")",
                ));
            }
            return Ok(None);
        };
        let listen: SocketAddr = listen.parse().map_err(|_| {
            s.invalid(
                "listen",
                format!(
                    "`{listen}` is not an address and port (\"127.0.0.1:8080\", \"[::1]:8080\")"
                ),
            )
        })?;
        let max_body_bytes = s
            .get_uint("max_body_bytes", 0, MAX_BODY_BYTES)?
            .unwrap_or(DEFAULT_MAX_BODY_BYTES);
        let max_headers = s
            .get_uint("max_headers", 1, MAX_HEADERS)?
            .map_or(DEFAULT_MAX_HEADERS, |n| n as usize);
        let ms = Duration::from_millis(1);
        let header_timeout = s
            .get_duration("header_timeout", ms)?
            .unwrap_or(DEFAULT_READ_TIMEOUT);
        let body_timeout = s
            .get_duration("body_timeout", ms)?
            .unwrap_or(DEFAULT_READ_TIMEOUT);
        let max_connections = s
            .get_uint("max_connections", 1, MAX_CONNECTIONS)?
            .map_or(DEFAULT_MAX_CONNECTIONS, |n| n as usize);
        Ok(Some(Inbound {
            listen,
            max_body_bytes,
            max_headers,
            header_timeout,
            body_timeout,
            max_connections,
            routes,
        }))
    }

    /// The route for a request `path`: exact first, then the longest prefix.
    pub fn route(&self, path: &str) -> Option<usize> {
        let mut best: Option<(usize, usize)> = None;
        for (i, r) in self.routes.iter().enumerate() {
            if !r.matches(path) {
                continue;
            }
            if !r.prefix {
                return Some(i);
            }
            if best.is_none_or(|(_, len)| r.base.len() > len) {
                best = Some((i, r.base.len()));
            }
        }
        best.map(|(i, _)| i)
    }
}

fn parse_routes(s: &Section<'_>) -> Result<Vec<Route>, ConfigError> {
    let Some(value) = s.get_value("routes")? else {
        return Ok(Vec::new());
    };
    let bad = |m: String| s.invalid("routes", m);
    let toml::Value::Array(items) = value else {
        return Err(bad(
            "expected `[[http.routes]]` tables with `path` and `agent`".into(),
        ));
    };
    let mut routes: Vec<Route> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let toml::Value::Table(t) = item else {
            return Err(bad(format!(
                "routes[{i}]: expected a table with `path` and `agent`"
            )));
        };
        for k in t.keys() {
            if !["path", "agent", "max_concurrent"].contains(&k.as_str()) {
                return Err(bad(format!(
                    "routes[{i}]: unknown key `{k}` (path, agent, max_concurrent)"
                )));
            }
        }
        let string = |k: &str| -> Result<&str, ConfigError> {
            match t.get(k) {
                Some(toml::Value::String(v)) => Ok(v),
                Some(_) => Err(bad(format!("routes[{i}].{k}: expected a string"))),
                None => Err(bad(format!("routes[{i}]: `{k}` is required"))),
            }
        };
        let path = string("path")?;
        let agent = string("agent")?.to_owned();
        let (base, prefix) = check_path(path).map_err(|m| bad(format!("routes[{i}].path: {m}")))?;
        let max_concurrent = match t.get("max_concurrent") {
            None => DEFAULT_ROUTE_CONCURRENCY,
            Some(toml::Value::Integer(n)) if (1..=MAX_ROUTE_CONCURRENCY as i64).contains(n) => {
                *n as usize
            }
            Some(_) => {
                return Err(bad(format!(
                    "routes[{i}].max_concurrent: expected an integer in 1..={MAX_ROUTE_CONCURRENCY}"
                )));
            }
        };
        if let Some(j) = routes.iter().position(|r| r.path == path) {
            return Err(bad(format!(
                "routes[{i}].path: `{path}` is already routed by routes[{j}]"
            )));
        }
        routes.push(Route {
            path: path.to_owned(),
            base,
            prefix,
            agent,
            max_concurrent,
            location: s.location(),
        });
    }
    Ok(routes)
}

/// `(base, prefix)` of a route path: it starts with `/`, holds no query,
/// fragment, `..`/`.` segment, empty segment or `%`, and a prefix route
/// ends in `/...`.
fn check_path(path: &str) -> Result<(String, bool), String> {
    if path.len() > MAX_PATH_LEN {
        return Err(format!("longer than {MAX_PATH_LEN} bytes"));
    }
    if !path.starts_with('/') {
        return Err(format!("`{path}` must start with `/`"));
    }
    let (base, prefix) = match path.strip_suffix("/...") {
        Some(base) => (base, true),
        None => (path, false),
    };
    if base.contains(['?', '#', '%', '*'])
        || !base.is_ascii()
        || base.chars().any(|c| c.is_ascii_control() || c == ' ')
    {
        return Err(format!(
            "`{path}` may hold only plain path characters (no `?`, `#`, `%`, `*`, spaces or non-ASCII); end it with `/...` for a prefix"
        ));
    }
    let segments: Vec<&str> = base.split('/').skip(1).collect();
    let trailing_slash_root = base == "/";
    if !trailing_slash_root
        && !base.is_empty()
        && segments
            .iter()
            .any(|s| s.is_empty() || *s == "." || *s == "..")
    {
        return Err(format!("`{path}` has an empty, `.` or `..` segment"));
    }
    let base = if prefix && base == "/" { "" } else { base };
    Ok((base.to_owned(), prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(path: &str) -> Route {
        let (base, prefix) = check_path(path).unwrap();
        Route {
            path: path.into(),
            base,
            prefix,
            agent: "A".into(),
            max_concurrent: 1,
            location: String::new(),
        }
    }

    #[test]
    fn exact_routes_match_only_their_path() {
        let r = route("/webhooks/stripe");
        assert!(r.matches("/webhooks/stripe"));
        for other in ["/webhooks/stripe/", "/webhooks/stripex", "/webhooks", "/"] {
            assert!(!r.matches(other), "{other}");
        }
    }

    #[test]
    fn prefix_routes_match_whole_segments() {
        let r = route("/api/...");
        for yes in ["/api", "/api/", "/api/v1/x"] {
            assert!(r.matches(yes), "{yes}");
        }
        for no in ["/apix", "/ap", "/"] {
            assert!(!r.matches(no), "{no}");
        }
        let all = route("/...");
        assert!(all.matches("/") && all.matches("/anything/at/all"));
    }

    #[test]
    fn exact_beats_prefix_and_the_longest_prefix_wins() {
        let inbound = Inbound {
            listen: "127.0.0.1:0".parse().unwrap(),
            max_body_bytes: 1,
            max_headers: 1,
            header_timeout: DEFAULT_READ_TIMEOUT,
            body_timeout: DEFAULT_READ_TIMEOUT,
            max_connections: 1,
            routes: vec![
                route("/..."),
                route("/a/..."),
                route("/a/b/..."),
                route("/a/b"),
            ],
        };
        assert_eq!(inbound.route("/a/b"), Some(3));
        assert_eq!(inbound.route("/a/b/c"), Some(2));
        assert_eq!(inbound.route("/a/x"), Some(1));
        assert_eq!(inbound.route("/z"), Some(0));
        let none = Inbound {
            routes: vec![route("/a")],
            ..inbound
        };
        assert_eq!(none.route("/b"), None);
    }

    #[test]
    fn route_paths_are_checked() {
        for bad in [
            "webhooks", "/a/../b", "/a//b", "/a?x=1", "/a%2f", "/a/*", "/a b", "/é",
        ] {
            assert!(check_path(bad).is_err(), "{bad}");
        }
        assert_eq!(check_path("/").unwrap(), ("/".into(), false));
        assert_eq!(check_path("/...").unwrap(), ("".into(), true));
    }
}
