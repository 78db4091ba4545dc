//! The host impls called on a [`View`], without wasm: grants and denials,
//! quotas, versions and compare-and-swap, TTLs, paging and batches.

use std::path::Path;
use std::time::Duration;

use atomics::Host as _;
use batch::Host as _;
use kv::Host as _;
use store::{Host as _, HostBucket as _};
use toka_capability::wait::{WaitDeadline, WaitState};
use toka_core::config::Declared;
use wasmtime::component::ResourceTable;

use super::*;

/// `alice` (own bucket with small quotas, and `sessions`), `bob` (own
/// bucket), `carol` (own bucket of 1 MiB) and `nobody` (no grant); keys of
/// at most 16 bytes, values of at most 512 KiB.
struct Fixture {
    _dir: tempfile::TempDir,
    config: RuntimeConfig,
    kv: Kv,
    ctxs: Vec<(String, Option<KvCtx>)>,
    wait: WaitState,
}

fn config(dir: &Path, extra: &str) -> RuntimeConfig {
    let text = format!(
        r#"
[kv]
path = "kv.redb"
max_key_bytes = 16
max_value_kb = 512
{extra}

[[agents]]
name = "alice"
kv = true
kv_shared = ["sessions"]
kv_max_keys = 3

[[agents]]
name = "bob"
kv = true

[[agents]]
name = "carol"
kv = true
kv_quota_mb = 1

[[agents]]
name = "nobody"
"#
    );
    RuntimeConfig::parse_declared(
        &text,
        Path::new("x.toml"),
        dir,
        &Declared {
            sections: &[config::SECTION],
            agent_keys: Kv::AGENT_KEYS,
        },
        &|_| None,
    )
    .unwrap()
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "");
    let grants: Vec<_> = config
        .agents
        .iter()
        .map(|a| (a, Kv::grant(a).unwrap()))
        .collect();
    let granted: Vec<_> = grants
        .iter()
        .filter_map(|(a, g)| g.as_ref().map(|g| (*a, g)))
        .collect();
    let kv = Kv::open(&config, &granted, &mut OpenCx::default()).unwrap();
    let ctxs = grants
        .iter()
        .map(|(a, g)| {
            let ctx = g.clone().map(|g| kv.for_agent(a, g).unwrap());
            (a.name.clone(), ctx)
        })
        .collect();
    let mut wait = WaitState::default();
    wait.arm(Duration::from_secs(60));
    Fixture {
        _dir: dir,
        config,
        kv,
        ctxs,
        wait,
    }
}

impl Fixture {
    fn host<'a>(&'a self, agent: &'a str, table: &'a mut ResourceTable) -> KvHost<'a> {
        let state = self
            .ctxs
            .iter()
            .find(|(n, _)| n == agent)
            .and_then(|(_, c)| c.as_ref());
        KvHost(View {
            agent,
            state,
            table,
            wait: &self.wait,
            // A test fixture's per-instance map; leaked, as tests are short.
            extensions: Box::leak(Box::default()),
        })
    }
}

fn denied<T: std::fmt::Debug>(r: anyhow::Result<Result<T, store::Error>>) -> bool {
    matches!(r.unwrap(), Err(store::Error::AccessDenied))
}

/// The text of an `other(...)` answer.
fn other<T: std::fmt::Debug>(r: anyhow::Result<Result<T, store::Error>>) -> String {
    match r.unwrap() {
        Err(store::Error::Other(m)) => m,
        r => panic!("expected other(..), got {r:?}"),
    }
}

fn open(h: &mut KvHost<'_>, name: &str) -> Resource<Bucket> {
    h.open(name.into()).unwrap().unwrap()
}

