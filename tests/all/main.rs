//! Toka's integration tests: the real kernel running real wasm guests.
//!
//! # Layout
//! - `capabilities`: secrets, vault and auth through a real guest, grants
//!   and denials;
//! - `dirs`: the `dirs` grant: read-only and writable preopens, no escape
//!   through `..` or symlinks, nothing without the grant;
//! - `bus`: routing, grants, ordering, ticks, init config, native agents, drain;
//! - `cache`: the precompiled module cache: hits, misses on a changed module
//!   or other engine settings, corrupt artifacts rebuilt;
//! - `fuzz_regressions`: inputs the fuzzers kept, replayed;
//! - `guests`: one test per guest (enforced by `foreach_guest!`);
//! - `faults`: a misbehaving guest is stopped, dead-lettered, restarted or
//!   quarantined while the others carry on;
//! - `kv`: durable key-value through real guests: a count that survives
//!   fault and process restarts, denials for agents without the grant;
//! - `hostile`: abuse of the bus and the host (huge payloads, storms, output
//!   floods, slow agents, forbidden kinds), each beside a healthy agent;
//! - `hostile_waits`, `hostile_strings`, `hostile_modules`: the second pass
//!   of the hostile suite (waits in host calls, guest strings, module files
//!   and compile budgets);
//! - `http`: outbound HTTP through the guard to a loopback server;
//! - `http_inbound`: `[[http.routes]]` served by real components: 404, 413,
//!   431, 503, 500 with a dead letter, slow clients, the `Host` header;
//! - `modules`: malformed modules are refused with a precise reason;
//! - `requests`: request/reply between components: grants, routing,
//!   failure answers, loops, bounds, no deadlock;
//! - `s3`: the S3 driver guest against a real `moto_server` with
//!   signature checking on;
//! - `seed_agents`: `IndexerAgent` over a granted directory (everything,
//!   then only changes) and `SchedulerAgent` storing the index through the
//!   S3 driver against moto, retrying with backoff;
//! - `seam`: what the capability list derives reaches `inspect` and `check`;
//! - `stripe`: the Stripe provider guest against stripe-python's webhook
//!   vectors and form encoder, and a loopback stand-in for Stripe's API.

mod bus;
mod cache;
mod capabilities;
mod dirs;
mod faults;
mod fuzz_regressions;
mod guests;
mod hostile;
mod hostile_modules;
mod hostile_strings;
mod hostile_waits;
mod http;
mod http_inbound;
mod kv;
mod ledger;
mod modules;
mod requests;
mod s3;
mod seam;
mod seed_agents;
mod services;
mod stripe;
