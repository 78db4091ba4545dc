//! `driver-s3`: an S3 driver as a sandboxed component (world `service`).
//!
//! It serves `s3.*` requests (grant it `serve = ["s3.>"]`) against one
//! bucket of any S3-compatible server, signing every request with AWS
//! Signature Version 4 inside the component. Agents use it through
//! `request = ["s3.>"]` and never see the credentials: they live only in the
//! driver's `[[agents]]` table (or, later, its `[drivers.s3]` section).
//!
//! # Config (the keys of its `[[agents]]` table, passed to `init`)
//!
//! | key | meaning |
//! |---|---|
//! | `endpoint` | `http(s)://host[:port]`, e.g. `https://s3.eu-west-1.amazonaws.com`; also put it in `allowed_hosts` |
//! | `region` | signing region, default `us-east-1` |
//! | `bucket` | the bucket every operation acts on (required) |
//! | `path_style` | `true` for `endpoint/bucket/key` (moto, MinIO), default `false` (`bucket.endpoint/key`) |
//! | `access_key_id`, `secret_access_key` | the credentials (required) |
//!
//! # Payloads
//!
//! A request is one line of JSON (the header), then `\n`, then raw bytes (the
//! object's content, for `s3.put` only; nothing for the others; the `\n` may
//! be omitted when there are no bytes). A reply has the same shape: a JSON
//! line, `\n`, then bytes (the content, for `s3.get` only).
//!
//! | kind | request header | reply header |
//! |---|---|---|
//! | `s3.put` | `{"key", "content_type"?}` + bytes | `{"etag", "size"}` |
//! | `s3.get` | `{"key", "range"?}` (`range`: `[first, last]`, inclusive byte offsets) | `{"size", "etag", "content_type"}` + bytes (`size` is the whole object's) |
//! | `s3.head` | `{"key"}` | `{"size", "etag", "content_type", "last_modified"}` |
//! | `s3.delete` | `{"key"}` | `{}` (deleting a missing key succeeds, as in S3) |
//! | `s3.list` | `{"prefix"?, "continuation_token"?, "max_keys"?}` | `{"keys": [{"key", "size", "etag"}], "next_continuation_token"}` (`null` on the last page) |
//! | `s3.copy` | `{"from", "to"}` (keys in the bucket) | `{"etag"}` |
//! | `s3.presign_get` | `{"key", "expires_secs"?}` (default 3600, at most 604800) | `{"url"}` |
//! | `s3.presign_put` | `{"key", "expires_secs"?}` | `{"url"}` |
//! | `s3.multipart_create` | `{"key", "content_type"?}` | `{"upload_id"}` |
//! | `s3.multipart_part` | `{"key", "upload_id", "part_number"}` (1..=10000) + bytes | `{"part_number", "etag"}` |
//! | `s3.multipart_complete` | `{"key", "upload_id", "parts": [{"part_number", "etag"}]}` | `{"etag"}` (S3's `"<md5>-<parts>"`) |
//! | `s3.multipart_abort` | `{"key", "upload_id"}` | `{}` |
//!
//! # Errors
//!
//! A failure is the server's error (the requester sees `remote(text)`) whose
//! text is one JSON object `{"error", "status", "code", "message"}`:
//! `error` is one of `no-such-key`, `no-such-bucket`, `no-such-upload`,
//! `access-denied`,
//! `bad-signature` (the secret key is wrong), `invalid-access-key`,
//! `throttled` (503 `SlowDown`, 429, or the host's `ConnectionLimitReached`:
//! the driver's `http_requests_per_sec`, 50 by default, or
//! `http_max_concurrent`), `unreachable` (the HTTP request itself
//! failed: refused by the host's guard, connection refused, timeout; `code`
//! is the `wasi:http` error code), `invalid` (a malformed request payload or
//! config) or `other`; `status` is the HTTP status (0 when there was none)
//! and `code` the S3 error code (`NoSuchKey`, `SignatureDoesNotMatch`, ...).
//!
//! # Size limit
//!
//! One request payload (put, a part) or one reply (get, a range) is bounded
//! by the `max_payload_bytes` of the requester (payloads) and of the driver
//! (replies), 64 KiB by default, and by the driver's `http_max_request_bytes`
//! (8 MiB by default) and `http_max_response_bytes` (16 MiB). An object
//! larger than that goes up in parts (`multipart_create`, one
//! `multipart_part` per payload, `multipart_complete`) and comes back in
//! ranges (`get` with `range`). S3 wants every part but the last to be at
//! least 5 MiB, so multipart needs `max_payload_bytes` above 5 MiB on both
//! sides (the tests use 8 MiB); S3 allows 10,000 parts of at most 5 GiB, an
//! object of at most 5 TiB. Neither the driver nor the requester holds more
//! than one payload at a time.
//!
//! # Signing
//!
//! Requests the driver sends carry an `Authorization` header (SigV4 over
//! `host`, `x-amz-content-sha256` with the payload's real SHA-256,
//! `x-amz-date` and `x-amz-copy-source` for copies), computed here with
//! `hmac`/`sha2`; presigned URLs come from `rusty-s3` (query-string SigV4,
//! `UNSIGNED-PAYLOAD`), which also builds the bucket's URLs and parses
//! ListObjectsV2 replies. HTTP is `wasi:http` through the host's guard.

