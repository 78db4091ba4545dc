//! Inbound HTTP: requests/s and p99 for the `http_hello` proxy component
//! behind Toka's `[http]` listener, from a load generator in this process
//! (keep-alive connections, a fixed number in flight), beside the floor
//! measured in the same run: the same component served by a minimal hyper +
//! wasmtime `ProxyPre` loop with no routing, limits or logging.
//!
//! Both servers get the same shape: one tokio worker thread for the
//! connections, the guest on tokio's blocking threads, a fresh instance per
//! request, the same engine settings (pooling, epoch interruption).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use toka_core::RuntimeConfig;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::p2::bindings::sync::ProxyPre;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use super::{Outcome, Running, Session, build_runtime, group, round1, round2};

/// Connections the load generator keeps busy at once.
const CONNECTIONS: usize = 32;

fn config(modules: &Path) -> anyhow::Result<RuntimeConfig> {
    let text = format!(
        r#"
        modules_dir = {modules:?}
        [event_bus]
        workers = 1
        scheduler_tick_ms = 3600000
        [http]
        listen = "127.0.0.1:0"
        [[http.routes]]
        path = "/..."
        agent = "hello"
        max_concurrent = 256
        [[agents]]
        name = "hello"
        module = "http_hello.wasm"
        "#,
        modules = modules.display().to_string(),
    );
    RuntimeConfig::parse_declared(
        &text,
        Path::new("bench.toml"),
        Path::new("."),
        &toka_runtime::host::caps::declared(),
        &|_| None,
    )
    .context("bench config")
}

/// The floor's store: WASI and wasi:http, nothing else.
struct Floor {
    wasi: WasiCtx,
    table: ResourceTable,
    http: WasiHttpCtx,
    hooks: NoOutbound,
}

/// The floor's component makes no outbound requests.
struct NoOutbound;