#[test]
fn opens_outside_the_grant_are_denied_alike() {
    let f = fixture();
    let mut table = ResourceTable::new();
    // No grant at all: every open, even of its own name.
    let mut h = f.host("nobody", &mut table);
    assert!(denied(h.open(String::new())));
    assert!(denied(h.open("nobody".into())));
    assert!(denied(h.open("sessions".into())));
    let mut table = ResourceTable::new();
    let mut h = f.host("alice", &mut table);
    // Another agent's bucket, a shared bucket not granted, a name that
    // cannot exist: the same answer.
    open(&mut f.host("bob", &mut ResourceTable::new()), "");
    assert!(denied(h.open("bob".into())));
    assert!(denied(h.open("payroll".into())));
    assert!(denied(h.open("no such/bucket".into())));
    assert!(denied(h.open("x".repeat(100_000))));
    // Granted ones open.
    let _own = open(&mut h, "");
    let _sessions = open(&mut h, "sessions");

    // Every call re-checks: a handle to a bucket outside the grant (as a
    // table shared by mistake would hold) is denied.
    let foreign =
        h.0.table
            .push(Bucket {
                name: "bob".into(),
                open: Arc::new(()),
            })
            .unwrap();
    let rep = foreign.rep();
    assert!(denied(h.get(Resource::new_borrow(rep), "k".into())));
    assert!(denied(h.set(
        Resource::new_borrow(rep),
        "k".into(),
        b"v".to_vec()
    )));
    assert!(matches!(
        h.compare_and_swap(Resource::new_borrow(rep), "k".into(), 0, b"v".to_vec())
            .unwrap(),
        Err(kv::KvError::AccessDenied)
    ));
    assert!(denied(h.increment(
        Resource::new_borrow(rep),
        "n".into(),
        1
    )));
}

#[test]
fn own_bucket_round_trip_under_both_names() {
    let f = fixture();
    let mut table = ResourceTable::new();
    let mut h = f.host("bob", &mut table);
    let a = open(&mut h, "");
    let b = open(&mut h, "bob");
    let borrow = |r: &Resource<Bucket>| Resource::<Bucket>::new_borrow(r.rep());
    h.set(borrow(&a), "greeting".into(), b"hello".to_vec())
        .unwrap()
        .unwrap();
    assert_eq!(
        h.get(borrow(&b), "greeting".into()).unwrap().unwrap(),
        Some(b"hello".to_vec())
    );
    assert!(h.exists(borrow(&b), "greeting".into()).unwrap().unwrap());
    assert!(!h.exists(borrow(&b), "other".into()).unwrap().unwrap());
    assert_eq!(h.get(borrow(&a), "other".into()).unwrap().unwrap(), None);
    let page = h.list_keys(borrow(&a), None).unwrap().unwrap();
    assert_eq!(
        (page.keys, page.cursor),
        (vec!["greeting".to_string()], None)
    );
    h.delete(borrow(&a), "greeting".into()).unwrap().unwrap();
    h.delete(borrow(&a), "greeting".into()).unwrap().unwrap();
    assert_eq!(h.get(borrow(&b), "greeting".into()).unwrap().unwrap(), None);
    assert_eq!(h.increment(borrow(&a), "n".into(), 2).unwrap().unwrap(), 2);
    assert_eq!(h.increment(borrow(&b), "n".into(), 3).unwrap().unwrap(), 5);
    // Alice's bucket is another one.
    let mut table = ResourceTable::new();
    let mut alice = f.host("alice", &mut table);
    let own = open(&mut alice, "");
    assert_eq!(alice.get(own, "n".into()).unwrap().unwrap(), None);
    // Dropping a handle frees it.
    h.drop(a).unwrap();
    assert_eq!(Arc::strong_count(&f.ctxs[1].1.as_ref().unwrap().open), 2);
}

