//! The `dirs` grant: host directories preopened for a guest, read-only
//! unless marked writable, with no way out through `..` or symlinks, and
//! nothing at all for an agent without the grant.

use std::path::Path;

use toka_core::RuntimeConfig;
use toka_tests::{GUESTS_DIR, logs, with_recorder};

/// A fixture tree: `content/` (granted read-only) holding files and
/// symlinks pointing out of it, `out/` (granted writable), and a secret
/// beside them that no guest may reach.
fn fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("content/sub")).unwrap();
    std::fs::create_dir_all(root.join("out")).unwrap();
    std::fs::write(root.join("content/a.txt"), "hello").unwrap();
    std::fs::write(root.join("content/sub/b.txt"), "bee").unwrap();
    std::fs::write(root.join("secret.txt"), "do not read").unwrap();
    let link = |target: &Path, name: &str| {
        std::os::unix::fs::symlink(target, root.join("content").join(name)).unwrap();
    };
    link(&root.join("secret.txt"), "abs");
    link(Path::new("../secret.txt"), "rel");
    link(Path::new(".."), "updir");
    link(Path::new("/etc"), "etc");
    dir
}

/// Run `commands` on the probe agents (`probe` has the grant, `bare` has
/// none), in order; each command's `probe.result`, per agent.
async fn run(root: &Path, commands: &[(&str, &str)]) -> Vec<String> {
    let (rt, rec) = with_recorder(
        &format!(
            r#"
            [[agents]]
            name = "probe"
            module = "probe.wasm"
            subscribe = ["probe.cmd"]
            publish = ["probe.result"]
            dirs = [
                {{ host = "{root}/content", guest = "/content" }},
                {{ host = "{root}/out", guest = "/out", writable = true }},
            ]

            [[agents]]
            name = "bare"
            module = "probe.wasm"
            subscribe = ["bare.cmd"]
            publish = ["probe.result"]
            "#,
            root = root.display()
        ),
        &["probe.result"],
    );
    let cx = rt.injector("test");
    for (agent, command) in commands {
        cx.publish(&format!("{agent}.cmd"), command.to_string())
            .unwrap();
    }
    // Events queued before the run are all handled before it drains.
    rt.run_until(async {}).await.unwrap();
    let events = rec.events();
    let mut results = Vec::new();
    let mut per_agent: std::collections::HashMap<&str, Vec<String>> = Default::default();
    for event in &events {
        per_agent
            .entry(if &*event.source == "bare" {
                "bare"
            } else {
                "probe"
            })
            .or_default()
            .push(String::from_utf8_lossy(&event.payload).into_owned());
    }
    let mut next: std::collections::HashMap<&str, usize> = Default::default();
    for (agent, command) in commands {
        let i = next.entry(agent).or_default();
        let result = per_agent
            .get(agent)
            .and_then(|r| r.get(*i))
            .unwrap_or_else(|| panic!("no result for {agent}: {command}; got {per_agent:?}"));
        *i += 1;
        results.push(result.clone());
    }
    results
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_dir_is_listed_and_read_but_never_changed() {
    logs();
    let dir = fixture();
    let root = dir.path();
    let results = run(
        root,
        &[
            ("probe", "preopens"),
            ("probe", "ls /content"),
            ("probe", "cat /content/a.txt"),
            ("probe", "cat /content/sub/b.txt"),
            ("probe", "write /content/new.txt x"),
            ("probe", "write /content/a.txt changed"),
            ("probe", "rm /content/a.txt"),
            ("probe", "mkdir /content/d"),
            ("probe", "rmdir /content/sub"),
            ("probe", "rename /content/a.txt /content/z.txt"),
            ("probe", "rename /content/a.txt /out/stolen.txt"),
        ],
    )
    .await;
    assert_eq!(results[0], "ok:/content,/out");
    assert_eq!(results[1], "ok:a.txt,abs,etc,rel,sub,updir");
    assert_eq!(results[2], "ok:hello");
    assert_eq!(results[3], "ok:bee");
    for (i, result) in results.iter().enumerate().skip(4) {
        assert!(
            result.starts_with("err:"),
            "command {i} changed a read-only dir: {result}"
        );
    }
    // And nothing changed on the host.
    assert_eq!(
        std::fs::read_to_string(root.join("content/a.txt")).unwrap(),
        "hello"
    );
    for gone in [
        "content/new.txt",
        "content/d",
        "content/z.txt",
        "out/stolen.txt",
    ] {
        assert!(!root.join(gone).exists(), "{gone} was created");
    }
    assert!(root.join("content/sub/b.txt").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writable_dir_can_be_written() {
    logs();
    let dir = fixture();
    let root = dir.path();
    let results = run(
        root,
        &[
            ("probe", "write /out/o.txt written"),
            ("probe", "cat /out/o.txt"),
            ("probe", "mkdir /out/d"),
            ("probe", "write /out/d/x.txt deep"),
            ("probe", "rename /out/o.txt /out/p.txt"),
            ("probe", "write /out/gone.txt x"),
            ("probe", "rm /out/gone.txt"),
            ("probe", "ls /out"),
        ],
    )
    .await;
    assert_eq!(
        results,
        [
            "ok",
            "ok:written",
            "ok",
            "ok",
            "ok",
            "ok",
            "ok",
            "ok:d,p.txt"
        ]
    );
    assert_eq!(
        std::fs::read_to_string(root.join("out/p.txt")).unwrap(),
        "written"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("out/d/x.txt")).unwrap(),
        "deep"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_dot_and_symlinks_do_not_escape() {
    logs();
    let dir = fixture();
    let root = dir.path();
    let outside = root.join("secret.txt");
    let results = run(
        root,
        &[
            // `..` past the preopen's root, through a subdirectory so the
            // path reaches the host's resolver.
            ("probe", "cat /content/sub/../../secret.txt"),
            ("probe", "cat /content/../secret.txt"),
            ("probe", "ls /content/sub/../.."),
            // Symlinks inside the grant pointing out of it.
            ("probe", "cat /content/abs"),
            ("probe", "cat /content/rel"),
            ("probe", "ls /content/updir"),
            ("probe", "cat /content/updir/secret.txt"),
            ("probe", "ls /content/etc"),
            // The same ways out of the writable grant, to write.
            ("probe", "write /out/../escaped.txt x"),
            ("probe", "write /out/../content/planted.txt x"),
            // `..` that stays inside is fine.
            ("probe", "cat /content/sub/../a.txt"),
            // Absolute paths outside every preopen.
            ("probe", &format!("cat {}", outside.display())),
            ("probe", "ls /"),
        ],
    )
    .await;
    for (i, result) in results.iter().enumerate() {
        if i == 10 {
            assert_eq!(result, "ok:hello", "`..` inside the grant");
        } else {
            assert!(result.starts_with("err:"), "command {i} escaped: {result}");
            assert!(!result.contains("do not read"), "{i}: {result}");
        }
    }
    assert!(!root.join("escaped.txt").exists());
    assert!(!root.join("content/planted.txt").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_without_the_grant_sees_no_files() {
    logs();
    let dir = fixture();
    let root = dir.path();
    let results = run(
        root,
        &[
            ("bare", "preopens"),
            ("bare", "cat /content/a.txt"),
            ("bare", "ls /"),
            ("bare", "write /out/o.txt x"),
            ("probe", "preopens"),
        ],
    )
    .await;
    assert_eq!(results[0], "ok:", "no preopens at all");
    for result in &results[1..4] {
        assert!(result.starts_with("err:"), "{result}");
    }
    assert_eq!(
        results[4], "ok:/content,/out",
        "the granted agent beside it"
    );
    assert!(!root.join("out/o.txt").exists());
}

#[test]
fn missing_host_dir_is_a_config_error_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "modules_dir = {GUESTS_DIR:?}\n[[agents]]\nname = \"probe\"\nmodule = \"probe.wasm\"\n\
         dirs = [{{ host = \"{}/missing\", guest = \"/content\" }}]\n",
        dir.path().display()
    );
    let err = RuntimeConfig::parse_declared(
        &text,
        Path::new("test.toml"),
        Path::new("."),
        &toka_runtime::host::caps::declared(),
        &|_| None,
    )
    .unwrap_err();
    assert_eq!(err.key(), Some("agents[0].dirs[0].host"));
    assert_eq!(err.line(), Some(5));
    let text = err.to_string();
    assert!(text.contains("agent \"probe\""), "{text}");
    assert!(text.contains("missing"), "{text}");
}

#[test]
fn check_lists_the_grant() {
    let dir = fixture();
    let root = dir.path();
    let (rt, _rec) = with_recorder(
        &format!(
            r#"
            [[agents]]
            name = "probe"
            module = "probe.wasm"
            dirs = [{{ host = "{root}/content", guest = "/content" }}, {{ host = "{root}/out", guest = "/out", writable = true }}]
            "#,
            root = root.display()
        ),
        &[],
    );
    let plan = rt.plan();
    let probe = plan.agents.iter().find(|a| a.name == "probe").unwrap();
    assert!(
        probe.grants.contains(&format!(
            "dir: /content = {}/content (read-only)",
            root.display()
        )),
        "{:?}",
        probe.grants
    );
    assert!(
        probe
            .grants
            .contains(&format!("dir: /out = {}/out (writable)", root.display())),
        "{:?}",
        probe.grants
    );
}
