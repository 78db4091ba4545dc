//! The master key: where it comes from and the subkeys derived from it.

use std::ffi::OsString;
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hkdf::Hkdf;
use secrecy::{ExposeSecret, SecretBox};
use sha2::Sha256;
use zeroize::Zeroizing;

/// The result type of the key functions.
pub type Result<T, E = KeyError> = std::result::Result<T, E>;

/// What can go wrong getting a master key. No variant carries key material:
/// errors name the origin (`TOKA_MASTER_KEY`, a file) and never echo it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Master key material could not be parsed. The input is deliberately
    /// not included.
    #[error("invalid master key from {origin}: {reason}")]
    InvalidKey {
        /// Where the key came from (`TOKA_MASTER_KEY`, a file path, ...).
        origin: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// Neither `TOKA_MASTER_KEY` nor a key file was available.
    #[error("no master key: set TOKA_MASTER_KEY or create a key file with `toka secrets init`")]
    NoKey,

    /// The configured key file does not exist.
    #[error(
        "master key file {} not found: create it with `toka secrets init` or set TOKA_MASTER_KEY",
        path.display()
    )]
    KeyFileMissing {
        /// The missing file.
        path: PathBuf,
    },

    /// [`MasterKey::create_key_file`] refuses to replace a key: it may be
    /// the only copy able to open a store.
    #[error("master key file {} already exists; refusing to overwrite it", path.display())]
    KeyFileExists {
        /// The existing file.
        path: PathBuf,
    },

    /// Reading or writing a key file failed.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// The operating system's random number generator failed.
    #[error("the operating system random number generator failed")]
    Random,
}

impl KeyError {
    /// Whether the operator can fix it (a key that does not parse, a key
    /// file missing or in the way), as opposed to the system failing.
    pub fn is_operator_error(&self) -> bool {
        !matches!(self, KeyError::Io { .. } | KeyError::Random)
    }
}

/// The master key file used when the configuration names none:
/// `$XDG_CONFIG_HOME/toka/master.key`, else `~/.config/toka/master.key`;
/// `None` when neither variable is set (empty counts as unset).
pub fn default_key_file() -> Option<PathBuf> {
    let non_empty = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    let config_home = match non_empty("XDG_CONFIG_HOME") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(non_empty("HOME")?).join(".config"),
    };
    Some(config_home.join("toka").join("master.key"))
}

/// The environment variable [`MasterKey::from_env`] reads.
pub const MASTER_KEY_ENV: &str = "TOKA_MASTER_KEY";

/// Length of a master key in bytes.
pub const MASTER_KEY_LEN: usize = 32;

/// Fixed HKDF salt: domain-separates Toka's subkeys from any other use of
/// the same key material.
const HKDF_SALT: &[u8] = b"toka master key v1";

/// The 32-byte key every Toka secret-bearing capability derives from.
///
/// The bytes live on the heap in a [`SecretBox`], zeroed on drop, and are
/// never exposed: callers get purpose-bound subkeys from [`derive`](Self::derive).
/// `Debug` prints a placeholder.
pub struct MasterKey {
    bytes: SecretBox<[u8; MASTER_KEY_LEN]>,
}

impl MasterKey {
    /// A fresh key from the operating system's random number generator.
    pub fn generate() -> Result<Self> {
        let mut failed = false;
        let bytes = SecretBox::init_with_mut(|k: &mut [u8; MASTER_KEY_LEN]| {
            failed = getrandom::fill(k).is_err();
        });
        if failed {
            return Err(KeyError::Random);
        }
        Ok(Self { bytes })
    }

