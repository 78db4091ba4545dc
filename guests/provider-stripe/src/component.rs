//! The component's exports: `handler` and `responder` for the service agent,
//! `wasi:http/incoming-handler` for the routed agent, and the outbound API
//! calls over `wasi:http` (see the crate doc for what each one does).

wit_bindgen::generate!({
    path: ["../../wit", "wit"],
    world: "toka:provider-stripe/provider",
    generate_all,
});

use std::cell::RefCell;

use exports::toka::runtime::handler::Guest as Handler;
use exports::toka::runtime::responder::{Guest as Responder, Incoming};
use exports::wasi::http::incoming_handler::Guest as HttpHandler;
use serde_json::{Value, json};
use toka::runtime::bus::publish;
use toka::runtime::request::{RequestError, request};
use toka::runtime::types::Event;
use wasi::http::outgoing_handler;
use wasi::http::types::{
    ErrorCode, Fields, IncomingRequest, Method, OutgoingBody, OutgoingRequest, OutgoingResponse,
    ResponseOutparam, Scheme,
};
use wasi::io::streams::{InputStream, StreamError};
use wasi::keyvalue::store;

use crate::form::Param;
use crate::seen::{CAPACITY, Seen};
use crate::{MAX_BODY, MAX_RESPONSE, form, signature};

/// The request kind the routed agent asks the service agent.
const WEBHOOK_KIND: &str = "stripe.webhook";

/// How long the routed agent waits for the service agent (the host caps it
/// by its own maximum and the routed agent's `timeout_ms`).
const WEBHOOK_TIMEOUT_MS: u32 = 10_000;

/// The service agent's settings and state.
struct Provider {
    secret_key: Option<String>,
    webhook_secrets: Vec<String>,
    scheme: Scheme,
    authority: String,
    api_version: Option<String>,
    tolerance: i64,
    seen: Seen,
    /// The agent's own key-value bucket, for dedup across restarts: `None`
    /// until first used, then `Some(None)` when the agent has no `kv` grant
    /// (or the store cannot be opened).
    durable: Option<Option<store::Bucket>>,
}

thread_local! {
    static PROVIDER: RefCell<Option<Provider>> = const { RefCell::new(None) };
}

/// A typed failure, rendered as one JSON object.
struct Failure(Value);

impl Failure {
    fn new(error: &str, message: impl Into<String>) -> Self {
        Failure(json!({"error": error, "message": message.into()}))
    }

    fn api(error: &str, status: u16, message: impl Into<String>) -> Self {
        Failure(json!({
            "error": error, "status": status, "type": null, "code": null,
            "decline_code": null, "param": null, "message": message.into(), "request_id": null,
        }))
    }

    fn render(self) -> String {
        self.0.to_string()
    }
}

/// The error code's name, e.g. `ConnectionRefused`, `HttpRequestDenied`.
fn code_name(e: &ErrorCode) -> String {
    let debug = format!("{e:?}");
    let name = debug.rsplit("::").next().unwrap_or(&debug);
    name.split(['(', ' ', '{'])
        .next()
        .unwrap_or(name)
        .to_owned()
}

fn unreachable(code: String) -> Failure {
    let mut f = Failure::api("unreachable", 0, format!("the HTTP request failed: {code}"));
    f.0["code"] = json!(code);
    f
}

