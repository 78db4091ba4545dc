//! The S3 driver (`guests/driver-s3`) against a real S3-compatible server:
//! `moto_server` on loopback, started per test **with signature checking
//! on** (an IAM user and access key are created through moto's IAM API,
//! then `/moto-api/reset-auth` turns checking on for every later request).
//! A probe agent holding only `request = ["s3.>"]` asks the driver, which
//! alone holds the key.
//!
//! `moto_server` must be on `PATH` (`pip install 'moto[server]'`; `.ci/run`
//! installs it): without it every test here fails, naming what is missing.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use toka_tests::{Running, config, logs};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub(crate) const BUCKET: &str = "toka-test";

/// Creates the IAM user (allowed `s3:*`), its access key and the bucket,
/// then turns signature checking on; prints `KEY SECRET`.
const SETUP: &str = r#"
import boto3, json, sys, urllib.request
ep, bucket = sys.argv[1], sys.argv[2]
kw = dict(endpoint_url=ep, region_name="us-east-1",
          aws_access_key_id="setup", aws_secret_access_key="setup")
iam = boto3.client("iam", **kw)
iam.create_user(UserName="toka")
iam.put_user_policy(UserName="toka", PolicyName="s3", PolicyDocument=json.dumps(
    {"Version": "2012-10-17",
     "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
key = iam.create_access_key(UserName="toka")["AccessKey"]
boto3.client("s3", **kw).create_bucket(Bucket=bucket)
urllib.request.urlopen(urllib.request.Request(
    ep + "/moto-api/reset-auth", data=b"0", method="POST",
    headers={"Content-Type": "text/plain"})).read()
print(key["AccessKeyId"], key["SecretAccessKey"])
"#;

/// Recomputes a presigned URL's signature with botocore (an independent
/// SigV4 implementation); prints `match` or what it computed.
const VERIFY_PRESIGNED: &str = r#"
import sys, urllib.parse
from botocore.auth import S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
url, method, key, secret = sys.argv[1:5]
u = urllib.parse.urlsplit(url)
q = urllib.parse.parse_qsl(u.query)
given = dict(q)["X-Amz-Signature"]
rest = urllib.parse.urlencode([(k, v) for k, v in q if k != "X-Amz-Signature"])
req = AWSRequest(method=method, url=urllib.parse.urlunsplit((u.scheme, u.netloc, u.path, rest, "")))
req.context["timestamp"] = dict(q)["X-Amz-Date"]
region = dict(q)["X-Amz-Credential"].split("/")[2]
auth = S3SigV4QueryAuth(Credentials(key, secret), "s3", region, expires=int(dict(q)["X-Amz-Expires"]))
sig = auth.signature(auth.string_to_sign(req, auth.canonical_request(req)), req)
print("match" if sig == given else "mismatch " + sig)
"#;

/// One moto at a time: its start is a second of Python on the shared
/// cores, and eight at once starve the suite's deadline-sensitive tests.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A `moto_server` child on a free loopback port, killed on drop (then the
/// next test's may start).
pub(crate) struct Moto {
    child: Child,
    _serial: std::sync::MutexGuard<'static, ()>,
    pub(crate) port: u16,
    pub(crate) key: String,
    pub(crate) secret: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn python(script: &str, args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 runs (it comes with moto)");
    assert!(
        out.status.success(),
        "python3 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// One plain HTTP/1.1 exchange with `127.0.0.1:port`: status and body.
async fn http(port: u16, method: &str, target: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let head = format!(
        "{method} {target} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-length: {}\r\n\
         content-type: text/plain\r\nconnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).await.unwrap();
    let end = reply
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head")
        + 4;
    let head = String::from_utf8_lossy(&reply[..end]).to_ascii_lowercase();
    let status = head[9..12].parse().unwrap();
    let mut body = reply[end..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    (status, body)
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line = raw.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&raw[..line]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[line + 2..line + 2 + size]);
        raw = &raw[line + 4 + size..];
    }
}

/// Start moto and wait (polling, no fixed sleep) until it answers HTTP.
pub(crate) async fn moto() -> Moto {
    let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .env("INITIAL_NO_AUTH_ACTION_COUNT", "1000000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start moto_server ({e}): install it with `pip install 'moto[server]'` \
                 (.ci/run does)"
            )
        });
    let mut moto = Moto {
        child,
        _serial: serial,
        port,
        key: String::new(),
        secret: String::new(),
    };
    let start = Instant::now();
    loop {
        if let Some(status) = moto.child.try_wait().unwrap() {
            panic!("moto_server exited at start: {status}");
        }
        if let Ok(Ok(mut s)) = tokio::time::timeout(
            Duration::from_millis(500),
            TcpStream::connect(("127.0.0.1", port)),
        )
        .await
        {
            let probe = b"GET /moto-api/ HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";
            let mut buf = [0u8; 12];
            if s.write_all(probe).await.is_ok()
                && s.read_exact(&mut buf).await.is_ok()
                && buf.starts_with(b"HTTP/1.")
            {
                break;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "moto_server did not answer on 127.0.0.1:{port} within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let endpoint = format!("http://127.0.0.1:{port}");
    let keys = python(SETUP, &[&endpoint, BUCKET]);
    let (key, secret) = keys.split_once(' ').expect("KEY SECRET");
    moto.key = key.to_owned();
    moto.secret = secret.to_owned();
    moto
}

/// The driver `s3` for the server on port `p` (with `key` and `secret` as
/// its credentials) and the client `app`, which may only request `s3.>`.
pub(crate) fn agents(p: u16, key: &str, secret: &str) -> String {
    format!(
        r#"
        [http]
        allow_private = ["127.0.0.1/32"]

        [[agents]]
        name = "s3"
        module = "driver_s3.wasm"
        serve = ["s3.>"]
        allowed_hosts = ["http://127.0.0.1:{p}"]
        timeout_ms = 15000
        max_payload_bytes = 8388608
        endpoint = "http://127.0.0.1:{p}"
        region = "us-east-1"
        bucket = "{BUCKET}"
        path_style = true
        access_key_id = "{key}"
        secret_access_key = "{secret}"

        [[agents]]
        name = "app"
        module = "probe.wasm"
        subscribe = ["app.cmd"]
        publish = ["probe.result", "probe.init"]
        request = ["s3.>"]
        timeout_ms = 30000
        max_payload_bytes = 8388608
        "#,
    )
}

fn start(toml: &str) -> Running {
    logs();
    Running::start(toml, &["probe.result", "probe.init", "toka.dead-letter"])
}

/// Have `app` run `command`; its outcome.
async fn ask(run: &Running, command: &str) -> String {
    let results = |run: &Running| {
        run.rec
            .events()
            .iter()
            .filter(|e| e.kind.as_str() == "probe.result")
            .map(|e| String::from_utf8_lossy(&e.payload).into_owned())
            .collect::<Vec<_>>()
    };
    let before = results(run).len();
    run.cx.publish("app.cmd", command.to_owned()).unwrap();
    run.rec
        .wait_for("a result from app", |evs| {
            evs.iter()
                .filter(|e| e.kind.as_str() == "probe.result")
                .count()
                > before
        })
        .await;
    results(run).pop().unwrap()
}

/// `kind` with `header` and `size` pattern bytes: the reply's JSON line,
/// its body's length and FNV, or the error text.
async fn call(
    run: &Running,
    kind: &str,
    size: usize,
    header: &str,
) -> Result<(serde_json::Value, usize, u64), String> {
    let out = ask(run, &format!("request-body {kind} {size} {header}")).await;
    let Some(ok) = out.strip_prefix("ok:") else {
        return Err(out);
    };
    let (rest, fnv) = ok.rsplit_once("|fnv=").unwrap();
    let (line, len) = rest.rsplit_once("|len=").unwrap();
    let json = serde_json::from_str(line).unwrap_or_else(|e| panic!("reply {line}: {e}"));
    Ok((
        json,
        len.parse().unwrap(),
        u64::from_str_radix(fnv, 16).unwrap(),
    ))
}

/// The probe's `pattern` bytes.
fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8 ^ (i >> 12) as u8).collect()
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The error JSON inside a `remote(...)` answer.
fn remote(err: &str) -> serde_json::Value {
    let text = err
        .strip_prefix("err:remote:")
        .unwrap_or_else(|| panic!("a remote error: {err}"));
    serde_json::from_str(text).unwrap_or_else(|e| panic!("error JSON {text}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_round_trip_with_checksums_and_are_copied_and_deleted() {
    let moto = moto().await;
    let run = start(&agents(moto.port, &moto.key, &moto.secret));
    for (key, size) in [("empty", 0usize), ("blob/one-mib", 1 << 20)] {
        let (put, _, _) = call(&run, "s3.put", size, &format!(r#"{{"key":"{key}"}}"#))
            .await
            .unwrap();
        assert_eq!(put["size"], size, "{put}");
        let head = format!(r#"{{"key":"{key}"}}"#);
        let (meta, _, _) = call(&run, "s3.head", 0, &head).await.unwrap();
        assert_eq!(meta["size"], size, "{meta}");
        assert_eq!(meta["etag"], put["etag"], "{meta}");
        let (got, len, sum) = call(&run, "s3.get", 0, &head).await.unwrap();
        assert_eq!((len, sum), (size, fnv(&pattern(size))), "{key}: {got}");
        assert_eq!(got["content_type"], "application/octet-stream");
    }
    // The ETag of a single-part upload is the MD5 of the bytes the server
    // received: for the empty object, the MD5 of nothing.
    let (empty, _, _) = call(&run, "s3.head", 0, r#"{"key":"empty"}"#)
        .await
        .unwrap();
    assert_eq!(empty["etag"], "d41d8cd98f00b204e9800998ecf8427e", "{empty}");
    let (copy, _, _) = call(
        &run,
        "s3.copy",
        0,
        r#"{"from":"blob/one-mib","to":"copied"}"#,
    )
    .await
    .unwrap();
    let (got, len, sum) = call(&run, "s3.get", 0, r#"{"key":"copied"}"#)
        .await
        .unwrap();
    assert_eq!((len, sum), (1 << 20, fnv(&pattern(1 << 20))));
    assert_eq!(got["etag"], copy["etag"], "{got} {copy}");

    call(&run, "s3.delete", 0, r#"{"key":"copied"}"#)
        .await
        .unwrap();
    let gone = call(&run, "s3.get", 0, r#"{"key":"copied"}"#)
        .await
        .unwrap_err();
    let gone = remote(&gone);
    assert_eq!(
        (gone["error"].as_str(), gone["status"].as_u64()),
        (Some("no-such-key"), Some(404)),
        "{gone}"
    );
    let gone = remote(
        &call(&run, "s3.head", 0, r#"{"key":"copied"}"#)
            .await
            .unwrap_err(),
    );
    assert_eq!(gone["error"], "no-such-key", "{gone}");
    let bad = remote(&call(&run, "s3.get", 0, "not json").await.unwrap_err());
    assert_eq!(bad["error"], "invalid", "{bad}");
    let report = run.stop().await;
    assert!(report.agents.iter().all(|a| a.faults == 0), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multipart_sized_object_goes_up_in_parts_and_comes_back_in_ranges() {
    use serde_json::json;
    let moto = moto().await;
    let run = start(&agents(moto.port, &moto.key, &moto.secret));
    let key = "big/six-mib";
    let (created, _, _) = call(
        &run,
        "s3.multipart_create",
        0,
        &json!({"key": key}).to_string(),
    )
    .await
    .unwrap();
    let id = created["upload_id"].as_str().unwrap().to_owned();
    // S3's smallest part but the last is 5 MiB: 6 MiB is two payloads.
    let sizes = [5usize << 20, 1 << 20];
    let mut parts = Vec::new();
    for (i, size) in sizes.iter().enumerate() {
        let h = json!({"key": key, "upload_id": id, "part_number": i + 1});
        let (part, _, _) = call(&run, "s3.multipart_part", *size, &h.to_string())
            .await
            .unwrap();
        parts.push(json!({"part_number": i + 1, "etag": part["etag"]}));
    }
    let h = json!({"key": key, "upload_id": id, "parts": parts});
    let (done, _, _) = call(&run, "s3.multipart_complete", 0, &h.to_string())
        .await
        .unwrap();
    assert!(done["etag"].as_str().unwrap().ends_with("-2"), "{done}");
    let (meta, _, _) = call(&run, "s3.head", 0, &json!({"key": key}).to_string())
        .await
        .unwrap();
    assert_eq!(meta["size"], 6 << 20, "{meta}");
    // Back in two ranges, each one payload: part one's bytes, then part two's.
    let mut first = 0u64;
    for size in sizes {
        let last = first + size as u64 - 1;
        let h = json!({"key": key, "range": [first, last]});
        let (got, len, sum) = call(&run, "s3.get", 0, &h.to_string()).await.unwrap();
        assert_eq!((len, sum), (size, fnv(&pattern(size))), "{got}");
        assert_eq!(got["size"], 6 << 20, "the whole object's size: {got}");
        first = last + 1;
    }
    // An aborted upload is gone.
    let (other, _, _) = call(&run, "s3.multipart_create", 0, r#"{"key":"big/aborted"}"#)
        .await
        .unwrap();
    let id = other["upload_id"].as_str().unwrap();
    let h = json!({"key": "big/aborted", "upload_id": id});
    call(&run, "s3.multipart_abort", 0, &h.to_string())
        .await
        .unwrap();
    let h = json!({"key": "big/aborted", "upload_id": id, "part_number": 1});
    let err = remote(
        &call(&run, "s3.multipart_part", 10, &h.to_string())
            .await
            .unwrap_err(),
    );
    // (moto answers a part for an aborted upload with a bare 500; S3 says
    // `NoSuchUpload`, which the driver maps to `no-such-upload`.)
    assert!(err["status"].as_u64().unwrap() >= 400, "{err}");
    let err = remote(
        &call(&run, "s3.head", 0, r#"{"key":"big/aborted"}"#)
            .await
            .unwrap_err(),
    );
    assert_eq!(err["error"], "no-such-key", "{err}");
    let report = run.stop().await;
    assert!(report.agents.iter().all(|a| a.faults == 0), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_pages_through_a_prefix_with_continuation_tokens() {
    let moto = moto().await;
    let run = start(&agents(moto.port, &moto.key, &moto.secret));
    let mut want = Vec::new();
    for i in 0..5 {
        let key = format!("list-k{i}");
        call(&run, "s3.put", 10 + i, &format!(r#"{{"key":"{key}"}}"#))
            .await
            .unwrap();
        want.push(key);
    }
    call(&run, "s3.put", 1, r#"{"key":"other/x"}"#)
        .await
        .unwrap();
    // The prefix has no `/`: the driver signs it as SigV4 says
    // (`prefix=a%2F`), but moto recomputes the signature over the query as
    // werkzeug decodes it (`prefix=a/`) and rejects it, for boto3 too.
    let (mut seen, mut pages, mut token) = (Vec::new(), Vec::new(), None::<String>);
    loop {
        let header = match &token {
            Some(t) => {
                serde_json::json!({"prefix": "list-", "max_keys": 2, "continuation_token": t})
            }
            None => serde_json::json!({"prefix": "list-", "max_keys": 2}),
        };
        let (page, _, _) = call(&run, "s3.list", 0, &header.to_string()).await.unwrap();
        let keys = page["keys"].as_array().unwrap();
        pages.push(keys.len());
        for k in keys {
            seen.push(k["key"].as_str().unwrap().to_owned());
            assert!(k["size"].as_u64().unwrap() >= 10, "{k}");
        }
        match page["next_continuation_token"].as_str() {
            Some(t) => token = Some(t.to_owned()),
            None => break,
        }
        assert!(pages.len() < 10, "pagination ends: {pages:?}");
    }
    assert_eq!(pages, [2, 2, 1]);
    assert_eq!(seen, want);
    let (all, _, _) = call(&run, "s3.list", 0, "{}").await.unwrap();
    assert_eq!(all["keys"].as_array().unwrap().len(), 6, "{all}");
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presigned_urls_are_valid_sigv4_and_fetch_with_a_plain_client() {
    let moto = moto().await;
    let run = start(&agents(moto.port, &moto.key, &moto.secret));
    call(&run, "s3.put", 70_000, r#"{"key":"shared/report.bin"}"#)
        .await
        .unwrap();
    let (get, _, _) = call(
        &run,
        "s3.presign_get",
        0,
        r#"{"key":"shared/report.bin","expires_secs":600}"#,
    )
    .await
    .unwrap();
    let (put, _, _) = call(&run, "s3.presign_put", 0, r#"{"key":"shared/upload.txt"}"#)
        .await
        .unwrap();
    let (get, put) = (get["url"].as_str().unwrap(), put["url"].as_str().unwrap());
    let prefix = format!("http://127.0.0.1:{}/{BUCKET}/shared/", moto.port);
    assert!(
        get.starts_with(&prefix) && get.contains("X-Amz-Expires=600"),
        "{get}"
    );
    assert!(
        !get.contains(&moto.secret),
        "the URL carries a signature, not the key"
    );
    // moto checks header signatures only (a presigned request without an
    // `Authorization` header fails its check with a 500), so botocore
    // verifies the query signatures here, then checking is turned off for
    // the plain client's fetch.
    for (url, method) in [(get, "GET"), (put, "PUT")] {
        assert_eq!(
            python(VERIFY_PRESIGNED, &[url, method, &moto.key, &moto.secret]),
            "match",
            "{url}"
        );
        let forged = python(VERIFY_PRESIGNED, &[url, method, &moto.key, "wrong"]);
        assert!(forged.starts_with("mismatch"), "{forged}");
    }
    let (status, _) = http(moto.port, "POST", "/moto-api/reset-auth", b"1000000").await;
    assert_eq!(status, 200);
    let target = |url: &str| url[format!("http://127.0.0.1:{}", moto.port).len()..].to_owned();
    let (status, body) = http(moto.port, "GET", &target(get), b"").await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!((body.len(), fnv(&body)), (70_000, fnv(&pattern(70_000))));
    let (status, body) = http(moto.port, "PUT", &target(put), b"uploaded by URL").await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let (meta, len, _) = call(&run, "s3.get", 0, r#"{"key":"shared/upload.txt"}"#)
        .await
        .unwrap();
    assert_eq!(len, 15, "{meta}");
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_key_is_rejected_by_the_server() {
    let moto = moto().await;
    let run = start(&agents(moto.port, &moto.key, "wrong-secret-key"));
    let err = remote(
        &call(&run, "s3.put", 5, r#"{"key":"nope"}"#)
            .await
            .unwrap_err(),
    );
    assert_eq!(err["error"], "bad-signature", "{err}");
    assert_eq!(err["code"], "SignatureDoesNotMatch", "{err}");
    assert_eq!(err["status"], 403, "{err}");
    let err = remote(&call(&run, "s3.list", 0, "{}").await.unwrap_err());
    assert_eq!(err["error"], "bad-signature", "{err}");
    let report = run.stop().await;
    assert!(report.agents.iter().all(|a| a.faults == 0), "{report:?}");
    // The object was not written: the right key sees an empty bucket.
    let run = start(&agents(moto.port, &moto.key, &moto.secret));
    let (all, _, _) = call(&run, "s3.list", 0, "{}").await.unwrap();
    assert_eq!(all["keys"], serde_json::json!([]), "{all}");
    run.stop().await;
    // A key id the server does not know is its own answer.
    let run = start(&agents(moto.port, "AKIAUNKNOWNKEY000000", &moto.secret));
    let err = remote(&call(&run, "s3.list", 0, "{}").await.unwrap_err());
    assert_eq!(err["error"], "invalid-access-key", "{err}");
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_never_holds_the_key() {
    let moto = moto().await;
    let toml = agents(moto.port, &moto.key, &moto.secret);
    // Only the driver's table names the key, and the client has no secrets
    // grant.
    let cfg = config(&toml);
    let app = cfg.agents.iter().find(|a| a.name == "app").unwrap();
    let driver = cfg.agents.iter().find(|a| a.name == "s3").unwrap();
    let held = |a: &toka_core::AgentConfig| {
        a.settings
            .iter()
            .any(|(_, v)| v.contains(&moto.secret) || v.contains(&moto.key))
    };
    assert!(!held(app), "{:?}", app.settings);
    assert!(held(driver));
    assert!(
        !app.settings.iter().any(|(k, _)| k.contains("secret")),
        "{:?}",
        app.settings
    );
    let run = start(&toml);
    call(&run, "s3.put", 3, r#"{"key":"mine"}"#).await.unwrap();
    // What the client's `init` received, and what it can read.
    let init = run.rec.payloads("probe.init").concat();
    assert!(
        !init.contains(&moto.secret) && !init.contains(&moto.key),
        "{init}"
    );
    run.stop().await;
    // Nor does the log: the host logs requests and HTTP calls, never their
    // bodies or headers.
    let logged = toka_tests::captured_logs();
    assert!(!logged.contains(&moto.secret), "the secret is never logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_that_does_not_answer_and_the_hosts_rate_limit_are_typed_answers() {
    // An allowed loopback port nobody listens on: no moto needed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // One request a second: the host's own limit answers the next ones.
    let toml = agents(port, "AKIDEXAMPLE", "secret").replace(
        "timeout_ms = 15000",
        "timeout_ms = 15000\nhttp_requests_per_sec = 1",
    );
    let run = start(&toml);
    let err = remote(&call(&run, "s3.get", 0, r#"{"key":"k"}"#).await.unwrap_err());
    assert_eq!(err["error"], "unreachable", "{err}");
    assert_eq!(err["code"], "ConnectionRefused", "{err}");
    let mut answers = Vec::new();
    for _ in 0..5 {
        let err = remote(&call(&run, "s3.get", 0, r#"{"key":"k"}"#).await.unwrap_err());
        answers.push((err["error"].clone(), err["code"].clone()));
    }
    assert!(
        answers.contains(&("throttled".into(), "ConnectionLimitReached".into())),
        "{answers:?}"
    );
    let report = run.stop().await;
    assert!(report.agents.iter().all(|a| a.faults == 0), "{report:?}");
}

/// A loopback stand-in for S3 answering every request with `status` and an
/// S3 `<Error>` of `code` (what moto cannot be made to say on demand).
async fn failing_server(status: u16, code: &'static str) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 << 10];
                let mut seen = 0;
                while !buf[..seen].windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf[seen..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen += n,
                    }
                }
                let body = format!(
                    "<?xml version=\"1.0\"?><Error><Code>{code}</Code>\
                     <Message>stand-in</Message></Error>"
                );
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/xml\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(reply.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_typed_answers() {
    for (status, code, want) in [
        (403, "AccessDenied", "access-denied"),
        (503, "SlowDown", "throttled"),
        (429, "TooManyRequests", "throttled"),
        (404, "NoSuchBucket", "no-such-bucket"),
        (403, "InvalidAccessKeyId", "invalid-access-key"),
        (500, "InternalError", "other"),
    ] {
        let port = failing_server(status, code).await;
        let run = start(&agents(port, "AKIDEXAMPLE", "secret"));
        let err = remote(&call(&run, "s3.get", 0, r#"{"key":"k"}"#).await.unwrap_err());
        assert_eq!(
            (
                err["error"].as_str(),
                err["status"].as_u64(),
                err["code"].as_str()
            ),
            (Some(want), Some(u64::from(status)), Some(code)),
            "{err}"
        );
        let report = run.stop().await;
        assert!(report.agents.iter().all(|a| a.faults == 0), "{report:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_that_need_percent_encoding_round_trip() {
    // `+`, `;`, `%`, `&`, `=` and non-ASCII keys are left out: moto
    // recomputes signatures over the decoded path and rejects them, for
    // boto3 (checked for `+`, `;`, `ünï`) as for the driver.
    let moto = moto().await;
    let run = start(&agents(moto.port, &moto.key, &moto.secret));
    for key in ["a b", "what?x", "tilde~_.-", "deep/er/key"] {
        let h = serde_json::json!({"key": key}).to_string();
        call(&run, "s3.put", 7, &h).await.unwrap();
        let (_, len, sum) = call(&run, "s3.get", 0, &h).await.unwrap();
        assert_eq!((len, sum), (7, fnv(&pattern(7))), "{key}");
    }
    let (all, _, _) = call(&run, "s3.list", 0, "{}").await.unwrap();
    let mut keys: Vec<&str> = all["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key"].as_str().unwrap())
        .collect();
    keys.sort();
    assert_eq!(keys, ["a b", "deep/er/key", "tilde~_.-", "what?x"]);
    run.stop().await;
}
