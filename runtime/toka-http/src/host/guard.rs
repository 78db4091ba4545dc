//! The guard every outbound request passes: `WasiHttpHooks::send_request`.
//!
//! In order, each refusal an `error-code` to the guest and a log line:
//! 1. the agent holds the grant (`HttpRequestDenied`);
//! 2. the destination parses strictly ([`Target::parse`]) and
//!    `allowed_hosts` allows its (scheme, host, port) (`HttpRequestDenied`);
//! 3. the limits admit it: the declared body size, requests per second,
//!    requests in flight (`HttpRequestBodySize`, `ConnectionLimitReached`);
//! 4. the name is resolved **once** (`DnsError`, `DnsTimeout`), and every
//!    address it resolves to must pass the [`AddressPolicy`]: one blocked
//!    address refuses the request (`DestinationIpProhibited`);
//! 5. the TCP connection goes to exactly those addresses (no second lookup,
//!    so DNS rebinding finds nothing to rebind), and its peer is checked
//!    again;
//! 6. `https` is TLS verified against the host name with the Mozilla roots
//!    of `webpki-roots` (compiled in: the same trust on every machine, no
//!    dependence on a system store that may be absent or edited);
//! 7. HTTP/1.1 through hyper's connection API, which neither reads proxy
//!    variables nor follows redirects: a redirect goes back to the guest,
//!    whose next request passes the guard again;
//! 8. the operator's credentials for the destination replace any header of
//!    that name the guest set.
//!
//! Time: the lookup, the connect and the TLS handshake each get
//! `http_connect_timeout`; the response head `http_first_byte_timeout`; the
//! whole request, its response body included, `http_timeout`, cut short to
//! end before the guest call that made it runs out of `timeout_ms` (so the
//! guest sees `HttpResponseTimeout`, not a deadline fault). Bodies are
//! counted against `http_max_request_bytes` and `http_max_response_bytes` as
//! they stream.
//!
//! Every request is logged once when it ends (agent, method, destination,
//! status, bytes each way, milliseconds, outcome) and counted for its agent;
//! header values and bodies never are.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use super::AgentInner;
use crate::{AllowedHost, Host, Target};

/// How long a refused request's body is still read (and dropped), so a guest
/// writing it sees the refusal instead of a broken stream.
const DRAIN_FOR: Duration = Duration::from_secs(5);

/// How long a connection outlives its request's deadline.
const CONN_GRACE: Duration = Duration::from_secs(1);

/// The guard's time before the calling guest's deadline: at most a tenth of
/// what remains, at most this much.
const DEADLINE_MARGIN: Duration = Duration::from_millis(250);

/// A credential header ready to add (the value is marked sensitive).
#[derive(Debug, Clone)]
pub(crate) struct Injected {
    pub(crate) host: AllowedHost,
    pub(crate) header: HeaderName,
    pub(crate) value: HeaderValue,
}

/// A token bucket of requests per second, holding one second's worth.
#[derive(Debug)]
pub(crate) struct Bucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    pub(crate) fn new(per_sec: u64) -> Self {
        let rate = per_sec.max(1) as f64;
        Bucket {
            rate,
            tokens: rate,
            last: Instant::now(),
        }
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// One instance's hooks: its agent, the agent's state (`None`: not
/// granted), and the deadline of the guest call in progress.
#[derive(Clone)]
pub(crate) struct Hooks {
    agent: Arc<str>,
    inner: Option<Arc<AgentInner>>,
    call_deadline: Instant,
}

impl Hooks {
    pub(crate) fn new(agent: &str, inner: Option<Arc<AgentInner>>) -> Self {
        Hooks {
            agent: agent.into(),
            inner,
            call_deadline: Instant::now(),
        }
    }

    /// The guest call in progress has `remaining` left.
    pub(crate) fn set_remaining(&mut self, remaining: Duration) {
        self.call_deadline = Instant::now() + remaining;
    }
}

type SendFuture = Box<
    dyn Future<
            Output = Result<
                (
                    Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), Error>> + Send>,
                ),
                Error,
            >,
        > + Send,
>;

