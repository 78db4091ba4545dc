//! The operator's module signature policy (`[trust]`): with
//! `require_signatures = true`, a module is compiled only if its detached
//! signature (`<file>.wasm.sig`, made by `toka sign`) verifies under one of
//! `trusted_keys`. Checked on the exact bytes that are then compiled.
//!
//! An unsigned module, one changed after signing, or one signed by a key not
//! in the list is refused like a malformed module: with the file and the
//! reason, the other agents still start, `--strict` refuses to start.

use std::path::Path;

use toka_core::TrustConfig;

use super::caps::CapError;
use super::file::ModuleError;

/// The largest signature file read (one is about 300 bytes).
#[cfg(feature = "auth")]
const MAX_SIGNATURE_BYTES: u64 = 4096;

/// The signature policy in force.
#[derive(Debug, Default)]
pub struct Trust {
    #[cfg(feature = "auth")]
    keys: Option<Vec<toka_auth::PublicKey>>,
}

impl Trust {
    /// The policy `config` asks for; an unreadable or malformed key, or
    /// signatures required by a build without the `auth` feature, is an error.
    pub fn from_config(config: &TrustConfig) -> Result<Self, CapError> {
        // Every failure here is the operator's to fix: the policy, or a key
        // file it names.
        let fail = |message: String| CapError::shared(format!("[trust]: {message}"));
        if !config.require_signatures {
            return Ok(Trust::default());
        }
        #[cfg(not(feature = "auth"))]
        {
            Err(fail(
                "`require_signatures = true` but this build cannot verify signatures (rebuild `toka` with `--features auth`)".into(),
            ))
        }
        #[cfg(feature = "auth")]
        {
            if config.trusted_keys.is_empty() {
                return Err(fail(
                    "`require_signatures = true` needs at least one entry in `trusted_keys`".into(),
                ));
            }
            let mut keys = Vec::new();
            for entry in &config.trusted_keys {
                let text = if entry.starts_with("toka-ed25519-public:") {
                    entry.clone()
                } else {
                    std::fs::read_to_string(entry)
                        .map_err(|e| fail(format!("trusted key file {entry}: {e}")))?
                };
                let key = text
                    .trim()
                    .parse::<toka_auth::PublicKey>()
                    .map_err(|e| fail(format!("trusted key {entry}: {e}")))?;
                keys.push(key);
            }
            Ok(Trust { keys: Some(keys) })
        }
    }

    /// Whether signatures are required at all.
    pub fn required(&self) -> bool {
        #[cfg(feature = "auth")]
        {
            self.keys.is_some()
        }
        #[cfg(not(feature = "auth"))]
        {
            false
        }
    }

    /// Check `bytes`, read from `path`, against the policy.
    pub fn check(&self, path: &Path, bytes: &[u8]) -> Result<(), ModuleError> {
        #[cfg(feature = "auth")]
        if let Some(keys) = &self.keys {
            use toka_auth::module_sig::{Signature, signature_path, verify_module};
            let fail = |reason: String| ModuleError {
                path: path.to_path_buf(),
                reason,
            };
            use super::file::{ReadError, read_file};
            let sig_path = signature_path(path);
            // Read like a module file: a regular file, bounded.
            let text = match read_file(&sig_path, MAX_SIGNATURE_BYTES) {
                Ok(bytes) => String::from_utf8(bytes)
                    .map_err(|_| fail(format!("refused: {} is not UTF-8", sig_path.display())))?,
                Err(ReadError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(fail(format!(
                        "refused: signatures are required and the module is not signed ({} does not exist)",
                        sig_path.display()
                    )));
                }
                Err(ReadError::Io(e)) => {
                    return Err(fail(format!("cannot read {}: {e}", sig_path.display())));
                }
                Err(ReadError::NotRegular(what)) => {
                    return Err(fail(format!(
                        "refused: {} is not a regular file ({what})",
                        sig_path.display()
                    )));
                }
                Err(ReadError::TooLarge { size, .. }) => {
                    return Err(fail(format!(
                        "refused: {} is too large for a signature ({size} bytes)",
                        sig_path.display()
                    )));
                }
            };
            let sig = Signature::parse(&text).map_err(|e| fail(format!("refused: {e}")))?;
            let signer =
                verify_module(bytes, &sig, keys).map_err(|e| fail(format!("refused: {e}")))?;
            tracing::info!(module = %path.display(), key_id = %signer, "module signature verified");
        }
        let _ = (path, bytes);
        Ok(())
    }
}
