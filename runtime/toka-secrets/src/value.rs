//! A secret value as handed to callers.

use std::fmt;

use zeroize::Zeroizing;

/// A decrypted secret. The bytes are zeroed when it is dropped and `Debug`
/// never shows them; call [`expose`](Self::expose) at the point of use.
pub struct SecretValue {
    bytes: Zeroizing<Vec<u8>>,
}

impl SecretValue {
    pub(crate) fn new(bytes: Zeroizing<Vec<u8>>) -> Self {
        Self { bytes }
    }

    /// The secret bytes. Copies the caller makes are its own to protect.
    pub fn expose(&self) -> &[u8] {
        &self.bytes
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue([REDACTED])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let value = SecretValue::new(Zeroizing::new(b"hunter2".to_vec()));
        let shown = format!("{value:?} {value:#?}");
        assert!(shown.contains("REDACTED"));
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("104"), "{shown}");
        assert_eq!(value.expose(), b"hunter2");
    }
}
