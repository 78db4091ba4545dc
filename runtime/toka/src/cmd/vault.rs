//! `toka vault`: the operator's view of the encrypted blob store that agents
//! use through the `vault` capability.
//!
//! `ls` lists namespaces or one namespace's blobs, `put` / `get` / `rm`
//! manage one blob. The vault directory comes from the configuration that
//! `toka run` takes (`[vault] path`); its key derives from the master key
//! ([`VaultKey::from_master`]), exactly as the runtime derives it. Blob
//! contents are only ever written to stdout by `get`.
//!
//! `toka secrets rotate-key` re-keys the vault with the secret store: the
//! vault takes part in the keyring's rotation as a
//! [`toka_vault::SealedVault`], which the vault capability lists for it
//! (`Capability::sealed`; [`crate::stores::sealed`]).

use std::fs;
use std::io::{self, IsTerminal as _, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{Context as _, anyhow};
use clap::Subcommand;
use toka_core::RuntimeConfig;
use toka_keyring::MasterKey;
use toka_vault::{Limits, Vault, VaultKey};

use super::{ConfigArg, load_config};
use crate::exit::bad;
use crate::stores::{self, KeyOrigin};

#[derive(Subcommand, Debug)]
pub(crate) enum VaultCmd {
    /// List the namespaces, or the blobs of one namespace.
    Ls {
        /// The namespace to list (default: list the namespaces).
        namespace: Option<String>,
        #[command(flatten)]
        cfg: ConfigArg,
    },
    /// Store a blob, read from --file or stdin, replacing any of that name.
    Put {
        /// The namespace (one per agent).
        namespace: String,
        /// The blob's name, e.g. `reports/today.json`.
        name: String,
        /// Read the content from this file instead of stdin.
        #[arg(long, value_name = "F")]
        file: Option<PathBuf>,
        /// The content type recorded with the blob.
        #[arg(long, value_name = "T", default_value = "application/octet-stream")]
        content_type: String,
        #[command(flatten)]
        cfg: ConfigArg,
    },
    /// Write a blob's content to stdout.
    Get {
        /// The namespace.
        namespace: String,
        /// The blob's name.
        name: String,
        #[command(flatten)]
        cfg: ConfigArg,
    },
    /// Delete a blob.
    Rm {
        /// The namespace.
        namespace: String,
        /// The blob's name.
        name: String,
        #[command(flatten)]
        cfg: ConfigArg,
    },
}

pub(crate) fn run(cmd: VaultCmd) -> anyhow::Result<()> {
    match cmd {
        VaultCmd::Ls { namespace, cfg } => ls(&cfg.config, namespace.as_deref()),
        VaultCmd::Put {
            namespace,
            name,
            file,
            content_type,
            cfg,
        } => put(
            &cfg.config,
            &namespace,
            &name,
            file.as_deref(),
            &content_type,
        ),
        VaultCmd::Get {
            namespace,
            name,
            cfg,
        } => get(&cfg.config, &namespace, &name),
        VaultCmd::Rm {
            namespace,
            name,
            cfg,
        } => rm(&cfg.config, &namespace, &name),
    }
}

fn vault_dir(cfg: &RuntimeConfig, config: &Path) -> anyhow::Result<PathBuf> {
    cfg.vault.path.clone().ok_or_else(|| {
        bad(anyhow!(
            "no vault configured: set [vault] path in {}",
            config.display()
        ))
    })
}

/// Opens the vault named by `config`; only `put` may create it.
fn open(config: &Path, create: bool) -> anyhow::Result<(RuntimeConfig, Vault)> {
    let cfg = load_config(config)?;
    let dir = vault_dir(&cfg, config)?;
    if !create && !Vault::exists(&dir) {
        return Err(bad(anyhow!(
            "no vault at {} yet (`toka vault put` creates it)",
            dir.display()
        )));
    }
    let (master, origin) = stores::master_key(&cfg)?;
    let vault = open_dir(&dir, &master, &origin)?;
    Ok((cfg, vault))
}

fn open_dir(dir: &Path, master: &MasterKey, origin: &KeyOrigin) -> anyhow::Result<Vault> {
    Vault::open(dir, VaultKey::from_master(master)).map_err(|e| match e {
        toka_vault::Error::WrongKey { .. } => bad(anyhow!(
            "wrong key: {origin} does not open the vault at {}",
            dir.display()
        )),
        other => other.into(),
    })
}

fn ls(config: &Path, namespace: Option<&str>) -> anyhow::Result<()> {
    let (_, vault) = open(config, false)?;
    let Some(namespace) = namespace else {
        for ns in vault.namespaces()? {
            println!("{ns}");
        }
        return Ok(());
    };
    let rows: Vec<[String; 5]> = vault
        .list(namespace)?
        .into_iter()
        .map(|e| {
            let updated = UNIX_EPOCH + Duration::from_millis(e.updated_ms);
            [
                e.name.clone(),
                e.size.to_string(),
                e.content_type.clone(),
                humantime::format_rfc3339_seconds(updated).to_string(),
                e.sha256_hex()[..12].to_owned(),
            ]
        })
        .collect();
    let header = ["NAME", "SIZE", "CONTENT-TYPE", "UPDATED", "SHA256"].map(String::from);
    let mut widths = [0; 5];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        let [name, size, ty, updated, sha] = row;
        println!(
            "{name:<w0$}  {size:>w1$}  {ty:<w2$}  {updated:<w3$}  {sha}",
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3],
        );
    }
    Ok(())
}

fn put(
    config: &Path,
    namespace: &str,
    name: &str,
    file: Option<&Path>,
    content_type: &str,
) -> anyhow::Result<()> {
    let data = match file {
        Some(path) => fs::read(path)
            .with_context(|| format!("reading {}", path.display()))
            .map_err(bad)?,
        None => {
            let stdin = io::stdin();
            if stdin.is_terminal() {
                return Err(bad(anyhow!(
                    "give the content with --file F or on stdin (`< F`)"
                )));
            }
            let mut data = Vec::new();
            stdin
                .lock()
                .read_to_end(&mut data)
                .context("reading the content from stdin")?;
            data
        }
    };
    let (cfg, vault) = open(config, true)?;
    // The operator is not bound by any agent's quota, only by the blob size
    // every reader of the vault expects.
    let limits = Limits {
        max_blob_bytes: cfg.vault.max_blob_mb << 20,
        quota_bytes: u64::MAX,
    };
    let entry = vault.put(namespace, name, content_type, &data, &limits)?;
    println!(
        "stored {namespace}/{name} ({} bytes, sha256 {})",
        entry.size,
        &entry.sha256_hex()[..12]
    );
    Ok(())
}

fn get(config: &Path, namespace: &str, name: &str) -> anyhow::Result<()> {
    let (_, vault) = open(config, false)?;
    let (_, data) = vault
        .get(namespace, name)?
        .ok_or_else(|| bad(anyhow!("no blob {name} in namespace {namespace}")))?;
    let mut out = io::stdout().lock();
    out.write_all(&data)
        .and_then(|()| out.flush())
        .context("writing the blob to stdout")?;
    Ok(())
}

fn rm(config: &Path, namespace: &str, name: &str) -> anyhow::Result<()> {
    let (_, vault) = open(config, false)?;
    if !vault.delete(namespace, name)? {
        return Err(bad(anyhow!("no blob {name} in namespace {namespace}")));
    }
    println!("removed {namespace}/{name}");
    Ok(())
}
