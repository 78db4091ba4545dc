//! A routed HTTP agent that turns requests into events: a `wasi:http/proxy`
//! component (`wstd`) that also imports `toka:runtime/bus`, the way a
//! webhook receiver becomes part of a pipeline. Used by the inbound tests.
//!
//! - `…/publish`: publishes `webhook.received` with the request body; 200
//!   `published N` (N the event id), or 403 with the bus's error when the
//!   agent's `publish` grant refuses it;
//! - `…/hold?ms=N`: publishes `webhook.entered`, then sleeps N ms before
//!   answering 200 (holds a concurrency slot while a test checks the cap);
//! - `…/trap`: panics (a trap: the listener answers 500);
//! - `…/spin`: loops forever (its deadline stops it: 500);
//! - anything else: 200 `hook\n`.

wit_bindgen::generate!({
    inline: "package toka:http-webhook; world webhook { import toka:runtime/bus@0.1.4; }",
    path: "../../wit",
    world: "toka:http-webhook/webhook",
    generate_all,
});

use std::time::Duration;

use toka::runtime::bus::publish;
use wstd::http::{Body, Error, Request, Response, StatusCode};

fn text(status: StatusCode, body: String) -> Result<Response<Body>, Error> {
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    Ok(response)
}

#[wstd::http_server]
async fn main(request: Request<Body>) -> Result<Response<Body>, Error> {
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or("").to_owned();
    if path.ends_with("/publish") {
        let body = request.into_body().contents().await?.to_vec();
        return match publish("webhook.received", &body) {
            Ok(id) => text(StatusCode::OK, format!("published {id}")),
            Err(e) => text(StatusCode::FORBIDDEN, format!("{e:?}")),
        };
    }
    if path.ends_with("/hold") {
        let ms: u64 = query
            .strip_prefix("ms=")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1000);
        let _ = publish("webhook.entered", path.as_bytes());
        wstd::task::sleep(wstd::time::Duration::from(Duration::from_millis(ms))).await;
        return text(StatusCode::OK, "held\n".into());
    }
    if path.ends_with("/trap") {
        panic!("webhook asked to trap");
    }
    if path.ends_with("/spin") {
        #[allow(clippy::empty_loop)]
        loop {}
    }
    text(StatusCode::OK, "hook\n".into())
}
