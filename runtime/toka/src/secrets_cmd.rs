//! `toka secrets`: the operator's side of the encrypted secret store.
//!
//! `init` creates the master key file and the store, `set` / `get` / `list` /
//! `rm` manage secrets, `rotate-key` re-encrypts the store under a new master
//! key. The store and key file are found through the configuration that
//! `toka run` takes (`[secrets] path`, `[secrets] key_file`).
//!
//! Values never travel on the command line: `set` reads stdin or a no-echo
//! prompt, and only `get` ever writes a value (raw, to stdout). The master key
//! is printed once, by `rotate-key`, and only when it came from
//! `TOKA_MASTER_KEY` (there is no file to put the new one in).
//!
//! # Key rotation and crashes
//!
//! With a key file `K`, `rotate-key` writes the new key to `K.new` (0600,
//! fsynced), rotates the store (one atomic sled batch), then renames `K.new`
//! over `K`. Killed at any point, exactly one of `K` / `K.new` opens the
//! store; the next `toka secrets` or `toka vault` command finds a leftover
//! `K.new` and settles it ([`master_key`]): renamed over `K` if it is the key
//! that opens the store, deleted if `K` still is.

use std::fs;
use std::io::{self, IsTerminal as _, Read as _, Write as _};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow};
use clap::{Args, Subcommand};
use toka_core::RuntimeConfig;
use toka_secrets::{MASTER_KEY_ENV, MASTER_KEY_LEN, MasterKey, SecretStore};
use zeroize::Zeroizing;

use crate::bad;

/// `--config FILE`, the configuration `toka run` takes, for the commands
/// that need a store from it.
#[derive(Args, Debug)]
pub(crate) struct ConfigArg {
    /// The configuration file (TOML) that names the store and key file.
    #[arg(long, value_name = "FILE")]
    pub(crate) config: PathBuf,
}

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
    /// Re-encrypt every secret under a new master key.
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

/// The master key file used when the configuration names none:
/// `$XDG_CONFIG_HOME/toka/master.key`, else `~/.config/toka/master.key`.
pub(crate) fn default_key_file() -> anyhow::Result<PathBuf> {
    let non_empty = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    let config_home = match non_empty("XDG_CONFIG_HOME") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(non_empty("HOME").ok_or_else(|| {
            bad(anyhow!(
                "no master key file: set [secrets] key_file, TOKA_MASTER_KEY, HOME or XDG_CONFIG_HOME"
            ))
        })?)
        .join(".config"),
    };
    Ok(config_home.join("toka").join("master.key"))
}

/// Where the master key came from; errors and messages name it.
#[derive(Debug, Clone)]
pub(crate) enum KeyOrigin {
    Env,
    File(PathBuf),
}

impl std::fmt::Display for KeyOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyOrigin::Env => f.write_str(MASTER_KEY_ENV),
            KeyOrigin::File(path) => write!(f, "key file {}", path.display()),
        }
    }
}

pub(crate) fn load_config(config: &Path) -> anyhow::Result<RuntimeConfig> {
    RuntimeConfig::load(config).map_err(bad)
}

/// The configured key file, or [`default_key_file`].
fn key_file(cfg: &RuntimeConfig) -> anyhow::Result<PathBuf> {
    match &cfg.secrets.key_file {
        Some(path) => Ok(path.clone()),
        None => default_key_file(),
    }
}

/// Where `rotate-key` stages the new key before renaming it over `key_file`.
fn pending_key_file(key_file: &Path) -> PathBuf {
    let mut path = key_file.as_os_str().to_owned();
    path.push(".new");
    PathBuf::from(path)
}

/// The master key: `TOKA_MASTER_KEY` if set, else the key file (configured
/// or [`default_key_file`]). A key file first gets any rotation that was
/// interrupted settled (see the module docs).
pub(crate) fn master_key(cfg: &RuntimeConfig) -> anyhow::Result<(MasterKey, KeyOrigin)> {
    if let Some(key) = MasterKey::from_env().map_err(secrets_error)? {
        return Ok((key, KeyOrigin::Env));
    }
    let file = key_file(cfg)?;
    if let Some(store) = &cfg.secrets.path {
        finish_interrupted_rotation(store, &file)?;
    }
    let key = MasterKey::read_key_file(&file).map_err(secrets_error)?;
    Ok((key, KeyOrigin::File(file)))
}