#[test]
fn each_quota_is_enforced_and_named() {
    let f = fixture();
    let mut table = ResourceTable::new();
    let mut h = f.host("alice", &mut table);
    let own = open(&mut h, "").rep();
    let b = || Resource::<Bucket>::new_borrow(own);

    // Key size ([kv] max_key_bytes = 16), value size (max_value_kb = 512).
    let m = other(h.set(b(), "k".repeat(17), b"v".to_vec()));
    assert!(
        m.starts_with("invalid: invalid key:") && m.contains("max_key_bytes"),
        "{m}"
    );
    assert!(other(h.set(b(), String::new(), b"v".to_vec())).contains("empty"));
    let m = other(h.set(b(), "big".into(), vec![0; (512 << 10) + 1]));
    assert!(m.contains("max_value_kb"), "{m}");
    assert!(matches!(
        h.set_with_ttl(b(), "big".into(), vec![0; (512 << 10) + 1], 1000)
            .unwrap(),
        Err(kv::KvError::Invalid(m)) if m.contains("max_value_kb")
    ));

    // Keys (kv_max_keys = 3): overwriting is fine, a fourth key is not.
    for k in ["a", "b", "c", "a"] {
        h.set(b(), k.into(), b"v".to_vec()).unwrap().unwrap();
    }
    let m = other(h.set(b(), "d".into(), b"v".to_vec()));
    assert_eq!(
        m,
        "quota exceeded: kv_max_keys: the bucket holds 3 keys, the most allowed is 3"
    );
    assert!(matches!(
        h.compare_and_swap(b(), "d".into(), 0, b"v".to_vec()).unwrap(),
        Err(kv::KvError::QuotaExceeded(m)) if m.contains("kv_max_keys")
    ));
    // Nothing of the refused writes landed.
    assert_eq!(h.get(b(), "d".into()).unwrap().unwrap(), None);
    // A delete makes room.
    h.delete(b(), "c".into()).unwrap().unwrap();
    h.set(b(), "d".into(), b"v".to_vec()).unwrap().unwrap();

    // Total bytes (carol: kv_quota_mb = 1): two values of 512 KiB fit with
    // their keys only if the keys take no room, so the second is refused.
    let mut table = ResourceTable::new();
    let mut carol = f.host("carol", &mut table);
    let own = open(&mut carol, "").rep();
    let c = || Resource::<Bucket>::new_borrow(own);
    carol
        .set(c(), "x".into(), vec![1; 512 << 10])
        .unwrap()
        .unwrap();
    let m = other(carol.set(c(), "y".into(), vec![1; 512 << 10]));
    assert!(m.starts_with("quota exceeded: kv_quota_mb:"), "{m}");
    assert!(m.contains("over its 1048576 bytes"), "{m}");
    // Shrinking the one value makes room.
    carol.set(c(), "x".into(), vec![1; 10]).unwrap().unwrap();
    carol
        .set(c(), "y".into(), vec![1; 512 << 10])
        .unwrap()
        .unwrap();
    assert!(f.kv.store.check().unwrap().is_empty());
}

#[test]
fn compare_and_swap_follows_versions() {
    let f = fixture();
    let mut table = ResourceTable::new();
    let mut h = f.host("bob", &mut table);
    let own = open(&mut h, "").rep();
    let b = || Resource::<Bucket>::new_borrow(own);
    let cas = |h: &mut KvHost<'_>, version: u64, value: &[u8]| {
        h.compare_and_swap(b(), "k".into(), version, value.to_vec())
            .unwrap()
            .unwrap()
    };
    // 0: only if absent.
    let v1 = cas(&mut h, 0, b"one").unwrap();
    assert_eq!(cas(&mut h, 0, b"again"), None);
    // The current version swaps; a stale one does not.
    let v2 = cas(&mut h, v1, b"two").unwrap();
    assert!(v2 > v1);
    assert_eq!(cas(&mut h, v1, b"stale"), None);
    let entry = h.get_entry(b(), "k".into()).unwrap().unwrap().unwrap();
    assert_eq!((entry.value.as_slice(), entry.version), (&b"two"[..], v2));
    // A plain set moves the version too.
    h.set(b(), "k".into(), b"three".to_vec()).unwrap().unwrap();
    assert_eq!(cas(&mut h, v2, b"lost"), None);
    // After a delete the key is absent again, and the version it gets next
    // is one it never had.
    h.delete(b(), "k".into()).unwrap().unwrap();
    let v3 = h.get_entry(b(), "k".into()).unwrap().unwrap();
    assert!(v3.is_none());
    assert_eq!(cas(&mut h, v2, b"x"), None);
    let v4 = cas(&mut h, 0, b"four").unwrap();
    assert!(v4 > v2 + 1, "{v4} after {v2}");
    assert!(h.get_entry(b(), "nope".into()).unwrap().unwrap().is_none());
}

