//! The host side of outbound HTTP (feature `host`): `wasi:http/outgoing-handler`
//! and `wasi:http/types`, linked synchronously for every agent, every request
//! through the guard in [`guard`].
//!
//! An agent is granted outbound HTTP by a non-empty `allowed_hosts`; its
//! limits and credentials come with it ([`HttpGrant`]). An agent without the
//! grant still loads when it imports `wasi:http`, and every request it makes
//! is answered `HttpRequestDenied`. The operator's `[http]` section holds
//! what no agent may set: `allow_private`, the CIDR exceptions to the blocked
//! ranges.
//!
//! # Layout
//! - this module: [`Http`] (the capability), [`HttpGrant`], [`Limits`],
//!   [`HttpAgent`] (one agent's state and counters), the linking;
//! - [`guard`]: the `WasiHttpHooks` implementation and the transport;
//! - [`routes`]: the inbound listener's config and its routes;
//! - [`server`]: the inbound listener, handing requests to guests.

pub mod guard;
pub mod routes;
pub mod server;

/// The `wasi:http` host crate this capability is built on, for the kernel's
/// serving of `wasi:http/incoming-handler`.
pub use wasmtime_wasi_http;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use parking_lot::Mutex;
use toka_capability::{CapError, Capability, Has, OpenCx, View};
use toka_core::{AgentConfig, ConfigError, RuntimeConfig};
use wasmtime::component::Linker;
use wasmtime_wasi_http::p2::bindings as http_bindings;
use wasmtime_wasi_http::{WasiHttp, WasiHttpCtx, WasiHttpCtxView};

use crate::{AddressPolicy, AllowedHost, AllowedHosts};

/// The `[http]` section's name.
pub const SECTION: &str = "http";

/// Defaults of the per-agent limits (each overridable by its `[[agents]]`
/// key, named in [`Limits`]).
pub const DEFAULT_LIMITS: Limits = Limits {
    connect_timeout: Duration::from_secs(5),
    first_byte_timeout: Duration::from_secs(30),
    request_timeout: Duration::from_secs(60),
    max_request_bytes: 8 << 20,
    max_response_bytes: 16 << 20,
    max_concurrent: 16,
    requests_per_sec: 50,
};

/// Most bytes a request or response body limit may be set to (1 GiB).
pub const MAX_BODY_LIMIT: u64 = 1 << 30;
/// Most concurrent requests an agent may be given.
pub const MAX_CONCURRENT: u64 = 1024;
/// Most requests per second an agent may be given.
pub const MAX_REQUESTS_PER_SEC: u64 = 100_000;
/// Most header bytes a request's fields (as `wasi:http` counts them) or a
/// response's header section may hold.
pub const MAX_HEADER_BYTES: usize = 64 << 10;

/// One agent's bounds on outbound HTTP. Each is a value to the guest when
/// exceeded (an `error-code`), never a trap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `http_connect_timeout` (default 5 s): the lookup, the TCP connect and
    /// the TLS handshake, each (`ConnectionTimeout`, `DnsTimeout`).
    pub connect_timeout: Duration,
    /// `http_first_byte_timeout` (default 30 s): from sending to the
    /// response head (`ConnectionReadTimeout`).
    pub first_byte_timeout: Duration,
    /// `http_timeout` (default 60 s): the whole request, body included,
    /// never past the remaining `timeout_ms` of the guest call that made it
    /// (`HttpResponseTimeout`).
    pub request_timeout: Duration,
    /// `http_max_request_bytes` (default 8 MiB): the request body
    /// (`HttpRequestBodySize`).
    pub max_request_bytes: u64,
    /// `http_max_response_bytes` (default 16 MiB): the response body
    /// (`HttpResponseBodySize`).
    pub max_response_bytes: u64,
    /// `http_max_concurrent` (default 16): requests in flight, response
    /// bodies still being read included (`ConnectionLimitReached`).
    pub max_concurrent: u64,
    /// `http_requests_per_sec` (default 50, bursts of as many): new requests
    /// (`ConnectionLimitReached`).
    pub requests_per_sec: u64,
}

