//! `toka secrets`: the operator's side of the encrypted secret store.
//!
//! `init` creates the master key file and the store, `set` / `get` / `list` /
//! `rm` manage secrets, `rotate-key` re-encrypts every store sealed under the
//! master key (the secret store, the vault whose key derives from it, and
//! whatever store another capability seals: the kernel's list, see
//! [`crate::stores::sealed`]) under a new one. The store, vault and key file are found through the
//! configuration that `toka run` takes (`[secrets] path`, `[secrets]
//! key_file`, `[vault] path`), by [`crate::stores`].
//!
//! Values never travel on the command line: `set` reads stdin or a no-echo
//! prompt, and only `get` ever writes a value (raw, to stdout). The master key
//! is printed once, by `rotate-key`, and only when it came from
//! `TOKA_MASTER_KEY` (there is no file to put the new one in).
//!
//! `rotate-key` is [`toka_keyring::rotate`] (with a key file: the new key
//! staged in `<key file>.new`, every store re-keyed, then the rename, under
//! `<key file>.lock`) or [`toka_keyring::rotate_unrecorded`] (with
//! `TOKA_MASTER_KEY`); a rotation killed anywhere is settled by the next
//! command that opens a store ([`crate::stores::master_key`]). The crate's
//! docs have the protocol and its crash guarantees.

use std::fs;
use std::io::{self, IsTerminal as _, Read as _, Write as _};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow};
use clap::Subcommand;
use toka_core::RuntimeConfig;
use toka_keyring::{KeyFile, MASTER_KEY_ENV, MasterKey, Sealed};
use toka_secrets::SecretStore;
use zeroize::Zeroizing;

use super::{ConfigArg, load_config};
use crate::exit::bad;
use crate::stores::{self, KeyOrigin};

#[derive(Subcommand, Debug)]
pub(crate) enum SecretsCmd {
    /// Create the master key file (mode 0600) and the secret store.
    Init {
        #[command(flatten)]
        cfg: ConfigArg,
    },
    /// Store a secret. The value is read from stdin (one trailing newline
    /// dropped) or, on a terminal, from a prompt that does not echo.
    Set {
        /// The secret's name, e.g. `stripe/live`.
        name: String,
        #[command(flatten)]
        cfg: ConfigArg,
    },
    /// Write a secret's raw value to stdout (no newline added).
    Get {
        /// The secret's name.
        name: String,
        #[command(flatten)]
        cfg: ConfigArg,
    },
    /// List the secrets' names (never their values).
    List {
        #[command(flatten)]
        cfg: ConfigArg,
    },
    /// Delete a secret.
    Rm {
        /// The secret's name.
        name: String,
        #[command(flatten)]
        cfg: ConfigArg,
    },
    /// Re-encrypt every secret (and the vault) under a new master key.
    RotateKey {
        #[command(flatten)]
        cfg: ConfigArg,
    },
}

pub(crate) fn run(cmd: SecretsCmd) -> anyhow::Result<()> {
    match cmd {
        SecretsCmd::Init { cfg } => init(&cfg.config),
        SecretsCmd::Set { name, cfg } => set(&cfg.config, &name),
        SecretsCmd::Get { name, cfg } => get(&cfg.config, &name),
        SecretsCmd::List { cfg } => list(&cfg.config),
        SecretsCmd::Rm { name, cfg } => rm(&cfg.config, &name),
        SecretsCmd::RotateKey { cfg } => rotate_key(&cfg.config),
    }
}

fn store_path(cfg: &RuntimeConfig, config: &Path) -> anyhow::Result<PathBuf> {
    cfg.secrets.path.clone().ok_or_else(|| {
        bad(anyhow!(
            "no secret store configured: set [secrets] path (or [event_bus] secret_store) in {}",
            config.display()
        ))
    })
}

/// The store named by `config`, which must exist.
fn existing_store(cfg: &RuntimeConfig, config: &Path) -> anyhow::Result<PathBuf> {
    let path = store_path(cfg, config)?;
    if !path.exists() {
        return Err(bad(anyhow!(
            "no secret store at {}: create it with `toka secrets init --config {}`",
            path.display(),
            config.display()
        )));
    }
    Ok(path)
}

/// Opens the existing store named by `config`.
fn open_store(config: &Path) -> anyhow::Result<SecretStore> {
    let cfg = load_config(config)?;
    let path = existing_store(&cfg, config)?;
    let (key, origin) = stores::master_key(&cfg)?;
    open_with(&path, key, &origin)
}