/// Settles a `<key file>.new` left by a `rotate-key` that was killed: the
/// store opens with exactly one of the two keys, and that one stays.
fn finish_interrupted_rotation(store: &Path, key_file: &Path) -> anyhow::Result<()> {
    let pending = pending_key_file(key_file);
    if !pending.exists() {
        return Ok(());
    }
    if !store.exists() {
        // No store, so no rotation can have used it.
        return remove_stale(&pending);
    }
    let old = MasterKey::read_key_file(key_file).map_err(secrets_error)?;
    match SecretStore::open(store, old) {
        Ok(_) => remove_stale(&pending),
        Err(toka_secrets::Error::WrongKey) => {
            let new = MasterKey::read_key_file(&pending).map_err(|e| {
                bad(anyhow!(
                    "neither key file {} nor {} opens the secret store at {}: {e}",
                    key_file.display(),
                    pending.display(),
                    store.display()
                ))
            })?;
            match SecretStore::open(store, new) {
                Ok(_) => {}
                Err(toka_secrets::Error::WrongKey) => {
                    return Err(bad(anyhow!(
                        "wrong key: neither key file {} nor {} opens the secret store at {}",
                        key_file.display(),
                        pending.display(),
                        store.display()
                    )));
                }
                Err(e) => return Err(store_error(e, store)),
            }
            fs::rename(&pending, key_file).with_context(|| {
                format!(
                    "completing an interrupted key rotation: renaming {} to {}",
                    pending.display(),
                    key_file.display()
                )
            })?;
            sync_parent(key_file)?;
            tracing::warn!(
                key_file = %key_file.display(),
                "completed an interrupted `toka secrets rotate-key`: the store was already under the new key"
            );
            Ok(())
        }
        Err(e) => Err(store_error(e, store)),
    }
}

/// Removes a `.new` key that never became the store's key.
fn remove_stale(pending: &Path) -> anyhow::Result<()> {
    fs::remove_file(pending).with_context(|| format!("removing {}", pending.display()))?;
    tracing::warn!(
        file = %pending.display(),
        "removed a new key left by an interrupted `toka secrets rotate-key` (the store was not rotated)"
    );
    Ok(())
}

/// Errors that are the operator's to fix (names, keys) exit with 2.
fn secrets_error(e: toka_secrets::Error) -> anyhow::Error {
    use toka_secrets::Error as E;
    match e {
        E::InvalidName { .. }
        | E::InvalidPattern { .. }
        | E::InvalidKey { .. }
        | E::NoKey
        | E::KeyFileMissing { .. }
        | E::KeyFileExists { .. } => bad(e),
        other => anyhow::Error::new(other),
    }
}

/// [`secrets_error`], naming the store.
fn store_error(e: toka_secrets::Error, store: &Path) -> anyhow::Error {
    secrets_error(e).context(format!("secret store {}", store.display()))
}

fn store_path(cfg: &RuntimeConfig, config: &Path) -> anyhow::Result<PathBuf> {
    cfg.secrets.path.clone().ok_or_else(|| {
        bad(anyhow!(
            "no secret store configured: set [secrets] path (or [event_bus] secret_store) in {}",
            config.display()
        ))
    })
}

/// Opens the existing store named by `config`.
fn open_store(config: &Path) -> anyhow::Result<(RuntimeConfig, SecretStore, KeyOrigin)> {
    let cfg = load_config(config)?;
    let path = store_path(&cfg, config)?;
    if !path.exists() {
        return Err(bad(anyhow!(
            "no secret store at {}: create it with `toka secrets init --config {}`",
            path.display(),
            config.display()
        )));
    }
    let (key, origin) = master_key(&cfg)?;
    let store = open_with(&path, key, &origin)?;
    Ok((cfg, store, origin))
}

fn open_with(path: &Path, key: MasterKey, origin: &KeyOrigin) -> anyhow::Result<SecretStore> {
    SecretStore::open(path, key).map_err(|e| match e {
        toka_secrets::Error::WrongKey => bad(anyhow!(
            "wrong key: {origin} does not open the secret store at {}",
            path.display()
        )),
        other => store_error(other, path),
    })
}

fn init(config: &Path) -> anyhow::Result<()> {
    let cfg = load_config(config)?;
    let path = store_path(&cfg, config)?;
    if let Some(key) = MasterKey::from_env().map_err(secrets_error)? {
        open_with(&path, key, &KeyOrigin::Env)?;
        println!("secret store: {}", path.display());
        println!("master key:   from {MASTER_KEY_ENV} (no key file written)");
        return Ok(());
    }
    let file = key_file(&cfg)?;
    let store_exists = path.exists();
    if file.exists() {
        if store_exists {
            return Err(bad(anyhow!(
                "already initialised: key file {} and secret store {} exist",
                file.display(),
                path.display()
            )));
        }
        let key = MasterKey::read_key_file(&file).map_err(secrets_error)?;
        open_with(&path, key, &KeyOrigin::File(file.clone()))?;
        println!("secret store: {} (created)", path.display());
        println!("master key:   {} (existing file, kept)", file.display());
        return Ok(());
    }
    if store_exists {
        return Err(bad(anyhow!(
            "secret store {} exists but its key file {} does not: a new key could not open it; \
             restore the key file or set {MASTER_KEY_ENV}",
            path.display(),
            file.display()
        )));
    }
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_private_dir(dir)?;
    }
    let key = MasterKey::create_key_file(&file).map_err(secrets_error)?;
    sync_parent(&file)?;
    open_with(&path, key, &KeyOrigin::File(file.clone()))?;
    println!("secret store: {} (created)", path.display());
    println!(
        "master key:   {} (created, mode 0600; back it up: without it the secrets cannot be read)",
        file.display()
    );
    Ok(())
}

