//! A plain `wasi:http/proxy` component written with `wstd`, nothing
//! Toka-specific in it: the same binary runs under `wasmtime serve`.
//! Toka serves it as an `[[http.routes]]` agent unchanged, and it is the
//! component of the `http_inbound` bench.
//!
//! - any path ending in `/echo`: the request body back;
//! - any path ending in `/uri`: the request's URI as the component sees it
//!   (scheme and authority included), and the `host` header after a newline
//!   (empty under Toka, which never hands it to a guest), so a test can show
//!   the authority never comes from `Host`;
//! - anything else: `hello\n`.

use wstd::http::{Body, Error, Request, Response};

#[wstd::http_server]
async fn main(request: Request<Body>) -> Result<Response<Body>, Error> {
    let path = request.uri().path().to_owned();
    if path.ends_with("/echo") {
        let body = request.into_body();
        return Ok(Response::new(body));
    }
    if path.ends_with("/uri") {
        let host = request
            .headers()
            .get("host")
            .and_then(|h| h.to_str().ok())
            .unwrap_or("")
            .to_owned();
        return Ok(Response::new(format!("{}\n{host}", request.uri()).into()));
    }
    Ok(Response::new("hello\n".to_owned().into()))
}