impl Default for Limits {
    fn default() -> Self {
        DEFAULT_LIMITS
    }
}

/// A header the host adds to requests for one destination, from the secret
/// store; the guest's own header of that name is removed.
#[derive(Debug, Clone)]
pub struct Credential {
    /// The destinations it is sent to (the allowlist grammar).
    pub host: AllowedHost,
    /// The header, lower case.
    pub header: HeaderName,
    /// The secret's name in the secret store.
    pub secret: String,
    /// The value with `{}` where the secret goes (`"Bearer {}"`).
    pub format: String,
}

/// What `allowed_hosts`, `http_credentials` and the limit keys grant one
/// agent.
#[derive(Debug, Clone)]
pub struct HttpGrant {
    /// The destinations.
    pub hosts: AllowedHosts,
    /// Injected credentials.
    pub credentials: Vec<Credential>,
    /// The limits.
    pub limits: Limits,
}

/// The `http` capability: the operator's address policy and, when some
/// agent has credentials, the secret store.
pub struct Http {
    policy: Arc<AddressPolicy>,
    pins: Arc<Pins>,
    secrets: Option<Arc<toka_secrets::SecretStore>>,
}

/// `[http] resolve`: names the operator pins to addresses, used instead of
/// a lookup (like curl's `--resolve`). The pinned addresses pass the same
/// range check as looked-up ones: a pin never opens a blocked range.
pub type Pins = std::collections::HashMap<String, Vec<std::net::IpAddr>>;

/// Most names `[http] resolve` may pin, and addresses per name.
pub const MAX_PINS: usize = 1024;