#[test]
fn expired_keys_read_absent_and_stop_counting() {
    let f = fixture();
    let mut table = ResourceTable::new();
    let mut h = f.host("alice", &mut table);
    let own = open(&mut h, "").rep();
    let b = || Resource::<Bucket>::new_borrow(own);
    assert!(matches!(
        h.set_with_ttl(b(), "k".into(), b"v".to_vec(), 0).unwrap(),
        Err(kv::KvError::Invalid(m)) if m.contains("TTL")
    ));
    // Fill alice's three keys with short-lived ones, and one that lasts.
    for k in ["t1", "t2"] {
        h.set_with_ttl(b(), k.into(), b"gone soon".to_vec(), 30)
            .unwrap()
            .unwrap();
    }
    h.set_with_ttl(b(), "stays".into(), b"v".to_vec(), 3_600_000)
        .unwrap()
        .unwrap();
    assert_eq!(
        h.get(b(), "t1".into()).unwrap().unwrap(),
        Some(b"gone soon".to_vec())
    );
    assert!(other(h.set(b(), "new".into(), b"v".to_vec())).contains("kv_max_keys"));
    std::thread::sleep(Duration::from_millis(60));
    assert_eq!(h.get(b(), "t1".into()).unwrap().unwrap(), None);
    assert!(!h.exists(b(), "t2".into()).unwrap().unwrap());
    assert!(h.get_entry(b(), "t2".into()).unwrap().unwrap().is_none());
    let page = h.list_prefix(b(), "t".into(), None, 10).unwrap().unwrap();
    assert!(page.keys.is_empty(), "{page:?}");
    assert_eq!(
        h.list_keys(b(), None).unwrap().unwrap().keys,
        vec!["stays".to_string()]
    );
    // The expired keys no longer count: two new keys fit.
    h.set(b(), "new".into(), b"v".to_vec()).unwrap().unwrap();
    h.set(b(), "new2".into(), b"v".to_vec()).unwrap().unwrap();
    let usage = f.kv.store.buckets().unwrap();
    let alice = usage.iter().find(|(n, _)| n == "alice").unwrap().1;
    assert_eq!((alice.keys, alice.bytes), (3, 5 + 1 + 3 + 1 + 4 + 1));
    // A set without a TTL clears one.
    h.set(b(), "stays".into(), b"1".to_vec()).unwrap().unwrap();
    let e = f.kv.store.get("alice", "stays").unwrap().unwrap();
    assert_eq!(e.expires_ms, None);
    assert!(f.kv.store.check().unwrap().is_empty());
}

