//! `[drivers.NAME]` / `[providers.NAME]` run by the real kernel: the
//! section's agent serves its own kinds only, its `secret:` settings reach
//! its `init` read from the secret store (and nowhere else: not the plan,
//! not the log), a client reaches it only through `request`, and a missing
//! secret stops the start naming the agent and key.

use toka_runtime::Runtime;
use toka_secrets::{MasterKey, SecretStore};
use toka_tests::{Running, captured_logs, config, logs};

const TOKEN: &str = "tok_live_7f3a9c-never-logged";

/// A secret store holding `echo/token`, and its `[secrets]` config.
fn store(dir: &std::path::Path) -> String {
    let key_file = dir.join("master.key");
    let db = dir.join("secrets.db");
    let key = MasterKey::create_key_file(&key_file).unwrap();
    SecretStore::open(&db, key)
        .unwrap()
        .set("echo/token", TOKEN.as_bytes())
        .unwrap();
    format!("[secrets]\npath = {db:?}\nkey_file = {key_file:?}\n")
}

/// `probe` as a provider (it publishes `probe.init` with its settings, and
/// echoes requests), and a client that may request `probe.>` only.
fn toml(secrets: &str, token: &str) -> String {
    format!(
        r#"
        {secrets}
        # A loaded 2-core CI machine can take more than the default second
        # for one request turn; this test is about settings, not deadlines.
        [limits]
        timeout_ms = 10000

        [providers.probe]
        module = "probe.wasm"
        token = "{token}"
        region = "eu-1"

        [[agents]]
        name = "client"
        module = "probe.wasm"
        subscribe = ["client.cmd"]
        publish = ["probe.result"]
        request = ["probe.>"]
        "#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_section_runs_with_its_secrets_and_serves_its_kinds() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let toml = toml(&store(dir.path()), "secret:echo/token");
    let cfg = config(&toml);
    let plan = Runtime::new(cfg).unwrap().plan().to_string();
    assert!(plan.contains("probe"), "{plan}");
    assert!(
        !plan.contains(TOKEN),
        "the plan shows no setting value: {plan}"
    );

    let run = Running::start(&toml, &["probe.init", "probe.result", "client.out"]);
    let init = run.rec.wait_kind("probe.init", 1).await;
    let lines: Vec<&str> = init[0].lines().collect();
    assert_eq!(lines, [format!("token={TOKEN}").as_str(), "region=eu-1"]);
    // The client reaches it by request; the reply is the echo.
    run.cx
        .publish("client.cmd", "request probe.echo hello")
        .unwrap();
    let results = run.rec.wait_kind("probe.result", 1).await;
    assert_eq!(results, ["ok:hello"]);
    // Not `probe.>`: nobody serves it for the client.
    run.cx.publish("client.cmd", "request other.x hi").unwrap();
    let results = run.rec.wait_kind("probe.result", 2).await;
    assert_eq!(results[1], "err:access-denied");
    run.stop().await;
    assert!(!captured_logs().contains(TOKEN), "the secret was logged");
}

#[test]
fn a_missing_secret_stops_the_start_naming_the_agent_and_key() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let toml = toml(&store(dir.path()), "secret:echo/absent");
    let err = Runtime::new(config(&toml))
        .map(drop)
        .unwrap_err()
        .to_string();
    assert!(err.contains("agent `probe`"), "{err}");
    assert!(
        err.contains("`token`: no secret `echo/absent` in the secret store"),
        "{err}"
    );
}

#[test]
fn env_values_reach_init_and_a_driver_publishes_nothing() {
    let cfg = config(
        r#"
        [drivers.store]
        module = "probe.wasm"
        endpoint = "http://127.0.0.1:9"
        "#,
    );
    let a = &cfg.agents[0];
    assert!(a.serve.matches("store.put") && !a.publish.matches("store.put"));
    assert_eq!(
        a.keys().get_strings("allowed_hosts").unwrap(),
        Some(vec!["http://127.0.0.1:9".to_owned()])
    );
}
