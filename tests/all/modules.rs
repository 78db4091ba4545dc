//! Malformed modules are refused with an error naming the file and reason;
//! by default the other agents still start, `strict` refuses to build.

use std::path::Path;

use toka_runtime::{Runtime, RuntimeOptions};
use toka_tests::{PROBE, config, logs};

fn try_module(bytes: &[u8]) -> String {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.wasm");
    std::fs::write(&bad, bytes).unwrap();
    let toml = format!(
        r#"
        [[agents]]
        name = "bad"
        module = {bad:?}
        [[agents]]
        name = "good"
        module = "probe.wasm"
        "#
    );
    let rt = Runtime::new(config(&toml)).unwrap();
    let plan = rt.plan();
    assert_eq!(plan.agents.len(), 1, "the good agent still starts");
    assert_eq!(plan.failed.len(), 1);
    let err = plan.failed[0].1.to_string();
    assert!(err.contains("bad.wasm"), "names the file: {err}");
    let options = RuntimeOptions {
        strict: true,
        ..Default::default()
    };
    let strict = Runtime::with_options(config(&toml), options);
    let strict_err = strict
        .expect_err("strict mode refuses to build")
        .to_string();
    assert!(
        strict_err.contains("bad.wasm") && strict_err.contains("`bad`"),
        "{strict_err}"
    );
    err
}

#[test]
fn empty_file() {
    assert!(try_module(b"").contains("empty"));
}

#[test]
fn random_bytes() {
    assert!(try_module(b"this is not wasm at all").contains("not a WebAssembly file"));
}

#[test]
fn core_module_instead_of_component() {
    assert!(try_module(b"\0asm\x01\0\0\0").contains("core WebAssembly module, not a component"));
}

#[test]
fn truncated_component() {
    let bytes = std::fs::read(PROBE).unwrap();
    assert!(try_module(&bytes[..bytes.len() / 2]).contains("invalid component"));
}

#[test]
fn component_without_the_agent_world() {
    // The smallest valid component: a header and nothing else.
    let err = try_module(b"\0asm\x0d\0\x01\0");
    assert!(
        err.contains("does not export the Toka agent world"),
        "{err}"
    );
}

#[test]
fn missing_file() {
    let rt = Runtime::new(config(
        r#"
        [[agents]]
        name = "ghost"
        "#,
    ))
    .unwrap();
    let err = rt.plan().failed[0].1.to_string();
    assert!(
        err.contains(
            &Path::new(toka_tests::GUESTS_DIR)
                .join("ghost.wasm")
                .display()
                .to_string()
        ),
        "{err}"
    );
    assert!(err.contains("cannot read"), "{err}");
}