wit_bindgen::generate!({ world: "service", path: "../../wit", generate_all });

use std::cell::RefCell;
use std::time::Duration;

use ::wasi::http::outgoing_handler;
use ::wasi::http::types::{ErrorCode, Fields, Method, OutgoingBody, OutgoingRequest, Scheme};
use ::wasi::io::streams::StreamError;
use exports::toka::runtime::handler::Guest;
use exports::toka::runtime::responder::{Guest as Responder, Incoming};
use hmac::{Hmac, KeyInit, Mac};
use rusty_s3::actions::ListObjectsV2;
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use toka::runtime::types::Event;

/// The driver's settings, from `init`.
struct Driver {
    bucket: Bucket,
    credentials: Credentials,
    region: String,
}

thread_local! {
    static DRIVER: RefCell<Option<Driver>> = const { RefCell::new(None) };
}

/// A typed failure, rendered as the JSON error text.
struct Failure {
    error: &'static str,
    status: u16,
    code: String,
    message: String,
}

impl Failure {
    fn invalid(message: impl Into<String>) -> Self {
        Failure {
            error: "invalid",
            status: 0,
            code: String::new(),
            message: message.into(),
        }
    }

    fn unreachable(code: String) -> Self {
        Failure {
            // The host's own rate or concurrency limit (`http_requests_per_sec`,
            // `http_max_concurrent`): retrying later may succeed.
            error: if code == "ConnectionLimitReached" {
                "throttled"
            } else {
                "unreachable"
            },
            status: 0,
            message: format!("the HTTP request failed: {code}"),
            code,
        }
    }

    fn render(&self) -> String {
        json!({
            "error": self.error,
            "status": self.status,
            "code": self.code,
            "message": self.message,
        })
        .to_string()
    }
}

/// One S3 response, read whole.
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// `Ok(self)` for a 2xx, else the typed failure from the status and the
    /// XML `<Error>` body.
    fn ok(self) -> Result<Self, Failure> {
        if (200..300).contains(&self.status) {
            return Ok(self);
        }
        let text = String::from_utf8_lossy(&self.body);
        let code = between(&text, "<Code>", "</Code>").unwrap_or_default();
        let message = between(&text, "<Message>", "</Message>").unwrap_or_default();
        let error = match (code.as_str(), self.status) {
            ("NoSuchKey", _) => "no-such-key",
            ("NoSuchBucket", _) => "no-such-bucket",
            ("NoSuchUpload", _) => "no-such-upload",
            ("SignatureDoesNotMatch", _) => "bad-signature",
            ("InvalidAccessKeyId", _) => "invalid-access-key",
            ("SlowDown" | "Throttling" | "ThrottlingException" | "RequestLimitExceeded", _)
            | (_, 429 | 503) => "throttled",
            ("AccessDenied", _) | (_, 403) => "access-denied",
            // A HEAD has no body: its 404 is the key's absence.
            (_, 404) => "no-such-key",
            _ => "other",
        };
        Err(Failure {
            error,
            status: self.status,
            code,
            message,
        })
    }
}