    /// The key as standard base64, the form of a key file and of
    /// `TOKA_MASTER_KEY`; only for writing it where it belongs.
    pub(crate) fn encode(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(self.bytes.expose_secret()))
    }

    /// Parses standard (padded) base64 that decodes to exactly 32 bytes.
    /// Surrounding whitespace is ignored. The input never appears in errors.
    pub fn from_base64(encoded: &str) -> Result<Self> {
        Self::parse(encoded, "base64 input")
    }

    /// Reads the key from `TOKA_MASTER_KEY`; `Ok(None)` when it is unset.
    /// Set but unusable (not Unicode, not a valid key) is an error, not a
    /// silent fall back to the key file.
    pub fn from_env() -> Result<Option<Self>> {
        Self::from_env_value(std::env::var_os(MASTER_KEY_ENV))
    }

    /// Reads a key file: base64 as written by [`create_key_file`](Self::create_key_file).
    pub fn read_key_file(path: &Path) -> Result<Self> {
        let contents = Zeroizing::new(fs::read_to_string(path).map_err(|source| {
            if source.kind() == io::ErrorKind::NotFound {
                KeyError::KeyFileMissing {
                    path: path.to_owned(),
                }
            } else {
                KeyError::Io {
                    path: path.to_owned(),
                    source,
                }
            }
        })?);
        Self::parse(&contents, &format!("key file {}", path.display()))
    }

    /// Generates a key and writes it to a new file at `path` (base64 and a
    /// newline), returning it.
    ///
    /// On unix the file is created with mode 0600 in the same call that
    /// creates it, so it is never readable by others, not even briefly. An
    /// existing file is never replaced ([`KeyError::KeyFileExists`]): it may be
    /// the only key that opens some store.
    pub fn create_key_file(path: &Path) -> Result<Self> {
        let key = Self::generate()?;
        let io_err = |source| KeyError::Io {
            path: path.to_owned(),
            source,
        };
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path).map_err(|source| {
            if source.kind() == io::ErrorKind::AlreadyExists {
                KeyError::KeyFileExists {
                    path: path.to_owned(),
                }
            } else {
                io_err(source)
            }
        })?;
        let mut line = key.encode();
        line.push('\n');
        let written = file
            .write_all(line.as_bytes())
            .and_then(|()| file.sync_all());
        if let Err(source) = written {
            // A truncated key file would later fail to parse, or worse be
            // mistaken for the key; we created it, so we remove it.
            drop(file);
            let _ = fs::remove_file(path);
            return Err(io_err(source));
        }
        Ok(key)
    }

    /// The key to use: `TOKA_MASTER_KEY` if set, else `key_file` if given,
    /// else [`KeyError::NoKey`] explaining how to create one.
    pub fn resolve(key_file: Option<&Path>) -> Result<Self> {
        Self::resolve_from(std::env::var_os(MASTER_KEY_ENV), key_file)
    }

    /// A 32-byte subkey for `context` (HKDF-SHA256). Distinct contexts give
    /// independent keys, so each capability can hold its own without being
    /// able to compute another's. Take the context from
    /// [`contexts`](crate::contexts), the one table of them.
    pub fn derive(&self, context: &str) -> Zeroizing<[u8; 32]> {
        let hkdf = Hkdf::<Sha256>::new(Some(HKDF_SALT), self.bytes.expose_secret());
        let mut out = Zeroizing::new([0; 32]);
        hkdf.expand(context.as_bytes(), out.as_mut())
            .expect("32 bytes is far below HKDF-SHA256's 8160-byte limit");
        out
    }

    fn from_env_value(value: Option<OsString>) -> Result<Option<Self>> {
        let Some(value) = value else {
            return Ok(None);
        };
        let value = Zeroizing::new(value.into_string().map_err(|_| KeyError::InvalidKey {
            origin: MASTER_KEY_ENV.to_owned(),
            reason: "is not valid Unicode",
        })?);
        Self::parse(&value, MASTER_KEY_ENV).map(Some)
    }

    fn resolve_from(env: Option<OsString>, key_file: Option<&Path>) -> Result<Self> {
        if let Some(key) = Self::from_env_value(env)? {
            return Ok(key);
        }
        match key_file {
            Some(path) => Self::read_key_file(path),
            None => Err(KeyError::NoKey),
        }
    }

    fn parse(encoded: &str, origin: &str) -> Result<Self> {
        let invalid = |reason| KeyError::InvalidKey {
            origin: origin.to_owned(),
            reason,
        };
        let wrong_length = "must be base64 of exactly 32 bytes";
        // Room for more than a key so that "too long" is reported as a
        // length problem rather than a decoding one.
        let mut buf = Zeroizing::new([0u8; 48]);
        let len = match STANDARD.decode_slice(encoded.trim(), buf.as_mut()) {
            Ok(len) => len,
            Err(base64::DecodeSliceError::OutputSliceTooSmall) => {
                return Err(invalid(wrong_length));
            }
            Err(base64::DecodeSliceError::DecodeError(_)) => {
                return Err(invalid("is not valid standard base64"));
            }
        };
        if len != MASTER_KEY_LEN {
            return Err(invalid(wrong_length));
        }
        let bytes = SecretBox::init_with_mut(|k: &mut [u8; MASTER_KEY_LEN]| {
            k.copy_from_slice(&buf[..MASTER_KEY_LEN]);
        });
        Ok(Self { bytes })
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey([REDACTED])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(byte: u8) -> String {
        STANDARD.encode([byte; MASTER_KEY_LEN])
    }

    fn same_key(a: &MasterKey, b: &MasterKey) -> bool {
        *a.derive("test") == *b.derive("test")
    }

    #[test]
    fn base64_round_trip_ignores_whitespace() {
        let a = MasterKey::from_base64(&encoded(7)).unwrap();
        let b = MasterKey::from_base64(&format!("  {}\n", encoded(7))).unwrap();
        assert!(same_key(&a, &b));
        assert!(!same_key(&a, &MasterKey::from_base64(&encoded(8)).unwrap()));
    }

    #[test]
    fn from_base64_rejects_wrong_length_without_echoing() {
        let short = STANDARD.encode(b"sixteen byte key");
        let long = STANDARD.encode([b'Q'; 33]);
        let very_long = STANDARD.encode([b'Q'; 200]);
        let not_base64 = "not-base64-SECRETISH-@@@@";
        for (input, reason) in [
            (&short[..], "exactly 32 bytes"),
            (&long, "exactly 32 bytes"),
            (&very_long, "exactly 32 bytes"),
            (not_base64, "not valid standard base64"),
            ("", "exactly 32 bytes"),
        ] {
            let err = MasterKey::from_base64(input).unwrap_err();
            let shown = format!("{err} {err:?}");
            assert!(matches!(err, KeyError::InvalidKey { .. }), "{shown}");
            assert!(shown.contains(reason), "{shown}");
            if !input.is_empty() {
                assert!(!shown.contains(input), "error echoes the input: {shown}");
            }
            assert!(!shown.contains("SECRETISH"), "{shown}");
        }
    }

    #[test]
    fn debug_is_redacted() {
        let key = MasterKey::from_base64(&encoded(0xAB)).unwrap();
        let shown = format!("{key:?} {key:#?}");
        assert!(shown.contains("REDACTED"));
        assert!(!shown.contains("171"), "{shown}");
        assert!(!shown.to_lowercase().contains("ab"), "{shown}");
        assert!(!shown.contains(&encoded(0xAB)), "{shown}");
    }

    #[test]
    fn generate_gives_distinct_keys() {
        let a = MasterKey::generate().unwrap();
        let b = MasterKey::generate().unwrap();
        assert!(!same_key(&a, &b));
    }

    #[test]
    fn derive_separates_contexts_and_is_deterministic() {
        let key = MasterKey::from_base64(&encoded(1)).unwrap();
        let (vault, secrets) = (crate::contexts::VAULT, crate::contexts::SECRETS);
        assert_eq!(*key.derive(vault), *key.derive(vault));
        assert_ne!(*key.derive(vault), *key.derive(secrets));
        let other = MasterKey::from_base64(&encoded(2)).unwrap();
        assert_ne!(*key.derive(vault), *other.derive(vault));
    }

    #[cfg(unix)]
    #[test]
    fn key_file_is_0600_and_never_overwritten() {
        use std::os::unix::fs::PermissionsExt;

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let key = MasterKey::create_key_file(&path).unwrap();

        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
        let contents = fs::read_to_string(&path).unwrap();
        assert!(contents.ends_with('\n'));
        assert_eq!(contents.trim().len(), 44);
        assert!(same_key(&key, &MasterKey::read_key_file(&path).unwrap()));

        let err = MasterKey::create_key_file(&path).unwrap_err();
        assert!(matches!(err, KeyError::KeyFileExists { .. }), "{err}");
        assert_eq!(fs::read_to_string(&path).unwrap(), contents);
    }

    #[test]
    fn missing_key_file_says_how_to_create_one() {
        let dir = tempfile::tempdir().unwrap();
        let err = MasterKey::read_key_file(&dir.path().join("nope")).unwrap_err();
        assert!(matches!(err, KeyError::KeyFileMissing { .. }));
        assert!(err.to_string().contains("toka secrets init"));
    }

    #[test]
    fn bad_key_file_names_the_file_not_the_contents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.key");
        fs::write(&path, "c2hvcnQtU0VDUkVUSVNI\n").unwrap();
        let err = MasterKey::read_key_file(&path).unwrap_err().to_string();
        assert!(err.contains("bad.key"), "{err}");
        assert!(!err.contains("c2hvcnQtU0VDUkVUSVNI"), "{err}");
    }

    #[test]
    fn resolve_prefers_env_then_file_then_explains() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let file_key = MasterKey::create_key_file(&path).unwrap();

        let env_key = MasterKey::resolve_from(Some(encoded(9).into()), Some(&path)).unwrap();
        assert!(same_key(
            &env_key,
            &MasterKey::from_base64(&encoded(9)).unwrap()
        ));

        let from_file = MasterKey::resolve_from(None, Some(&path)).unwrap();
        assert!(same_key(&from_file, &file_key));

        // A broken env var is an error, not a silent fallback to the file.
        let err = MasterKey::resolve_from(Some("garbage".into()), Some(&path)).unwrap_err();
        assert!(err.to_string().contains(MASTER_KEY_ENV), "{err}");

        let err = MasterKey::resolve_from(None, None).unwrap_err();
        assert!(matches!(err, KeyError::NoKey));
        let msg = err.to_string();
        assert!(
            msg.contains("toka secrets init") && msg.contains(MASTER_KEY_ENV),
            "{msg}"
        );
    }
}
