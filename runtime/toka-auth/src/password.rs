//! Argon2id password hashes as PHC strings.
//!
//! [`hash_password`] uses OWASP's recommended Argon2id configuration
//! ([`M_COST_KIB`] = 19 MiB, [`T_COST`] = 2 passes, [`P_COST`] = 1 lane), a
//! fresh 16-byte random salt and a 32-byte output, and returns a string like
//!
//! ```text
//! $argon2id$v=19$m=19456,t=2,p=1$<salt, base64>$<hash, base64>
//! ```
//!
//! The parameters travel inside the string, so hashes made with older or
//! test parameters keep verifying after the defaults change.
//!
//! [`verify_password`] recomputes the hash with the parameters the string
//! names and compares in constant time. Because a PHC string can come from an
//! untrusted guest, it refuses parameters above [`MAX_VERIFY_M_COST_KIB`],
//! [`MAX_VERIFY_T_COST`] and [`MAX_VERIFY_P_COST`]: otherwise one call with
//! `m=4194304` would make the host allocate 4 GiB.

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Version};

pub use argon2::Params;

use crate::error::PasswordError;

/// Memory cost in KiB: 19 MiB (OWASP Password Storage Cheat Sheet, Argon2id).
pub const M_COST_KIB: u32 = 19 * 1024;
/// Time cost: 2 passes over the memory.
pub const T_COST: u32 = 2;
/// Parallelism: 1 lane (argon2 0.5 computes lanes sequentially, so more lanes
/// would only add latency on the host thread).
pub const P_COST: u32 = 1;
/// Length of the hash output in bytes.
pub const OUTPUT_LEN: usize = 32;
/// Length of the random salt in bytes (the PHC recommendation).
pub const SALT_LEN: usize = 16;

/// Largest memory cost [`verify_password`] accepts: 64 MiB, above OWASP's
/// most memory-hungry recommendation (46 MiB with t=1).
pub const MAX_VERIFY_M_COST_KIB: u32 = 64 * 1024;
/// Largest time cost [`verify_password`] accepts.
pub const MAX_VERIFY_T_COST: u32 = 10;
/// Largest parallelism [`verify_password`] accepts.
pub const MAX_VERIFY_P_COST: u32 = 8;

/// The default parameters: [`M_COST_KIB`], [`T_COST`], [`P_COST`], [`OUTPUT_LEN`].
///
/// Spelled out here rather than taken from `Params::DEFAULT` so that an
/// argon2 upgrade cannot silently change what new hashes cost; built in a
/// `const` so invalid constants fail the build, not a call.
pub const DEFAULT_PARAMS: Params = match Params::new(M_COST_KIB, T_COST, P_COST, Some(OUTPUT_LEN)) {
    Ok(params) => params,
    Err(_) => panic!("the documented constants must be valid Argon2 parameters"),
};

/// Hashes `password` with Argon2id, [`DEFAULT_PARAMS`] and a random salt.
pub fn hash_password(password: &[u8]) -> Result<String, PasswordError> {
    hash_password_with(password, DEFAULT_PARAMS)
}

/// Hashes `password` with Argon2id and the given parameters (cheap ones for
/// tests, others for benchmarks). Hashes whose parameters exceed the
/// `MAX_VERIFY_*` limits will not verify.
pub fn hash_password_with(password: &[u8], params: Params) -> Result<String, PasswordError> {
    let mut salt = [0u8; SALT_LEN];
    getrandom::fill(&mut salt).map_err(|e| PasswordError::Randomness(e.to_string()))?;
    let salt = SaltString::encode_b64(&salt).map_err(hashing)?;
    let hash = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(password, &salt)
        .map_err(hashing)?;
    Ok(hash.to_string())
}