fn open_with(path: &Path, key: MasterKey, origin: &KeyOrigin) -> anyhow::Result<SecretStore> {
    SecretStore::open(path, key).map_err(|e| match e {
        toka_secrets::Error::WrongKey => bad(anyhow!(
            "wrong key: {origin} does not open the secret store at {}",
            path.display()
        )),
        other => in_store(other, path),
    })
}

/// `e`, naming the store.
fn in_store(e: toka_secrets::Error, store: &Path) -> anyhow::Error {
    anyhow::Error::new(e).context(format!("secret store {}", store.display()))
}

fn init(config: &Path) -> anyhow::Result<()> {
    let cfg = load_config(config)?;
    let path = store_path(&cfg, config)?;
    if let Some(key) = MasterKey::from_env()? {
        open_with(&path, key, &KeyOrigin::Env)?;
        println!("secret store: {}", path.display());
        println!("master key:   from {MASTER_KEY_ENV} (no key file written)");
        return Ok(());
    }
    let file = stores::key_file(&cfg)?;
    let key_path = file.path().to_owned();
    let store_exists = path.exists();
    if key_path.exists() {
        if store_exists {
            return Err(bad(anyhow!(
                "already initialised: key file {} and secret store {} exist",
                key_path.display(),
                path.display()
            )));
        }
        let key = file.read()?;
        open_with(&path, key, &KeyOrigin::File(file))?;
        println!("secret store: {} (created)", path.display());
        println!("master key:   {} (existing file, kept)", key_path.display());
        return Ok(());
    }
    if store_exists {
        return Err(bad(anyhow!(
            "secret store {} exists but its key file {} does not: a new key could not open it; \
             restore the key file or set {MASTER_KEY_ENV}",
            path.display(),
            key_path.display()
        )));
    }
    if let Some(dir) = key_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_private_dir(dir)?;
    }
    let key = file.create()?;
    open_with(&path, key, &KeyOrigin::File(file))?;
    println!("secret store: {} (created)", path.display());
    println!(
        "master key:   {} (created, mode 0600; back it up: without it the secrets cannot be read)",
        key_path.display()
    );
    Ok(())
}

fn set(config: &Path, name: &str) -> anyhow::Result<()> {
    toka_secrets::validate_name(name)?;
    let store = open_store(config)?;
    let value = read_value(name)?;
    store
        .set(name, &value)
        .map_err(|e| in_store(e, store.path()))?;
    println!("stored {name}");
    Ok(())
}

/// The value for `set`: all of stdin minus one trailing newline, or a
/// no-echo prompt on a terminal.
fn read_value(name: &str) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let stdin = io::stdin();
    if stdin.is_terminal() {
        let typed = Zeroizing::new(
            rpassword::prompt_password(format!("value for {name}: "))
                .context("reading the value from the terminal")?,
        );
        return Ok(Zeroizing::new(typed.as_bytes().to_vec()));
    }
    let mut value = Zeroizing::new(Vec::with_capacity(4096));
    stdin
        .lock()
        .read_to_end(&mut value)
        .context("reading the value from stdin")?;
    if value.last() == Some(&b'\n') {
        value.pop();
        if value.last() == Some(&b'\r') {
            value.pop();
        }
    }
    Ok(value)
}

fn get(config: &Path, name: &str) -> anyhow::Result<()> {
    toka_secrets::validate_name(name)?;
    let store = open_store(config)?;
    let value = store
        .get(name)
        .map_err(|e| in_store(e, store.path()))?
        .ok_or_else(|| bad(anyhow!("no secret named {name}")))?;
    let mut out = io::stdout().lock();
    out.write_all(value.expose())
        .and_then(|()| out.flush())
        .context("writing the value to stdout")?;
    Ok(())
}

fn list(config: &Path) -> anyhow::Result<()> {
    let store = open_store(config)?;
    for name in store.list().map_err(|e| in_store(e, store.path()))? {
        println!("{name}");
    }
    Ok(())
}

fn rm(config: &Path, name: &str) -> anyhow::Result<()> {
    toka_secrets::validate_name(name)?;
    let store = open_store(config)?;
    if !store.remove(name).map_err(|e| in_store(e, store.path()))? {
        return Err(bad(anyhow!("no secret named {name}")));
    }
    println!("removed {name}");
    Ok(())
}

