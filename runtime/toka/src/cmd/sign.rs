//! `toka keygen`, `toka sign`, `toka verify`: module signing for operators.
//!
//! `keygen` makes an Ed25519 key pair (`PREFIX.key`, mode 0600, and
//! `PREFIX.pub`); `sign` writes a detached `<file.wasm>.sig` next to each
//! module; `verify` checks modules against public keys given with `--key`
//! and/or a configuration's `[trust] trusted_keys`, as `toka run` does when
//! `require_signatures` is set. The format is `toka_auth::module_sig`'s.

use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow};
use clap::Args;
use toka_auth::keys::PUBLIC_KEY_PREFIX;
use toka_auth::module_sig::{self, Signature, signature_path};
use toka_auth::{KeyId, ModuleSigError, PublicKey, SigningKey};
use toka_core::config::ModulesConfig;
use toka_runtime::host::module::{self, ReadError};
use zeroize::Zeroizing;

use crate::exit::bad;

#[derive(Args, Debug)]
pub(crate) struct KeygenArgs {
    /// Write PREFIX.key (secret, mode 0600) and PREFIX.pub.
    #[arg(long = "out", value_name = "PREFIX", default_value = "toka-signing")]
    prefix: PathBuf,
}

#[derive(Args, Debug)]
pub(crate) struct SignArgs {
    /// The secret key file written by `toka keygen`.
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// The modules to sign; each gets a `<file>.sig` beside it.
    #[arg(required = true, value_name = "FILE.wasm")]
    modules: Vec<PathBuf>,
}

#[derive(Args, Debug)]
pub(crate) struct VerifyArgs {
    /// A trusted public key: `toka-ed25519-public:...` or a `.pub` file.
    /// Repeatable.
    #[arg(long = "key", value_name = "PUBFILE_OR_TEXT")]
    keys: Vec<String>,
    /// Also trust the configuration's `[trust] trusted_keys`.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The modules to verify.
    #[arg(required = true, value_name = "FILE.wasm")]
    modules: Vec<PathBuf>,
}

/// `PREFIX` + `ext`, keeping any dots already in the prefix.
fn with_suffix(prefix: &Path, ext: &str) -> PathBuf {
    let mut path = OsString::from(prefix.as_os_str());
    path.push(ext);
    PathBuf::from(path)
}

pub(crate) fn keygen(args: KeygenArgs) -> anyhow::Result<()> {
    let key_path = with_suffix(&args.prefix, ".key");
    let pub_path = with_suffix(&args.prefix, ".pub");
    // Checked up front so an existing half of a pair is never left beside a
    // new other half.
    for path in [&key_path, &pub_path] {
        if path.exists() {
            return Err(bad(anyhow!(
                "{} already exists; refusing to overwrite it",
                path.display()
            )));
        }
    }
    let (secret, public) = module_sig::keygen().context("generating a signing key")?;
    let mut secret_line = Zeroizing::new(secret.expose().to_owned());
    secret_line.push('\n');
    write_new(&key_path, secret_line.as_bytes(), 0o600)?;
    if let Err(e) = write_new(&pub_path, format!("{public}\n").as_bytes(), 0o644) {
        let _ = fs::remove_file(&key_path);
        return Err(e);
    }
    println!("{public}");
    println!(
        "secret key: {} (mode 0600; keep it private)",
        key_path.display()
    );
    println!("public key: {}", pub_path.display());
    Ok(())
}

/// Creates `path` (never replacing a file) with `mode` from the start, and
/// fsyncs it.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))
        .map_err(bad)?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

pub(crate) fn sign(args: SignArgs) -> anyhow::Result<()> {
    let text = Zeroizing::new(
        fs::read_to_string(&args.key)
            .with_context(|| format!("reading secret key {}", args.key.display()))
            .map_err(bad)?,
    );
    let key = SigningKey::from_text(&text)
        .with_context(|| format!("secret key {}", args.key.display()))
        .map_err(bad)?;
    let max_bytes = max_module_bytes(&ModulesConfig::default());
    for module in &args.modules {
        let wasm = module::read(module, max_bytes).map_err(bad)?;
        let sig = module_sig::sign_module(&key, &wasm);
        let sig_path = signature_path(module);
        fs::write(&sig_path, sig.to_file_string())
            .with_context(|| format!("writing {}", sig_path.display()))?;
        println!(
            "signed {} -> {} (key {})",
            module.display(),
            sig_path.display(),
            sig.key_id()
        );
    }
    Ok(())
}

