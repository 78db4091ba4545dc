//! `toka secrets`: the operator's side of the encrypted secret store.
//!
//! `init` creates the master key file and the store, `set` / `get` / `list` /
//! `rm` manage secrets, `rotate-key` re-encrypts the store, and the vault
//! (whose key derives from the master key), under a new master key. The
//! store, vault and key file are found through the configuration that
//! `toka run` takes (`[secrets] path`, `[secrets] key_file`, `[vault] path`).
//!
//! Values never travel on the command line: `set` reads stdin or a no-echo
//! prompt, and only `get` ever writes a value (raw, to stdout). The master key
//! is printed once, by `rotate-key`, and only when it came from
//! `TOKA_MASTER_KEY` (there is no file to put the new one in).
//!
//! # Key rotation and crashes
//!
//! With a key file `K`, `rotate-key` opens the store and the vault with the
//! current key (holding both locks until it is done), then:
//!
//! 1. writes the new key to `K.new` (0600, fsynced): the intent, so no state
//!    below is ever under a key that exists nowhere;
//! 2. re-keys the vault (`Vault::rekey`: all or nothing, its manifest the
//!    commit point);
//! 3. rotates the store (one atomic sled batch);
//! 4. renames `K.new` over `K`.
//!
//! Killed at any point, each of the vault and the store is wholly under one
//! of the two keys, and the steps' order bounds the mixes: nothing rotated,
//! the vault alone, or both. The next `toka secrets` or `toka vault` command
//! finds the leftover `K.new` and settles it before anything else
//! ([`master_key`]): if the vault or the store is under the new key, it rolls
//! the rotation *forward* (brings the other one to the new key, then renames
//! `K.new` over `K`); if neither is, it rolls *back* (deletes `K.new`, which
//! nothing was sealed with). Each step checks before it acts, so a settling
//! that is itself killed is simply settled again. Afterwards exactly one key,
//! the one in `K`, opens both, and every secret and blob reads back. Only
//! paths and counts are logged, never a key.
//!
//! `rotate-key` holds an exclusive advisory lock on `K.lock` (an empty file
//! created beside `K`) for its whole run, and a command that finds a `K.new`
//! takes the same lock before it looks at anything, waiting for a running
//! rotation to end: a `K.new` is never settled while its rotation is under
//! way, and two commands never settle one at the same time. Commands that
//! find no `K.new` never touch the lock.
//!
//! `toka run` does not settle a `K.new`: after a crashed rotation, run any
//! `toka secrets` or `toka vault` command first.
//!
//! # Rotation with `TOKA_MASTER_KEY`
//!
//! There is no key file to record the new key in, so the new key is printed
//! before anything changes, then the store is rotated in its one atomic
//! batch: after a crash, one of the two keys (the old one, or the printed
//! one) opens the store. Two stores cannot be switched atomically without a
//! durable record of the new key, so while the vault holds blobs such a
//! rotation is refused, writing nothing (rotate through a key file instead,
//! as the error explains); an empty vault is reset (its manifest removed) and
//! is created again under the key that next opens it.
//!
//! Without the `vault` build feature this binary cannot re-key a vault, so it
//! refuses to rotate while `[vault] path` holds one, and refuses to settle a
//! `K.new` when only the vault could tell which way to go.

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
    settle_interrupted_rotation(cfg, &file)?;
    let key = MasterKey::read_key_file(&file).map_err(secrets_error)?;
    Ok((key, KeyOrigin::File(file)))
}

/// Readies `cfg` for `toka run`/`toka check` as the secrets commands see
/// it: the default key file when none is configured (so the key `toka
/// secrets init` created is the one the runtime reads), and a rotation
/// interrupted before this start settled first, so the runtime never opens
/// the store and the vault under different keys.
pub(crate) fn prepare_runtime(cfg: &mut RuntimeConfig) -> anyhow::Result<()> {
    if cfg.secrets.key_file.is_none()
        && let Ok(file) = default_key_file()
    {
        cfg.secrets.key_file = Some(file);
    }
    // A key from the environment has no `.new` beside it to settle.
    if MasterKey::from_env().map_err(secrets_error)?.is_some() {
        return Ok(());
    }
    match cfg.secrets.key_file.clone() {
        Some(file) => settle_interrupted_rotation(cfg, &file),
        None => Ok(()),
    }
}

/// Settles a `<key file>.new` left by a killed `rotate-key`, under the
/// rotation lock; nothing to do (and no lock taken) without one.
fn settle_interrupted_rotation(cfg: &RuntimeConfig, file: &Path) -> anyhow::Result<()> {
    if pending_key_file(file).exists() {
        let _lock = RotationLock::acquire(file)?;
        finish_interrupted_rotation(cfg, file)?;
    }
    Ok(())
}

/// The exclusive advisory lock on `<key file>.lock` that a rotation and the
/// settling of its leftovers hold (see the module docs). The OS releases it
/// when the process ends, however it ends.
struct RotationLock {
    _file: fs::File,
}

