//! Request/reply between real components: grants, routing, failure
//! answers, loops, bounds, and no deadlock under load.
//!
//! Every agent is the probe guest (world `service`): a client runs
//! `request ...` commands from `<name>.cmd` events and reports the outcome
//! as `probe.result`; a server echoes, or runs `cmd:COMMAND` payloads.

use std::time::{Duration, Instant};

use toka_tests::{Running, logs};

/// A client `name` that may request `request` kinds, with `extra` lines.
fn client(name: &str, request: &str, extra: &str) -> String {
    format!(
        r#"
        [[agents]]
        name = "{name}"
        module = "probe.wasm"
        subscribe = ["{name}.cmd"]
        publish = ["probe.*"]
        request = [{request}]
        {extra}
        "#
    )
}

/// A server `name` of `serve` kinds, with `extra` lines.
fn server(name: &str, serve: &str, extra: &str) -> String {
    format!(
        r#"
        [[agents]]
        name = "{name}"
        module = "probe.wasm"
        subscribe = ["{name}.cmd"]
        publish = ["probe.*"]
        serve = [{serve}]
        {extra}
        "#
    )
}

fn start(agents: &str) -> Running {
    logs();
    Running::start(
        &format!(
            r#"
            [limits]
            backoff = "1ms"
            backoff_max = "5ms"
            {agents}
            "#
        ),
        &[
            "probe.result",
            "probe.leak",
            "toka.dead-letter",
            "toka.agent.*",
        ],
    )
}

/// Send `command` to agent `to` and wait for its `n`-th result from it.
async fn ask(run: &Running, to: &str, command: &str) -> String {
    let before = results(run, to).len();
    run.cx
        .publish(&format!("{to}.cmd"), command.to_owned())
        .unwrap();
    let to = to.to_owned();
    run.rec
        .wait_for(&format!("a result from {to}"), |evs| {
            evs.iter()
                .filter(|e| e.kind.as_str() == "probe.result" && *e.source == *to)
                .count()
                > before
        })
        .await;
    results(run, &to).pop().unwrap()
}