#[test]
fn list_prefix_pages_in_order_and_caps_the_limit() {
    let f = fixture();
    let mut table = ResourceTable::new();
    let mut h = f.host("bob", &mut table);
    let own = open(&mut h, "").rep();
    let b = || Resource::<Bucket>::new_borrow(own);
    let keys: Vec<String> = (0..25).map(|i| format!("a/{i:02}")).collect();
    let pairs = keys.iter().map(|k| (k.clone(), b"v".to_vec())).collect();
    h.set_many(b(), pairs).unwrap().unwrap();
    h.set(b(), "b/x".into(), b"v".to_vec()).unwrap().unwrap();
    h.set(b(), "a".into(), b"v".to_vec()).unwrap().unwrap();

    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = h
            .list_prefix(b(), "a/".into(), cursor.clone(), 10)
            .unwrap()
            .unwrap();
        assert!(page.keys.len() <= 10);
        seen.extend(page.keys);
        match page.cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, keys);
    // A cursor before the prefix starts at the prefix; an empty prefix
    // lists the bucket.
    let page = h
        .list_prefix(b(), "b/".into(), Some("a".into()), 10)
        .unwrap()
        .unwrap();
    assert_eq!(page.keys, ["b/x"]);
    let page = h.list_prefix(b(), String::new(), None, 1).unwrap().unwrap();
    assert_eq!(
        (page.keys, page.cursor),
        (vec!["a".into()], Some("a".into()))
    );
    assert!(matches!(
        h.list_prefix(b(), "a".into(), None, 0).unwrap(),
        Err(kv::KvError::Invalid(_))
    ));
    assert!(matches!(
        h.list_prefix(b(), "p".repeat(17), None, 5).unwrap(),
        Err(kv::KvError::Invalid(_))
    ));

    // More than a page: the limit is capped at 1000, and list-keys pages by
    // offset.
    let many: Vec<(String, Vec<u8>)> = (0..1000).map(|i| (format!("m/{i:04}"), vec![])).collect();
    h.set_many(b(), many).unwrap().unwrap();
    let page = h
        .list_prefix(b(), "m/".into(), None, u32::MAX)
        .unwrap()
        .unwrap();
    assert_eq!(page.keys.len(), 1000);
    assert_eq!(page.cursor, None, "exactly 1000 keys: no next page");
    let page = h
        .list_prefix(b(), String::new(), None, u32::MAX)
        .unwrap()
        .unwrap();
    assert_eq!(page.keys.len(), 1000);
    assert!(page.cursor.is_some());
    let first = h.list_keys(b(), None).unwrap().unwrap();
    assert_eq!((first.keys.len(), first.cursor), (1000, Some(1000)));
    let rest = h.list_keys(b(), first.cursor).unwrap().unwrap();
    assert_eq!((rest.keys.len(), rest.cursor), (1027 - 1000, None));
    assert!(!rest.keys.iter().any(|k| first.keys.contains(k)));
}

#[test]
fn batches_are_bounded_and_answer_per_key() {
    let f = fixture();
    let mut table = ResourceTable::new();
    let mut h = f.host("alice", &mut table);
    let s = open(&mut h, "sessions").rep();
    let b = || Resource::<Bucket>::new_borrow(s);
    h.set_many(
        b(),
        vec![("a".into(), b"1".to_vec()), ("b".into(), b"2".to_vec())],
    )
    .unwrap()
    .unwrap();
    let got = h
        .get_many(b(), vec!["a".into(), "missing".into(), "b".into()])
        .unwrap()
        .unwrap();
    assert_eq!(
        got,
        vec![
            Some(("a".into(), b"1".to_vec())),
            None,
            Some(("b".into(), b"2".to_vec()))
        ]
    );
    h.delete_many(b(), vec!["a".into(), "missing".into()])
        .unwrap()
        .unwrap();
    assert_eq!(h.get(b(), "a".into()).unwrap().unwrap(), None);
    let too_many: Vec<String> = (0..1001).map(|i| i.to_string()).collect();
    assert!(other(h.get_many(b(), too_many.clone())).contains("1000"));
    assert!(other(h.delete_many(b(), too_many.clone())).contains("1000"));
    let pairs = too_many.into_iter().map(|k| (k, vec![])).collect();
    assert!(other(h.set_many(b(), pairs)).contains("1000"));
    // A bad key anywhere refuses the whole batch before anything is written.
    let m = other(h.set_many(b(), vec![("ok".into(), vec![]), ("k".repeat(17), vec![])]));
    assert!(m.contains("max_key_bytes"), "{m}");
    assert_eq!(h.get(b(), "ok".into()).unwrap().unwrap(), None);
    // The shared bucket's quota is [kv]'s, not alice's three keys.
    let pairs = (0..10).map(|i| (format!("s{i}"), vec![])).collect();
    h.set_many(b(), pairs).unwrap().unwrap();
}

#[test]
fn increment_refuses_what_is_not_a_counter() {
    let f = fixture();
    let mut table = ResourceTable::new();
    let mut h = f.host("bob", &mut table);
    let own = open(&mut h, "").rep();
    let b = || Resource::<Bucket>::new_borrow(own);
    h.set(b(), "n".into(), b"forty".to_vec()).unwrap().unwrap();
    let m = other(h.increment(b(), "n".into(), 1));
    assert!(m.contains("not a decimal u64"), "{m}");
    h.set(b(), "n".into(), u64::MAX.to_string().into_bytes())
        .unwrap()
        .unwrap();
    assert!(other(h.increment(b(), "n".into(), 1)).contains("overflow"));
    assert_eq!(
        h.get(b(), "n".into()).unwrap().unwrap(),
        Some(u64::MAX.to_string().into_bytes())
    );
}

