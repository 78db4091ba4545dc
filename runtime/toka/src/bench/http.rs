//! Outbound HTTP through the guard: GETs from the `http_client` guest to a
//! loopback server, one after the other, beside the same GETs from native
//! hyper in the same run (the floor). Both open a connection per request,
//! as the guard does (it keeps no pool).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use http_body_util::{BodyExt, Empty};
use toka_core::RuntimeConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Outcome, Running, Session, build_runtime, group, round1, round2, wait_until};

const LIMIT: Duration = Duration::from_secs(300);
const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello";

/// A loopback server answering every request with `hello`, on its own
/// thread; returns its port.
fn server() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding")?;
    listener.set_nonblocking(true)?;
    let port = listener.local_addr()?.port();
    std::thread::Builder::new()
        .name("bench-http-server".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("server runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                loop {
                    let Ok((mut s, _)) = listener.accept().await else {
                        continue;
                    };
                    tokio::spawn(async move {
                        let mut buf = [0u8; 4096];
                        let mut seen = Vec::new();
                        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                            match s.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => seen.extend_from_slice(&buf[..n]),
                            }
                        }
                        let _ = s.write_all(RESPONSE).await;
                        let _ = s.shutdown().await;
                    });
                }
            });
        })?;
    Ok(port)
}

fn config(modules: &Path, port: u16) -> anyhow::Result<RuntimeConfig> {
    let text = format!(
        r#"
        modules_dir = {modules:?}
        [event_bus]
        workers = 1
        scheduler_tick_ms = 3600000
        [http]
        allow_private = ["127.0.0.1/32"]
        [[agents]]
        name = "client"
        module = "http_client.wasm"
        subscribe = ["bench.cmd"]
        publish = ["http.result"]
        allowed_hosts = ["http://127.0.0.1:{port}"]
        http_requests_per_sec = 100000
        timeout_ms = 120000
        "#,
        modules = modules.display().to_string(),
    );
    let path = Path::new("bench.toml");
    RuntimeConfig::parse_declared(
        &text,
        path,
        Path::new("."),
        &toka_runtime::host::caps::declared(),
        &|_| None,
    )
    .context("bench config")
}

/// `n` GETs from native hyper, a connection each: ns per request.
fn native_ns(port: u16, n: u64) -> anyhow::Result<f64> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let start = Instant::now();
        for _ in 0..n {
            let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
            let io = wasmtime_wasi_http::io::TokioIo::new(stream);
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
            tokio::spawn(conn);
            let req = hyper::Request::get("/hello")
                .header("host", format!("127.0.0.1:{port}"))
                .body(Empty::<bytes::Bytes>::new())?;
            let resp = sender.send_request(req).await?;
            let body = resp.into_body().collect().await?.to_bytes();
            anyhow::ensure!(&body[..] == b"hello", "unexpected body");
        }
        Ok(start.elapsed().as_nanos() as f64 / n as f64)
    })
}

/// Requests/s from a guest through the guard, beside native hyper.
pub(super) fn outbound(s: &mut Session) -> anyhow::Result<Vec<Outcome>> {
    anyhow::ensure!(
        s.modules.join("http_client.wasm").exists(),
        "http_client.wasm not found in {}",
        s.modules.display()
    );
    let n: u64 = if s.scale.quick { 2_000 } else { 20_000 };
    let port = server()?;
    let rt = build_runtime(config(&s.modules, port)?)?;
    let stats = rt.agent_stats("client").expect("configured");
    let cx = rt.injector("bench");
    let running = Running::start(rt)?;
    let run = |count: u64| -> anyhow::Result<f64> {
        let before = stats.handled();
        let start = Instant::now();
        cx.publish(
            "bench.cmd",
            format!("loop {count} http 127.0.0.1:{port} /hello"),
        )
        .map_err(|e| anyhow::anyhow!("publish: {e}"))?;
        wait_until("the requests", LIMIT, || stats.handled() > before)?;
        Ok(start.elapsed().as_nanos() as f64 / count as f64)
    };
    run(n / 10)?;
    let guest = run(n)?;
    let report = running.stop()?;
    anyhow::ensure!(
        report.agents.iter().all(|a| a.faults == 0 && a.errors == 0),
        "the guest failed: {report:?}"
    );
    native_ns(port, n / 10)?;
    let native = native_ns(port, n)?;
    let ratio = native / guest;
    let per_s = 1e9 / guest;
    Ok(vec![
        Outcome::new(
            "http_outbound",
            format!(
                "{} requests/s through the guard ({guest:.0} ns each); native hyper {} requests/s; ratio {ratio:.2}",
                group(per_s),
                group(1e9 / native)
            ),
        )
        .field("requests_per_s", per_s.round())
        .field("ns_per_request", round1(guest))
        .field("native_ns_per_request", round1(native))
        .field("ratio_vs_native", round2(ratio))
        .target(">= 0.75x native", ratio >= 0.75),
    ])
}
