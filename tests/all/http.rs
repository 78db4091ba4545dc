//! Outbound HTTP through the guard, from a real guest (`http_client`) to a
//! loopback server this file runs: allowed requests work; every SSRF form is
//! refused with its `error-code` and logged; an agent without the grant is
//! denied; the limits hold while a healthy agent carries on; credentials are
//! injected host-side and never logged.
//!
//! Only loopback is ever connected to: the refused destinations are refused
//! before any connection (the tests prove it by their error codes).

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use toka_tests::{Running, captured_logs, logs};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A loopback HTTP/1.1 server: its port and the request heads it received.
struct Server {
    port: u16,
    heads: Arc<Mutex<Vec<String>>>,
}

async fn serve_one(mut s: TcpStream, heads: Arc<Mutex<Vec<String>>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let end = loop {
        let Ok(n) = s.read(&mut chunk).await else {
            return;
        };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 64 << 10 {
            return;
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    heads.lock().push(head.clone());
    let lower = head.to_ascii_lowercase();
    let length: usize = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = buf[end..].len();
    while body < length {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => body += n,
        }
    }
    let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
    let reply = |body: &str| {
        format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let out = match path.as_str() {
        "/hello" => reply("hello"),
        "/echo" => reply(&format!("len={body}")),
        "/auth" => {
            let values: Vec<&str> = head
                .lines()
                .filter(|l| l.to_ascii_lowercase().starts_with("authorization:"))
                .map(|l| l["authorization:".len()..].trim())
                .collect();
            reply(&values.join("|"))
        }
        "/big" => reply(&"b".repeat(100_000)),
        "/stream" | "/bigchunked" => {
            let (n, size, pause) = if path == "/stream" {
                (10, 1000, 20)
            } else {
                (100, 1000, 0)
            };
            let _ = s
                .write_all(
                    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n",
                )
                .await;
            for _ in 0..n {
                let data = "s".repeat(size);
                if s.write_all(format!("{size:x}\r\n{data}\r\n").as_bytes())
                    .await
                    .is_err()
                {
                    return;
                }
                let _ = s.flush().await;
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
            let _ = s.write_all(b"0\r\n\r\n").await;
            return;
        }
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(10)).await;
            reply("late")
        }
        _ => "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".into(),
    };
    let _ = s.write_all(out.as_bytes()).await;
    let _ = s.shutdown().await;
}

async fn server() -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let heads: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = heads.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(serve_one(s, seen.clone()));
        }
    });
    Server { port, heads }
}

/// An `http_client` agent `name` with `extra` lines (and 5 s per call
/// unless they set `timeout_ms`).
fn agent(name: &str, extra: &str) -> String {
    let timeout = if extra.contains("timeout_ms") {
        ""
    } else {
        "timeout_ms = 5000"
    };
    format!(
        r#"
        [[agents]]
        name = "{name}"
        module = "http_client.wasm"
        subscribe = ["{name}.cmd"]
        publish = ["http.result"]
        {timeout}
        {extra}
        "#
    )
}

fn start(head: &str, agents: &str) -> Running {
    logs();
    Running::start(
        &format!("{head}\n{agents}"),
        &["http.result", "toka.dead-letter"],
    )
}

const LOOPBACK_OK: &str = "[http]\nallow_private = [\"127.0.0.1/32\"]\n";