fn parse_pins(s: &toka_core::config::Section<'_>) -> Result<Pins, ConfigError> {
    let mut pins = Pins::new();
    let Some(table) = s.get_table("resolve")? else {
        return Ok(pins);
    };
    for name in table.keys() {
        if pins.len() == MAX_PINS {
            return Err(s.invalid("resolve", format!("more than {MAX_PINS} names")));
        }
        let host = crate::target::parse_host(name)
            .map_err(|e| table.invalid(name, format!("`{name}`: {e}")))?;
        let crate::Host::Name(host) = host else {
            return Err(table.invalid(name, format!("`{name}` is an address: pin a name")));
        };
        let addrs = table.get_strings(name)?.unwrap_or_default();
        if addrs.is_empty() || addrs.len() > MAX_PINS {
            return Err(table.invalid(name, format!("1 to {MAX_PINS} addresses")));
        }
        let addrs = addrs
            .iter()
            .map(|a| {
                a.parse::<std::net::IpAddr>()
                    .map_err(|_| table.invalid(name, format!("`{a}` is not an IP address")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        pins.insert(host, addrs);
    }
    Ok(pins)
}

impl std::fmt::Debug for Http {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

fn located(agent: &AgentConfig, e: ConfigError) -> CapError {
    CapError::config(agent, e)
}

/// The `[[agents]]` keys of the capability.
pub const AGENT_KEYS: &[&str] = &[
    "allowed_hosts",
    "http_credentials",
    "http_connect_timeout",
    "http_first_byte_timeout",
    "http_timeout",
    "http_max_request_bytes",
    "http_max_response_bytes",
    "http_max_concurrent",
    "http_requests_per_sec",
];

fn parse_grant(agent: &AgentConfig) -> Result<Option<HttpGrant>, ConfigError> {
    let keys = agent.keys();
    let hosts = keys.get_strings("allowed_hosts")?.unwrap_or_default();
    let has_credentials = keys.contains("http_credentials");
    if hosts.is_empty() && !has_credentials {
        return Ok(None);
    }
    let hosts =
        AllowedHosts::parse(&hosts).map_err(|e| keys.invalid("allowed_hosts", e.to_string()))?;
    let mut limits = DEFAULT_LIMITS;
    let ms = Duration::from_millis(1);
    if let Some(d) = keys.get_duration("http_connect_timeout", ms)? {
        limits.connect_timeout = d;
    }
    if let Some(d) = keys.get_duration("http_first_byte_timeout", ms)? {
        limits.first_byte_timeout = d;
    }
    if let Some(d) = keys.get_duration("http_timeout", ms)? {
        limits.request_timeout = d;
    }
    if let Some(n) = keys.get_uint("http_max_request_bytes", 0, MAX_BODY_LIMIT)? {
        limits.max_request_bytes = n;
    }
    if let Some(n) = keys.get_uint("http_max_response_bytes", 0, MAX_BODY_LIMIT)? {
        limits.max_response_bytes = n;
    }
    if let Some(n) = keys.get_uint("http_max_concurrent", 1, MAX_CONCURRENT)? {
        limits.max_concurrent = n;
    }
    if let Some(n) = keys.get_uint("http_requests_per_sec", 1, MAX_REQUESTS_PER_SEC)? {
        limits.requests_per_sec = n;
    }
    let mut credentials = Vec::new();
    if let Some(value) = keys.get_value("http_credentials")? {
        let bad = |m: String| keys.invalid("http_credentials", m);
        let toml::Value::Array(items) = value else {
            return Err(bad(
                "expected an array of `{ host, header, secret, format }` tables".into(),
            ));
        };
        for (i, item) in items.iter().enumerate() {
            let toml::Value::Table(t) = item else {
                return Err(bad(format!(
                    "[{i}]: expected a table `{{ host, header, secret, format }}`"
                )));
            };
            for k in t.keys() {
                if !["host", "header", "secret", "format"].contains(&k.as_str()) {
                    return Err(bad(format!(
                        "[{i}]: unknown key `{k}` (host, header, secret, format)"
                    )));
                }
            }
            let field = |k: &str| -> Result<Option<&str>, ConfigError> {
                match t.get(k) {
                    None => Ok(None),
                    Some(toml::Value::String(s)) => Ok(Some(s)),
                    Some(_) => Err(bad(format!("[{i}].{k}: expected a string"))),
                }
            };
            let need = |k: &str| -> Result<&str, ConfigError> {
                field(k)?.ok_or_else(|| bad(format!("[{i}]: `{k}` is required")))
            };
            let host =
                AllowedHost::parse(need("host")?).map_err(|e| bad(format!("[{i}].host: {e}")))?;
            let header = HeaderName::try_from(need("header")?.to_ascii_lowercase())
                .map_err(|_| bad(format!("[{i}].header: not a header name")))?;
            if wasmtime_wasi_http::DEFAULT_FORBIDDEN_HEADERS.contains(&header) {
                return Err(bad(format!(
                    "[{i}].header: `{header}` is set by the host itself"
                )));
            }
            let secret = need("secret")?.to_owned();
            toka_secrets::validate_name(&secret).map_err(|e| bad(format!("[{i}].secret: {e}")))?;
            let format = field("format")?.unwrap_or("{}").to_owned();
            if format.matches("{}").count() != 1 {
                return Err(bad(format!(
                    "[{i}].format: must hold `{{}}` exactly once, where the secret goes"
                )));
            }
            credentials.push(Credential {
                host,
                header,
                secret,
                format,
            });
        }
    }
    Ok(Some(HttpGrant {
        hosts,
        credentials,
        limits,
    }))
}

impl Capability for Http {
    const NAME: &'static str = "http";
    const AGENT_KEYS: &'static [&'static str] = AGENT_KEYS;
    const SECTIONS: &'static [&'static str] = &["http"];
    const INTERFACES: &'static [(&'static str, &'static str)] = &[
        (
            "wasi:http/outgoing-handler",
            "wasi:http outbound: the hosts `allowed_hosts` names, through the SSRF guard",
        ),
        (
            "wasi:http/types",
            "wasi:http types (requests, responses, fields, bodies)",
        ),
    ];
    type Grant = HttpGrant;
    type AgentState = HttpAgent;

    fn grant(agent: &AgentConfig) -> Result<Option<HttpGrant>, CapError> {
        parse_grant(agent).map_err(|e| located(agent, e))
    }

    fn open(
        config: &RuntimeConfig,
        granted: &[(&AgentConfig, &HttpGrant)],
        cx: &mut OpenCx,
    ) -> Result<Self, CapError> {
        let (policy, pins) = match config.section(SECTION) {
            None => (AddressPolicy::new(), Pins::new()),
            Some(s) => {
                let shared = |e: ConfigError| CapError::shared(e.to_string());
                // An empty entry is what `["${VAR:-}"]` leaves when VAR is
                // unset: it allows nothing, so one config file serves both a
                // local S3 server and AWS.
                let nets: Vec<String> = s
                    .get_strings("allow_private")
                    .map_err(shared)?
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|n| !n.trim().is_empty())
                    .collect();
                let policy = AddressPolicy::parse(&nets)
                    .map_err(|e| shared(s.invalid("allow_private", e.to_string())))?;
                (policy, parse_pins(&s).map_err(shared)?)
            }
        };
        let secrets = if granted.iter().any(|(_, g)| !g.credentials.is_empty()) {
            Some(toka_secrets::host::store(config, cx)?)
        } else {
            None
        };
        Ok(Http {
            policy: Arc::new(policy),
            pins: Arc::new(pins),
            secrets,
        })
    }

    fn for_agent(&self, agent: &AgentConfig, grant: HttpGrant) -> Result<HttpAgent, CapError> {
        let mut credentials = Vec::new();
        for c in &grant.credentials {
            let store = self.secrets.as_ref().expect("opened for credentials");
            let value = store
                .get(&c.secret)
                .map_err(|e| {
                    CapError::agent(
                        agent,
                        format!("`http_credentials`: secret `{}`: {e}", c.secret),
                    )
                })?
                .ok_or_else(|| {
                    CapError::agent(
                        agent,
                        format!(
                            "`http_credentials`: secret `{}` is not in the secret store",
                            c.secret
                        ),
                    )
                })?;
            let secret = std::str::from_utf8(value.expose()).map_err(|_| {
                CapError::agent(
                    agent,
                    format!("`http_credentials`: secret `{}` is not UTF-8", c.secret),
                )
            })?;
            let mut header =
                HeaderValue::try_from(c.format.replacen("{}", secret, 1)).map_err(|_| {
                    CapError::agent(
                        agent,
                        format!(
                            "`http_credentials`: secret `{}` is not valid in a header",
                            c.secret
                        ),
                    )
                })?;
            header.set_sensitive(true);
            credentials.push(guard::Injected {
                host: c.host.clone(),
                header: c.header.clone(),
                value: header,
            });
        }
        Ok(HttpAgent {
            inner: Arc::new(AgentInner {
                hosts: grant.hosts,
                credentials,
                limits: grant.limits,
                policy: self.policy.clone(),
                pins: self.pins.clone(),
                in_flight: AtomicUsize::new(0),
                rate: Mutex::new(guard::Bucket::new(grant.limits.requests_per_sec)),
                counters: Counters::default(),
            }),
        })
    }

    fn link<T: Has<Self>>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
        // As `wasmtime_wasi_http::p2::add_only_http_to_linker_sync`, but
        // through our view: the kernel links the rest of WASI itself.
        let options = http_bindings::LinkOptions::default();
        http_bindings::sync::http::outgoing_handler::add_to_linker::<T, WasiHttp>(linker, |t| {
            http_view(t.view())
        })?;
        http_bindings::sync::http::types::add_to_linker::<T, WasiHttp>(
            linker,
            &options.into(),
            |t| http_view(t.view()),
        )
    }

    fn describe(grant: &HttpGrant) -> String {
        let hosts: Vec<&str> = grant
            .hosts
            .entries()
            .iter()
            .map(AllowedHost::as_str)
            .collect();
        let l = &grant.limits;
        let mut line = format!(
            "http: {} (connect {}, first byte {}, whole {}, request body {} B, response body {} B, {} concurrent, {}/s)",
            if hosts.is_empty() {
                "no hosts".to_string()
            } else {
                hosts.join(", ")
            },
            humantime(l.connect_timeout),
            humantime(l.first_byte_timeout),
            humantime(l.request_timeout),
            l.max_request_bytes,
            l.max_response_bytes,
            l.max_concurrent,
            l.requests_per_sec,
        );
        for c in &grant.credentials {
            line.push_str(&format!(
                "; {} `{}` from secret `{}`",
                c.host, c.header, c.secret
            ));
        }
        line
    }
}