impl RotationLock {
    /// Takes the lock for `key_file`, waiting while another process holds it.
    fn acquire(key_file: &Path) -> anyhow::Result<Self> {
        let mut path = key_file.as_os_str().to_owned();
        path.push(".lock");
        let path = PathBuf::from(path);
        let mut options = fs::OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                tracing::info!(lock = %path.display(), "waiting for a running `toka secrets rotate-key`");
                file.lock()
                    .with_context(|| format!("locking {}", path.display()))?;
            }
            Err(fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("locking {}", path.display()));
            }
        }
        Ok(Self { _file: file })
    }
}

/// Settles a `<key file>.new` left by a `rotate-key` that was killed: rolls
/// the rotation forward if the store or the vault is already under the new
/// key, back otherwise (see the module docs). Runs under the
/// [`RotationLock`], so no rotation is under way meanwhile.
fn finish_interrupted_rotation(cfg: &RuntimeConfig, key_file: &Path) -> anyhow::Result<()> {
    let pending = pending_key_file(key_file);
    if !pending.exists() {
        // Settled by another command while this one waited for the lock.
        return Ok(());
    }
    let new = match MasterKey::read_key_file(&pending) {
        Ok(key) => key,
        // It was fsynced before anything was sealed with it, so a key that
        // does not parse was never used.
        Err(toka_secrets::Error::InvalidKey { .. }) => {
            return roll_back(&pending, "the new key was never completely written");
        }
        Err(e) => return Err(secrets_error(e)),
    };
    let store = cfg.secrets.path.as_deref().filter(|p| p.exists());
    let store_under_new = match store {
        Some(path) => store_opens(path, read_key(&pending)?)?,
        None => false,
    };
    let vault_under_new = vault_under(cfg, &new)?;
    if !store_under_new && !vault_under_new {
        ensure_vault_not_rekeyed(cfg)?;
        return roll_back(&pending, "neither the store nor the vault was re-keyed");
    }

    let old_origin = KeyOrigin::File(key_file.to_owned());
    #[cfg(feature = "vault")]
    if let Some(dir) = crate::vault_cmd::existing_vault(cfg).filter(|_| !vault_under_new) {
        let mut vault = crate::vault_cmd::open_dir(dir, &read_key(key_file)?, &old_origin)?;
        let blobs = crate::vault_cmd::rekey(&mut vault, &new)?;
        tracing::info!(vault = %dir.display(), blobs, "interrupted key rotation: re-keyed the vault");
    }
    if let Some(path) = store.filter(|_| !store_under_new) {
        let mut opened = open_with(path, read_key(key_file)?, &old_origin)?;
        let secrets = opened
            .rotate_key(read_key(&pending)?)
            .map_err(|e| store_error(e, path))?;
        tracing::info!(store = %path.display(), secrets, "interrupted key rotation: rotated the store");
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
        vault_was_rekeyed = vault_under_new,
        store_was_rotated = store_under_new,
        "completed an interrupted `toka secrets rotate-key`: the store and the vault are under the new key"
    );
    Ok(())
}

/// Removes a `.new` key nothing was sealed with; `why` says how that is known.
fn roll_back(pending: &Path, why: &str) -> anyhow::Result<()> {
    fs::remove_file(pending).with_context(|| format!("removing {}", pending.display()))?;
    sync_parent(pending)?;
    tracing::warn!(
        file = %pending.display(),
        reason = why,
        "rolled back an interrupted `toka secrets rotate-key`: removed the unused new key"
    );
    Ok(())
}

fn read_key(file: &Path) -> anyhow::Result<MasterKey> {
    MasterKey::read_key_file(file).map_err(secrets_error)
}

/// Whether `key` opens the existing store at `path`.
fn store_opens(path: &Path, key: MasterKey) -> anyhow::Result<bool> {
    match SecretStore::open(path, key) {
        Ok(_) => Ok(true),
        Err(toka_secrets::Error::WrongKey) => Ok(false),
        Err(e) => Err(store_error(e, path)),
    }
}

/// Whether the configured vault exists and is sealed under `key`.
#[cfg(feature = "vault")]
fn vault_under(cfg: &RuntimeConfig, key: &MasterKey) -> anyhow::Result<bool> {
    match crate::vault_cmd::existing_vault(cfg) {
        Some(dir) => crate::vault_cmd::is_under(dir, key),
        None => Ok(false),
    }
}

/// This build cannot read a vault's key check: `false`, and a rollback
/// first goes through [`ensure_vault_not_rekeyed`].
#[cfg(not(feature = "vault"))]
fn vault_under(_cfg: &RuntimeConfig, _key: &MasterKey) -> anyhow::Result<bool> {
    Ok(false)
}

/// With the vault feature, [`vault_under`] has answered for the vault.
#[cfg(feature = "vault")]
fn ensure_vault_not_rekeyed(_cfg: &RuntimeConfig) -> anyhow::Result<()> {
    Ok(())
}