fn between(text: &str, open: &str, close: &str) -> Option<String> {
    let start = text.find(open)? + open.len();
    let end = text[start..].find(close)? + start;
    Some(text[start..end].to_owned())
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("any key length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// RFC 3986 percent-encoding of everything but the unreserved characters,
/// as SigV4's canonical query string wants.
fn encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
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

impl Driver {
    fn from_config(config: &[(String, String)]) -> Result<Driver, String> {
        let get = |k: &str| {
            config
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        let need =
            |k: &str| get(k).ok_or_else(|| format!("driver-s3: config key `{k}` is required"));
        let endpoint = need("endpoint")?;
        let endpoint = endpoint
            .parse()
            .map_err(|e| format!("driver-s3: endpoint `{endpoint}`: {e}"))?;
        let region = get("region").unwrap_or_else(|| "us-east-1".into());
        let style = match get("path_style").as_deref() {
            Some("true") => UrlStyle::Path,
            None | Some("false") => UrlStyle::VirtualHost,
            Some(other) => {
                return Err(format!(
                    "driver-s3: path_style must be true or false, not `{other}`"
                ));
            }
        };
        let bucket = Bucket::new(endpoint, style, need("bucket")?, region.clone())
            .map_err(|e| format!("driver-s3: bucket: {e}"))?;
        // The seed writes `access_key` / `secret_key` in `[drivers.s3]`;
        // AWS's own names work too.
        let either = |a: &str, b: &str| {
            get(a)
                .or_else(|| get(b))
                .ok_or_else(|| format!("driver-s3: config key `{a}` (or `{b}`) is required"))
        };
        let credentials = Credentials::new(
            either("access_key", "access_key_id")?,
            either("secret_key", "secret_access_key")?,
        );
        Ok(Driver {
            bucket,
            credentials,
            region,
        })
    }

    /// Send one request for `key` (`None`: the bucket itself) signed in the
    /// `Authorization` header, and read the whole response.
    fn send(
        &self,
        method: Method,
        key: Option<&str>,
        query: &[(&str, String)],
        extra: &[(&str, String)],
        body: &[u8],
    ) -> Result<Response, Failure> {
        let url = match key {
            Some(k) => self.bucket.object_url(k),
            None => self.bucket.base_url().clone(),
        };
        let host = match url.port() {
            Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_owned(),
        };
        let mut pairs: Vec<(String, String)> =
            query.iter().map(|(k, v)| (encode(k), encode(v))).collect();
        pairs.sort();
        let canonical_query = pairs
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&");
        let now = jiff::Timestamp::now();
        let amz_date = now.strftime("%Y%m%dT%H%M%SZ").to_string();
        let day = &amz_date[..8];
        let payload_hash = hex(&Sha256::digest(body));
        let mut headers: Vec<(String, String)> = vec![
            ("host".into(), host.clone()),
            ("x-amz-content-sha256".into(), payload_hash.clone()),
            ("x-amz-date".into(), amz_date.clone()),
        ];
        for (k, v) in extra {
            if k.starts_with("x-amz-") {
                headers.push((k.to_string(), v.clone()));
            }
        }
        headers.sort();
        let signed: Vec<&str> = headers.iter().map(|(k, _)| k.as_str()).collect();
        let signed = signed.join(";");
        let method_name = match &method {
            Method::Get => "GET",
            Method::Put => "PUT",
            Method::Head => "HEAD",
            Method::Delete => "DELETE",
            Method::Post => "POST",
            _ => "GET",
        };
        let canonical = format!(
            "{method_name}\n{}\n{canonical_query}\n{}\n{signed}\n{payload_hash}",
            url.path(),
            headers
                .iter()
                .map(|(k, v)| format!("{k}:{}\n", v.trim()))
                .collect::<String>(),
        );
        let scope = format!("{day}/{}/s3/aws4_request", self.region);
        let to_sign = format!(
            "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
            hex(&Sha256::digest(canonical.as_bytes()))
        );
        let secret = format!("AWS4{}", self.credentials.secret());
        let k = hmac(secret.as_bytes(), day.as_bytes());
        let k = hmac(&k, self.region.as_bytes());
        let k = hmac(&k, b"s3");
        let k = hmac(&k, b"aws4_request");
        let signature = hex(&hmac(&k, to_sign.as_bytes()));
        let authorization = format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed}, Signature={signature}",
            self.credentials.key()
        );

        let fields = Fields::new();
        let set = |name: &str, value: &str| {
            fields
                .append(name, value.as_bytes())
                .map_err(|e| Failure::invalid(format!("header {name}: {e:?}")))
        };
        for (k, v) in &headers {
            if k != "host" {
                set(k, v)?;
            }
        }
        set("authorization", &authorization)?;
        for (k, v) in extra {
            if !k.starts_with("x-amz-") {
                set(k, v)?;
            }
        }
        let has_body = matches!(method, Method::Put | Method::Post);
        if has_body {
            // wasi:http would send a body without it chunked; S3 wants the length.
            set("content-length", &body.len().to_string())?;
        }
        let req = OutgoingRequest::new(fields);
        let fail = |what: &str| Failure::invalid(format!("request {what}"));
        req.set_method(&method).map_err(|_| fail("method"))?;
        let scheme = if url.scheme() == "https" {
            Scheme::Https
        } else {
            Scheme::Http
        };
        req.set_scheme(Some(&scheme)).map_err(|_| fail("scheme"))?;
        req.set_authority(Some(&host))
            .map_err(|_| fail("authority"))?;
        let path = if canonical_query.is_empty() {
            url.path().to_owned()
        } else {
            format!("{}?{canonical_query}", url.path())
        };
        req.set_path_with_query(Some(&path))
            .map_err(|_| fail("path"))?;
        let out = req.body().map_err(|_| fail("body"))?;
        let future =
            outgoing_handler::handle(req, None).map_err(|e| Failure::unreachable(code_name(&e)))?;
        {
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
            Some(Ok(Err(e))) => return Err(Failure::unreachable(code_name(&e))),
            _ => return Err(Failure::unreachable("no response".into())),
        };
        let status = resp.status();
        let headers = {
            let h = resp.headers();
            h.entries()
                .into_iter()
                .map(|(n, v)| (n, String::from_utf8_lossy(&v).into_owned()))
                .collect()
        };
        let incoming = resp.consume().map_err(|_| fail("consume"))?;
        let mut body = Vec::new();
        {
            let stream = incoming.stream().map_err(|_| fail("response stream"))?;
            loop {
                match stream.blocking_read(64 << 10) {
                    Ok(chunk) => body.extend_from_slice(&chunk),
                    Err(StreamError::Closed) => break,
                    Err(StreamError::LastOperationFailed(e)) => {
                        let code = ::wasi::http::types::http_error_code(&e)
                            .map(|c| code_name(&c))
                            .unwrap_or_else(|| e.to_debug_string());
                        return Err(Failure::unreachable(code));
                    }
                }
            }
        }
        Ok(Response {
            status,
            headers,
            body,
        })
    }
}

#[derive(Deserialize)]
struct KeyHeader {
    key: String,
    content_type: Option<String>,
    expires_secs: Option<u64>,
    /// `[first, last]` byte offsets (inclusive) for a ranged get.
    range: Option<[u64; 2]>,
    upload_id: Option<String>,
    part_number: Option<u32>,
    parts: Option<Vec<Part>>,
}

#[derive(Deserialize)]
struct Part {
    part_number: u32,
    etag: String,
}

impl KeyHeader {
    fn upload_id(&self) -> Result<String, Failure> {
        self.upload_id
            .clone()
            .ok_or_else(|| Failure::invalid("`upload_id` is required"))
    }
}

#[derive(Deserialize, Default)]
struct ListHeader {
    prefix: Option<String>,
    continuation_token: Option<String>,
    max_keys: Option<usize>,
}

#[derive(Deserialize)]
struct CopyHeader {
    from: String,
    to: String,
}

fn header<'a, T: Deserialize<'a>>(head: &'a [u8]) -> Result<T, Failure> {
    serde_json::from_slice(head).map_err(|e| Failure::invalid(format!("request header: {e}")))
}

fn reply(head: Value, bytes: &[u8]) -> Vec<u8> {
    let mut out = head.to_string().into_bytes();
    out.push(b'\n');
    out.extend_from_slice(bytes);
    out
}

fn unquote(etag: Option<&str>) -> String {
    etag.unwrap_or_default().trim_matches('"').to_owned()
}

fn serve(d: &Driver, kind: &str, payload: &[u8]) -> Result<Vec<u8>, Failure> {
    let (head, bytes) = match payload.iter().position(|&b| b == b'\n') {
        Some(i) => (&payload[..i], &payload[i + 1..]),
        None => (payload, &[][..]),
    };
    // The last segment names the operation, so a driver may serve any prefix.
    let op = kind.rsplit('.').next().unwrap_or(kind);
    match op {
        "put" => {
            let h: KeyHeader = header(head)?;
            let extra = [(
                "content-type",
                h.content_type
                    .unwrap_or_else(|| "application/octet-stream".into()),
            )];
            let r = d
                .send(Method::Put, Some(&h.key), &[], &extra, bytes)?
                .ok()?;
            Ok(reply(
                json!({"etag": unquote(r.header("etag")), "size": bytes.len()}),
                &[],
            ))
        }
        "get" | "head" => {
            let h: KeyHeader = header(head)?;
            let method = if op == "get" {
                Method::Get
            } else {
                Method::Head
            };
            let mut extra = Vec::new();
            if let Some([first, last]) = h.range {
                if first > last {
                    return Err(Failure::invalid("range: first > last"));
                }
                extra.push(("range", format!("bytes={first}-{last}")));
            }
            let r = d.send(method, Some(&h.key), &[], &extra, &[])?.ok()?;
            // A ranged reply's `content-range: bytes a-b/TOTAL` gives the size.
            let total = r
                .header("content-range")
                .and_then(|v| v.rsplit('/').next())
                .and_then(|v| v.parse::<u64>().ok());
            let size: u64 = if let Some(total) = total {
                total
            } else if op == "get" {
                r.body.len() as u64
            } else {
                r.header("content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0)
            };
            let mut meta = json!({
                "size": size,
                "etag": unquote(r.header("etag")),
                "content_type": r.header("content-type").unwrap_or_default(),
            });
            if op == "head" {
                meta["last_modified"] = json!(r.header("last-modified").unwrap_or_default());
            }
            Ok(reply(meta, if op == "get" { &r.body } else { &[] }))
        }
        "multipart_create" => {
            let h: KeyHeader = header(head)?;
            let extra = [(
                "content-type",
                h.content_type
                    .unwrap_or_else(|| "application/octet-stream".into()),
            )];
            let query = [("uploads", String::new())];
            let r = d
                .send(Method::Post, Some(&h.key), &query, &extra, &[])?
                .ok()?;
            let text = String::from_utf8_lossy(&r.body);
            let id = between(&text, "<UploadId>", "</UploadId>")
                .ok_or_else(|| Failure::invalid("no UploadId in the reply"))?;
            Ok(reply(json!({"upload_id": id}), &[]))
        }
        "multipart_part" => {
            let h: KeyHeader = header(head)?;
            let n = h
                .part_number
                .filter(|n| (1..=10_000).contains(n))
                .ok_or_else(|| Failure::invalid("`part_number` 1..=10000 is required"))?;
            let query = [("partNumber", n.to_string()), ("uploadId", h.upload_id()?)];
            let r = d
                .send(Method::Put, Some(&h.key), &query, &[], bytes)?
                .ok()?;
            Ok(reply(
                json!({"part_number": n, "etag": unquote(r.header("etag"))}),
                &[],
            ))
        }
        "multipart_complete" => {
            let h: KeyHeader = header(head)?;
            let parts = h
                .parts
                .as_ref()
                .filter(|p| !p.is_empty())
                .ok_or_else(|| Failure::invalid("`parts` is required"))?;
            let mut xml = String::from("<CompleteMultipartUpload>");
            for p in parts {
                xml.push_str(&format!(
                    "<Part><PartNumber>{}</PartNumber><ETag>\"{}\"</ETag></Part>",
                    p.part_number,
                    p.etag.trim_matches('"')
                ));
            }
            xml.push_str("</CompleteMultipartUpload>");
            let query = [("uploadId", h.upload_id()?)];
            let extra = [("content-type", "application/xml".to_owned())];
            let r = d
                .send(Method::Post, Some(&h.key), &query, &extra, xml.as_bytes())?
                .ok()?;
            let text = String::from_utf8_lossy(&r.body);
            // Like a copy, completing can fail after its 200.
            if text.contains("<Error>") {
                return Response { status: 500, ..r }.ok().map(|_| Vec::new());
            }
            let etag = between(&text, "<ETag>", "</ETag>")
                .map(|e| {
                    e.replace("&quot;", "")
                        .replace("&#34;", "")
                        .trim_matches('"')
                        .to_owned()
                })
                .unwrap_or_default();
            Ok(reply(json!({"etag": etag}), &[]))
        }
        "multipart_abort" => {
            let h: KeyHeader = header(head)?;
            let query = [("uploadId", h.upload_id()?)];
            d.send(Method::Delete, Some(&h.key), &query, &[], &[])?
                .ok()?;
            Ok(reply(json!({}), &[]))
        }
        "delete" => {
            let h: KeyHeader = header(head)?;
            d.send(Method::Delete, Some(&h.key), &[], &[], &[])?.ok()?;
            Ok(reply(json!({}), &[]))
        }
        "list" => {
            let h: ListHeader = if head.iter().all(u8::is_ascii_whitespace) {
                ListHeader::default()
            } else {
                header(head)?
            };
            let mut query = vec![("list-type", "2".to_owned())];
            if let Some(p) = h.prefix {
                query.push(("prefix", p));
            }
            if let Some(t) = h.continuation_token {
                query.push(("continuation-token", t));
            }
            if let Some(n) = h.max_keys {
                query.push(("max-keys", n.to_string()));
            }
            let r = d.send(Method::Get, None, &query, &[], &[])?.ok()?;
            let text = String::from_utf8_lossy(&r.body);
            let parsed = ListObjectsV2::parse_response(&text).map_err(|e| Failure {
                error: "other",
                status: r.status,
                code: String::new(),
                message: format!("ListObjectsV2 reply: {e}"),
            })?;
            let keys: Vec<Value> = parsed
                .contents
                .iter()
                .map(|c| json!({"key": c.key, "size": c.size, "etag": unquote(c.etag.as_deref())}))
                .collect();
            Ok(reply(
                json!({"keys": keys, "next_continuation_token": parsed.next_continuation_token}),
                &[],
            ))
        }
        "copy" => {
            let h: CopyHeader = header(head)?;
            // The source as a path: `/bucket/key`, the key percent-encoded.
            let source = format!(
                "/{}/{}",
                d.bucket.name(),
                encode(&h.from).replace("%2F", "/")
            );
            let extra = [("x-amz-copy-source", source)];
            let r = d.send(Method::Put, Some(&h.to), &[], &extra, &[])?.ok()?;
            let text = String::from_utf8_lossy(&r.body);
            // A copy can fail after its 200: the error is then in the body.
            if text.contains("<Error>") {
                return Response { status: 500, ..r }.ok().map(|_| Vec::new());
            }
            let etag = between(&text, "<ETag>", "</ETag>")
                .map(|e| e.replace("&quot;", "").trim_matches('"').to_owned())
                .unwrap_or_default();
            Ok(reply(json!({"etag": etag}), &[]))
        }
        "presign_get" | "presign_put" => {
            let h: KeyHeader = header(head)?;
            let secs = h.expires_secs.unwrap_or(3600);
            if !(1..=604_800).contains(&secs) {
                return Err(Failure::invalid("expires_secs must be 1..=604800"));
            }
            let ttl = Duration::from_secs(secs);
            let url = if op == "presign_get" {
                d.bucket.get_object(Some(&d.credentials), &h.key).sign(ttl)
            } else {
                d.bucket.put_object(Some(&d.credentials), &h.key).sign(ttl)
            };
            Ok(reply(json!({"url": url.as_str()}), &[]))
        }
        _ => Err(Failure::invalid(format!("unknown operation `{kind}`"))),
    }
}

struct S3;

impl Guest for S3 {
    fn init(config: Vec<(String, String)>) -> Result<(), String> {
        let driver = Driver::from_config(&config)?;
        DRIVER.with(|d| *d.borrow_mut() = Some(driver));
        Ok(())
    }

    fn handle(_event: Event) -> Result<(), String> {
        Ok(())
    }
}

impl Responder for S3 {
    fn serve(request: Incoming) -> Result<Vec<u8>, String> {
        DRIVER.with(|d| {
            let d = d.borrow();
            let d = d
                .as_ref()
                .ok_or_else(|| Failure::invalid("not configured").render())?;
            serve(d, &request.kind, &request.payload).map_err(|f| f.render())
        })
    }
}

export!(S3);