impl WasiHttpHooks for NoOutbound {
    fn send_request(
        &mut self,
        _request: hyper::Request<wasmtime_wasi_http::p2::body::HyperIncomingBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (
                        hyper::Response<wasmtime_wasi_http::p2::body::HyperIncomingBody>,
                        Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                    ),
                    wasmtime_wasi_http::Error,
                >,
            > + Send,
    > {
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}

impl WasiView for Floor {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for Floor {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            hooks: &mut self.hooks,
            table: &mut self.table,
            ctx: &mut self.http,
        }
    }
}

fn wrap(e: wasmtime::Error) -> anyhow::Error {
    anyhow::anyhow!("{e:#}")
}

/// The floor: `http_hello.wasm` pre-linked as a proxy on a pooling engine.
fn floor_pre(path: &Path) -> anyhow::Result<(Engine, ProxyPre<Floor>)> {
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(1024)
        .total_core_instances(1024 * 4)
        .total_memories(1024 * 2)
        .total_tables(1024 * 4);
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .concurrency_support(false)
        .epoch_interruption(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    let engine = Engine::new(&config).map_err(wrap)?;
    let wasm = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let component = Component::new(&engine, &wasm).map_err(wrap)?;
    let mut linker = Linker::<Floor>::new(&engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(wrap)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_sync(&mut linker).map_err(wrap)?;
    let pre = ProxyPre::new(linker.instantiate_pre(&component).map_err(wrap)?).map_err(wrap)?;
    Ok((engine, pre))
}

type Respond = tokio::sync::oneshot::Sender<Result<hyper::Response<HyperOutgoingBody>, ErrorCode>>;

fn floor_call(
    engine: &Engine,
    pre: &ProxyPre<Floor>,
    request: hyper::Request<Full<Bytes>>,
    respond: Respond,
) -> wasmtime::Result<()> {
    let mut store = Store::new(
        engine,
        Floor {
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
            http: WasiHttpCtx::new(),
            hooks: NoOutbound,
        },
    );
    store.set_epoch_deadline(u64::MAX / 2);
    let req = store
        .data_mut()
        .http()
        .new_incoming_request(Scheme::Http, request)?;
    let out = store.data_mut().http().new_response_outparam(respond)?;
    let proxy = pre.instantiate(&mut store)?;
    proxy
        .wasi_http_incoming_handler()
        .call_handle(&mut store, req, out)
}

/// Serve the floor on its own runtime (one worker, like Toka's bench
/// runtime); returns its address and the runtime that keeps it alive.
fn floor_server(path: &Path) -> anyhow::Result<(SocketAddr, tokio::runtime::Runtime)> {
    let (engine, pre) = floor_pre(path)?;
    let shared = Arc::new((engine, pre));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    rt.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let shared = shared.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let shared = shared.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await?.to_bytes();
                            let request = hyper::Request::from_parts(parts, Full::new(body));
                            let (tx, rx) = tokio::sync::oneshot::channel();
                            tokio::task::spawn_blocking(move || {
                                let (engine, pre) = &*shared;
                                floor_call(engine, pre, request, tx)
                            });
                            match rx.await {
                                Ok(Ok(response)) => Ok::<_, hyper::Error>(response),
                                _ => {
                                    let mut r = hyper::Response::new(
                                        Empty::new().map_err(|never| match never {}).boxed_unsync(),
                                    );
                                    *r.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
                                    Ok(r)
                                }
                            }
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    // The floor's epoch never needs to tick: its deadline is unreachable.
    Ok((addr, rt))
}

/// `total` GETs over [`CONNECTIONS`] keep-alive connections: requests/s
/// and the p99 latency in microseconds.
fn load(addr: SocketAddr, total: usize) -> anyhow::Result<(f64, f64)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let per = total / CONNECTIONS;
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..CONNECTIONS {
            tasks.push(tokio::spawn(async move {
                let stream = tokio::net::TcpStream::connect(addr).await?;
                stream.set_nodelay(true)?;
                let (mut sender, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
                tokio::spawn(conn);
                let mut latencies = Vec::with_capacity(per);
                for _ in 0..per {
                    let req = hyper::Request::get("/hello")
                        .header("host", "bench")
                        .body(Empty::<Bytes>::new())?;
                    let sent = Instant::now();
                    let resp = sender.send_request(req).await?;
                    anyhow::ensure!(resp.status() == 200, "status {}", resp.status());
                    let body = resp.into_body().collect().await?.to_bytes();
                    anyhow::ensure!(&body[..] == b"hello\n", "unexpected body {body:?}");
                    latencies.push(sent.elapsed());
                }
                anyhow::Ok(latencies)
            }));
        }
        let mut all: Vec<Duration> = Vec::with_capacity(total);
        for t in tasks {
            all.extend(t.await??);
        }
        let elapsed = start.elapsed();
        all.sort();
        let p99 = all[(all.len() * 99 / 100).min(all.len() - 1)];
        Ok((
            all.len() as f64 / elapsed.as_secs_f64(),
            p99.as_secs_f64() * 1e6,
        ))
    })
}

/// Requests/s and p99 through Toka's listener, beside the floor.
pub(super) fn inbound(s: &mut Session) -> anyhow::Result<Vec<Outcome>> {
    let module = s.modules.join("http_hello.wasm");
    anyhow::ensure!(
        module.exists(),
        "http_hello.wasm not found in {}",
        s.modules.display()
    );
    let n: usize = if s.scale.quick { 20_000 } else { 200_000 };
    let rt = build_runtime(config(&s.modules)?)?;
    let addr = rt.http_listener().context("the bench config listens")?;
    let running = Running::start(rt)?;
    load(addr, n / 10)?;
    let (toka_rps, toka_p99) = load(addr, n)?;
    let report = running.stop()?;
    anyhow::ensure!(
        report.agents.iter().all(|a| a.faults == 0),
        "the guest failed: {report:?}"
    );
    let (floor_addr, floor_rt) = floor_server(&module)?;
    load(floor_addr, n / 10)?;
    let (floor_rps, floor_p99) = load(floor_addr, n)?;
    drop(floor_rt);
    let ratio = toka_rps / floor_rps;
    Ok(vec![
        Outcome::new(
            "http_inbound",
            format!(
                "{} requests/s, p99 {toka_p99:.0} us ({CONNECTIONS} connections); floor (hyper + ProxyPre) {} requests/s, p99 {floor_p99:.0} us; ratio {ratio:.2}",
                group(toka_rps),
                group(floor_rps)
            ),
        )
        .field("requests_per_s", toka_rps.round())
        .field("p99_us", round1(toka_p99))
        .field("floor_requests_per_s", floor_rps.round())
        .field("floor_p99_us", round1(floor_p99))
        .field("ratio_vs_floor", round2(ratio))
        .target(
            ">= 0.8x floor and >= 25,000 requests/s",
            ratio >= 0.8 && toka_rps >= 25_000.0,
        ),
    ])
}
