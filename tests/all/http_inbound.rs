//! Inbound HTTP: `[[http.routes]]` served by real components on a loopback
//! listener, driven by a raw HTTP/1.1 client so every byte the server sends
//! is what the test sees.
//!
//! `http_hello` is a plain `wasi:http/proxy` component written with `wstd`
//! (nothing Toka-specific in it); `http_webhook` also imports the bus. The
//! listener answers 404, 413, 431 and 503 without a guest, 500 when the
//! guest faults (dead-lettered), cuts slow clients off, and never lets the
//! `Host` header decide anything.

use std::net::SocketAddr;
use toka_tests::{Recorder, WAIT, logs, with_recorder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A running runtime with its listener's address.
struct Served {
    addr: SocketAddr,
    rec: Recorder,
    stop: toka_runtime::ShutdownHandle,
    run: tokio::task::JoinHandle<toka_runtime::Result<toka_runtime::Report>>,
}

impl Served {
    fn start(toml: &str) -> Self {
        logs();
        let (rt, rec) = with_recorder(toml, &["webhook.>", "toka.dead-letter"]);
        let addr = rt.http_listener().expect("the listener is bound");
        let stop = rt.shutdown_handle();
        let run = tokio::spawn(rt.run_until(std::future::pending()));
        Served {
            addr,
            rec,
            stop,
            run,
        }
    }

    async fn stop(self) {
        self.stop.shutdown();
        self.run
            .await
            .expect("runtime task")
            .expect("runtime ends cleanly");
    }
}

const HELLO: &str = r#"
[http]
listen = "127.0.0.1:0"
max_body_bytes = 4096

[[http.routes]]
path = "/hello/..."
agent = "Hello"

[[agents]]
name = "Hello"
module = "http_hello.wasm"
"#;

const HOOK: &str = r#"
[http]
listen = "127.0.0.1:0"
header_timeout = "300ms"
body_timeout = "300ms"
max_headers = 16

[[http.routes]]
path = "/hook/..."
agent = "Hook"
max_concurrent = 1

[[http.routes]]
path = "/denied/publish"
agent = "Denied"

[[agents]]
name = "Hook"
module = "http_webhook.wasm"
publish = ["webhook.>"]
timeout_ms = 500

[[agents]]
name = "Denied"
module = "http_webhook.wasm"
"#;

/// A response as received: status, lower-cased head, body (de-chunked).
#[derive(Debug)]
struct Reply {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Reply {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = data.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = std::str::from_utf8(&data[..eol]).unwrap_or("0");
        let size = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16).unwrap_or(0);
        if size == 0 {
            return out;
        }
        data = &data[eol + 2..];
        out.extend_from_slice(&data[..size.min(data.len())]);
        data = &data[(size + 2).min(data.len())..];
    }
}

/// Send `raw` (a whole request, `connection: close`) and read the reply.
async fn send(addr: SocketAddr, raw: &[u8]) -> Reply {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(raw).await.expect("send");
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut buf))
        .await
        .expect("a reply within the wait")
        .expect("read");
    parse(&buf)
}

/// Whether `buf` holds one whole response (chunked or with a length).
fn complete(buf: &[u8]) -> bool {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    if head.contains("transfer-encoding: chunked") {
        return buf.ends_with(b"0\r\n\r\n");
    }
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    buf.len() >= end + 4 + length
}

/// Read one whole response from a keep-alive connection.
async fn read_one(s: &mut TcpStream) -> Reply {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 4096];
    while !complete(&buf) {
        let n = tokio::time::timeout(WAIT, s.read(&mut chunk))
            .await
            .expect("a reply within the wait")
            .expect("read");
        assert!(
            n > 0,
            "closed mid-response: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
    parse(&buf)
}

fn parse(buf: &[u8]) -> Reply {
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(buf)));
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let raw = &buf[end + 4..];
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(raw)
    } else {
        raw.to_vec()
    };
    Reply { status, head, body }
}

