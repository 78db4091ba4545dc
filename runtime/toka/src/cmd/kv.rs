//! `toka kv`: the operator's view of the durable key-value store that
//! agents use through `wasi:keyvalue` and `toka:runtime/kv`.
//!
//! `ls` lists the buckets (keys, bytes, write counter) or one bucket's keys;
//! `get` writes a value to stdout, `put` stores one (the argument, `--file`
//! or stdin; `--ttl` to expire it), `rm` deletes one. The store is the file
//! named by `[kv] path` in the configuration `toka run` takes; `--bucket`
//! defaults to the agent granted `kv = true` when there is exactly one.
//!
//! The operator's writes are bound by the key and value sizes every reader
//! expects (`[kv] max_key_bytes`, `max_value_kb`), not by any agent's quota;
//! they count towards the bucket's usage like the agent's own. The store
//! file is held by one process at a time: stop `toka run` first.

use std::fs;
use std::io::{self, IsTerminal as _, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{Context as _, anyhow};
use clap::Subcommand;
use toka_core::RuntimeConfig;
use toka_core::config::Declared;
use toka_kv::config::{AGENT_KEYS, SECTION};
use toka_kv::{KvConfig, KvGrant, Quota, Store, Write};

use super::ConfigArg;
use crate::exit::bad;

#[derive(Subcommand, Debug)]
pub(crate) enum KvCmd {
    /// List the buckets, or the keys of one bucket.
    Ls {
        /// The bucket whose keys to list (default: list the buckets).
        #[arg(long, value_name = "B")]
        bucket: Option<String>,
        /// Only keys starting with this (with --bucket).
        #[arg(long, value_name = "P", default_value = "")]
        prefix: String,
        #[command(flatten)]
        cfg: ConfigArg,
    },
    /// Write a value to stdout.
    Get {
        /// The key.
        key: String,
        #[command(flatten)]
        bucket: BucketArg,
        #[command(flatten)]
        cfg: ConfigArg,
    },
    /// Store a value: the VALUE argument, --file, or stdin.
    Put {
        /// The key.
        key: String,
        /// The value, as text.
        value: Option<String>,
        /// Read the value from this file.
        #[arg(long, value_name = "F", conflicts_with = "value")]
        file: Option<PathBuf>,
        /// Expire the key this long from now (`30s`, `2h`).
        #[arg(long, value_name = "T", value_parser = humantime::parse_duration)]
        ttl: Option<Duration>,
        #[command(flatten)]
        bucket: BucketArg,
        #[command(flatten)]
        cfg: ConfigArg,
    },
    /// Delete a key.
    Rm {
        /// The key.
        key: String,
        #[command(flatten)]
        bucket: BucketArg,
        #[command(flatten)]
        cfg: ConfigArg,
    },
}

/// `--bucket B`.
#[derive(clap::Args, Debug)]
pub(crate) struct BucketArg {
    /// The bucket: an agent's name (its own bucket) or a `kv_shared` name.
    /// Default: the one agent granted `kv = true`, if there is one.
    #[arg(long, value_name = "B")]
    bucket: Option<String>,
}

pub(crate) fn run(cmd: KvCmd) -> anyhow::Result<()> {
    match cmd {
        KvCmd::Ls {
            bucket,
            prefix,
            cfg,
        } => ls(&cfg.config, bucket.as_deref(), &prefix),
        KvCmd::Get { key, bucket, cfg } => get(&cfg.config, bucket.bucket, &key),
        KvCmd::Put {
            key,
            value,
            file,
            ttl,
            bucket,
            cfg,
        } => put(
            &cfg.config,
            bucket.bucket,
            &key,
            value,
            file.as_deref(),
            ttl,
        ),
        KvCmd::Rm { key, bucket, cfg } => rm(&cfg.config, bucket.bucket, &key),
    }
}

/// The configuration with the keys the `kv` capability owns.
fn load(config: &Path) -> anyhow::Result<RuntimeConfig> {
    let declared = Declared {
        sections: &[SECTION],
        agent_keys: AGENT_KEYS,
    };
    Ok(RuntimeConfig::load_declared(config, &declared)?)
}

/// The operator's mistakes (a bad name, size, a store in use) exit 2.
fn fail(e: toka_kv::Error) -> anyhow::Error {
    if e.is_caller_error() || matches!(e, toka_kv::Error::InUse { .. }) {
        bad(e)
    } else {
        e.into()
    }
}

/// Opens the store `config` names; only `put` may create it.
fn open(config: &Path, create: bool) -> anyhow::Result<(RuntimeConfig, Store)> {
    let cfg = load(config)?;
    let kv = KvConfig::from_config(&cfg)?;
    let path = kv.path.ok_or_else(|| {
        bad(anyhow!(
            "no key-value store configured: set [kv] path in {}",
            config.display()
        ))
    })?;
    if !create && !path.exists() {
        return Err(bad(anyhow!(
            "no key-value store at {} yet (`toka kv put` creates it)",
            path.display()
        )));
    }
    let store = Store::open(&path, kv.limits).map_err(fail)?;
    Ok((cfg, store))
}

/// `--bucket`, or the one agent with its own bucket.
fn bucket(cfg: &RuntimeConfig, config: &Path, asked: Option<String>) -> anyhow::Result<String> {
    if let Some(b) = asked {
        return Ok(b);
    }
    let mut own = Vec::new();
    for agent in &cfg.agents {
        if KvGrant::from_agent(agent)?.is_some_and(|g| g.own) {
            own.push(agent.name.clone());
        }
    }
    match &own[..] {
        [one] => Ok(one.clone()),
        [] => Err(bad(anyhow!(
            "name the bucket with --bucket B: no agent in {} has `kv = true`",
            config.display()
        ))),
        many => Err(bad(anyhow!(
            "name the bucket with --bucket B: several agents have their own ({})",
            many.join(", ")
        ))),
    }
}

fn ls(config: &Path, bucket: Option<&str>, prefix: &str) -> anyhow::Result<()> {
    let (_, store) = open(config, false)?;
    let Some(bucket) = bucket else {
        let rows: Vec<[String; 4]> = store
            .buckets()
            .map_err(fail)?
            .into_iter()
            .map(|(name, u)| {
                [
                    name,
                    u.keys.to_string(),
                    u.bytes.to_string(),
                    u.writes.to_string(),
                ]
            })
            .collect();
        table(["BUCKET", "KEYS", "BYTES", "WRITES"], &rows);
        return Ok(());
    };
    let mut rows = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store
            .list_prefix(bucket, prefix, after.as_deref(), toka_kv::MAX_PAGE)
            .map_err(fail)?;
        for key in page.keys {
            // Gone between the listing and the read (expired): skip it.
            let Some(e) = store.get(bucket, &key).map_err(fail)? else {
                continue;
            };
            let expires = e.expires_ms.map_or("-".to_owned(), |ms| {
                humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms))
                    .to_string()
            });
            rows.push([
                key,
                e.value.len().to_string(),
                e.version.to_string(),
                expires,
            ]);
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    table(["KEY", "BYTES", "VERSION", "EXPIRES"], &rows);
    Ok(())
}

