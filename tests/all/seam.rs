//! The capability seam: what the kernel derives from its one list of
//! capabilities reaches the operator's tools: `toka inspect` marks every
//! interface this build serves as provided, and `toka check` (the plan)
//! prints each agent's grants as each capability describes them.

use toka_runtime::Runtime;
use toka_runtime::host::{caps, inspect, module};
use toka_secrets::{MasterKey, SecretStore};
use toka_tests::{CAPABLE, HTTP_CLIENT, config};

#[test]
fn inspect_marks_every_interface_this_build_serves_as_provided() {
    let engine = toka_runtime::host::engine::new_engine(&Default::default()).unwrap();
    let linker = toka_runtime::host::new_linker(&engine).unwrap();
    let load = |path: &str| {
        let found = inspect::inspect(
            &engine,
            &linker,
            std::path::Path::new(path),
            &module::LoadOptions::default(),
        )
        .unwrap();
        assert!(found.runnable.is_ok(), "{:?}", found.runnable);
        found
    };
    // `capable` imports the toka capabilities, `http_client` wasi:http.
    let (capable, http_client) = (load(CAPABLE), load(HTTP_CLIENT));
    let served: Vec<&str> = caps::INTERFACES
        .iter()
        .flat_map(|s| s.iter().map(|(name, _)| *name))
        .collect();
    assert_eq!(
        served,
        [
            "toka:runtime/secrets",
            "toka:runtime/vault",
            "toka:runtime/auth",
            "wasi:http/outgoing-handler",
            "wasi:http/types",
            "wasi:keyvalue/store",
            "wasi:keyvalue/atomics",
            "wasi:keyvalue/batch",
            "toka:runtime/kv",
            "toka:runtime/ledger",
        ],
        "this build registers its capabilities"
    );
    for name in served {
        let found = if name.starts_with("wasi:http") {
            &http_client
        } else {
            &capable
        };
        // The key-value interfaces are named as a component imports them
        // (the capable guest does not).
        let import = match found
            .imports
            .iter()
            .find(|i| i.name.split('@').next() == Some(name))
        {
            Some(import) => import.name.clone(),
            None if name.starts_with("wasi:keyvalue/") => format!("{name}@0.2.0-draft"),
            None if name == "toka:runtime/kv" || name == "toka:runtime/ledger" => {
                format!("{name}@0.1.4")
            }
            None => panic!("the capable guest imports {name}"),
        };
        let line = inspect::capability(&import);
        assert!(
            !line.contains("not provided"),
            "{import} is served by this build: {line}"
        );
    }
    assert!(inspect::capability("toka:runtime/no-such@0.1.1").contains("not provided"));
}

#[test]
fn the_plan_prints_each_agents_grants() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("master.key");
    let db = dir.path().join("secrets.db");
    let key = MasterKey::create_key_file(&key_file).unwrap();
    drop(SecretStore::open(&db, key).unwrap());
    let toml = format!(
        r#"
        [secrets]
        path = {db:?}
        key_file = {key_file:?}
        [vault]
        path = {vault:?}

        [[agents]]
        name = "billing"
        module = "capable.wasm"
        secrets = ["stripe/*", "db/password"]

        [[agents]]
        name = "archive"
        module = "capable.wasm"
        vault = true
        vault_shared = ["reports"]
        vault_quota_mb = 8

        [[agents]]
        name = "gate"
        module = "capable.wasm"
        auth = ["password", "verify-token"]

        [[agents]]
        name = "plain"
        module = "capable.wasm"
        "#,
        vault = dir.path().join("vault"),
    );
    let plan = Runtime::new(config(&toml)).unwrap().plan().to_string();
    // An agent's lines: its header (two spaces) and what is indented under it.
    let section = |agent: &str| {
        let header = format!("  {agent} (wasm");
        plan.lines()
            .skip_while(|l| !l.starts_with(&header))
            .enumerate()
            .take_while(|(i, l)| *i == 0 || l.starts_with("    "))
            .map(|(_, l)| format!("{l}\n"))
            .collect::<String>()
    };
    assert!(
        section("billing").contains("grants:    secrets: stripe/*, db/password"),
        "{plan}"
    );
    assert!(
        section("archive").contains("grants:    vault: own, reports (quota 8 MiB each)"),
        "{plan}"
    );
    assert!(
        section("gate").contains("grants:    auth: password, verify-token"),
        "{plan}"
    );
    assert!(section("plain").contains("grants:    none"), "{plan}");
}

#[test]
fn the_registry_knows_every_capabilitys_keys_and_this_build_has_them_all() {
    let known: Vec<&str> = caps::KNOWN.iter().map(|(name, _)| *name).collect();
    assert_eq!(known, caps::BUILT, "the tests build every capability");
    // Each registration line's keys are the capability's own AGENT_KEYS
    // (the build checks it too).
    assert_eq!(caps::BUILT_KEYS, caps::KNOWN);
    let flat: Vec<&str> = caps::KNOWN
        .iter()
        .flat_map(|(_, keys)| keys.iter().copied())
        .collect();
    assert_eq!(caps::declared().agent_keys, flat);
    for key in [
        "secrets",
        "vault",
        "vault_shared",
        "vault_quota_mb",
        "auth",
        "allowed_hosts",
    ] {
        assert!(flat.contains(&key), "{key} is some capability's");
    }
    let agent = &config("[[agents]]\nname = \"a\"\nvault = true\nvault_quota_mb = 2\n").agents[0];
    assert!(agent.settings.is_empty(), "{:?}", agent.settings);
    assert_eq!(
        agent.keys().get_uint("vault_quota_mb", 1, 8).unwrap(),
        Some(2)
    );
}