fn set(config: &Path, name: &str) -> anyhow::Result<()> {
    toka_secrets::validate_name(name).map_err(secrets_error)?;
    let (_, store, _) = open_store(config)?;
    let value = read_value(name)?;
    store
        .set(name, &value)
        .map_err(|e| store_error(e, store.path()))?;
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
    toka_secrets::validate_name(name).map_err(secrets_error)?;
    let (_, store, _) = open_store(config)?;
    let value = store
        .get(name)
        .map_err(|e| store_error(e, store.path()))?
        .ok_or_else(|| bad(anyhow!("no secret named {name}")))?;
    let mut out = io::stdout().lock();
    out.write_all(value.expose())
        .and_then(|()| out.flush())
        .context("writing the value to stdout")?;
    Ok(())
}

fn list(config: &Path) -> anyhow::Result<()> {
    let (_, store, _) = open_store(config)?;
    for name in store.list().map_err(|e| store_error(e, store.path()))? {
        println!("{name}");
    }
    Ok(())
}

fn rm(config: &Path, name: &str) -> anyhow::Result<()> {
    toka_secrets::validate_name(name).map_err(secrets_error)?;
    let (_, store, _) = open_store(config)?;
    if !store
        .remove(name)
        .map_err(|e| store_error(e, store.path()))?
    {
        return Err(bad(anyhow!("no secret named {name}")));
    }
    println!("removed {name}");
    Ok(())
}

fn rotate_key(config: &Path) -> anyhow::Result<()> {
    let (cfg, mut store, origin) = open_store(config)?;
    #[cfg(feature = "vault")]
    crate::vault_cmd::ensure_rotation_keeps_vault(&cfg, &origin)?;
    #[cfg(not(feature = "vault"))]
    ensure_no_vault(&cfg)?;
    let store_path = store.path().to_owned();
    match origin {
        KeyOrigin::File(key_file) => {
            let pending = pending_key_file(&key_file);
            // Persisted before the store changes, so a crash never leaves the
            // store under a key that exists nowhere.
            let new = MasterKey::create_key_file(&pending).map_err(secrets_error)?;
            sync_parent(&pending)?;
            let count = store.rotate_key(new).map_err(|e| {
                store_error(e, &store_path).context(format!(
                    "key rotation failed; the next `toka secrets` command settles {}",
                    pending.display()
                ))
            })?;
            drop(store);
            fs::rename(&pending, &key_file).with_context(|| {
                format!(
                    "the store is rotated but renaming {} to {} failed; \
                     the next `toka secrets` command retries it",
                    pending.display(),
                    key_file.display()
                )
            })?;
            sync_parent(&key_file)?;
            println!(
                "rotated {count} secret(s); the new master key is in {}",
                key_file.display()
            );
        }
        KeyOrigin::Env => {
            let encoded = new_key_base64()?;
            let new = MasterKey::from_base64(&encoded).map_err(secrets_error)?;
            // Shown before the store changes, so a crash in between cannot
            // lose the only copy of the key the store ends up under.
            let mut out = io::stdout().lock();
            writeln!(out, "{}", encoded.as_str())
                .and_then(|()| out.flush())
                .context("writing the new key to stdout")?;
            drop(out);
            eprintln!(
                "warning: the master key came from {MASTER_KEY_ENV}; the new key printed on \
                 stdout is shown only this once and must replace {MASTER_KEY_ENV} wherever it is set"
            );
            let count = store.rotate_key(new).map_err(|e| {
                store_error(e, &store_path).context(format!(
                    "key rotation failed: try the old {MASTER_KEY_ENV} first, then the new key"
                ))
            })?;
            eprintln!("rotated {count} secret(s); set {MASTER_KEY_ENV} to the new key now");
        }
    }
    Ok(())
}

/// Without the vault feature the vault cannot be checked, so any vault the
/// config names blocks a rotation that would make it unreadable.
#[cfg(not(feature = "vault"))]
fn ensure_no_vault(cfg: &RuntimeConfig) -> anyhow::Result<()> {
    match &cfg.vault.path {
        Some(dir) if dir.exists() => Err(bad(anyhow!(
            "the vault at {} is sealed with a key derived from the master key; \
             this build cannot re-key it, so rotating would make it unreadable",
            dir.display()
        ))),
        _ => Ok(()),
    }
}

/// A fresh master key, standard base64, for printing.
fn new_key_base64() -> anyhow::Result<Zeroizing<String>> {
    use base64::Engine as _;
    let mut bytes = Zeroizing::new([0u8; MASTER_KEY_LEN]);
    getrandom::fill(bytes.as_mut_slice())
        .map_err(|e| anyhow!("the operating system random number generator failed: {e}"))?;
    Ok(Zeroizing::new(
        base64::engine::general_purpose::STANDARD.encode(bytes.as_slice()),
    ))
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

/// Makes a creation or rename in `path`'s directory durable.
pub(crate) fn sync_parent(path: &Path) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    #[cfg(unix)]
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing directory {}", dir.display()))?;
    Ok(())
}
