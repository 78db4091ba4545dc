//! Test guest for outbound HTTP, driven by commands like the probe: on an
//! event whose kind ends in `.cmd` it runs the payload and publishes the
//! outcome as `http.result`: `ok status=S bytes=N chunks=C body=B` (the
//! first 256 bytes of the body) or `err:CODE` (the `wasi:http` error-code's
//! name, e.g. `err:HttpRequestDenied`, `err:DestinationIpProhibited`).
//!
//! Commands (`SCHEME` and `AUTHORITY` are set as given, so a test can send
//! what no URL parser would produce):
//! - `get SCHEME AUTHORITY PATH`;
//! - `post SCHEME AUTHORITY PATH BYTES`: a body of BYTES `x`, with its
//!   `content-length`;
//! - `header SCHEME AUTHORITY PATH NAME VALUE`: a GET with one header set;
//! - `many N SCHEME AUTHORITY PATH`: N GETs started before any is awaited,
//!   reported as `ok` and the outcomes in order joined by `,`;
//! - `loop N SCHEME AUTHORITY PATH`: N GETs one after the other, each body
//!   read to its end (`ok N`, or the first error): the benchmark's load.
//!
//! It uses the raw `wasi` crate's synchronous `wasi:http` bindings, which
//! import `wasi:http@0.2.4` (served by wasmtime's 0.2.x by semver).

wit_bindgen::generate!({ world: "agent", path: "../../wit", generate_all });

use ::wasi::http::outgoing_handler;
use ::wasi::http::types::{
    ErrorCode, FutureIncomingResponse, Method, OutgoingBody, OutgoingRequest, Scheme,
};
use ::wasi::io::streams::StreamError;
use exports::toka::runtime::handler::Guest;
use toka::runtime::bus::publish;
use toka::runtime::types::Event;

struct Client;

fn code(e: &ErrorCode) -> String {
    // `ErrorCode::HttpRequestDenied` or `ErrorCode::DnsError(..)`: the name.
    let debug = format!("{e:?}");
    let name = debug.rsplit("::").next().unwrap_or(&debug);
    name.split(['(', ' ', '{'])
        .next()
        .unwrap_or(name)
        .to_owned()
}

fn request(
    method: Method,
    scheme: &str,
    authority: &str,
    path: &str,
    headers: &[(&str, &[u8])],
    body: Option<usize>,
) -> Result<FutureIncomingResponse, String> {
    let fields = ::wasi::http::types::Fields::new();
    for (name, value) in headers {
        fields
            .append(name, value)
            .map_err(|e| format!("header:{e:?}"))?;
    }
    if let Some(n) = body {
        fields
            .append("content-length", n.to_string().as_bytes())
            .map_err(|e| format!("header:{e:?}"))?;
    }
    let req = OutgoingRequest::new(fields);
    req.set_method(&method).map_err(|_| "set-method")?;
    let scheme = match scheme {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => Scheme::Other(other.to_owned()),
    };
    req.set_scheme(Some(&scheme)).map_err(|_| "set-scheme")?;
    req.set_authority(Some(authority))
        .map_err(|_| "set-authority")?;
    req.set_path_with_query(Some(path))
        .map_err(|_| "set-path")?;
    let out = match body {
        Some(_) => Some(req.body().map_err(|_| "body")?),
        None => None,
    };
    let future = outgoing_handler::handle(req, None).map_err(|e| code(&e))?;
    if let (Some(out), Some(n)) = (out, body) {
        {
            let stream = out.write().map_err(|_| "write")?;
            let chunk = [b'x'; 4096];
            let mut left = n;
            while left > 0 {
                let take = left.min(chunk.len());
                if stream.blocking_write_and_flush(&chunk[..take]).is_err() {
                    break;
                }
                left -= take;
            }
        }
        let _ = OutgoingBody::finish(out, None);
    }
    Ok(future)
}

fn response(future: FutureIncomingResponse) -> Result<String, String> {
    future.subscribe().block();
    let resp = match future.get() {
        Some(Ok(Ok(resp))) => resp,
        Some(Ok(Err(e))) => return Err(code(&e)),
        Some(Err(())) => return Err("taken".into()),
        None => return Err("not-ready".into()),
    };
    let status = resp.status();
    let body = resp.consume().map_err(|_| "consume")?;
    let stream = body.stream().map_err(|_| "stream")?;
    let (mut bytes, mut chunks, mut head) = (0usize, 0usize, Vec::new());
    loop {
        match stream.blocking_read(64 << 10) {
            Ok(chunk) => {
                if chunk.is_empty() {
                    continue;
                }
                chunks += 1;
                bytes += chunk.len();
                let room = 256usize.saturating_sub(head.len());
                head.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(e)) => {
                return Err(match ::wasi::http::types::http_error_code(&e) {
                    Some(c) => code(&c),
                    None => format!("stream:{}", e.to_debug_string()),
                });
            }
        }
    }
    drop(stream);
    Ok(format!(
        " status={status} bytes={bytes} chunks={chunks} body={}",
        String::from_utf8_lossy(&head)
    ))
}

fn run(command: &str) -> Result<String, String> {
    let words: Vec<&str> = command.split(' ').collect();
    match words.as_slice() {
        ["get", scheme, authority, path] => {
            response(request(Method::Get, scheme, authority, path, &[], None)?)
        }
        ["post", scheme, authority, path, n] => {
            let n = n.parse().map_err(|_| "bad size")?;
            response(request(
                Method::Post,
                scheme,
                authority,
                path,
                &[],
                Some(n),
            )?)
        }
        ["header", scheme, authority, path, name, value] => response(request(
            Method::Get,
            scheme,
            authority,
            path,
            &[(name, value.as_bytes())],
            None,
        )?),
        ["many", n, scheme, authority, path] => {
            let n: usize = n.parse().map_err(|_| "bad count")?;
            let started: Vec<_> = (0..n)
                .map(|_| request(Method::Get, scheme, authority, path, &[], None))
                .collect();
            let outcomes: Vec<String> = started
                .into_iter()
                .map(|f| match f.and_then(response) {
                    Ok(_) => "ok".to_owned(),
                    Err(e) => e,
                })
                .collect();
            Ok(format!(" {}", outcomes.join(",")))
        }
        ["loop", n, scheme, authority, path] => {
            let n: usize = n.parse().map_err(|_| "bad count")?;
            for i in 0..n {
                response(request(Method::Get, scheme, authority, path, &[], None)?)
                    .map_err(|e| format!("request {i}: {e}"))?;
            }
            Ok(format!(" {n}"))
        }
        _ => Err(format!("unknown command: {command}")),
    }
}

impl Guest for Client {
    fn init(_config: Vec<(String, String)>) -> Result<(), String> {
        Ok(())
    }

    fn handle(event: Event) -> Result<(), String> {
        if event.kind.ends_with(".cmd") {
            let payload = String::from_utf8_lossy(&event.payload).into_owned();
            let text = match run(&payload) {
                Ok(ok) => format!("ok{ok}"),
                Err(err) => format!("err:{err}"),
            };
            let _ = publish("http.result", text.as_bytes());
        }
        Ok(())
    }
}

export!(Client);