/// Prints `rows` under `header`, the first column left-aligned, numbers
/// right-aligned.
fn table(header: [&str; 4], rows: &[[String; 4]]) {
    let header = header.map(String::from);
    let mut widths = [0; 4];
    for row in std::iter::once(&header).chain(rows) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = io::stdout().lock();
    for row in std::iter::once(&header).chain(rows) {
        let [a, b, c, d] = row;
        let _ = writeln!(
            out,
            "{a:<w0$}  {b:>w1$}  {c:>w2$}  {d}",
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
        );
    }
}

fn get(config: &Path, bucket: Option<String>, key: &str) -> anyhow::Result<()> {
    let (cfg, store) = open(config, false)?;
    let bucket = self::bucket(&cfg, config, bucket)?;
    let entry = store
        .get(&bucket, key)
        .map_err(fail)?
        .ok_or_else(|| bad(anyhow!("no key {key} in bucket {bucket}")))?;
    let mut out = io::stdout().lock();
    out.write_all(&entry.value)
        .and_then(|()| out.flush())
        .context("writing the value to stdout")?;
    Ok(())
}

fn put(
    config: &Path,
    bucket: Option<String>,
    key: &str,
    value: Option<String>,
    file: Option<&Path>,
    ttl: Option<Duration>,
) -> anyhow::Result<()> {
    let value = match (value, file) {
        (Some(text), _) => text.into_bytes(),
        (None, Some(path)) => fs::read(path)
            .with_context(|| format!("reading {}", path.display()))
            .map_err(bad)?,
        (None, None) => {
            let stdin = io::stdin();
            if stdin.is_terminal() {
                return Err(bad(anyhow!(
                    "give the value as an argument, with --file F or on stdin (`< F`)"
                )));
            }
            let mut data = Vec::new();
            stdin
                .lock()
                .read_to_end(&mut data)
                .context("reading the value from stdin")?;
            data
        }
    };
    let ttl_ms = match ttl {
        Some(t) if t.as_millis() == 0 => return Err(bad(anyhow!("--ttl must be at least 1ms"))),
        t => t.map(|t| t.as_millis().min(u64::MAX.into()) as u64),
    };
    let (cfg, store) = open(config, true)?;
    let bucket = self::bucket(&cfg, config, bucket)?;
    let len = value.len();
    let write = Write::Set {
        key: key.to_owned(),
        value,
        ttl_ms,
    };
    let version = match store
        .write(&bucket, Quota::UNLIMITED, write)
        .map_err(fail)?
    {
        toka_kv::Outcome::Set(v) => v,
        other => anyhow::bail!("the store answered {other:?} to a set"),
    };
    println!("stored {bucket}/{key} ({len} bytes, version {version})");
    Ok(())
}

fn rm(config: &Path, bucket: Option<String>, key: &str) -> anyhow::Result<()> {
    let (cfg, store) = open(config, false)?;
    let bucket = self::bucket(&cfg, config, bucket)?;
    if !store.delete(&bucket, key).map_err(fail)? {
        return Err(bad(anyhow!("no key {key} in bucket {bucket}")));
    }
    println!("removed {bucket}/{key}");
    Ok(())
}