fn humantime(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// One agent's outbound HTTP state, shared by its instances.
#[derive(Debug)]
pub struct HttpAgent {
    inner: Arc<AgentInner>,
}

impl HttpAgent {
    /// The agent's request counters so far.
    pub fn counters(&self) -> CountersSnapshot {
        self.inner.counters.snapshot()
    }
}

#[derive(Debug)]
pub(crate) struct AgentInner {
    pub(crate) hosts: AllowedHosts,
    pub(crate) credentials: Vec<guard::Injected>,
    pub(crate) limits: Limits,
    pub(crate) policy: Arc<AddressPolicy>,
    pub(crate) pins: Arc<Pins>,
    /// Requests in flight (response bodies still open included).
    pub(crate) in_flight: AtomicUsize,
    pub(crate) rate: Mutex<guard::Bucket>,
    pub(crate) counters: Counters,
}

/// Per-agent request counts.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) requests: AtomicU64,
    pub(crate) denied: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) bytes_sent: AtomicU64,
    pub(crate) bytes_received: AtomicU64,
}

/// A copy of an agent's [`HttpAgent::counters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CountersSnapshot {
    /// Requests made (denied ones included).
    pub requests: u64,
    /// Refused by the guard (grant, allowlist, address, limits).
    pub denied: u64,
    /// Failed after the guard let them through (network, server, timeouts).
    pub failed: u64,
    /// Request body bytes sent.
    pub bytes_sent: u64,
    /// Response body bytes received.
    pub bytes_received: u64,
}