async fn ask(run: &Running, to: &str, command: &str) -> String {
    let count = |run: &Running| {
        run.rec
            .events()
            .iter()
            .filter(|e| e.kind.as_str() == "http.result" && *e.source == *to)
            .count()
    };
    let before = count(run);
    run.cx
        .publish(&format!("{to}.cmd"), command.to_owned())
        .unwrap();
    run.rec
        .wait_for(&format!("a result from {to}"), |evs| {
            evs.iter()
                .filter(|e| e.kind.as_str() == "http.result" && *e.source == *to)
                .count()
                > before
        })
        .await;
    run.rec
        .events()
        .iter()
        .filter(|e| e.kind.as_str() == "http.result" && *e.source == *to)
        .map(|e| String::from_utf8_lossy(&e.payload).into_owned())
        .next_back()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_requests_work() {
    let srv = server().await;
    let p = srv.port;
    let run = start(
        LOOPBACK_OK,
        &agent("c", &format!("allowed_hosts = [\"http://127.0.0.1:{p}\"]")),
    );
    let a = format!("127.0.0.1:{p}");
    assert_eq!(
        ask(&run, "c", &format!("get http {a} /hello")).await,
        "ok status=200 bytes=5 chunks=1 body=hello"
    );
    let post = ask(&run, "c", &format!("post http {a} /echo 1048576")).await;
    assert!(post.ends_with("body=len=1048576"), "{post}");
    let stream = ask(&run, "c", &format!("get http {a} /stream")).await;
    assert!(
        stream.starts_with("ok status=200 bytes=10000 chunks="),
        "{stream}"
    );
    let chunks: usize = stream
        .split("chunks=")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(chunks > 1, "streamed in pieces: {stream}");
    assert_eq!(
        ask(&run, "c", &format!("get http {a} /missing")).await,
        "ok status=404 bytes=0 chunks=0 body="
    );
    run.stop().await;
    let logged = captured_logs();
    assert!(
        logged.contains("http request") && logged.contains(&format!("http://127.0.0.1:{p}")),
        "requests are logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssrf_forms_are_refused_with_their_codes() {
    let srv = server().await;
    let p = srv.port;
    // Everything is allowed by name: only the address check stands between
    // the guest and these destinations.
    let run = start(LOOPBACK_OK, &agent("open", "allowed_hosts = [\"*://*:*\"]"));
    let prohibited = [
        "10.0.0.1",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "169.254.170.2",
        "100.64.0.1",
        "100.100.100.200",
        "0.0.0.0",
        "127.0.0.2",
        "224.0.0.1",
        "255.255.255.255",
        "192.0.2.1",
        "198.18.0.1",
        "240.0.0.1",
        "[::1]",
        "[::]",
        "[fd00:ec2::254]",
        "[fe80::1]",
        "[fec0::1]",
        "[ff02::1]",
        "[2001:db8::1]",
        "[::ffff:169.254.169.254]",
        "[::ffff:10.0.0.1]",
        "[::ffff:127.0.0.2]",
        "[::169.254.169.254]",
        "[64:ff9b::a9fe:a9fe]",
        "[64:ff9b:1::1]",
        "[2002:a9fe:a9fe::]",
        "[2001:0:7f00:2::]",
    ];
    for host in prohibited {
        let got = ask(&run, "open", &format!("get http {host}:{p} /hello")).await;
        assert_eq!(got, "err:DestinationIpProhibited", "{host}");
    }
    // Names that resolve to loopback: `localhost` also resolves to ::1 (or
    // to 127.0.0.1 only); either way one address is refused or the
    // exception covers it, so a name is judged by what it resolves to.
    for host in ["localhost", "localhost.", "LOCALHOST"] {
        let got = ask(&run, "open", &format!("get http {host}:{p} /hello")).await;
        assert!(
            got == "err:DestinationIpProhibited" || got.starts_with("ok status=200"),
            "{host}: {got}"
        );
    }
    // Numeric forms resolvers read as 127.0.0.1, and userinfo: refused as
    // written, before any lookup.
    for host in [
        "2130706433",
        "0177.0.0.1",
        "127.1",
        "0x7f.1",
        "0x7f000001",
        "127.0.0.1.",
    ] {
        let got = ask(&run, "open", &format!("get http {host}:{p} /hello")).await;
        assert_eq!(got, "err:HttpRequestDenied", "{host}");
    }
    let got = ask(&run, "open", &format!("get http user@127.0.0.1:{p} /hello")).await;
    assert!(
        got == "err:HttpRequestDenied" || got == "err:set-authority",
        "userinfo: {got}"
    );
    run.stop().await;
    let logged = captured_logs();
    assert!(
        logged.contains("http request denied"),
        "refusals are logged"
    );
    assert!(
        logged.contains("169.254.169.254 is in link-local"),
        "with the blocked range"
    );
    assert!(logged.contains("numeric host"), "and the reason");
    assert!(
        srv.heads.lock().iter().all(|h| !h.contains("127.0.0.2")),
        "nothing refused got through"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_allowlist_decides_on_scheme_host_and_port() {
    let srv = server().await;
    let p = srv.port;
    let run = start(
        LOOPBACK_OK,
        &format!(
            "{}{}",
            agent(
                "edges",
                &format!("allowed_hosts = [\"http://127.0.0.1:{p}..{}\"]", p + 1)
            ),
            agent("nogrant", ""),
        ),
    );
    let a = format!("127.0.0.1:{p}");
    assert!(
        ask(&run, "edges", &format!("get http {a} /hello"))
            .await
            .starts_with("ok status=200"),
        "the range's start"
    );
    for cmd in [
        format!("get https {a} /hello"),
        format!("get http 127.0.0.1:{} /hello", p + 1),
        format!("get http 127.0.0.1:{} /hello", p - 1),
        format!("get http localhost:{p} /hello"),
        "get http 127.0.0.1 /hello".to_owned(),
        format!("get ftp {a} /hello"),
    ] {
        let got = ask(&run, "edges", &cmd).await;
        assert!(
            got == "err:HttpRequestDenied" || got == "err:HttpProtocolError",
            "{cmd}: {got}"
        );
    }
    // Not granted: it loads, and every request is refused.
    assert_eq!(
        ask(&run, "nogrant", &format!("get http {a} /hello")).await,
        "err:HttpRequestDenied"
    );
    run.stop().await;
    assert!(captured_logs().contains("agent holds no `http` grant"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_is_refused_without_the_operators_exception() {
    let srv = server().await;
    let p = srv.port;
    let run = start(
        "",
        &agent(
            "c",
            &format!("allowed_hosts = [\"http://127.0.0.1:{p}\", \"http://localhost:{p}\"]"),
        ),
    );
    assert_eq!(
        ask(&run, "c", &format!("get http 127.0.0.1:{p} /hello")).await,
        "err:DestinationIpProhibited"
    );
    assert_eq!(
        ask(&run, "c", &format!("get http localhost:{p} /hello")).await,
        "err:DestinationIpProhibited"
    );
    run.stop().await;
    assert!(srv.heads.lock().is_empty(), "the server saw nothing");
}

/// `allow_private = ["${S3_ALLOW_PRIVATE:-}"]` with the variable unset (as
/// `config/portable.toml` writes it) leaves an empty entry: it excepts
/// nothing, it is not an "allow everything".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_allow_private_entry_excepts_nothing() {
    let srv = server().await;
    let p = srv.port;
    let run = start(
        "[http]\nallow_private = [\"\", \" \"]\n",
        &agent("c", &format!("allowed_hosts = [\"http://127.0.0.1:{p}\"]")),
    );
    assert_eq!(
        ask(&run, "c", &format!("get http 127.0.0.1:{p} /hello")).await,
        "err:DestinationIpProhibited"
    );
    run.stop().await;
    assert!(srv.heads.lock().is_empty(), "the server saw nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_are_error_codes_and_a_healthy_agent_carries_on() {
    let srv = server().await;
    let p = srv.port;
    let allow = format!("allowed_hosts = [\"http://127.0.0.1:{p}\"]");
    let run = start(
        LOOPBACK_OK,
        &[
            agent("slow", &format!("{allow}\nhttp_timeout = \"300ms\"")),
            agent("deadline", &format!("{allow}\ntimeout_ms = 800")),
            agent(
                "small",
                &format!("{allow}\nhttp_max_response_bytes = 1000\nhttp_max_request_bytes = 1000"),
            ),
            agent("few", &format!("{allow}\nhttp_max_concurrent = 2")),
            agent("rate", &format!("{allow}\nhttp_requests_per_sec = 2")),
            agent("healthy", &allow),
        ]
        .concat(),
    );
    let a = format!("127.0.0.1:{p}");
    assert_eq!(
        ask(&run, "slow", &format!("get http {a} /slow")).await,
        "err:HttpResponseTimeout"
    );
    // No `http_timeout`: the guest call's own deadline (800 ms) bounds it,
    // and the guest still gets an error code, not a deadline fault.
    assert_eq!(
        ask(&run, "deadline", &format!("get http {a} /slow")).await,
        "err:HttpResponseTimeout"
    );
    assert_eq!(
        ask(&run, "small", &format!("get http {a} /big")).await,
        "err:HttpResponseBodySize"
    );
    // Without a content-length the body is cut as it streams: the guest's
    // read fails with the limit's error (wasmtime reports it on the stream).
    let cut = ask(&run, "small", &format!("get http {a} /bigchunked")).await;
    assert!(
        cut.starts_with("err:") && cut.contains("body size exceeds limit: 1000"),
        "{cut}"
    );
    assert_eq!(
        ask(&run, "small", &format!("post http {a} /echo 5000")).await,
        "err:HttpRequestBodySize"
    );
    assert_eq!(
        ask(&run, "few", &format!("many 4 http {a} /hello")).await,
        "ok ok,ok,ConnectionLimitReached,ConnectionLimitReached"
    );
    assert!(
        ask(&run, "few", &format!("get http {a} /hello"))
            .await
            .starts_with("ok status=200"),
        "places are given back"
    );
    // Two per second, bursts of two: four started at once, two refused.
    assert_eq!(
        ask(&run, "rate", &format!("many 4 http {a} /hello")).await,
        "ok ok,ok,ConnectionLimitReached,ConnectionLimitReached"
    );
    assert!(
        ask(&run, "healthy", &format!("get http {a} /hello"))
            .await
            .starts_with("ok status=200")
    );
    assert!(
        run.rec.payloads("toka.dead-letter").is_empty(),
        "no agent faulted"
    );
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_injected_and_never_logged() {
    use toka_secrets::{MasterKey, SecretStore};
    const SECRET: &str = "sk_test_Zq8vInjectedOnly";
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("master.key");
    let db = dir.path().join("secrets.db");
    let key = MasterKey::create_key_file(&key_file).unwrap();
    SecretStore::open(&db, key)
        .unwrap()
        .set("stripe/sk", SECRET.as_bytes())
        .unwrap();
    let srv = server().await;
    let p = srv.port;
    let head = format!("{LOOPBACK_OK}\n[secrets]\npath = {db:?}\nkey_file = {key_file:?}\n");
    let run = start(
        &head,
        &agent(
            "payer",
            &format!(
                "allowed_hosts = [\"http://127.0.0.1:{p}\"]\nhttp_credentials = [{{ host = \"http://127.0.0.1:{p}\", header = \"Authorization\", secret = \"stripe/sk\", format = \"Bearer {{}}\" }}]"
            ),
        ),
    );
    let a = format!("127.0.0.1:{p}");
    assert_eq!(
        ask(&run, "payer", &format!("get http {a} /auth")).await,
        format!("ok status=200 bytes=31 chunks=1 body=Bearer {SECRET}")
    );
    let replaced = ask(
        &run,
        "payer",
        &format!("header http {a} /auth authorization guest-own-token"),
    )
    .await;
    assert_eq!(
        replaced,
        format!("ok status=200 bytes=31 chunks=1 body=Bearer {SECRET}"),
        "the guest's header is replaced"
    );
    run.stop().await;
    let logged = captured_logs();
    assert!(!logged.contains(SECRET), "the secret is never logged");
    assert!(!logged.contains("guest-own-token"), "nor header values");
}

/// A loopback listener that never accepts, its accept queue filled: a new
/// connection's SYN is dropped and its connect hangs (Linux drops SYNs to
/// a full queue by default), which is how an unreachable server looks.
async fn blackhole() -> (TcpListener, Vec<TcpStream>, u16) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut filled = Vec::new();
    for _ in 0..4 {
        // The first few complete (they fill the queue); later ones hang,
        // and are given up on.
        if let Ok(Ok(s)) = tokio::time::timeout(
            Duration::from_millis(200),
            TcpStream::connect(("127.0.0.1", port)),
        )
        .await
        {
            filled.push(s);
        }
    }
    (listener, filled, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_answers_the_connect_is_a_connection_timeout() {
    let (_listener, _filled, p) = blackhole().await;
    let run = start(
        LOOPBACK_OK,
        &agent(
            "patient",
            &format!(
                "allowed_hosts = [\"http://127.0.0.1:{p}\"]\nhttp_connect_timeout = \"300ms\""
            ),
        ),
    );
    let started = std::time::Instant::now();
    assert_eq!(
        ask(&run, "patient", &format!("get http 127.0.0.1:{p} /")).await,
        "err:ConnectionTimeout"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "cut at the connect timeout, not the call's deadline"
    );
    assert!(run.rec.payloads("toka.dead-letter").is_empty());
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_that_resolve_into_blocked_ranges_are_refused() {
    let srv = server().await;
    let p = srv.port;
    // `[http] resolve` pins names the way DNS would answer them (a name
    // the operator or an attacker points anywhere); the pinned addresses
    // pass the same check as looked-up ones.
    let blocked = [
        ("ten.test", "10.0.0.1"),
        ("rfc1918b.test", "172.16.0.1"),
        ("rfc1918c.test", "192.168.1.1"),
        ("metadata.test", "169.254.169.254"),
        ("cgnat.test", "100.64.0.1"),
        ("zero.test", "0.0.0.0"),
        ("loop.test", "127.0.0.2"),
        ("multicast.test", "224.0.0.1"),
        ("reserved.test", "240.0.0.1"),
        ("v6loop.test", "::1"),
        ("ula.test", "fd00:ec2::254"),
        ("linklocal.test", "fe80::1"),
        ("sitelocal.test", "fec0::1"),
        ("mapped.test", "::ffff:169.254.169.254"),
        ("nat64.test", "64:ff9b::a9fe:a9fe"),
        ("sixtofour.test", "2002:a9fe:a9fe::1"),
    ];
    let mut pins: Vec<String> = blocked
        .iter()
        .map(|(name, ip)| format!("\"{name}\" = [\"{ip}\"]"))
        .collect();
    // One name with an allowed address and a blocked one: one blocked is
    // enough (the allowed one is the loopback server, so nothing else is
    // ever connected to, even if the check failed).
    pins.push("\"mixed.test\" = [\"127.0.0.1\", \"10.0.0.1\"]".into());
    // And a name pinned to the loopback server, excepted by allow_private.
    pins.push("\"ok.test\" = [\"127.0.0.1\"]".into());
    let head = format!(
        "[http]\nallow_private = [\"127.0.0.1/32\"]\nresolve = {{ {} }}\n",
        pins.join(", ")
    );
    let run = start(&head, &agent("open", "allowed_hosts = [\"*://*:*\"]"));
    for (name, ip) in blocked.iter().copied().chain([("mixed.test", "mixed")]) {
        assert_eq!(
            ask(&run, "open", &format!("get http {name}:{p} /hello")).await,
            "err:DestinationIpProhibited",
            "{name} -> {ip}"
        );
    }
    assert!(
        ask(&run, "open", &format!("get http ok.test:{p} /hello"))
            .await
            .starts_with("ok status=200"),
        "a pinned name reaches an allowed address"
    );
    run.stop().await;
}

#[test]
fn pins_are_checked_in_config() {
    for (resolve, why) in [
        (r#"{ "10.0.0.1" = ["10.0.0.1"] }"#, "pin a name"),
        (r#"{ "a.test" = ["not-an-ip"] }"#, "not an IP address"),
        (r#"{ "a.test" = [] }"#, "addresses"),
    ] {
        let config = toka_tests::config(&format!(
            "[http]\nresolve = {resolve}\n[[agents]]\nname = \"c\"\nmodule = \"http_client.wasm\"\nallowed_hosts = [\"http://a.test\"]\n"
        ));
        let err = toka_runtime::Runtime::new(config).unwrap_err().to_string();
        assert!(
            err.contains(why) && err.contains("http.resolve"),
            "{resolve}: {err}"
        );
    }
}