/// Without it, a vault may already be under the new key (it is re-keyed
/// before the store), and deleting that key would strand it.
#[cfg(not(feature = "vault"))]
fn ensure_vault_not_rekeyed(cfg: &RuntimeConfig) -> anyhow::Result<()> {
    match existing_vault(cfg) {
        Some(dir) => Err(bad(anyhow!(
            "a `toka secrets rotate-key` was interrupted, and the vault at {} may already be \
             under the new key; this build has no vault support to tell: finish it with a \
             `toka` built with the `vault` feature",
            dir.display()
        ))),
        None => Ok(()),
    }
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
    let (key, origin) = master_key(&cfg)?;
    open_with(&path, key, &origin)
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
    let store = open_store(config)?;
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
    let store = open_store(config)?;
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
    let store = open_store(config)?;
    for name in store.list().map_err(|e| store_error(e, store.path()))? {
        println!("{name}");
    }
    Ok(())
}

fn rm(config: &Path, name: &str) -> anyhow::Result<()> {
    toka_secrets::validate_name(name).map_err(secrets_error)?;
    let store = open_store(config)?;
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
    let cfg = load_config(config)?;
    let path = existing_store(&cfg, config)?;
    let (key, origin, _lock) = match MasterKey::from_env().map_err(secrets_error)? {
        Some(key) => (key, KeyOrigin::Env, None),
        None => {
            // Held until the rotation is complete; any earlier interrupted
            // rotation is settled first, under it.
            let file = key_file(&cfg)?;
            let lock = RotationLock::acquire(&file)?;
            finish_interrupted_rotation(&cfg, &file)?;
            (read_key(&file)?, KeyOrigin::File(file), Some(lock))
        }
    };
    #[cfg(not(feature = "vault"))]
    ensure_no_vault(&cfg)?;
    // Both are opened (and locked) with the current key before anything
    // changes: a wrong key or a running `toka run` stops the rotation here.
    #[cfg(feature = "vault")]
    let mut vault = match crate::vault_cmd::existing_vault(&cfg) {
        Some(dir) => Some(crate::vault_cmd::open_dir(dir, &key, &origin)?),
        None => None,
    };
    let mut store = open_with(&path, key, &origin)?;
    match origin {
        KeyOrigin::File(key_file) => {
            let pending = pending_key_file(&key_file);
            let settle = || {
                format!(
                    "key rotation failed; the next `toka secrets` or `toka vault` command \
                     settles {}",
                    pending.display()
                )
            };
            // Persisted before anything changes, so a crash never leaves the
            // store or the vault under a key that exists nowhere.
            let new = MasterKey::create_key_file(&pending).map_err(secrets_error)?;
            sync_parent(&pending)?;
            tracing::info!(file = %pending.display(), "wrote the new master key");
            #[cfg(feature = "vault")]
            let blobs = match &mut vault {
                Some(vault) => {
                    let blobs = crate::vault_cmd::rekey(vault, &new).with_context(settle)?;
                    tracing::info!(vault = %vault.dir().display(), blobs, "re-keyed the vault");
                    Some(blobs)
                }
                None => None,
            };
            #[cfg(not(feature = "vault"))]
            let blobs: Option<usize> = None;
            let count = store
                .rotate_key(new)
                .map_err(|e| store_error(e, &path).context(settle()))?;
            tracing::info!(store = %path.display(), secrets = count, "rotated the store");
            fs::rename(&pending, &key_file).with_context(|| {
                format!(
                    "the store and the vault are rotated but renaming {} to {} failed; \
                     the next `toka secrets` or `toka vault` command retries it",
                    pending.display(),
                    key_file.display()
                )
            })?;
            sync_parent(&key_file)?;
            let blobs = blobs.map_or(String::new(), |n| format!(" and {n} vault blob(s)"));
            println!(
                "rotated {count} secret(s){blobs}; the new master key is in {}",
                key_file.display()
            );
        }
        KeyOrigin::Env => {
            #[cfg(feature = "vault")]
            if let Some(vault) = vault.take() {
                crate::vault_cmd::reset_for_env_rotation(vault)?;
            }
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
                store_error(e, &path).context(format!(
                    "key rotation failed: try the old {MASTER_KEY_ENV} first, then the new key"
                ))
            })?;
            eprintln!("rotated {count} secret(s); set {MASTER_KEY_ENV} to the new key now");
        }
    }
    Ok(())
}

/// The configured vault's directory, if a vault exists there (its manifest,
/// the first file a vault writes, is present).
#[cfg(not(feature = "vault"))]
fn existing_vault(cfg: &RuntimeConfig) -> Option<&Path> {
    cfg.vault
        .path
        .as_deref()
        .filter(|dir| dir.join("manifest").exists())
}

/// Without the vault feature this binary cannot re-key a vault, so a vault
/// in `[vault] path` blocks a rotation that would make it unreadable.
#[cfg(not(feature = "vault"))]
fn ensure_no_vault(cfg: &RuntimeConfig) -> anyhow::Result<()> {
    match existing_vault(cfg) {
        Some(dir) => Err(bad(anyhow!(
            "the vault at {} is sealed with a key derived from the master key, and this build \
             has no vault support to re-key it: rotating would make it unreadable; rotate with \
             a `toka` built with the `vault` feature (the default)",
            dir.display()
        ))),
        None => Ok(()),
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