impl Counters {
    fn snapshot(&self) -> CountersSnapshot {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CountersSnapshot {
            requests: r(&self.requests),
            denied: r(&self.denied),
            failed: r(&self.failed),
            bytes_sent: r(&self.bytes_sent),
            bytes_received: r(&self.bytes_received),
        }
    }
}

/// What one instance keeps in [`View::extensions`]: the hooks (which carry
/// the deadline of the call in progress) and `wasi:http`'s context.
#[derive(Clone)]
struct Instance {
    hooks: guard::Hooks,
    ctx: WasiHttpCtx,
}

/// The `wasi:http` view of an instance: its hooks, refreshed with the
/// remaining deadline of the call in progress on every `wasi:http` call.
/// The kernel uses it to hand an inbound request to a guest.
pub fn http_view(view: View<'_, Http>) -> WasiHttpCtxView<'_> {
    let View {
        agent,
        state,
        table,
        wait,
        extensions,
    } = view;
    if extensions.get::<Instance>().is_none() {
        let mut ctx = WasiHttpCtx::new();
        ctx.set_field_size_limit(MAX_HEADER_BYTES);
        extensions.insert(Instance {
            hooks: guard::Hooks::new(agent, state.map(|s| s.inner.clone())),
            ctx,
        });
    }
    let instance = extensions.get_mut::<Instance>().expect("inserted above");
    instance.hooks.set_remaining(wait.remaining());
    WasiHttpCtxView {
        hooks: &mut instance.hooks,
        table,
        ctx: &mut instance.ctx,
    }
}