impl WasiHttpHooks for Hooks {
    fn send_request(
        &mut self,
        request: Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> SendFuture {
        let mut tracked = Tracked::new(self, &request);
        let (parts, body) = request.into_parts();
        match self.admit(&parts, &mut tracked) {
            Err(e) => Box::new(async move {
                // Read what the guest still writes, so it gets to see `e`.
                let limit = tracked
                    .inner
                    .as_ref()
                    .map_or(0, |i| i.limits.max_request_bytes);
                tokio::spawn(drain(body, limit));
                Err(e)
            }),
            Ok(admitted) => Box::new(send(admitted, tracked, parts, body, options)),
        }
    }
}

/// What the synchronous checks let through.
struct Admitted {
    inner: Arc<AgentInner>,
    target: Target,
    deadline: tokio::time::Instant,
}

impl Hooks {
    fn admit(
        &mut self,
        parts: &http::request::Parts,
        tracked: &mut Tracked,
    ) -> Result<Admitted, Error> {
        let Some(inner) = self.inner.clone() else {
            return Err(tracked.deny(
                "agent holds no `http` grant (`allowed_hosts`)",
                Error::HttpRequestDenied,
            ));
        };
        inner.counters.requests.fetch_add(1, Ordering::Relaxed);
        let scheme = parts.uri.scheme_str().unwrap_or("");
        let authority = parts.uri.authority().map_or("", |a| a.as_str());
        let target = match Target::parse(scheme, authority) {
            Ok(t) => t,
            Err(e) => return Err(tracked.deny(&e.to_string(), Error::HttpRequestDenied)),
        };
        tracked.host = target.to_string();
        if !inner.hosts.allows(&target) {
            return Err(tracked.deny("not in `allowed_hosts`", Error::HttpRequestDenied));
        }
        let limits = inner.limits;
        if let Some(n) = content_length(&parts.headers)
            && n > limits.max_request_bytes
        {
            return Err(tracked.deny(
                "request body over `http_max_request_bytes`",
                Error::HttpRequestBodySize(Some(limits.max_request_bytes)),
            ));
        }
        let now = Instant::now();
        let remaining = self.call_deadline.saturating_duration_since(now);
        let margin = (remaining / 10).min(DEADLINE_MARGIN);
        let budget = limits.request_timeout.min(remaining.saturating_sub(margin));
        if budget.is_zero() {
            return Err(tracked.deny(
                "the guest call has no time left",
                Error::HttpResponseTimeout,
            ));
        }
        if !inner.rate.lock().take() {
            return Err(tracked.deny(
                "over `http_requests_per_sec`",
                Error::ConnectionLimitReached,
            ));
        }
        let before = inner.in_flight.fetch_add(1, Ordering::AcqRel);
        tracked.permit = true;
        if before as u64 >= limits.max_concurrent {
            return Err(tracked.deny("over `http_max_concurrent`", Error::ConnectionLimitReached));
        }
        Ok(Admitted {
            inner,
            target,
            deadline: tokio::time::Instant::from_std(now + budget),
        })
    }
}

/// The `content-length` a head declares, if it is one number.
pub(crate) fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Read and drop up to `limit` bytes of `body`, for at most [`DRAIN_FOR`].
async fn drain(mut body: WasiBody, limit: u64) {
    let _ = tokio::time::timeout(DRAIN_FOR, async {
        let mut read = 0u64;
        while let Some(Ok(frame)) = body.frame().await {
            if let Some(data) = frame.data_ref() {
                read += data.len() as u64;
                if read > limit {
                    return;
                }
            }
        }
    })
    .await;
}

async fn send(
    admitted: Admitted,
    mut tracked: Tracked,
    parts: http::request::Parts,
    body: WasiBody,
    options: Option<RequestOptions>,
) -> Result<
    (
        Response<WasiBody>,
        Box<dyn Future<Output = Result<(), Error>> + Send>,
    ),
    Error,
> {
    let deadline = admitted.deadline;
    let limit = admitted.inner.limits.max_response_bytes;
    let result = tokio::time::timeout_at(
        deadline,
        transport(&admitted, &mut tracked, parts, body, options),
    )
    .await
    .unwrap_or(Err(Failure::Error(
        "past `http_timeout` or the guest call's deadline",
        Error::HttpResponseTimeout,
    )));
    match result {
        Ok(response) => {
            tracked.status = Some(response.status().as_u16());
            if let Some(n) = content_length(response.headers())
                && n > limit
            {
                tracked.fail("response body over `http_max_response_bytes`");
                return Err(Error::HttpResponseBodySize(Some(limit)));
            }
            let response = response.map(|incoming| {
                ResponseBody {
                    incoming,
                    limit,
                    deadline: Box::pin(tokio::time::sleep_until(deadline)),
                    done: false,
                    tracked,
                }
                .boxed_unsync()
            });
            Ok((response, Box::new(async { Ok(()) })))
        }
        Err(Failure::Denied(why, e)) => Err(tracked.deny(why, e)),
        Err(Failure::Error(why, e)) => {
            tracked.fail(why);
            Err(e)
        }
    }
}

/// Why a request that passed admission did not get a response.
enum Failure {
    /// The guard refused it (an address check).
    Denied(&'static str, Error),
    /// The network, the server or a timeout failed it.
    Error(&'static str, Error),
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

static TLS: LazyLock<Arc<rustls::ClientConfig>> = LazyLock::new(|| {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.into(),
    };
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    Arc::new(config)
});

async fn resolve(name: &str, port: u16, timeout: Duration) -> Result<Vec<SocketAddr>, Failure> {
    match tokio::time::timeout(timeout, tokio::net::lookup_host((name, port))).await {
        Err(_) => Err(Failure::Error("DNS lookup timed out", Error::DnsTimeout)),
        Ok(Err(_)) => Err(Failure::Error(
            "name did not resolve",
            Error::DnsError {
                rcode: Some("name not resolved".into()),
                info_code: None,
            },
        )),
        Ok(Ok(addrs)) => {
            let addrs: Vec<SocketAddr> = addrs.collect();
            if addrs.is_empty() {
                return Err(Failure::Error(
                    "name resolved to no address",
                    Error::DnsError {
                        rcode: Some("no address".into()),
                        info_code: None,
                    },
                ));
            }
            Ok(addrs)
        }
    }
}

fn min_opt(limit: Duration, guest: Option<Duration>) -> Duration {
    guest.map_or(limit, |g| g.min(limit))
}

async fn transport(
    admitted: &Admitted,
    tracked: &mut Tracked,
    mut parts: http::request::Parts,
    body: WasiBody,
    options: Option<RequestOptions>,
) -> Result<Response<hyper::body::Incoming>, Failure> {
    let Admitted {
        inner,
        target,
        deadline,
    } = admitted;
    let limits = inner.limits;
    let connect_timeout = min_opt(
        limits.connect_timeout,
        options.and_then(|o| o.connect_timeout),
    );
    let first_byte = min_opt(
        limits.first_byte_timeout,
        options.and_then(|o| o.first_byte_timeout),
    );

    let addrs = match &target.host {
        Host::Ip(ip) => vec![SocketAddr::new(*ip, target.port)],
        Host::Name(name) => match inner.pins.get(name) {
            Some(pinned) => pinned
                .iter()
                .map(|ip| SocketAddr::new(*ip, target.port))
                .collect(),
            None => resolve(name, target.port, connect_timeout).await?,
        },
    };
    for addr in &addrs {
        if let Err(blocked) = inner.policy.check(addr.ip()) {
            tracked.blocked = Some(blocked.to_string());
            return Err(Failure::Denied(
                "resolved to a blocked address",
                Error::DestinationIpProhibited,
            ));
        }
    }
    let stream = match tokio::time::timeout(connect_timeout, TcpStream::connect(&addrs[..])).await {
        Err(_) => {
            return Err(Failure::Error(
                "connect timed out",
                Error::ConnectionTimeout,
            ));
        }
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return Err(Failure::Error(
                "connection refused",
                Error::ConnectionRefused,
            ));
        }
        Ok(Err(e)) => return Err(Failure::Error("connect failed", Error::Connect(e))),
        Ok(Ok(s)) => s,
    };
    // Defence in depth: the socket went where the check looked.
    match stream.peer_addr() {
        Ok(peer) if addrs.contains(&peer) => {}
        _ => {
            return Err(Failure::Denied(
                "connected peer was not a checked address",
                Error::DestinationIpProhibited,
            ));
        }
    }
    let _ = stream.set_nodelay(true);
    let io: Box<dyn Io> = if target.scheme == "https" {
        let name = match &target.host {
            Host::Ip(ip) => rustls::pki_types::ServerName::IpAddress((*ip).into()),
            Host::Name(n) => rustls::pki_types::ServerName::try_from(n.clone()).map_err(|_| {
                Failure::Error("not a TLS server name", Error::HttpRequestUriInvalid)
            })?,
        };
        let connector = tokio_rustls::TlsConnector::from(TLS.clone());
        match tokio::time::timeout(connect_timeout, connector.connect(name, stream)).await {
            Err(_) => {
                return Err(Failure::Error(
                    "TLS handshake timed out",
                    Error::ConnectionTimeout,
                ));
            }
            Ok(Err(e)) => return Err(Failure::Error("TLS failed", Error::Tls(e))),
            Ok(Ok(tls)) => Box::new(tls),
        }
    } else {
        Box::new(stream)
    };
    let handshake = hyper::client::conn::http1::Builder::new()
        .max_buf_size(super::MAX_HEADER_BYTES.max(8192))
        .handshake(TokioIo::new(io));
    let (mut sender, conn) = match tokio::time::timeout(connect_timeout, handshake).await {
        Err(_) => {
            return Err(Failure::Error(
                "HTTP handshake timed out",
                Error::ConnectionTimeout,
            ));
        }
        Ok(Err(e)) => return Err(Failure::Error("HTTP handshake failed", Error::Hyper(e))),
        Ok(Ok(pair)) => pair,
    };
    // The connection lives at most as long as the request may (and a grace
    // second, so the request's own deadline is what the guest is told).
    tokio::spawn(tokio::time::timeout_at(*deadline + CONN_GRACE, conn));

    // Origin-form on the wire; `Host` was set from the authority by wasmtime.
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    parts.uri = http::Uri::builder()
        .path_and_query(path)
        .build()
        .map_err(|_| Failure::Error("bad path", Error::HttpRequestUriInvalid))?;
    for c in inner.credentials.iter().filter(|c| c.host.allows(target)) {
        parts.headers.remove(&c.header);
        parts.headers.insert(c.header.clone(), c.value.clone());
    }
    let over = Arc::new(AtomicBool::new(false));
    let body = if content_length(&parts.headers).is_none()
        && matches!(parts.method, Method::GET | Method::HEAD | Method::CONNECT)
    {
        // hyper sends no body for these and drops it, which a guest still
        // writing one would see as a failure: read it apart instead.
        tokio::spawn(drain(body, limits.max_request_bytes));
        http_body_util::Empty::<Bytes>::new()
            .map_err(|never| match never {})
            .boxed_unsync()
    } else {
        RequestBody {
            inner: body,
            limit: limits.max_request_bytes,
            sent: 0,
            counted: tracked.sent.clone(),
            over: over.clone(),
        }
        .boxed_unsync()
    };
    let request = Request::from_parts(parts, body);
    match tokio::time::timeout(first_byte, sender.send_request(request)).await {
        Err(_) => Err(Failure::Error(
            "no response head within `http_first_byte_timeout`",
            Error::ConnectionReadTimeout,
        )),
        Ok(Err(_)) if over.load(Ordering::Relaxed) => Err(Failure::Denied(
            "request body over `http_max_request_bytes`",
            Error::HttpRequestBodySize(Some(limits.max_request_bytes)),
        )),
        Ok(Err(e)) if e.is_parse_too_large() => Err(Failure::Error(
            "response head too large",
            Error::HttpResponseHeaderSectionSize(None),
        )),
        Ok(Err(_)) if tokio::time::Instant::now() >= *deadline => Err(Failure::Error(
            "past `http_timeout` or the guest call's deadline",
            Error::HttpResponseTimeout,
        )),
        Ok(Err(e)) => Err(Failure::Error("request failed", Error::Hyper(e))),
        Ok(Ok(response)) => Ok(response),
    }
}

/// The guest's request body, counted against `http_max_request_bytes`.
struct RequestBody {
    inner: WasiBody,
    limit: u64,
    sent: u64,
    counted: Arc<AtomicU64>,
    over: Arc<AtomicBool>,
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            let n = data.len() as u64;
            self.sent += n;
            self.counted.fetch_add(n, Ordering::Relaxed);
            if self.sent > self.limit {
                self.over.store(true, Ordering::Relaxed);
                return Poll::Ready(Some(Err(Error::HttpRequestBodySize(Some(self.limit)))));
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The server's response body, cut at `http_max_response_bytes` and at the
/// request's deadline; it holds the request's place in `http_max_concurrent`
/// and its log record until it ends or is dropped.
struct ResponseBody {
    incoming: hyper::body::Incoming,
    limit: u64,
    deadline: Pin<Box<tokio::time::Sleep>>,
    done: bool,
    tracked: Tracked,
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            this.done = true;
            this.tracked
                .fail("response body past `http_timeout` or the guest call's deadline");
            return Poll::Ready(Some(Err(Error::HttpResponseTimeout)));
        }
        match Pin::new(&mut this.incoming).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                this.done = true;
                this.tracked.fail("response body failed");
                Poll::Ready(Some(Err(Error::Hyper(e))))
            }
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.tracked.received += data.len() as u64;
                    if this.tracked.received > this.limit {
                        this.done = true;
                        this.tracked
                            .fail("response body over `http_max_response_bytes`");
                        return Poll::Ready(Some(Err(Error::HttpResponseBodySize(Some(
                            this.limit,
                        )))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }
}

/// One request's log record and place in `http_max_concurrent`: logged and
/// released when dropped, however the request ended.
struct Tracked {
    agent: Arc<str>,
    inner: Option<Arc<AgentInner>>,
    method: Method,
    host: String,
    status: Option<u16>,
    sent: Arc<AtomicU64>,
    received: u64,
    started: Instant,
    /// Why the guard refused it.
    denied: Option<String>,
    /// Why it failed after the guard let it through.
    failed: Option<&'static str>,
    /// The blocked address, when that was the refusal.
    blocked: Option<String>,
    /// Whether it holds a place in `in_flight`.
    permit: bool,
}

impl Tracked {
    fn new(hooks: &Hooks, request: &Request<WasiBody>) -> Self {
        // Until the destination parses, the log names what the guest wrote,
        // bounded and escaped.
        let raw = request.uri().authority().map_or("", |a| a.as_str());
        let raw: String = raw.chars().take(128).flat_map(char::escape_debug).collect();
        Tracked {
            agent: hooks.agent.clone(),
            inner: hooks.inner.clone(),
            method: request.method().clone(),
            host: raw,
            status: None,
            sent: Arc::default(),
            received: 0,
            started: Instant::now(),
            denied: None,
            failed: None,
            blocked: None,
            permit: false,
        }
    }

    fn deny(&mut self, why: &str, e: Error) -> Error {
        self.denied = Some(why.to_owned());
        e
    }

    fn fail(&mut self, why: &'static str) {
        self.failed.get_or_insert(why);
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let sent = self.sent.load(Ordering::Relaxed);
        if let Some(inner) = &self.inner {
            let c = &inner.counters;
            if self.denied.is_some() {
                c.denied.fetch_add(1, Ordering::Relaxed);
            } else if self.failed.is_some() {
                c.failed.fetch_add(1, Ordering::Relaxed);
            }
            c.bytes_sent.fetch_add(sent, Ordering::Relaxed);
            c.bytes_received.fetch_add(self.received, Ordering::Relaxed);
            if self.permit {
                inner.in_flight.fetch_sub(1, Ordering::AcqRel);
            }
        }
        let ms = self.started.elapsed().as_millis() as u64;
        let status = self.status.unwrap_or(0);
        let (agent, method, host) = (&*self.agent, self.method.as_str(), self.host.as_str());
        if let Some(why) = &self.denied {
            let blocked = self.blocked.as_deref().unwrap_or("");
            tracing::warn!(target: "toka::http", agent, method, host, why = %why, blocked, "http request denied");
        } else if let Some(why) = self.failed {
            tracing::warn!(target: "toka::http", agent, method, host, status, sent, received = self.received, ms, why, "http request failed");
        } else {
            tracing::info!(target: "toka::http", agent, method, host, status, sent, received = self.received, ms, "http request");
        }
    }
}
