//! The inbound listener: hyper HTTP/1.1 on tokio, every bound checked
//! before a guest runs, each request handed to a [`Handler`] on a blocking
//! thread (a sync guest call on a tokio worker panics: wasmtime #11339).
//!
//! What a client gets without any guest running:
//! - 404 for a path no route matches;
//! - 413 for a body over `max_body_bytes` (by `content-length` before
//!   reading, or while reading);
//! - 431 for more than `max_headers` header fields or a head over
//!   [`MAX_HEAD_BYTES`](super::routes::MAX_HEAD_BYTES);
//! - 503 (with `retry-after: 1`) when the route already runs
//!   `max_concurrent` requests: refused at once, never queued;
//! - 408 when the body does not arrive within `body_timeout`; a head that
//!   does not arrive within `header_timeout` closes the connection;
//! - a connection past `max_connections` open is closed as it is accepted.
//!
//! Then the guest answers through its `response-outparam`; a guest that
//! faults before answering gets 500, not a hang (its deadline bounds the
//! wait). The request's URI is rebuilt on the operator's `listen` address,
//! so the guest's `authority` is never the client's `Host` header, and
//! `host` is among the headers `wasi:http` never shows a guest.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, oneshot};
use wasmtime_wasi_http::p2::bindings::http::types::ErrorCode;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use super::guard::content_length;
use super::routes::{Inbound, MAX_HEAD_BYTES};

/// Where the guest's answer goes: the sender a `response-outparam` wraps.
pub type Respond = oneshot::Sender<Result<Response<HyperOutgoingBody>, ErrorCode>>;

/// One request for a guest: buffered and bounded, its URI on the listener's
/// own address.
#[derive(Debug)]
pub struct Call {
    /// The request (its body already read, within `max_body_bytes`).
    pub request: Request<Full<Bytes>>,
    /// Where the guest's response goes.
    pub respond: Respond,
}

/// Why a [`Handler`] served no response.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Refused {
    /// The agent cannot take requests now (its module is still compiling,
    /// or failed to load): 503.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The guest faulted (trap, deadline, fuel, memory): 500. The handler
    /// has logged and dead-lettered it.
    #[error("{0}")]
    Fault(String),
}

/// What runs a route's guest.
pub trait Handler: Send + Sync + 'static {
    /// Serve `call` with the agent of route `route` (an index into
    /// [`Inbound::routes`]). Called on a blocking thread; returns when the
    /// guest call has returned.
    fn handle(&self, route: usize, call: Call) -> Result<(), Refused>;
}

/// Counts of what the listener answered, per route and overall.
#[derive(Debug, Default)]
pub struct Stats {
    /// Requests that reached a route's guest.
    pub served: AtomicU64,
    /// 404: no route.
    pub not_found: AtomicU64,
    /// 413: body too large.
    pub too_large: AtomicU64,
    /// 503: a route at its concurrency cap (or its agent unavailable).
    pub busy: AtomicU64,
    /// 408: body not received in time.
    pub timed_out: AtomicU64,
    /// 500: the guest faulted or answered an error code.
    pub failed: AtomicU64,
    /// Connections closed at accept: `max_connections` were open.
    pub refused_connections: AtomicU64,
}

/// A copy of [`Stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// See [`Stats::served`].
    pub served: u64,
    /// See [`Stats::not_found`].
    pub not_found: u64,
    /// See [`Stats::too_large`].
    pub too_large: u64,
    /// See [`Stats::busy`].
    pub busy: u64,
    /// See [`Stats::timed_out`].
    pub timed_out: u64,
    /// See [`Stats::failed`].
    pub failed: u64,
    /// See [`Stats::refused_connections`].
    pub refused_connections: u64,
}

impl Stats {
    /// The counts so far.
    pub fn snapshot(&self) -> StatsSnapshot {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            served: r(&self.served),
            not_found: r(&self.not_found),
            too_large: r(&self.too_large),
            busy: r(&self.busy),
            timed_out: r(&self.timed_out),
            failed: r(&self.failed),
            refused_connections: r(&self.refused_connections),
        }
    }
}