#[test]
fn a_write_past_the_deadline_faults_and_writes_nothing() {
    let f = fixture();
    let mut table = ResourceTable::new();
    let own = open(&mut f.host("bob", &mut table), "").rep();
    let mut spent = WaitState::default();
    spent.arm(Duration::ZERO);
    let state = f.ctxs[1].1.as_ref();
    let mut h = KvHost(View {
        agent: "bob",
        state,
        table: &mut table,
        wait: &spent,
        extensions: Box::leak(Box::default()),
    });
    let err = h
        .set(Resource::new_borrow(own), "k".into(), b"v".to_vec())
        .expect_err("a spent deadline ends the call");
    let deadline = err
        .chain()
        .find_map(|e| e.downcast_ref::<WaitDeadline>())
        .expect("a deadline fault");
    assert_eq!(deadline.call, "wasi:keyvalue/store.[method]bucket.set");
    assert_eq!(f.kv.store.get("bob", "k").unwrap(), None);
}

#[test]
fn open_fails_fast_without_a_path_or_with_a_shared_agent_name() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), "");
    let granted = |cfg: &RuntimeConfig| -> Vec<(AgentConfig, KvGrant)> {
        cfg.agents
            .iter()
            .filter_map(|a| Some((a.clone(), Kv::grant(a).unwrap()?)))
            .collect()
    };
    // No `[kv] path`.
    cfg.declared.clear();
    let g = granted(&cfg);
    let refs: Vec<_> = g.iter().map(|(a, g)| (a, g)).collect();
    let err = Kv::open(&cfg, &refs, &mut OpenCx::default()).unwrap_err();
    assert!(err.message.contains("set `[kv] path`"), "{}", err.message);

    let mut cfg = config(dir.path(), "");
    let i = cfg.agents.iter().position(|a| a.name == "nobody").unwrap();
    cfg.agents[i].name = "sessions".into();
    let g = granted(&cfg);
    let refs: Vec<_> = g.iter().map(|(a, g)| (a, g)).collect();
    let err = Kv::open(&cfg, &refs, &mut OpenCx::default()).unwrap_err();
    assert!(
        err.message.contains("`sessions` is an agent's name"),
        "{}",
        err.message
    );

    // A located grant error names the agent and the key.
    let text = "[[agents]]\nname = \"a\"\nkv_max_keys = -1\n";
    let cfg = RuntimeConfig::parse_declared(
        text,
        Path::new("x.toml"),
        dir.path(),
        &Declared {
            sections: &[config::SECTION],
            agent_keys: Kv::AGENT_KEYS,
        },
        &|_| None,
    )
    .unwrap();
    let err = Kv::grant(&cfg.agents[0]).unwrap_err();
    assert_eq!(err.agent.as_deref(), Some("a"));
    assert!(
        err.message
            .starts_with("x.toml:3:15: agents[0].kv_max_keys:"),
        "{}",
        err.message
    );
}

#[test]
fn describe_and_the_open_bound() {
    let f = fixture();
    let alice = f.config.agents.iter().find(|a| a.name == "alice").unwrap();
    let g = Kv::grant(alice).unwrap().unwrap();
    assert_eq!(
        Kv::describe(&g),
        "kv: own bucket (64 MiB, 3 keys); shared sessions"
    );
    let mut table = ResourceTable::new();
    let mut h = f.host("alice", &mut table);
    for _ in 0..MAX_OPEN_BUCKETS {
        open(&mut h, "");
    }
    let m = other(h.open(String::new()));
    assert!(m.contains("already open"), "{m}");
    // Dropping the table (an instance gone) counts its buckets out.
    drop(table);
    let mut table = ResourceTable::new();
    open(&mut f.host("alice", &mut table), "");
}