/// Checks `password` against a PHC string from [`hash_password`].
///
/// Returns `Ok(false)` for a wrong password; errors mean the stored hash
/// itself is unusable: [`PasswordError::MalformedHash`] (not a complete PHC
/// string), [`PasswordError::UnsupportedAlgorithm`] (not Argon2id) or
/// [`PasswordError::CostTooHigh`].
pub fn verify_password(password: &[u8], phc: &str) -> Result<bool, PasswordError> {
    let hash = PasswordHash::new(phc).map_err(|_| PasswordError::MalformedHash)?;
    if hash.algorithm != argon2::ARGON2ID_IDENT {
        return Err(PasswordError::UnsupportedAlgorithm);
    }
    // argon2's verifier reports a missing salt or hash as a wrong password;
    // for us it is a broken record, and "wrong password" would hide that.
    if hash.salt.is_none() || hash.hash.is_none() {
        return Err(PasswordError::MalformedHash);
    }
    let params = Params::try_from(&hash).map_err(|_| PasswordError::MalformedHash)?;
    if params.m_cost() > MAX_VERIFY_M_COST_KIB
        || params.t_cost() > MAX_VERIFY_T_COST
        || params.p_cost() > MAX_VERIFY_P_COST
    {
        return Err(PasswordError::CostTooHigh);
    }
    // The parameters come from `hash`; the ones given here are unused.
    match Argon2::default().verify_password(password, &hash) {
        Ok(()) => Ok(true),
        Err(argon2::password_hash::Error::Password) => Ok(false),
        Err(_) => Err(PasswordError::MalformedHash),
    }
}

fn hashing(e: argon2::password_hash::Error) -> PasswordError {
    PasswordError::Hashing {
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Argon2's minimum memory, so the tests stay fast.
    fn cheap() -> Params {
        Params::new(8, 1, 1, None).unwrap()
    }

    #[test]
    fn round_trip_and_wrong_password() {
        let phc = hash_password_with(b"correct horse", cheap()).unwrap();
        assert!(verify_password(b"correct horse", &phc).unwrap());
        assert!(!verify_password(b"correct horsf", &phc).unwrap());
        assert!(!verify_password(b"", &phc).unwrap());
    }

    #[test]
    fn salts_differ() {
        let a = hash_password_with(b"pw", cheap()).unwrap();
        let b = hash_password_with(b"pw", cheap()).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn defaults_are_documented_argon2id() {
        let phc = hash_password(b"hunter2").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify_password(b"hunter2", &phc).unwrap());
        assert!(!verify_password(b"hunter3", &phc).unwrap());
    }

    #[test]
    fn malformed_hashes_are_errors() {
        let good = hash_password_with(b"pw", cheap()).unwrap();
        let no_hash = good.rsplit_once('$').unwrap().0.to_owned();
        for phc in [
            "",
            "not a hash",
            "$argon2id$",
            "$argon2id$v=19$m=8,t=1,p=1",
            no_hash.as_str(),
            // Memory below the 8 KiB-per-lane minimum.
            "$argon2id$v=19$m=1,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
        ] {
            assert!(
                matches!(
                    verify_password(b"pw", phc),
                    Err(PasswordError::MalformedHash)
                ),
                "{phc:?}"
            );
        }
    }

    #[test]
    fn other_algorithms_are_unsupported() {
        let good = hash_password_with(b"pw", cheap()).unwrap();
        let argon2i = good.replacen("$argon2id$", "$argon2i$", 1);
        assert!(matches!(
            verify_password(b"pw", &argon2i),
            Err(PasswordError::UnsupportedAlgorithm)
        ));
    }

    #[test]
    fn costly_hashes_are_refused_before_hashing() {
        let good = hash_password_with(b"pw", cheap()).unwrap();
        for costly in ["m=4194304,t=1,p=1", "m=8,t=1000,p=1", "m=1024,t=1,p=64"] {
            let phc = good.replacen("m=8,t=1,p=1", costly, 1);
            assert!(
                matches!(
                    verify_password(b"pw", &phc),
                    Err(PasswordError::CostTooHigh)
                ),
                "{phc}"
            );
        }
    }
}