fn rotate_key(config: &Path) -> anyhow::Result<()> {
    let cfg = load_config(config)?;
    existing_store(&cfg, config)?;
    let mut sealed = stores::sealed(&cfg);
    match MasterKey::from_env()? {
        None => {
            let file = stores::key_file(&cfg)?;
            let counts = toka_keyring::rotate(&file, &mut sealed)
                .map_err(|e| stores::explain(e, &KeyOrigin::File(file.clone()), &sealed))?;
            print_rotated(&counts, &sealed, &file);
        }
        Some(key) => {
            let mut shown = false;
            let result = toka_keyring::rotate_unrecorded(&key, &mut sealed, &mut |encoded| {
                show_new_key(encoded)?;
                shown = true;
                Ok(())
            });
            let count = result.map_err(|e| match e {
                toka_keyring::Error::HoldsData { .. } => bad(anyhow!(
                    "{e}. Rotate through a key file instead: write the key to a file (mode \
                     0600), set [secrets] key_file to it, unset {MASTER_KEY_ENV}, run `toka \
                     secrets rotate-key`, then take the new key from the file"
                )),
                e if shown => stores::explain(e, &KeyOrigin::Env, &sealed).context(format!(
                    "key rotation failed: try the old {MASTER_KEY_ENV} first, then the new key"
                )),
                e => stores::explain(e, &KeyOrigin::Env, &sealed),
            })?;
            eprintln!("rotated {count} secret(s); set {MASTER_KEY_ENV} to the new key now");
        }
    }
    Ok(())
}

/// `counts` as [`toka_keyring::rotate`] returns them for `stores`
/// ([`stores::sealed`], the secret store last), told secret store first:
/// `rotated 4 secret(s) and 4 vault blob(s)`.
fn print_rotated(counts: &[usize], stores: &[Box<dyn Sealed>], file: &KeyFile) {
    println!(
        "rotated {}; the new master key is in {}",
        rotated(counts, stores),
        file.path().display()
    );
}

/// What [`print_rotated`] says was rotated: `4 secret(s) and 4 vault blob(s)`.
fn rotated(counts: &[usize], stores: &[Box<dyn Sealed>]) -> String {
    let mut parts: Vec<String> = counts
        .iter()
        .zip(stores)
        .rev()
        .map(|(n, store)| format!("{n} {}", store.counted()))
        .collect();
    match parts.pop() {
        None => "nothing".to_owned(),
        Some(last) if parts.is_empty() => last,
        Some(last) => format!("{} and {last}", parts.join(", ")),
    }
}

/// The new key of a rotation from `TOKA_MASTER_KEY`, on stdout, before any
/// store changes, so a crash in between cannot lose the only copy of it.
fn show_new_key(encoded: &str) -> Result<(), toka_keyring::BoxError> {
    let mut out = io::stdout().lock();
    writeln!(out, "{encoded}")
        .and_then(|()| out.flush())
        .context("writing the new key to stdout")?;
    drop(out);
    eprintln!(
        "warning: the master key came from {MASTER_KEY_ENV}; the new key printed on \
         stdout is shown only this once and must replace {MASTER_KEY_ENV} wherever it is set"
    );
    Ok(())
}

/// Creates `dir` (and parents) private to its owner where it does not exist.
fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        return Ok(());
    }
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotation_is_told_secret_store_first() {
        let store = |counted: &'static str| -> Box<dyn Sealed> {
            /// A store that only has a name and a noun.
            struct Named(&'static str);
            impl Sealed for Named {
                fn name(&self) -> &str {
                    "a store"
                }
                fn counted(&self) -> &str {
                    self.0
                }
                fn sealed_with(&self, _: &MasterKey) -> Result<bool, toka_keyring::BoxError> {
                    unreachable!()
                }
                fn open(&mut self, _: &MasterKey) -> Result<(), toka_keyring::BoxError> {
                    unreachable!()
                }
                fn rekey(
                    &mut self,
                    _: &MasterKey,
                    _: &MasterKey,
                ) -> Result<usize, toka_keyring::BoxError> {
                    unreachable!()
                }
                fn reset_if_empty(&mut self) -> Result<Option<String>, toka_keyring::BoxError> {
                    unreachable!()
                }
            }
            Box::new(Named(counted))
        };
        let secrets = || store("secret(s)");
        assert_eq!(rotated(&[5], &[secrets()]), "5 secret(s)");
        assert_eq!(
            rotated(&[4, 3], &[store("vault blob(s)"), secrets()]),
            "3 secret(s) and 4 vault blob(s)"
        );
        assert_eq!(
            rotated(
                &[2, 4, 3],
                &[store("entries"), store("vault blob(s)"), secrets()]
            ),
            "3 secret(s), 4 vault blob(s) and 2 entries"
        );
    }
}