struct Shared {
    inbound: Inbound,
    /// `http://{listen}`: the authority every request's URI gets.
    origin: String,
    handler: Arc<dyn Handler>,
    permits: Vec<Arc<Semaphore>>,
    stats: Arc<Stats>,
}

/// A bound listener, not yet accepting.
pub struct Server {
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("listen", &self.shared.inbound.listen)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Bind `inbound.listen` now (so an address in use is a start-up
    /// error), serving through `handler` once [`Server::run`] runs.
    pub fn bind(inbound: Inbound, handler: Arc<dyn Handler>) -> std::io::Result<Server> {
        let listener = std::net::TcpListener::bind(inbound.listen)?;
        listener.set_nonblocking(true)?;
        let bound = listener.local_addr()?;
        let permits = inbound
            .routes
            .iter()
            .map(|r| Arc::new(Semaphore::new(r.max_concurrent)))
            .collect();
        Ok(Server {
            listener,
            shared: Arc::new(Shared {
                origin: format!("http://{bound}"),
                inbound,
                handler,
                permits,
                stats: Arc::default(),
            }),
        })
    }

    /// The address it listens on (the port chosen, when `listen` had 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Its counters.
    pub fn stats(&self) -> Arc<Stats> {
        self.shared.stats.clone()
    }

    /// Accept and serve until `stop` completes; connections in progress are
    /// dropped with the task. Must run inside a tokio runtime.
    pub async fn run(self, stop: impl Future<Output = ()>) -> std::io::Result<()> {
        let listener = TcpListener::from_std(self.listener)?;
        let shared = self.shared;
        tracing::info!(listen = %shared.origin, routes = shared.inbound.routes.len(), "http listener started");
        let mut connections = tokio::task::JoinSet::new();
        let open = Arc::new(Semaphore::new(shared.inbound.max_connections));
        tokio::pin!(stop);
        loop {
            let (stream, peer) = tokio::select! {
                _ = &mut stop => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(error) => {
                        // Out of descriptors and the like: keep serving the
                        // connections already open.
                        tracing::warn!(%error, "http accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                        continue;
                    }
                },
            };
            // Reap finished connection tasks so the set stays small.
            while connections.try_join_next().is_some() {}
            // Idle keep-alive connections hold a place too: without a cap a
            // client could hold descriptors until the process has none.
            let Ok(place) = open.clone().try_acquire_owned() else {
                shared
                    .stats
                    .refused_connections
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%peer, "http connection refused: max_connections open");
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let shared = shared.clone();
            connections.spawn(async move {
                let _place = place;
                let mut builder = http1::Builder::new();
                builder
                    .timer(TokioTimer::new())
                    .header_read_timeout(shared.inbound.header_timeout)
                    .max_buf_size(MAX_HEAD_BYTES)
                    .max_headers(shared.inbound.max_headers);
                let service = {
                    let shared = shared.clone();
                    service_fn(move |req| serve(shared.clone(), peer, req))
                };
                if let Err(error) = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    tracing::debug!(%peer, %error, "http connection closed");
                }
            });
        }
        connections.shutdown().await;
        Ok(())
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<HyperOutgoingBody> {
    let mut response = Response::new(
        Full::new(Bytes::from_static(text.as_bytes()))
            .map_err(|never: Infallible| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// At most `max` bytes of `s`, cut at a character boundary: a logged path
/// is the client's text and is bounded like any other.
fn clip(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

async fn serve(
    shared: Arc<Shared>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<HyperOutgoingBody>, Infallible> {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    // Logged for the operator, marked as the client's claim: nothing is
    // built from it.
    let untrusted_host = req
        .headers()
        .get(http::header::HOST)
        .map(|h| clip(&String::from_utf8_lossy(h.as_bytes()), 256).to_owned());
    let response = route(&shared, req).await;
    let (agent, status) = match &response {
        (Some(i), r) => (shared.inbound.routes[*i].agent.as_str(), r.status()),
        (None, r) => ("", r.status()),
    };
    tracing::debug!(
        %peer,
        agent,
        %method,
        path = clip(&path, 256),
        untrusted_host = untrusted_host.as_deref().unwrap_or(""),
        status = status.as_u16(),
        elapsed_us = started.elapsed().as_micros() as u64,
        "http request served"
    );
    Ok(response.1)
}

async fn route(
    shared: &Shared,
    req: Request<Incoming>,
) -> (Option<usize>, Response<HyperOutgoingBody>) {
    let stats = &shared.stats;
    let Some(i) = shared.inbound.route(req.uri().path()) else {
        stats.not_found.fetch_add(1, Ordering::Relaxed);
        return (
            None,
            plain(StatusCode::NOT_FOUND, "no route for this path\n"),
        );
    };
    let max = shared.inbound.max_body_bytes;
    if content_length(req.headers()).is_some_and(|n| n > max) {
        stats.too_large.fetch_add(1, Ordering::Relaxed);
        return (
            Some(i),
            plain(StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n"),
        );
    }
    // Taken before the body is read: a route at its cap costs no buffering.
    let Ok(permit) = shared.permits[i].clone().try_acquire_owned() else {
        stats.busy.fetch_add(1, Ordering::Relaxed);
        let mut busy = plain(StatusCode::SERVICE_UNAVAILABLE, "route busy\n");
        busy.headers_mut().insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("1"),
        );
        return (Some(i), busy);
    };
    let (mut parts, body) = req.into_parts();
    let body = match tokio::time::timeout(
        shared.inbound.body_timeout,
        Limited::new(body, max as usize).collect(),
    )
    .await
    {
        Err(_) => {
            stats.timed_out.fetch_add(1, Ordering::Relaxed);
            return (
                Some(i),
                plain(
                    StatusCode::REQUEST_TIMEOUT,
                    "request body not received in time\n",
                ),
            );
        }
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            stats.too_large.fetch_add(1, Ordering::Relaxed);
            return (
                Some(i),
                plain(StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n"),
            );
        }
        Ok(Err(_)) => {
            return (
                Some(i),
                plain(StatusCode::BAD_REQUEST, "request body could not be read\n"),
            );
        }
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    parts.uri = match Uri::try_from(format!("{}{path_and_query}", shared.origin)) {
        Ok(uri) => uri,
        Err(_) => {
            return (
                Some(i),
                plain(StatusCode::BAD_REQUEST, "bad request target\n"),
            );
        }
    };
    let request = Request::from_parts(parts, Full::new(body));
    let (respond, answer) = oneshot::channel();
    let handler = shared.handler.clone();
    let call = tokio::task::spawn_blocking(move || {
        // Held until the guest call returns, not only until it answers.
        let _permit = permit;
        handler.handle(i, Call { request, respond })
    });
    match answer.await {
        Ok(Ok(response)) => {
            stats.served.fetch_add(1, Ordering::Relaxed);
            (Some(i), response)
        }
        Ok(Err(code)) => {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(agent = %shared.inbound.routes[i].agent, ?code, "guest answered an error code");
            (
                Some(i),
                plain(StatusCode::INTERNAL_SERVER_ERROR, "the handler failed\n"),
            )
        }
        Err(_) => match call.await {
            Ok(Err(Refused::Unavailable(_))) => {
                stats.busy.fetch_add(1, Ordering::Relaxed);
                (
                    Some(i),
                    plain(StatusCode::SERVICE_UNAVAILABLE, "agent unavailable\n"),
                )
            }
            _ => {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                (
                    Some(i),
                    plain(StatusCode::INTERNAL_SERVER_ERROR, "the handler failed\n"),
                )
            }
        },
    }
}