fn header_safe(text: &str) -> bool {
    !text.is_empty() && text.len() <= 255 && text.bytes().all(|b| (0x21..0x7f).contains(&b))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Read `stream` to its end, failing past `limit` bytes.
fn read_all(stream: &InputStream, limit: usize) -> Result<Vec<u8>, Option<String>> {
    let mut out = Vec::new();
    loop {
        match stream.blocking_read(64 << 10) {
            Ok(chunk) => {
                out.extend_from_slice(&chunk);
                if out.len() > limit {
                    return Err(None);
                }
            }
            Err(StreamError::Closed) => return Ok(out),
            Err(StreamError::LastOperationFailed(e)) => {
                return Err(Some(
                    wasi::http::types::http_error_code(&e)
                        .map(|c| code_name(&c))
                        .unwrap_or_else(|| e.to_debug_string()),
                ));
            }
        }
    }
}

impl Provider {
    fn from_config(config: &[(String, String)]) -> Result<Provider, String> {
        let get = |k: &str| {
            config
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let secret_key = get("secret_key");
        if let Some(key) = &secret_key
            && !header_safe(key)
        {
            return Err("provider-stripe: `secret_key` is not a valid header value".into());
        }
        let webhook_secrets = get("webhook_secret")
            .map(|s| signature::secrets(&s))
            .unwrap_or_default();
        if secret_key.is_none() && webhook_secrets.is_empty() {
            return Err(
                "provider-stripe: set `secret_key` (API calls), `webhook_secret` (webhooks) or both"
                    .into(),
            );
        }
        let base = get("api_base").unwrap_or_else(|| "https://api.stripe.com".into());
        let (scheme, rest) = if let Some(rest) = base.strip_prefix("https://") {
            (Scheme::Https, rest)
        } else if let Some(rest) = base.strip_prefix("http://") {
            (Scheme::Http, rest)
        } else {
            return Err(format!(
                "provider-stripe: api_base `{base}` must start with https:// or http://"
            ));
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
            return Err(format!(
                "provider-stripe: api_base `{base}` must be scheme://host[:port], with no path"
            ));
        }
        let tolerance = match get("tolerance_s") {
            None => 300,
            Some(t) => t
                .parse::<i64>()
                .ok()
                .filter(|t| (1..=86_400).contains(t))
                .ok_or_else(|| format!("provider-stripe: tolerance_s `{t}` must be 1..=86400"))?,
        };
        let api_version = get("api_version");
        if let Some(v) = &api_version
            && !header_safe(v)
        {
            return Err("provider-stripe: `api_version` is not a valid header value".into());
        }
        Ok(Provider {
            secret_key,
            webhook_secrets,
            scheme,
            authority: authority.to_owned(),
            api_version,
            tolerance,
            seen: Seen::new(CAPACITY),
            durable: None,
        })
    }

    /// `stripe.webhook`: verify, dedup, publish.
    fn webhook(&mut self, payload: &[u8]) -> Result<Vec<u8>, Failure> {
        if self.webhook_secrets.is_empty() {
            return Err(Failure::new("not-configured", "no `webhook_secret` is set"));
        }
        let (head, body) = match payload.iter().position(|&b| b == b'\n') {
            Some(i) => (&payload[..i], &payload[i + 1..]),
            None => {
                return Err(Failure::new(
                    "invalid",
                    "expected a JSON line, `\\n`, the body",
                ));
            }
        };
        let head: Value = serde_json::from_slice(head)
            .map_err(|e| Failure::new("invalid", format!("the header line: {e}")))?;
        let header = head["signature"].as_str().unwrap_or_default();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or_default();
        signature::verify(header, body, &self.webhook_secrets, now, self.tolerance)
            .map_err(|f| Failure::new(f.name(), f.message()))?;
        let event: Value = serde_json::from_slice(body)
            .map_err(|e| Failure::new("malformed", format!("the body is not JSON: {e}")))?;
        let id = event["id"]
            .as_str()
            .filter(|id| !id.is_empty() && id.len() <= 255)
            .ok_or_else(|| Failure::new("malformed", "the event has no string `id`"))?;
        let kind = event["type"]
            .as_str()
            .filter(|t| {
                !t.is_empty()
                    && t.len() <= 200
                    && t.split('.').all(|seg| {
                        !seg.is_empty()
                            && seg
                                .bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                    })
            })
            .ok_or_else(|| Failure::new("malformed", "the event has no valid `type`"))?;
        let durable_key = format!("stripe/event/{id}");
        let stored = self
            .bucket()
            .is_some_and(|b| b.exists(&durable_key).unwrap_or(false));
        if stored || self.seen.contains(id) {
            return Ok(json!({"result": "duplicate", "id": id})
                .to_string()
                .into_bytes());
        }
        let kind = format!("stripe.{kind}");
        publish(&kind, body).map_err(|e| Failure::new("publish", format!("{kind}: {e:?}")))?;
        if let Some(b) = self.bucket() {
            // Best effort: a failed write still leaves the id in memory.
            let _ = b.set(&durable_key, b"1");
        }
        self.seen.insert(id);
        Ok(json!({"result": "ok", "id": id, "kind": kind})
            .to_string()
            .into_bytes())
    }

    /// The agent's own bucket, opened on first use; `None` without the `kv`
    /// grant.
    fn bucket(&mut self) -> Option<&store::Bucket> {
        self.durable
            .get_or_insert_with(|| store::open("").ok())
            .as_ref()
    }

    /// `stripe.<resource>.<op>`: one API call.
    fn api(&self, resource: &str, op: &str, payload: &[u8]) -> Result<Vec<u8>, Failure> {
        let Some(key) = &self.secret_key else {
            return Err(Failure::api("not-configured", 0, "no `secret_key` is set"));
        };
        if !matches!(resource, "customers" | "payment_intents" | "refunds")
            || !matches!(op, "create" | "retrieve")
        {
            return Err(Failure::api(
                "invalid",
                0,
                format!("unknown call `{resource}.{op}`"),
            ));
        }
        let mut params: Vec<(String, Param)> = if payload.iter().all(u8::is_ascii_whitespace) {
            Vec::new()
        } else {
            match serde_json::from_slice(payload) {
                Ok(Param::Object(entries)) => entries,
                Ok(_) => {
                    return Err(Failure::api(
                        "invalid",
                        0,
                        "the payload must be a JSON object",
                    ));
                }
                Err(e) => return Err(Failure::api("invalid", 0, format!("the payload: {e}"))),
            }
        };
        // A reserved key is taken out of the parameters (every copy of it).
        let text =
            |params: &mut Vec<(String, Param)>, name: &str| -> Result<Option<String>, Failure> {
                let mut found = None;
                for (_, value) in params.extract_if(.., |(k, _)| k == name) {
                    found = match value {
                        Param::Null => None,
                        Param::String(s) if header_safe(&s) => Some(s),
                        _ => {
                            return Err(Failure::api(
                                "invalid",
                                0,
                                format!(
                                    "`{name}` must be a string of 1..=255 visible ASCII characters"
                                ),
                            ));
                        }
                    };
                }
                Ok(found)
            };
        let id = text(&mut params, "id")?;
        let idempotency_key = text(&mut params, "idempotency_key")?;
        let version = text(&mut params, "stripe_version")?.or_else(|| self.api_version.clone());
        let account = text(&mut params, "stripe_account")?;
        let encoded = form::encode(&params);
        let mut headers = vec![
            ("authorization", format!("Bearer {key}")),
            ("user-agent", "toka-provider-stripe/0.1".to_owned()),
        ];
        let (method, path, body) = if op == "create" {
            if id.is_some() {
                return Err(Failure::api("invalid", 0, "`id` is for retrieve calls"));
            }
            let key =
                idempotency_key.unwrap_or_else(|| hex(&wasi::random::random::get_random_bytes(16)));
            headers.push(("idempotency-key", key));
            headers.push((
                "content-type",
                "application/x-www-form-urlencoded".to_owned(),
            ));
            headers.push(("content-length", encoded.len().to_string()));
            (
                Method::Post,
                format!("/v1/{resource}"),
                encoded.into_bytes(),
            )
        } else {
            let id = id
                .filter(|id| {
                    id.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                })
                .ok_or_else(|| {
                    Failure::api("invalid", 0, "retrieve needs an `id` ([A-Za-z0-9_-])")
                })?;
            if idempotency_key.is_some() {
                return Err(Failure::api(
                    "invalid",
                    0,
                    "`idempotency_key` is for create calls",
                ));
            }
            let mut path = format!("/v1/{resource}/{id}");
            if !encoded.is_empty() {
                path.push('?');
                path.push_str(&encoded);
            }
            (Method::Get, path, Vec::new())
        };
        if let Some(v) = version {
            headers.push(("stripe-version", v));
        }
        if let Some(a) = account {
            headers.push(("stripe-account", a));
        }
        let scrub = |text: &str| text.replace(key.as_str(), "[redacted]");
        let (status, request_id, body) =
            self.send(method, &path, &headers, &body).map_err(|mut f| {
                if let Some(m) = f.0["message"].as_str() {
                    f.0["message"] = json!(scrub(m));
                }
                f
            })?;
        if (200..300).contains(&status) {
            return Ok(scrub(&String::from_utf8_lossy(&body)).into_bytes());
        }
        let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let err = &parsed["error"];
        let field = |name: &str| match &err[name] {
            Value::String(s) => json!(scrub(s)),
            _ => Value::Null,
        };
        let kind = err["type"].as_str().unwrap_or_default();
        let error = match status {
            _ if kind == "idempotency_error" => "idempotency",
            400 => "invalid-request",
            401 => "authentication",
            402 => "card-error",
            403 => "permission",
            404 => "not-found",
            409 => "conflict",
            429 => "rate-limited",
            500..=599 => "api-error",
            _ => "other",
        };
        let message = match field("message") {
            Value::Null => json!(format!("HTTP {status}")),
            m => m,
        };
        Err(Failure(json!({
            "error": error,
            "status": status,
            "type": field("type"),
            "code": field("code"),
            "decline_code": field("decline_code"),
            "param": field("param"),
            "message": message,
            "request_id": request_id.map(|r| scrub(&r)),
        })))
    }

    /// One HTTP request to `api_base`: status, `Request-Id`, body.
    fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> Result<(u16, Option<String>, Vec<u8>), Failure> {
        let fields = Fields::new();
        for (name, value) in headers {
            fields
                .append(name, value.as_bytes())
                .map_err(|e| Failure::api("invalid", 0, format!("header {name}: {e:?}")))?;
        }
        let fail = |what: &str| Failure::api("invalid", 0, format!("request {what}"));
        let has_body = matches!(method, Method::Post);
        let req = OutgoingRequest::new(fields);
        req.set_method(&method).map_err(|_| fail("method"))?;
        req.set_scheme(Some(&self.scheme))
            .map_err(|_| fail("scheme"))?;
        req.set_authority(Some(&self.authority))
            .map_err(|_| fail("authority"))?;
        req.set_path_with_query(Some(path))
            .map_err(|_| fail("path"))?;
        let out = req.body().map_err(|_| fail("body"))?;
        let future = outgoing_handler::handle(req, None).map_err(|e| unreachable(code_name(&e)))?;
        if has_body {
            let stream = out.write().map_err(|_| fail("body stream"))?;
            for chunk in body.chunks(4096) {
                if stream.blocking_write_and_flush(chunk).is_err() {
                    break;
                }
            }
        }
        let _ = OutgoingBody::finish(out, None);
        future.subscribe().block();
        let resp = match future.get() {
            Some(Ok(Ok(resp))) => resp,
            Some(Ok(Err(e))) => return Err(unreachable(code_name(&e))),
            _ => return Err(unreachable("no response".into())),
        };
        let status = resp.status();
        let request_id = resp
            .headers()
            .get("request-id")
            .first()
            .map(|v| String::from_utf8_lossy(v).into_owned());
        let incoming = resp.consume().map_err(|_| fail("consume"))?;
        let body = {
            let stream = incoming.stream().map_err(|_| fail("response stream"))?;
            read_all(&stream, MAX_RESPONSE).map_err(|e| match e {
                None => Failure::api(
                    "too-large",
                    status,
                    format!("the response is over {MAX_RESPONSE} bytes"),
                ),
                Some(code) => unreachable(code),
            })?
        };
        Ok((status, request_id, body))
    }
}

struct Component;

impl Handler for Component {
    fn init(config: Vec<(String, String)>) -> Result<(), String> {
        let provider = Provider::from_config(&config)?;
        PROVIDER.with(|p| *p.borrow_mut() = Some(provider));
        Ok(())
    }

    fn handle(_event: Event) -> Result<(), String> {
        Ok(())
    }
}

impl Responder for Component {
    fn serve(request: Incoming) -> Result<Vec<u8>, String> {
        PROVIDER.with(|p| {
            let mut p = p.borrow_mut();
            let p = p
                .as_mut()
                .ok_or_else(|| Failure::new("not-configured", "no settings").render())?;
            let segments: Vec<&str> = request.kind.split('.').collect();
            let result = match segments.as_slice() {
                [.., "webhook"] => p.webhook(&request.payload),
                [_, .., resource, op] => p.api(resource, op, &request.payload),
                _ => Err(Failure::api(
                    "invalid",
                    0,
                    format!("unknown kind `{}`", request.kind),
                )),
            };
            result.map_err(Failure::render)
        })
    }
}

/// Answer the routed request with `status` and a JSON body.
fn respond(out: ResponseOutparam, status: u16, body: &[u8]) {
    let headers = Fields::new();
    let _ = headers.append("content-type", b"application/json");
    let _ = headers.append("content-length", body.len().to_string().as_bytes());
    let resp = OutgoingResponse::new(headers);
    let _ = resp.set_status_code(status);
    let Ok(out_body) = resp.body() else {
        return;
    };
    ResponseOutparam::set(out, Ok(resp));
    if let Ok(stream) = out_body.write() {
        for chunk in body.chunks(4096) {
            if stream.blocking_write_and_flush(chunk).is_err() {
                break;
            }
        }
    }
    let _ = OutgoingBody::finish(out_body, None);
}

fn error_body(error: &str, message: &str) -> Vec<u8> {
    json!({"error": error, "message": message})
        .to_string()
        .into_bytes()
}

impl HttpHandler for Component {
    fn handle(req: IncomingRequest, out: ResponseOutparam) {
        if !matches!(req.method(), Method::Post) {
            return respond(out, 405, &error_body("method", "POST the event"));
        }
        let values = req.headers().get("stripe-signature");
        let signature = match values.as_slice() {
            [] => String::new(),
            [one] => String::from_utf8_lossy(one).into_owned(),
            _ => {
                return respond(
                    out,
                    400,
                    &error_body("malformed", "more than one Stripe-Signature header"),
                );
            }
        };
        let body = match req.consume() {
            Ok(incoming) => {
                let read = incoming
                    .stream()
                    .map_err(|_| Some("no body stream".to_owned()))
                    .and_then(|s| read_all(&s, MAX_BODY));
                match read {
                    Ok(body) => body,
                    Err(None) => {
                        return respond(
                            out,
                            413,
                            &error_body("too-large", "the body is too large"),
                        );
                    }
                    Err(Some(e)) => return respond(out, 400, &error_body("invalid", &e)),
                }
            }
            Err(()) => Vec::new(),
        };
        let mut payload = json!({"signature": signature}).to_string().into_bytes();
        payload.push(b'\n');
        payload.extend_from_slice(&body);
        match request(WEBHOOK_KIND, &payload, WEBHOOK_TIMEOUT_MS) {
            Ok(reply) => respond(out, 200, &reply),
            Err(RequestError::Remote(text)) => {
                let error: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                let status = match error["error"].as_str() {
                    Some("malformed" | "bad-signature" | "expired") => 400,
                    _ => 503,
                };
                respond(out, status, text.as_bytes())
            }
            Err(e) => respond(
                out,
                503,
                &error_body("unavailable", &format!("the stripe agent: {e:?}")),
            ),
        }
    }
}

export!(Component);
