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

/// A directory with a copy of the probe, signed by `signer`, and a config
/// trusting `trusted`.
fn signed_setup(
    signer: &toka_auth::SigningKey,
    trusted: &toka_auth::SigningKey,
) -> (tempfile::TempDir, std::path::PathBuf, String) {
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("signed.wasm");
    let bytes = std::fs::read(PROBE).unwrap();
    std::fs::write(&module, &bytes).unwrap();
    let sig = toka_auth::module_sig::sign_module(signer, &bytes);
    std::fs::write(
        toka_auth::module_sig::signature_path(&module),
        sig.to_file_string(),
    )
    .unwrap();
    let toml = format!(
        r#"
        [trust]
        require_signatures = true
        trusted_keys = ["{key}"]
        [[agents]]
        name = "signed"
        module = {module:?}
        [[agents]]
        name = "unsigned"
        module = "probe.wasm"
        "#,
        key = trusted.verifying_key(),
    );
    (dir, module, toml)
}

fn refusals(toml: &str) -> Vec<(String, String)> {
    logs();
    let rt = Runtime::new(config(toml)).unwrap();
    rt.plan()
        .failed
        .iter()
        .map(|(agent, e)| (agent.clone(), e.to_string()))
        .collect()
}

#[test]
fn signatures_required_refuse_unsigned_tampered_and_untrusted_modules() {
    let key = toka_auth::SigningKey::generate().unwrap();
    let other = toka_auth::SigningKey::generate().unwrap();

    // Signed by a trusted key: loads; the unsigned agent is refused by name.
    let (_dir, module, toml) = signed_setup(&key, &key);
    let failed = refusals(&toml);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].0, "unsigned");
    assert!(
        failed[0].1.contains("probe.wasm") && failed[0].1.contains("not signed"),
        "{failed:?}"
    );

    // Changed after signing: refused, naming the file and the reason.
    let mut bytes = std::fs::read(&module).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(&module, &bytes).unwrap();
    let failed = refusals(&toml);
    let tampered = failed.iter().find(|(a, _)| a == "signed").expect("refused");
    assert!(
        tampered.1.contains("signed.wasm") && tampered.1.contains("modified after it was signed"),
        "{tampered:?}"
    );
    let strict = Runtime::with_options(
        config(&toml),
        RuntimeOptions {
            strict: true,
            ..Default::default()
        },
    );
    assert!(strict.is_err(), "--strict refuses to start");

    // Signed, but by a key the operator does not trust.
    let (_dir, _module, toml) = signed_setup(&other, &key);
    let failed = refusals(&toml);
    let untrusted = failed.iter().find(|(a, _)| a == "signed").expect("refused");
    assert!(untrusted.1.contains("untrusted key"), "{untrusted:?}");
}