fn results(run: &Running, from: &str) -> Vec<String> {
    run.rec
        .events()
        .iter()
        .filter(|e| e.kind.as_str() == "probe.result" && &*e.source == from)
        .map(|e| String::from_utf8_lossy(&e.payload).into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_granted_request_gets_the_servers_reply_with_the_real_source() {
    let run = start(
        &[
            client("c", r#""echo.>""#, ""),
            server("s", r#""echo.>""#, ""),
        ]
        .concat(),
    );
    assert_eq!(
        ask(&run, "c", "request echo.hi hello there").await,
        "ok:hello there"
    );
    let who = ask(&run, "c", "request echo.hi who").await;
    let parts: Vec<&str> = who.trim_start_matches("ok:").split('|').collect();
    assert_eq!(parts[..2], ["echo.hi", "c"], "{who}");
    let deadline: u32 = parts[2].parse().unwrap();
    assert!(
        deadline > 0 && deadline <= 1000,
        "the requester's remaining budget: {who}"
    );
    let report = run.stop().await;
    assert!(report.agents.iter().all(|a| a.faults == 0), "{report:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_outside_the_grant_is_denied_and_never_reaches_a_server() {
    let run = start(
        &[
            client("c", r#""echo.>""#, ""),
            client("none", "", ""),
            server("s", r#""echo.>", "other.>""#, ""),
        ]
        .concat(),
    );
    assert_eq!(
        ask(&run, "c", "request other.x cmd:publish probe.leak x").await,
        "err:access-denied"
    );
    assert_eq!(
        ask(&run, "none", "request echo.x cmd:publish probe.leak x").await,
        "err:access-denied",
        "no grant means no request"
    );
    assert_eq!(
        ask(&run, "c", "request toka.tick x").await,
        "err:access-denied"
    );
    assert!(
        ask(&run, "c", "request bad..kind x")
            .await
            .starts_with("err:invalid:")
    );
    // A granted request after the denied ones: had they reached the server,
    // its leak would be recorded before this reply.
    assert_eq!(ask(&run, "c", "request echo.x after").await, "ok:after");
    assert!(run.rec.payloads("probe.leak").is_empty());
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn no_responders_is_answered_at_once() {
    let run = start(&client("c", r#""nobody.>""#, "timeout_ms = 10000"));
    let started = Instant::now();
    assert_eq!(
        ask(&run, "c", "request nobody.home x").await,
        "err:no-responders"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "not after the 10 s timeout: {:?}",
        started.elapsed()
    );
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn self_requests_and_cycles_end_in_loop_at_once() {
    let run = start(
        &[
            // `me` serves and requests the same kinds: a request to itself.
            server("me", r#""self.>""#, r#"request = ["self.>"]"#),
            server("a", r#""a.>""#, r#"request = ["b.>"]"#),
            server("b", r#""b.>""#, r#"request = ["a.>"]"#),
        ]
        .concat(),
    );
    assert_eq!(ask(&run, "me", "request self.x hi").await, "err:loop");
    // a -> b -> a: b's request back to a is refused, and b says so.
    let started = Instant::now();
    assert_eq!(
        ask(&run, "a", "request b.x cmd:request a.y who").await,
        "err:remote:loop"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let report = run.stop().await;
    assert!(
        report.agents.iter().all(|a| a.faults == 0),
        "no trap: {report:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_may_itself_request_another_server() {
    let run = start(
        &[
            client("c", r#""front.>""#, ""),
            server("front", r#""front.>""#, r#"request = ["back.>"]"#),
            server("back", r#""back.>""#, ""),
        ]
        .concat(),
    );
    assert_eq!(
        ask(&run, "c", "request front.x cmd:request back.y deep").await,
        "ok::deep",
        "front's reply is its own request's outcome (`:deep`)"
    );
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_error_or_fault_answers_remote_and_the_server_comes_back() {
    let run = start(
        &[
            client("c", r#""echo.>""#, ""),
            server("s", r#""echo.>""#, ""),
        ]
        .concat(),
    );
    assert_eq!(
        ask(&run, "c", "request echo.x cmd:fail boom").await,
        "err:remote:boom"
    );
    let fault = ask(&run, "c", "request echo.x cmd:trap").await;
    assert!(
        fault.starts_with("err:remote:the server `s` faulted"),
        "{fault}"
    );
    run.rec
        .wait_for("the request's dead letter", |evs| {
            evs.iter().any(|e| {
                e.kind.as_str() == "toka.dead-letter"
                    && String::from_utf8_lossy(&e.payload)
                        .contains(r#""request":{"kind":"echo.x","source":"c"}"#)
            })
        })
        .await;
    // Restarted after its backoff: it serves again.
    run.rec
        .wait_for("the server to restart", |evs| {
            evs.iter()
                .filter(|e| e.kind.as_str() == "toka.agent.started" && &*e.payload == b"s")
                .count()
                == 2
        })
        .await;
    assert_eq!(ask(&run, "c", "request echo.x again").await, "ok:again");
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_server_does_not_hold_the_requester_past_its_timeout() {
    let run = start(
        &[
            client("c", r#""echo.>""#, "timeout_ms = 5000"),
            server("s", r#""echo.>""#, "timeout_ms = 3000"),
        ]
        .concat(),
    );
    let started = Instant::now();
    assert_eq!(
        ask(&run, "c", "request-timeout echo.x 100 cmd:busy 1500").await,
        "err:timeout"
    );
    let waited = started.elapsed();
    assert!(waited < Duration::from_millis(1400), "{waited:?}");
    // The server finishes on its own budget, without a fault.
    assert_eq!(ask(&run, "c", "request echo.x after").await, "ok:after");
    let report = run.stop().await;
    assert!(report.agents.iter().all(|a| a.faults == 0), "{report:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_ends_within_the_callers_own_deadline() {
    let run = start(
        &[
            client("c", r#""echo.>""#, "timeout_ms = 300"),
            server("s", r#""echo.>""#, "timeout_ms = 5000"),
        ]
        .concat(),
    );
    let started = Instant::now();
    run.cx
        .publish("c.cmd", "request-timeout echo.x 30000 cmd:busy 3000")
        .unwrap();
    // Either the timeout answer or the client's deadline fault, well before
    // the server's 3 s of work are done.
    run.rec
        .wait_for("the client to finish or fault", |evs| {
            evs.iter().any(|e| {
                (e.kind.as_str() == "probe.result" && &*e.source == "c")
                    || (e.kind.as_str() == "toka.dead-letter"
                        && String::from_utf8_lossy(&e.payload).contains(r#""agent":"c""#))
            })
        })
        .await;
    let waited = started.elapsed();
    assert!(waited < Duration::from_millis(2000), "{waited:?}");
    if let Some(result) = results(&run, "c").pop() {
        assert_eq!(result, "err:timeout");
    }
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn payloads_and_replies_are_bounded_by_the_agents_limits() {
    let run = start(
        &[
            client("small", r#""echo.>""#, "max_payload_bytes = 100"),
            client("big", r#""echo.>""#, "max_payload_bytes = 100000"),
            server("s", r#""echo.>""#, "max_payload_bytes = 50"),
        ]
        .concat(),
    );
    assert_eq!(
        ask(&run, "small", "request-size echo.x 200").await,
        "err:too-large:100"
    );
    assert_eq!(
        ask(&run, "big", "request-size echo.x 60").await,
        "err:too-large:50"
    );
    assert!(
        ask(&run, "big", "request-size echo.x 40")
            .await
            .starts_with("ok:r")
    );
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_server_queue_answers_busy() {
    logs();
    let run = Running::start(
        &format!(
            "[event_bus]\nworkers = 4\n[requests]\nqueue = 1\n{}",
            [
                client("c0", r#""echo.>""#, "timeout_ms = 10000"),
                client("c1", r#""echo.>""#, "timeout_ms = 10000"),
                client("c2", r#""echo.>""#, "timeout_ms = 10000"),
                server("s", r#""echo.>""#, "timeout_ms = 5000"),
            ]
            .concat()
        ),
        &["probe.result", "probe.seen"],
    );
    // The server is inside a long `handle` (it reports `probe.seen` first),
    // so requests cannot run inline and must queue.
    run.cx.publish("s.cmd", "busy 1500").unwrap();
    run.rec
        .wait_for("the server to be busy", |evs| {
            evs.iter()
                .any(|e| e.kind.as_str() == "probe.seen" && &*e.source == "s")
        })
        .await;
    for c in ["c0", "c1", "c2"] {
        run.cx
            .publish(&format!("{c}.cmd"), "request echo.x hi")
            .unwrap();
    }
    run.rec
        .wait_for("three answers", |evs| {
            evs.iter()
                .filter(|e| e.kind.as_str() == "probe.result" && e.source.starts_with('c'))
                .count()
                == 3
        })
        .await;
    let mut answers: Vec<String> = ["c0", "c1", "c2"]
        .iter()
        .flat_map(|c| results(&run, c))
        .collect();
    answers.sort();
    assert_eq!(answers, ["err:busy", "err:busy", "ok:hi"]);
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_quarantined_server_is_no_longer_a_responder() {
    let run = start(
        &[
            client("c", r#""echo.>""#, ""),
            server("s", r#""echo.>""#, "max_restarts = 0"),
        ]
        .concat(),
    );
    assert!(
        ask(&run, "c", "request echo.x cmd:trap")
            .await
            .starts_with("err:remote:")
    );
    run.rec
        .wait_for("the quarantine", |evs| {
            evs.iter()
                .any(|e| e.kind.as_str() == "toka.agent.quarantined")
        })
        .await;
    assert_eq!(
        ask(&run, "c", "request echo.x hi").await,
        "err:no-responders"
    );
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_serve_grant_needs_a_service_component() {
    logs();
    let (rt, _rec) = toka_tests::with_recorder(
        r#"
        [[agents]]
        name = "counter"
        module = "counter.wasm"
        serve = ["count.>"]

        [[agents]]
        name = "ok"
        module = "probe.wasm"
        "#,
        &[],
    );
    let plan = rt.plan();
    let (name, error) = &plan.failed[0];
    assert_eq!(name, "counter");
    assert!(
        error
            .to_string()
            .contains("does not export `toka:runtime/responder`"),
        "{error}"
    );
    assert!(error.to_string().contains("counter.wasm"), "{error}");
    assert!(
        plan.agents.iter().any(|a| a.name == "ok"),
        "the others still start"
    );
}

/// 200 agents x 1,000 requests to two servers complete with one worker
/// and with two, mixing inline and queued serving.
#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_requesters_on_one_worker_all_complete() {
    for workers in [1, 2] {
        logs();
        let clients: String = (0..200)
            .map(|i| client(&format!("c{i}"), r#""echo.>""#, "timeout_ms = 60000"))
            .collect();
        let run = Running::start(
            &format!(
                // Clients first in the file: the runtime still starts the
                // servers before the clients' first requests.
                "[event_bus]\nworkers = {workers}\n{clients}{}{}",
                server("s1", r#""echo.>""#, "timeout_ms = 100"),
                server("s2", r#""echo.>""#, "timeout_ms = 100"),
            ),
            &["probe.result"],
        );
        for i in 0..200 {
            run.cx
                .publish(&format!("c{i}.cmd"), "request-loop 1000 echo.x")
                .unwrap();
        }
        run.rec.wait_kind("probe.result", 200).await;
        let results = run.rec.payloads("probe.result");
        assert!(
            results.iter().all(|r| r == "ok:1000"),
            "workers = {workers}: {results:?}"
        );
        let report = run.stop().await;
        assert!(report.agents.iter().all(|a| a.faults == 0));
    }
}

/// A requester waiting on a busy server holds no worker from the others:
/// with two workers, one runs the busy server and one the waiting client,
/// and the healthy agent still runs (on the client's stand-in).
#[tokio::test(flavor = "multi_thread")]
async fn a_waiting_requester_does_not_starve_other_agents() {
    logs();
    let run = Running::start(
        &format!(
            "[event_bus]\nworkers = 2\n{}{}{}",
            client("c", r#""echo.>""#, "timeout_ms = 10000"),
            server("s", r#""echo.>""#, "timeout_ms = 5000"),
            client("healthy", "", ""),
        ),
        &["probe.result", "probe.seen"],
    );
    run.cx.publish("s.cmd", "busy 2000").unwrap();
    run.rec
        .wait_for("the server to be busy", |evs| {
            evs.iter()
                .any(|e| e.kind.as_str() == "probe.seen" && &*e.source == "s")
        })
        .await;
    run.cx.publish("c.cmd", "request echo.x hi").unwrap();
    let started = Instant::now();
    for i in 0..20 {
        let outcome = ask(&run, "healthy", &format!("publish probe.x {i}")).await;
        assert!(outcome.starts_with("ok:"), "{outcome}");
    }
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "the healthy agent ran while the client waited: {:?}",
        started.elapsed()
    );
    run.rec
        .wait_for("the client's reply", |evs| {
            evs.iter()
                .any(|e| e.kind.as_str() == "probe.result" && &*e.source == "c")
        })
        .await;
    assert_eq!(results(&run, "c"), ["ok:hi"]);
    run.stop().await;
}

/// `toka check`'s plan names who serves and who may request what.
#[test]
fn the_plan_lists_serve_and_request_grants() {
    let (rt, _rec) = toka_tests::with_recorder(
        &[
            client("c", r#""echo.>", "s3.get""#, ""),
            server("s", r#""echo.>""#, r#"request = ["s3.>"]"#),
        ]
        .concat(),
        &[],
    );
    let plan = rt.plan();
    let grants = |name: &str| {
        plan.agents
            .iter()
            .find(|a| a.name == name)
            .map(|a| a.grants.clone())
            .unwrap()
    };
    assert_eq!(grants("c"), ["request: echo.>, s3.get"]);
    assert_eq!(grants("s"), ["serve: echo.>", "request: s3.>"]);
}

/// Shutdown does not wait for a request longer than its timeout: a client
/// waiting on a server that never gets to it still lets the run end.
#[tokio::test(flavor = "multi_thread")]
async fn shutdown_is_bounded_while_a_request_waits() {
    logs();
    let run = Running::start(
        &format!(
            "[event_bus]\nworkers = 2\ndrain_timeout = \"100ms\"\n{}{}",
            client("c", r#""echo.>""#, "timeout_ms = 2000"),
            server("s", r#""echo.>""#, "timeout_ms = 5000"),
        ),
        &["probe.seen"],
    );
    run.cx.publish("s.cmd", "busy 4000").unwrap();
    run.rec
        .wait_for("the server to be busy", |evs| {
            evs.iter()
                .any(|e| e.kind.as_str() == "probe.seen" && &*e.source == "s")
        })
        .await;
    run.cx
        .publish("c.cmd", "request-timeout echo.x 60000 hi")
        .unwrap();
    run.rec
        .wait_for("the client to be waiting", |evs| {
            evs.iter()
                .any(|e| e.kind.as_str() == "probe.seen" && &*e.source == "c")
        })
        .await;
    let started = Instant::now();
    run.stop().await;
    // The server's 4 s of work bound the stop (a guest in a loop is only
    // stopped by its own deadline); the request's 60 s do not.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}