pub(crate) fn verify(args: VerifyArgs) -> anyhow::Result<()> {
    let mut trusted = Vec::new();
    for key in &args.keys {
        trusted.push(public_key(key, "--key")?);
    }
    let mut max_bytes = max_module_bytes(&ModulesConfig::default());
    if let Some(config) = &args.config {
        let cfg = super::load_config(config)?;
        max_bytes = max_module_bytes(&cfg.modules);
        for key in &cfg.trust.trusted_keys {
            let origin = format!("[trust] trusted_keys in {}", config.display());
            trusted.push(public_key(key, &origin)?);
        }
    }
    if trusted.is_empty() {
        return Err(bad(anyhow!(
            "no trusted keys: give --key PUBFILE_OR_TEXT, or --config with [trust] trusted_keys"
        )));
    }
    let mut failed = 0;
    for module in &args.modules {
        match verify_file(module, &trusted, max_bytes) {
            Ok(key_id) => println!("ok {} signed by {key_id}", module.display()),
            Err(why) => {
                failed += 1;
                eprintln!("error: {}: {why}", module.display());
            }
        }
    }
    if failed > 0 {
        return Err(anyhow!(
            "{failed} of {} module(s) failed verification",
            args.modules.len()
        ));
    }
    Ok(())
}

/// `[modules] max_module_mb` in bytes: modules are read as `toka run`
/// reads them (regular files, bounded).
fn max_module_bytes(modules: &ModulesConfig) -> u64 {
    modules.max_module_mb.saturating_mul(1 << 20)
}

/// The largest signature file read (one is about 300 bytes).
const MAX_SIGNATURE_BYTES: u64 = 4096;

/// Verify `module` against its signature file; the signer, or why not (one
/// line for the operator, starting with the verdict).
fn verify_file(module: &Path, trusted: &[PublicKey], max_bytes: u64) -> Result<KeyId, String> {
    let wasm = module::read(module, max_bytes).map_err(|e| e.reason)?;
    let sig_path = signature_path(module);
    let text = match module::read_file(&sig_path, MAX_SIGNATURE_BYTES) {
        Ok(bytes) => String::from_utf8(bytes)
            .map_err(|_| format!("bad signature: {} is not UTF-8", sig_path.display()))?,
        Err(ReadError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(reason(&ModuleSigError::Unsigned { sig_path }));
        }
        Err(ReadError::Io(e)) => return Err(format!("reading {}: {e}", sig_path.display())),
        Err(ReadError::NotRegular(what)) => {
            return Err(format!(
                "bad signature: {} is not a regular file ({what})",
                sig_path.display()
            ));
        }
        Err(ReadError::TooLarge { size, .. }) => {
            return Err(format!(
                "bad signature: {} is too large for a signature ({size} bytes)",
                sig_path.display()
            ));
        }
    };
    let sig = Signature::parse(&text).map_err(|e| reason(&e))?;
    module_sig::verify_module(&wasm, &sig, trusted).map_err(|e| reason(&e))
}

/// A public key given as text or as a path to a `.pub` file.
fn public_key(given: &str, origin: &str) -> anyhow::Result<PublicKey> {
    if given.trim_start().starts_with(PUBLIC_KEY_PREFIX) {
        return given
            .parse()
            .with_context(|| format!("public key in {origin}"))
            .map_err(bad);
    }
    let text = fs::read_to_string(given)
        .with_context(|| format!("reading public key file {given} ({origin})"))
        .map_err(bad)?;
    text.parse()
        .with_context(|| format!("public key file {given} ({origin})"))
        .map_err(bad)
}

/// One line for the operator, starting with the verdict.
fn reason(e: &ModuleSigError) -> String {
    match e {
        ModuleSigError::Unsigned { sig_path } => {
            format!("unsigned: no signature file {}", sig_path.display())
        }
        ModuleSigError::Tampered => "tampered: the module changed after it was signed".to_owned(),
        ModuleSigError::UntrustedKey { key_id } => {
            format!("untrusted: signed by key {key_id}, which is not a trusted key")
        }
        ModuleSigError::BadSignature => {
            "bad signature: the signature file was forged or corrupted".to_owned()
        }
        ModuleSigError::Io { path, source } => format!("reading {}: {source}", path.display()),
        other => other.to_string(),
    }
}
