//! The Stripe provider (`guests/provider-stripe`) against Stripe's published
//! protocol, checked with the official library: the `stripe` PyPI package
//! (`pip install stripe`; `.ci/run` installs it) signs the webhook vectors,
//! judges each one with `stripe.Webhook.construct_event`, and form-encodes
//! the API parameters with its own request encoder (`_api_encode` +
//! `urlencode`, as `_api_requestor.py` builds a body). Stripe itself cannot
//! be reached from here: a loopback server stands in for `api.stripe.com`
//! and records every request the provider sends.
//!
//! One module runs as two agents: `stripe` (the service, holding the
//! secrets) and `stripe-webhook` (routed at `/stripe/webhook`, no secret);
//! a probe agent `app` with `request = ["stripe.>"]` is the API's client.

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::{Value, json};
use toka_tests::{Recorder, WAIT, logs, with_recorder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const KEY: &str = "sk_test_51ProviderStripeKeyNeverLeaves";
const OLD: &str = "whsec_test_old_3vL9";
const NEW: &str = "whsec_test_new_Q2x7";

/// Signs and judges the webhook vectors, encodes parameters, all with
/// stripe-python. Reads a JSON job on stdin, prints one JSON object.
const VECTORS: &str = r#"
import json, sys
from collections import OrderedDict
from urllib.parse import urlencode
import stripe
from stripe import Webhook, WebhookSignature
from stripe._encode import _api_encode

job = json.load(sys.stdin)
secrets, now = job["secrets"], job["now"]
old, new = secrets[0], secrets[1]

def sig(t, payload, secret):
    return WebhookSignature._compute_signature("%d.%s" % (t, payload), secret)

def event(i, kind="checkout.session.completed"):
    return json.dumps({"id": "evt_vec_%d" % i, "object": "event", "type": kind,
                       "data": {"object": {"id": "cs_%d" % i, "amount_total": 1000 + i}}})

def judge(payload, header, secret):
    try:
        Webhook.construct_event(payload, header, secret)
        return "ok"
    except stripe.SignatureVerificationError as e:
        m = str(e)
        if "tolerance" in m: return "expired"
        if "No signatures found" in m: return "bad-signature"
        if "Unable to extract" in m or "No Stripe-Signature" in m: return "malformed"
        return m

cases = []
def case(name, payload, header):
    per = [judge(payload, header, s) for s in secrets]
    v = "ok" if "ok" in per else "expired" if "expired" in per else per[0]
    cases.append({"name": name, "payload": payload, "header": header, "python": v, "per_secret": per})

gen = WebhookSignature.generate_signature_header
p = event(1); case("valid, first secret", p, gen(p, old, now))
p = event(2); case("rotated: the second secret signs", p, gen(p, new, now))
p = event(3); case("one bad and one good v1", p, "t=%d,v1=%s,v1=%s" % (now, "0" * 64, sig(now, p, old)))
p = event(4); case("malformed header", p, "i'm not even a real signature header")
p = event(5); case("bad_header", p, "bad_header")
p = event(6); case("no v1 (scheme v0)", p, "t=%d,v0=%s" % (now, sig(now, p, old)))
p = event(7); case("v1=bad_signature", p, "t=%d,v1=bad_signature" % now)
p = event(8); case("expired timestamp", p, gen(p, old, now - 600))
p = event(9); case("an unknown secret signs", p, gen(p, "whsec_not_configured", now))
p = event(10); case("the body changed after signing", p.replace("1010", "9999"), gen(p, old, now))
p = event(11); case("no header", p, "")
p = event(12); case("the timestamp changed after signing", p, "t=%d,v1=%s" % (now - 1, sig(now, p, old)))

signed = [gen(p, s, t) for (p, s, t) in job.get("sign", [])]
encoded = []
for params in job.get("encode", []):
    s = urlencode(list(_api_encode(json.loads(params, object_pairs_hook=OrderedDict))))
    encoded.append(s.replace("%5B", "[").replace("%5D", "]"))
print(json.dumps({"cases": cases, "signed": signed, "encoded": encoded}))
"#;

/// Run [`VECTORS`] on `job`.
fn python(job: Value) -> Value {
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(VECTORS)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(job.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "stripe-python failed (install it with `python3 -m pip install stripe`; .ci/run does): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// One request the stand-in API received.
#[derive(Debug, Clone)]
struct Call {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Call {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn body(&self) -> String {
        String::from_utf8(self.body.clone()).unwrap()
    }
}

/// The stand-in for `api.stripe.com` on a loopback port: it records every
/// request and answers by path (see [`answer`]).
struct Api {
    port: u16,
    calls: Arc<Mutex<Vec<Call>>>,
}

impl Api {
    async fn start() -> Api {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let calls = Arc::new(Mutex::new(Vec::new()));
        let record = calls.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                tokio::spawn(serve(s, record.clone()));
            }
        });
        Api { port, calls }
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().clone()
    }

    fn last(&self) -> Call {
        self.calls.lock().last().cloned().expect("a recorded call")
    }
}

/// A Stripe error body.
fn stripe_error(fields: Value) -> String {
    json!({ "error": fields }).to_string()
}

/// What the stand-in answers: `/v1/customers/cus_eNNN` is Stripe's error
/// for status NNN (401 echoes the bearer token, as a careless server
/// might), anything else 200 with an object naming the path.
fn answer(call: &Call) -> (u16, String) {
    let path = call.target.split('?').next().unwrap();
    let error = path
        .strip_prefix("/v1/customers/cus_e")
        .map(|s| s.to_owned());
    match error.as_deref() {
        Some("400") => (
            400,
            stripe_error(
                json!({"type": "invalid_request_error", "code": "parameter_unknown",
                "param": "colour", "message": "Received unknown parameter: colour"}),
            ),
        ),
        Some("401") => (
            401,
            stripe_error(json!({"type": "invalid_request_error", "message": format!(
                "Invalid API Key provided: {}", call.header("authorization").unwrap_or_default()
                    .trim_start_matches("Bearer "))})),
        ),
        Some("402") => (
            402,
            stripe_error(json!({"type": "card_error", "code": "card_declined",
                "decline_code": "insufficient_funds", "param": "payment_method",
                "message": "Your card has insufficient funds."})),
        ),
        Some("403") => (
            403,
            stripe_error(json!({"type": "invalid_request_error",
                "message": "The provided key does not have the required permissions"})),
        ),
        Some("404") => (
            404,
            stripe_error(
                json!({"type": "invalid_request_error", "code": "resource_missing",
                "param": "id", "message": "No such customer: 'cus_e404'"}),
            ),
        ),
        Some("409") => (
            409,
            stripe_error(json!({"type": "idempotency_error",
                "message": "Keys for idempotent requests can only be used with the same parameters"})),
        ),
        Some("429") => (
            429,
            stripe_error(
                json!({"type": "invalid_request_error", "code": "rate_limit",
                "message": "Too many requests"}),
            ),
        ),
        Some("500") => (
            500,
            stripe_error(json!({"type": "api_error", "message": "Something went wrong"})),
        ),
        Some("503") => (503, "upstream unavailable".into()),
        _ => (
            200,
            json!({"id": "obj_1", "object": "test", "method": call.method, "path": path})
                .to_string(),
        ),
    }
}

async fn serve(mut s: TcpStream, calls: Arc<Mutex<Vec<Call>>>) {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 16 << 10];
    loop {
        let end = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end;
            }
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let mut lines = head.split("\r\n");
        let mut first = lines.next().unwrap().split(' ');
        let method = first.next().unwrap().to_owned();
        let target = first.next().unwrap().to_owned();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .map(|(_, v)| v.parse().unwrap())
            .unwrap_or(0);
        while buf.len() < end + 4 + length {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let call = Call {
            method,
            target,
            headers,
            body: buf[end + 4..end + 4 + length].to_vec(),
        };
        buf.drain(..end + 4 + length);
        let (status, body) = answer(&call);
        calls.lock().push(call);
        let reply = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\nrequest-id: req_test_1\r\n\
             content-length: {}\r\n\r\n{body}",
            body.len()
        );
        if s.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// The two provider agents, the probe `app`, and the route; with `kv`, a
/// store at that path and the `kv` grant for the service agent.
fn toml(api_port: u16, kv: Option<&std::path::Path>) -> String {
    let (store, grant) = match kv {
        Some(path) => (format!("[kv]\npath = {path:?}"), "kv = true"),
        None => (String::new(), ""),
    };
    format!(
        r#"
        {store}
        [http]
        listen = "127.0.0.1:0"
        allow_private = ["127.0.0.1/32"]

        [[http.routes]]
        path = "/stripe/webhook"
        agent = "stripe-webhook"

        [[agents]]
        name = "stripe"
        module = "provider_stripe.wasm"
        serve = ["stripe.>"]
        publish = ["stripe.>"]
        allowed_hosts = ["http://127.0.0.1:{api_port}"]
        secret_key = "{KEY}"
        webhook_secret = "{OLD}, {NEW}"
        api_base = "http://127.0.0.1:{api_port}"
        api_version = "2024-06-20"
        timeout_ms = 10000
        {grant}

        [[agents]]
        name = "stripe-webhook"
        module = "provider_stripe.wasm"
        request = ["stripe.webhook"]
        timeout_ms = 20000

        [[agents]]
        name = "app"
        module = "probe.wasm"
        subscribe = ["app.cmd"]
        publish = ["probe.result", "probe.init"]
        request = ["stripe.>"]
        timeout_ms = 20000
        "#
    )
}

/// A running runtime, its listener, and the stand-in API.
struct Stripe {
    addr: SocketAddr,
    rec: Recorder,
    cx: toka_core::Context,
    api: Api,
    stop: toka_runtime::ShutdownHandle,
    run: tokio::task::JoinHandle<toka_runtime::Result<toka_runtime::Report>>,
}

impl Stripe {
    async fn start() -> Stripe {
        Stripe::start_with(None).await
    }

    async fn start_with(kv: Option<&std::path::Path>) -> Stripe {
        logs();
        let api = Api::start().await;
        let (rt, rec) = with_recorder(
            &toml(api.port, kv),
            &["stripe.>", "probe.>", "toka.dead-letter"],
        );
        let addr = rt.http_listener().expect("the listener is bound");
        let cx = rt.injector("test");
        let stop = rt.shutdown_handle();
        let run = tokio::spawn(rt.run_until(std::future::pending()));
        Stripe {
            addr,
            rec,
            cx,
            api,
            stop,
            run,
        }
    }

    async fn stop(self) -> toka_runtime::Report {
        self.stop.shutdown();
        let report = self
            .run
            .await
            .expect("runtime task")
            .expect("runtime ends cleanly");
        assert!(report.agents.iter().all(|a| a.faults == 0), "{report:?}");
        // Nothing the client or the log saw holds a secret.
        for e in self.rec.events() {
            let text = String::from_utf8_lossy(&e.payload);
            for secret in [KEY, OLD, NEW] {
                assert!(!text.contains(secret), "{} holds a secret: {text}", e.kind);
            }
        }
        let log = toka_tests::captured_logs();
        for secret in [KEY, OLD, NEW] {
            assert!(!log.contains(secret), "the log holds a secret");
        }
        report
    }

    /// POST `body` to the route with `signature` (none when empty): status
    /// and the reply's JSON.
    async fn post(&self, signature: &str, body: &str) -> (u16, Value) {
        let mut raw = format!(
            "POST /stripe/webhook HTTP/1.1\r\nhost: toka.test\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nconnection: close\r\n",
            body.len()
        );
        if !signature.is_empty() {
            raw.push_str(&format!("stripe-signature: {signature}\r\n"));
        }
        raw.push_str("\r\n");
        raw.push_str(body);
        let mut s = TcpStream::connect(self.addr).await.unwrap();
        s.write_all(raw.as_bytes()).await.unwrap();
        let mut reply = Vec::new();
        tokio::time::timeout(WAIT, s.read_to_end(&mut reply))
            .await
            .expect("a reply within the wait")
            .unwrap();
        let end = reply
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a response head");
        let head = String::from_utf8_lossy(&reply[..end]).to_ascii_lowercase();
        let status = head[9..12].parse().unwrap();
        assert!(
            !head.contains("transfer-encoding: chunked"),
            "the provider sets content-length: {head}"
        );
        let body = &reply[end + 4..];
        let json = serde_json::from_slice(body)
            .unwrap_or_else(|e| panic!("reply {}: {e}", String::from_utf8_lossy(body)));
        (status, json)
    }

    /// Have `app` request `kind` with `payload`: the reply's JSON, or the
    /// error (`remote:` JSON parsed, else the text).
    async fn ask(&self, kind: &str, payload: impl std::fmt::Display) -> Result<Value, Value> {
        let results = |rec: &Recorder| rec.payloads("probe.result");
        let before = results(&self.rec).len();
        self.cx
            .publish("app.cmd", format!("request {kind} {payload}"))
            .unwrap();
        self.rec
            .wait_for("a result from app", |evs| {
                evs.iter()
                    .filter(|e| e.kind.as_str() == "probe.result")
                    .count()
                    > before
            })
            .await;
        let out = results(&self.rec).pop().unwrap();
        if let Some(ok) = out.strip_prefix("ok:") {
            return Ok(serde_json::from_str(ok).unwrap_or_else(|e| panic!("reply {ok}: {e}")));
        }
        match out.strip_prefix("err:remote:") {
            Some(text) => {
                Err(serde_json::from_str(text).unwrap_or_else(|e| panic!("error JSON {text}: {e}")))
            }
            None => Err(Value::String(out)),
        }
    }
}

/// The payloads of the `kind` events, in order.
fn events(rec: &Recorder, kind: &str) -> Vec<String> {
    rec.payloads(kind)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stripe_python_webhook_vectors_are_accepted_and_refused_as_stripe_python_judges_them() {
    let stripe = Stripe::start().await;
    let vectors = python(json!({"secrets": [OLD, NEW], "now": now()}));
    let cases = vectors["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 12);
    let mut accepted = Vec::new();
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let payload = case["payload"].as_str().unwrap();
        let header = case["header"].as_str().unwrap();
        let python = case["python"].as_str().unwrap();
        let (status, reply) = stripe.post(header, payload).await;
        if python == "ok" {
            assert_eq!(status, 200, "{name}: {reply}");
            assert_eq!(reply["result"], "ok", "{name}: {reply}");
            assert_eq!(reply["kind"], "stripe.checkout.session.completed", "{name}");
            accepted.push(payload.to_owned());
        } else {
            assert_eq!(status, 400, "{name}: {reply}");
            assert_eq!(
                reply["error"], python,
                "{name}: python says {python}: {reply}"
            );
        }
    }
    // Python agrees on the cases that matter, secret by secret: rotation
    // needs the second secret, the unsigned and expired ones fail for both.
    let verdict = |name: &str| {
        let case = cases.iter().find(|c| c["name"] == name).unwrap();
        case["per_secret"].clone()
    };
    assert_eq!(
        verdict("valid, first secret"),
        json!(["ok", "bad-signature"])
    );
    assert_eq!(
        verdict("rotated: the second secret signs"),
        json!(["bad-signature", "ok"])
    );
    assert_eq!(
        verdict("expired timestamp"),
        json!(["expired", "bad-signature"])
    );
    assert_eq!(verdict("no v1 (scheme v0)")[0], "bad-signature");
    assert_eq!(verdict("malformed header")[0], "malformed");
    assert_eq!(accepted.len(), 3, "{accepted:?}");
    // Exactly the accepted bodies became events, unchanged and in order:
    // the refused ones published nothing (a last event from the same
    // publisher arrives after anything published before it).
    let marker = r#"{"id":"evt_marker","object":"event","type":"payment_intent.succeeded"}"#;
    let signed =
        python(json!({"secrets": [OLD, NEW], "now": now(), "sign": [[marker, NEW, now()]]}));
    let (status, _) = stripe
        .post(signed["signed"][0].as_str().unwrap(), marker)
        .await;
    assert_eq!(status, 200);
    stripe
        .rec
        .wait_kind("stripe.payment_intent.succeeded", 1)
        .await;
    assert_eq!(
        events(&stripe.rec, "stripe.checkout.session.completed"),
        accepted
    );
    assert!(stripe.api.calls().is_empty(), "webhooks call no API");
    stripe.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_webhook_is_one_event_a_redelivery_a_duplicate_and_a_bad_signature_nothing() {
    let stripe = Stripe::start().await;
    let t = now();
    let paid = r#"{"id":"evt_1Paid","object":"event","type":"checkout.session.completed","data":{"object":{"id":"cs_test_1","metadata":{"order":"42"}}}}"#;
    let forged =
        r#"{"id":"evt_2Forged","object":"event","type":"checkout.session.completed","data":{}}"#;
    let marker = r#"{"id":"evt_3Marker","object":"event","type":"customer.created","data":{}}"#;
    let signed = python(json!({
        "secrets": [OLD, NEW], "now": t,
        "sign": [[paid, OLD, t], [paid, NEW, t + 1], [forged, "whsec_attacker", t], [marker, OLD, t]],
    }));
    let header = |i: usize| signed["signed"][i].as_str().unwrap().to_owned();

    let (status, first) = stripe.post(&header(0), paid).await;
    assert_eq!((status, &first["result"]), (200, &json!("ok")), "{first}");
    assert_eq!(first["id"], "evt_1Paid");
    // Stripe's retry of the same event, signed again later (and here with
    // the rotated secret): answered 200 so Stripe stops, not published.
    let (status, again) = stripe.post(&header(1), paid).await;
    assert_eq!(
        (status, &again["result"]),
        (200, &json!("duplicate")),
        "{again}"
    );
    let (status, bad) = stripe.post(&header(2), forged).await;
    assert_eq!(
        (status, &bad["error"]),
        (400, &json!("bad-signature")),
        "{bad}"
    );
    let (status, missing) = stripe.post("", forged).await;
    assert_eq!(
        (status, &missing["error"]),
        (400, &json!("malformed")),
        "{missing}"
    );
    let (status, _) = stripe.post(&header(3), marker).await;
    assert_eq!(status, 200);
    assert_eq!(
        stripe.rec.wait_kind("stripe.customer.created", 1).await,
        [marker]
    );
    assert_eq!(
        events(&stripe.rec, "stripe.checkout.session.completed"),
        [paid]
    );
    let published: Vec<_> = stripe
        .rec
        .events()
        .iter()
        .filter(|e| e.kind.as_str().starts_with("stripe."))
        .map(|e| (e.kind.as_str().to_owned(), e.source.to_string()))
        .collect();
    assert_eq!(
        published,
        [
            ("stripe.checkout.session.completed".into(), "stripe".into()),
            ("stripe.customer.created".into(), "stripe".into()),
        ],
        "the service agent publishes, once per event"
    );
    stripe.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn form_bodies_match_stripe_pythons_encoder_byte_for_byte() {
    let stripe = Stripe::start().await;
    let params = [
        r#"{"email":"jenny@example.com","name":"Jenny Rosen","metadata":{"order":"1","note":"a&b=c"}}"#,
        r#"{"amount":2000,"currency":"usd","automatic_payment_methods":{"enabled":true},"confirm":false,"expand":["customer","latest_charge"]}"#,
        r#"{"items":[{"price":"price_1","quantity":2},{"price":"price_2","quantity":-1}],"deep":{"a":{"b":{"c":"d"}}},"list":[[1,2],["x"]],"amount":0}"#,
        r#"{"description":"Zoë 東京 🚀 100% +tax #1 ~/?[]","metadata":{"ключ":"значение","space key":"  ","quote":"\"'<>"},"empty":"","skip":null,"ratio":1.5,"big":9007199254740993}"#,
        r#"{"z":"last","a":"first","m":{"2":"two","1":"one"}}"#,
        r#"{}"#,
    ];
    let python = python(json!({"secrets": [OLD, NEW], "now": now(), "encode": params}));
    for (i, p) in params.iter().enumerate() {
        // Sent as written: the key order is the caller's (a `Value` here
        // would sort it).
        let reply = stripe
            .ask("stripe.customers.create", p)
            .await
            .unwrap_or_else(|e| panic!("{p}: {e}"));
        assert_eq!(reply["path"], "/v1/customers");
        let call = stripe.api.last();
        assert_eq!(
            (call.method.as_str(), call.target.as_str()),
            ("POST", "/v1/customers")
        );
        assert_eq!(
            call.header("content-type"),
            Some("application/x-www-form-urlencoded")
        );
        assert_eq!(call.body(), python["encoded"][i].as_str().unwrap(), "{p}");
    }
    // The same encoding in a retrieve's query string.
    stripe
        .ask(
            "stripe.payment_intents.retrieve",
            &json!({"id": "pi_3Mt", "expand": ["customer", "latest_charge.balance_transaction"]}),
        )
        .await
        .unwrap();
    assert_eq!(
        stripe.api.last().target,
        "/v1/payment_intents/pi_3Mt?expand[0]=customer&expand[1]=latest_charge.balance_transaction"
    );
    // The one documented difference: a boolean directly in an array is
    // `true` here (what Stripe reads), Python's `True` in stripe-python.
    let flags = r#"{"flags":[true,false]}"#;
    let python = self::python(json!({"secrets": [OLD, NEW], "now": now(), "encode": [flags]}));
    assert_eq!(python["encoded"][0], "flags[0]=True&flags[1]=False");
    stripe.ask("stripe.customers.create", flags).await.unwrap();
    assert_eq!(stripe.api.last().body(), "flags[0]=true&flags[1]=false");
    stripe.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_calls_carry_the_key_and_an_idempotency_key_and_the_client_never_sees_the_key() {
    let stripe = Stripe::start().await;
    let bearer = format!("Bearer {KEY}");
    let reply = stripe
        .ask(
            "stripe.payment_intents.create",
            &json!({"amount": 2000, "currency": "eur", "metadata": {"order": "42"},
                    "idempotency_key": "order-42-attempt-1", "stripe_version": "2025-01-27.acacia"}),
        )
        .await
        .unwrap();
    // The reply is the API's body, unchanged.
    assert_eq!(
        reply,
        json!({"id": "obj_1", "object": "test", "method": "POST", "path": "/v1/payment_intents"})
    );
    let call = stripe.api.last();
    assert_eq!(call.method, "POST");
    assert_eq!(call.target, "/v1/payment_intents");
    assert_eq!(call.header("authorization"), Some(bearer.as_str()));
    assert_eq!(call.header("idempotency-key"), Some("order-42-attempt-1"));
    assert_eq!(call.header("stripe-version"), Some("2025-01-27.acacia"));
    assert_eq!(call.body(), "amount=2000&currency=eur&metadata[order]=42");

    // Without a key of the caller's, every POST still carries a fresh one.
    let mut keys = Vec::new();
    for _ in 0..2 {
        stripe
            .ask(
                "stripe.refunds.create",
                &json!({"payment_intent": "pi_1", "amount": 500}),
            )
            .await
            .unwrap();
        let call = stripe.api.last();
        assert_eq!(
            (call.method.as_str(), call.target.as_str()),
            ("POST", "/v1/refunds")
        );
        assert_eq!(
            call.header("stripe-version"),
            Some("2024-06-20"),
            "the setting"
        );
        let key = call
            .header("idempotency-key")
            .expect("an Idempotency-Key")
            .to_owned();
        assert!(
            key.len() == 32 && key.bytes().all(|b| b.is_ascii_hexdigit()),
            "{key}"
        );
        keys.push(key);
    }
    assert_ne!(keys[0], keys[1], "a new key per call");

    for (kind, id, path) in [
        (
            "stripe.customers.retrieve",
            "cus_123",
            "/v1/customers/cus_123",
        ),
        (
            "stripe.payment_intents.retrieve",
            "pi_3MtwBw",
            "/v1/payment_intents/pi_3MtwBw",
        ),
        (
            "stripe.refunds.retrieve",
            "re_1Nisp",
            "/v1/refunds/re_1Nisp",
        ),
    ] {
        let reply = stripe.ask(kind, &json!({"id": id})).await.unwrap();
        assert_eq!(reply["method"], "GET");
        let call = stripe.api.last();
        assert_eq!((call.method.as_str(), call.target.as_str()), ("GET", path));
        assert_eq!(call.header("authorization"), Some(bearer.as_str()));
        assert_eq!(call.header("idempotency-key"), None, "GETs carry none");
        assert!(call.body.is_empty());
    }
    stripe
        .ask(
            "stripe.customers.create",
            &json!({"email": "a@example.com"}),
        )
        .await
        .unwrap();
    assert_eq!(stripe.api.last().body(), "email=a%40example.com");

    // Refused before any request: a path-escaping id, an unknown call.
    let sent = stripe.api.calls().len();
    for (kind, payload) in [
        (
            "stripe.customers.retrieve",
            json!({"id": "../../v1/charges"}),
        ),
        ("stripe.customers.retrieve", json!({})),
        ("stripe.customers.delete", json!({"id": "cus_1"})),
        ("stripe.customers.create", json!({"idempotency_key": 7})),
        ("stripe.customers.create", json!(["not", "an", "object"])),
    ] {
        let err = stripe.ask(kind, &payload).await.unwrap_err();
        assert_eq!(err["error"], "invalid", "{kind} {payload}: {err}");
    }
    assert_eq!(stripe.api.calls().len(), sent);
    // The client's view (its init config, every reply) never held the key:
    // checked over every recorded event by `stop`.
    let init = stripe.rec.wait_kind("probe.init", 1).await;
    assert!(!init[0].contains("sk_"), "{init:?}");
    stripe.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stripe_errors_come_back_typed_and_scrubbed_of_the_key() {
    let stripe = Stripe::start().await;
    for (status, error, kind, code) in [
        (
            400,
            "invalid-request",
            "invalid_request_error",
            Some("parameter_unknown"),
        ),
        (401, "authentication", "invalid_request_error", None),
        (402, "card-error", "card_error", Some("card_declined")),
        (403, "permission", "invalid_request_error", None),
        (
            404,
            "not-found",
            "invalid_request_error",
            Some("resource_missing"),
        ),
        (409, "idempotency", "idempotency_error", None),
        (
            429,
            "rate-limited",
            "invalid_request_error",
            Some("rate_limit"),
        ),
        (500, "api-error", "api_error", None),
    ] {
        let err = stripe
            .ask(
                "stripe.customers.retrieve",
                &json!({"id": format!("cus_e{status}")}),
            )
            .await
            .unwrap_err();
        assert_eq!(err["error"], error, "{status}: {err}");
        assert_eq!(err["status"], status, "{err}");
        assert_eq!(err["type"], kind, "{err}");
        assert_eq!(err["code"].as_str(), code, "{err}");
        assert_eq!(err["request_id"], "req_test_1", "{err}");
        assert!(
            err["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{err}"
        );
        if status == 402 {
            assert_eq!(err["decline_code"], "insufficient_funds", "{err}");
            assert_eq!(err["param"], "payment_method", "{err}");
        }
        if status == 401 {
            // The server echoed the whole key; the requester gets it scrubbed.
            assert_eq!(
                err["message"], "Invalid API Key provided: [redacted]",
                "{err}"
            );
        }
    }
    // Not Stripe's JSON at all: still typed by the status.
    let err = stripe
        .ask("stripe.customers.retrieve", &json!({"id": "cus_e503"}))
        .await
        .unwrap_err();
    assert_eq!(
        (&err["error"], &err["status"], &err["message"]),
        (&json!("api-error"), &json!(503), &json!("HTTP 503")),
        "{err}"
    );
    stripe.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_kv_the_dedup_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("kv.redb");
    let t = now();
    let paid = r#"{"id":"evt_kv_1","object":"event","type":"invoice.paid","data":{}}"#;
    let marker = r#"{"id":"evt_kv_2","object":"event","type":"invoice.created","data":{}}"#;
    let signed = python(json!({
        "secrets": [OLD, NEW], "now": t,
        "sign": [[paid, OLD, t], [paid, OLD, t + 1], [marker, OLD, t]],
    }));
    let header = |i: usize| signed["signed"][i].as_str().unwrap().to_owned();

    let first = Stripe::start_with(Some(&store)).await;
    let (status, reply) = first.post(&header(0), paid).await;
    assert_eq!((status, &reply["result"]), (200, &json!("ok")), "{reply}");
    assert_eq!(first.rec.wait_kind("stripe.invoice.paid", 1).await, [paid]);
    first.stop().await;

    // A new runtime (fresh memory) on the same store: still a duplicate.
    let second = Stripe::start_with(Some(&store)).await;
    let (status, reply) = second.post(&header(1), paid).await;
    assert_eq!(
        (status, &reply["result"]),
        (200, &json!("duplicate")),
        "{reply}"
    );
    let (status, _) = second.post(&header(2), marker).await;
    assert_eq!(status, 200);
    second.rec.wait_kind("stripe.invoice.created", 1).await;
    assert!(second.rec.payloads("stripe.invoice.paid").is_empty());
    second.stop().await;
}