async fn get(addr: SocketAddr, path: &str) -> Reply {
    send(
        addr,
        format!("GET {path} HTTP/1.1\r\nhost: toka.test\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .await
}

async fn post(addr: SocketAddr, path: &str, body: &[u8]) -> Reply {
    let mut raw = format!(
        "POST {path} HTTP/1.1\r\nhost: toka.test\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(body);
    send(addr, &raw).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wstd_proxy_component_serves_its_route_unchanged() {
    let served = Served::start(HELLO);
    let reply = get(served.addr, "/hello").await;
    assert_eq!((reply.status, reply.text().as_str()), (200, "hello\n"));
    let body: Vec<u8> = (0..4000u32).map(|i| (i % 251) as u8).collect();
    let echo = post(served.addr, "/hello/x/echo", &body).await;
    assert_eq!(echo.status, 200);
    assert_eq!(echo.body, body, "the body reaches the guest byte for byte");
    // Keep-alive: two requests on one connection.
    let mut s = TcpStream::connect(served.addr).await.unwrap();
    for _ in 0..2 {
        s.write_all(b"GET /hello HTTP/1.1\r\nhost: a\r\n\r\n")
            .await
            .unwrap();
        let reply = read_one(&mut s).await;
        assert_eq!(reply.status, 200, "{}", reply.head);
    }
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_are_404_and_oversized_bodies_413() {
    let served = Served::start(HELLO);
    for path in ["/", "/hell", "/hellox", "/other/hello"] {
        let reply = get(served.addr, path).await;
        assert_eq!(reply.status, 404, "{path}");
        assert_eq!(reply.text(), "no route for this path\n");
    }
    // By content-length, before reading the body.
    let big = vec![b'x'; 5000];
    assert_eq!(post(served.addr, "/hello/echo", &big).await.status, 413);
    // Chunked, with no length announced: refused while reading.
    let mut raw =
        b"POST /hello/echo HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
            .to_vec();
    for _ in 0..5 {
        raw.extend_from_slice(b"400\r\n");
        raw.extend_from_slice(&[b'y'; 1024]);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    assert_eq!(send(served.addr, &raw).await.status, 413);
    // Exactly at the cap is served.
    let edge = vec![b'z'; 4096];
    let reply = post(served.addr, "/hello/echo", &edge).await;
    assert_eq!((reply.status, reply.body.len()), (200, 4096));
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_header_decides_nothing() {
    let served = Served::start(HELLO);
    let reply = send(
        served.addr,
        b"GET /hello/uri HTTP/1.1\r\nhost: 169.254.169.254\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(reply.status, 200);
    let text = reply.text();
    let (uri, host) = text.split_once('\n').unwrap();
    assert_eq!(
        uri,
        format!("http://{}/hello/uri", served.addr),
        "the guest's authority is the listener's own address"
    );
    assert_eq!(
        host, "",
        "`host` is a forbidden header in wasi:http: the guest never sees it"
    );
    // An absolute-form target naming another host routes by its path only
    // and still gets the listener's authority.
    let reply = send(
        served.addr,
        b"GET http://evil.example/hello/uri HTTP/1.1\r\nhost: evil.example\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(reply.status, 200);
    assert!(
        reply
            .text()
            .starts_with(&format!("http://{}/hello/uri\n", served.addr)),
        "{}",
        reply.text()
    );
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_becomes_an_event_within_its_grant() {
    let served = Served::start(HOOK);
    let reply = post(served.addr, "/hook/publish", br#"{"id":"evt_1"}"#).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(reply.text().starts_with("published "));
    let events = served.rec.wait_kind("webhook.received", 1).await;
    assert_eq!(events, [r#"{"id":"evt_1"}"#]);
    // The same component routed for an agent with no publish grant.
    let denied = post(served.addr, "/denied/publish", b"x").await;
    assert_eq!(denied.status, 403, "{}", denied.text());
    assert!(denied.text().contains("Denied"), "{}", denied.text());
    assert_eq!(served.rec.payloads("webhook.received").len(), 1);
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_at_its_cap_answers_503_at_once() {
    let served = Served::start(HOOK);
    let addr = served.addr;
    let held = tokio::spawn(async move { get(addr, "/hook/hold?ms=400").await });
    served.rec.wait_kind("webhook.entered", 1).await;
    let busy = get(served.addr, "/hook/other").await;
    assert_eq!(busy.status, 503);
    assert!(busy.head.contains("retry-after: 1"), "{}", busy.head);
    assert_eq!(
        held.await.unwrap().status,
        200,
        "the held request completes"
    );
    assert_eq!(
        get(served.addr, "/hook/other").await.status,
        200,
        "the slot is free again"
    );
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_faulting_handler_is_500_and_dead_lettered_and_the_next_request_is_served() {
    let served = Served::start(HOOK);
    let trap = get(served.addr, "/hook/trap").await;
    assert_eq!(trap.status, 500);
    let spin = get(served.addr, "/hook/spin").await;
    assert_eq!(spin.status, 500, "the deadline ends a spinning handler");
    let letters = served.rec.wait_kind("toka.dead-letter", 2).await;
    let letters: Vec<serde_json::Value> = letters
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(letters[0]["agent"], "Hook");
    assert_eq!(letters[0]["http"]["path"], "/hook/trap");
    assert_eq!(letters[0]["reason"], "trap");
    assert_eq!(letters[1]["http"]["path"], "/hook/spin");
    assert_eq!(letters[1]["reason"], "deadline");
    let next = get(served.addr, "/hook/ok").await;
    assert_eq!((next.status, next.text().as_str()), (200, "hook\n"));
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_and_header_floods_refused() {
    let served = Served::start(HOOK);
    // A head that never ends: the connection is closed after header_timeout.
    let mut s = TcpStream::connect(served.addr).await.unwrap();
    s.write_all(b"GET /hook/ok HTTP/1.1\r\nhost: a\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(WAIT, s.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the server closed the stalled connection");
    assert!(
        !String::from_utf8_lossy(&buf).contains("200"),
        "no request was served"
    );
    // A body that stops half way: 408.
    let mut s = TcpStream::connect(served.addr).await.unwrap();
    s.write_all(b"POST /hook/publish HTTP/1.1\r\nhost: a\r\ncontent-length: 100\r\n\r\nonly this")
        .await
        .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut buf))
        .await
        .expect("answered")
        .unwrap();
    assert_eq!(parse(&buf).status, 408);
    assert!(served.rec.payloads("webhook.received").is_empty());
    // More header fields than `max_headers`.
    let mut raw = String::from("GET /hook/ok HTTP/1.1\r\nhost: a\r\nconnection: close\r\n");
    for i in 0..40 {
        raw.push_str(&format!("x-h{i}: v\r\n"));
    }
    raw.push_str("\r\n");
    assert_eq!(send(served.addr, raw.as_bytes()).await.status, 431);
    // Healthy clients are still served.
    assert_eq!(get(served.addr, "/hook/ok").await.status, 200);
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_max_connections_are_closed() {
    let served = Served::start(&HELLO.replace(
        "max_body_bytes = 4096",
        "max_body_bytes = 4096\nmax_connections = 2",
    ));
    // Two idle keep-alive connections, each proven open by one request.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(served.addr).await.unwrap();
        s.write_all(b"GET /hello HTTP/1.1\r\nhost: a\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(read_one(&mut s).await.status, 200);
        held.push(s);
    }
    // A third is closed without an answer.
    let mut third = TcpStream::connect(served.addr).await.unwrap();
    let _ = third
        .write_all(b"GET /hello HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n")
        .await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(WAIT, third.read_to_end(&mut buf))
        .await
        .expect("closed, not left hanging");
    assert!(
        buf.is_empty(),
        "no response: {:?}",
        String::from_utf8_lossy(&buf)
    );
    // Closing one frees its place.
    drop(held.pop());
    let mut attempts = 0;
    let reply = loop {
        attempts += 1;
        assert!(
            attempts < 10_000,
            "the closed connection's place never came back"
        );
        let mut s = TcpStream::connect(served.addr).await.unwrap();
        let _ = s
            .write_all(b"GET /hello HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n")
            .await;
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut buf)).await;
        // The server notices the close when it reads EOF on it: until then
        // the place is still taken and the new connection is closed.
        if !buf.is_empty() {
            break parse(&buf);
        }
        tokio::task::yield_now().await;
    };
    assert_eq!(reply.status, 200);
    served.stop().await;
}

fn build_error(toml: &str) -> String {
    let config = toka_tests::config(toml);
    match toka_runtime::Runtime::new(config) {
        Ok(_) => panic!("the runtime built"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn routes_are_checked_against_the_agents() {
    // The file parses; the route is checked when the runtime is built.
    let err = build_error(
        r#"
[http]
listen = "127.0.0.1:0"
[[http.routes]]
path = "/x"
agent = "Nobody"
"#,
    );
    assert!(err.contains("no agent is named `Nobody`"), "{err}");
    assert!(err.contains("test.toml:"), "names the file and line: {err}");

    let err = build_error(
        r#"
[http]
listen = "127.0.0.1:0"
[[http.routes]]
path = "/x"
agent = "Hello"
[[agents]]
name = "Hello"
module = "http_hello.wasm"
subscribe = ["a.b"]
"#,
    );
    assert!(
        err.contains("`subscribe`") && err.contains("Hello"),
        "{err}"
    );

    let err = build_error(
        r#"
[http]
[[http.routes]]
path = "/x"
agent = "Hello"
[[agents]]
name = "Hello"
module = "http_hello.wasm"
"#,
    );
    assert!(err.contains("set `listen`"), "{err}");
}

/// The one agent of `toml` that failed to load, and why.
fn the_failure(toml: &str) -> String {
    let rt = toka_runtime::Runtime::new(toka_tests::config(toml)).unwrap();
    let failed = rt.plan().failed;
    assert_eq!(failed.len(), 1, "{failed:?}");
    failed[0].1.reason.clone()
}

#[test]
fn module_world_mismatches_are_named() {
    logs();
    // A proxy-only component as an event agent.
    let why = the_failure(
        r#"
[[agents]]
name = "Hello"
module = "http_hello.wasm"
"#,
    );
    assert!(
        why.contains("exports only `wasi:http/incoming-handler`"),
        "{why}"
    );
    // An event agent routed.
    let why = the_failure(
        r#"
[http]
listen = "127.0.0.1:0"
[[http.routes]]
path = "/x"
agent = "Sink"
[[agents]]
name = "Sink"
module = "sink.wasm"
"#,
    );
    assert!(
        why.contains("does not export `wasi:http/incoming-handler"),
        "{why}"
    );
}

#[test]
fn an_address_in_use_is_a_start_up_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let err = build_error(&HELLO.replace("127.0.0.1:0", &format!("127.0.0.1:{port}")));
    assert!(err.contains("cannot listen"), "{err}");
}
