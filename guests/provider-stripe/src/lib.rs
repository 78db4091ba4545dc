//! `provider-stripe`: Stripe as a sandboxed component. One module,
//! `provider_stripe.wasm`, runs as two agents:
//!
//! - the **service** agent (`serve = ["stripe.>"]`, `publish = ["stripe.>"]`,
//!   `allowed_hosts = [api_base]`) holds the secrets. It verifies webhooks
//!   (`stripe.webhook`) and publishes each new event as `stripe.<type>`, and
//!   it calls Stripe's API for `stripe.<resource>.<create|retrieve>`;
//! - the **routed** agent (`[[http.routes]]`, `request = ["stripe.webhook"]`)
//!   is a fresh instance per HTTP request with no config and no secret: it
//!   reads the body and the `Stripe-Signature` header, asks the service
//!   agent, and answers Stripe 200, 400 or 503.
//!
//! The component's world (`wit/provider.wit`) is `toka:runtime/service` plus
//! `wasi:http/incoming-handler` as an export, `wasi:http/outgoing-handler`
//! and `wasi:random` as imports.
//!
//! # Settings (the service agent's table, passed to `init`)
//!
//! | key | meaning |
//! |---|---|
//! | `secret_key` | `sk_…` (or a restricted `rk_…`); needed for the API calls |
//! | `webhook_secret` | `whsec_…`, or several separated by commas or spaces (rotation); needed for webhooks |
//! | `api_base` | `http(s)://host[:port]`, default `https://api.stripe.com`; put it in `allowed_hosts` too |
//! | `api_version` | sent as `Stripe-Version` on every API call unless the request names one |
//! | `tolerance_s` | how old (or how far in the future) a signed timestamp may be, 1..=86400, default 300 |
//! | `kv = true` | (the grant, not a setting) remember published event ids in the agent's bucket too |
//!
//! At least one of `secret_key` and `webhook_secret` is required.
//!
//! # Requests (served by the service agent)
//!
//! **`stripe.webhook`**: payload one JSON line `{"signature": "<the
//! Stripe-Signature header>"}`, `\n`, then the raw body bytes exactly as
//! received. The signature is checked first (see [`signature`]); then the
//! body must be a JSON object with a string `id` and `type`; an event id seen
//! before (the last [`seen::CAPACITY`] are kept in memory, and, when the
//! agent is granted `kv = true`, every one in its own bucket as
//! `stripe/event/<id>`, so the dedup survives restarts) is answered
//! `{"result":"duplicate","id"}` and not published again; a new one is
//! published as `stripe.<type>` with the body bytes unchanged and answered
//! `{"result":"ok","id","kind"}`. Errors (as `remote(text)`, the text a JSON
//! object `{"error","message"}`): `malformed` (no or unreadable header, or a
//! verified body that is not a Stripe event), `bad-signature` (no `v1`, or
//! none matching any secret), `expired` (valid signature, timestamp outside
//! the tolerance), `publish` (the bus refused the event: nothing is
//! remembered, so Stripe's retry publishes it), `invalid` (bad framing),
//! `not-configured` (no `webhook_secret`).
//!
//! **API calls**: `stripe.customers.create`, `stripe.customers.retrieve`,
//! `stripe.payment_intents.create`, `stripe.payment_intents.retrieve`,
//! `stripe.refunds.create`, `stripe.refunds.retrieve` (the last two
//! segments of the kind name the call). The payload is one JSON object: the
//! Stripe parameters, plus these reserved keys, which are not sent as
//! parameters:
//!
//! - `id` (retrieve only, required): the object's id, `[A-Za-z0-9_-]`, at
//!   most 255 bytes;
//! - `idempotency_key` (create only): sent as `Idempotency-Key`; when absent
//!   a random one (128 bits from `wasi:random`) is sent, so every POST
//!   carries one;
//! - `stripe_version`: sent as `Stripe-Version` (else the `api_version`
//!   setting, else none);
//! - `stripe_account`: sent as `Stripe-Account` (Connect).
//!
//! A create is `POST /v1/<resource>` with the parameters form-encoded
//! (see [`form`]) and `Content-Type: application/x-www-form-urlencoded`; a
//! retrieve is `GET /v1/<resource>/<id>` with any parameters (`expand`) in
//! the query string. Every call has `Authorization: Bearer <secret_key>`.
//! The reply is Stripe's response body (JSON) unchanged.
//!
//! Errors (as `remote(text)`, the text one JSON object `{"error", "status",
//! "type", "code", "decline_code", "param", "message", "request_id"}`, the
//! middle ones Stripe's `error` object's fields or `null`): `error` is
//! `invalid-request` (400), `authentication` (401), `card-error` (402),
//! `permission` (403), `not-found` (404), `idempotency` (409 or an
//! `idempotency_error`), `conflict` (other 409), `rate-limited` (429),
//! `api-error` (5xx), `other` (any other status), `unreachable` (no HTTP
//! response: `code` is the `wasi:http` error code such as
//! `ConnectionRefused` or `HttpRequestDenied`), `too-large` (a response over
//! [`MAX_RESPONSE`]), `invalid` (a bad payload or kind) or `not-configured`
//! (no `secret_key`). No reply and no error ever contains the secret key:
//! every text from Stripe is scrubbed of it.
//!
//! # Bounds
//!
//! A webhook body is at most [`MAX_BODY`] bytes (the routed agent answers
//! 413 beyond it; the listener's `max_body_bytes` may be lower), and the
//! `stripe.webhook` payload is also bounded by the routed agent's
//! `max_payload_bytes` (64 KiB by default: raise it for large events). An
//! API response is at most [`MAX_RESPONSE`] bytes, and its reply also
//! bounded by the service agent's `max_payload_bytes`.

pub mod form;
pub mod seen;
pub mod signature;

#[cfg(target_arch = "wasm32")]
mod component;

/// The largest webhook body the routed agent reads.
pub const MAX_BODY: usize = 1 << 20;

/// The largest API response the service agent reads.
pub const MAX_RESPONSE: usize = 4 << 20;
