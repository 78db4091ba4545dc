//! Signed tokens: JWTs in JWS compact form, EdDSA (Ed25519) only.
//!
//! [`issue`] writes `base64url(header) . base64url(claims) . base64url(signature)`
//! with the header `{"alg":"EdDSA","typ":"JWT","kid":"<key id>"}` (RFC 7515,
//! RFC 7519, RFC 8037), so any JWT library holding the public key can check
//! Toka's tokens.
//!
//! # Why not `jsonwebtoken`
//!
//! Its pure-Rust backend (`rust_crypto`, v10+) compiles in RSA through the
//! `rsa` crate, which has an unfixed advisory (RUSTSEC-2023-0071, Marvin) that
//! would fail `cargo deny check`; v9 uses `ring` (C and assembly). Toka only
//! needs one algorithm, and the rules a JWT verifier must get right fit in
//! [`verify`], built on the `ed25519-dalek` the module signatures use anyway.
//!
//! # What [`verify`] rejects
//!
//! In order, each with its own [`TokenError`]:
//! 1. longer than [`MAX_TOKEN_LEN`] ([`TooLarge`](TokenError::TooLarge));
//! 2. not three base64url segments (no padding, canonical bits) whose header
//!    is a JSON object with a string `alg` and no duplicate keys
//!    ([`Malformed`](TokenError::Malformed));
//! 3. `alg: none` in any case ([`Unsigned`](TokenError::Unsigned));
//! 4. any `alg` but `EdDSA`, e.g. `HS256` keyed with the public key
//!    ([`UnsupportedAlgorithm`](TokenError::UnsupportedAlgorithm));
//! 5. a `crit` header or a `typ` other than `JWT`
//!    ([`UnsupportedHeader`](TokenError::UnsupportedHeader));
//! 6. a `kid` naming another key ([`KeyMismatch`](TokenError::KeyMismatch));
//! 7. a signature that fails `verify_strict`, i.e. any change to header,
//!    payload or signature ([`BadSignature`](TokenError::BadSignature));
//! 8. a payload without `sub`, `exp`, `iat` as the right types
//!    ([`InvalidClaims`](TokenError::InvalidClaims));
//! 9. `now >= exp + leeway` ([`Expired`](TokenError::Expired)), `now + leeway < nbf`
//!    ([`NotYetValid`](TokenError::NotYetValid));
//! 10. an audience mismatch ([`WrongAudience`](TokenError::WrongAudience),
//!     [`MissingAudience`](TokenError::MissingAudience)).
//!
//! Header fields that could point at other keys (`jwk`, `jku`, `x5u`, `x5c`)
//! are ignored: the key is always the caller's. `kid` is only a hint that
//! turns "signed by some other key" into a clearer error; the signature
//! decides. Times are integer seconds since the Unix epoch.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::TokenError;
use crate::keys::{PublicKey, SigningKey};

/// The only JWS algorithm issued and accepted.
pub const ALGORITHM: &str = "EdDSA";
/// Longest token [`verify`] reads (and [`issue`] writes), in bytes. Tokens
/// reach the host from guests, so parsing work is bounded before any decoding.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;
/// Clock-skew allowance of [`Validation::new`]: none, because Toka normally
/// verifies tokens on the host that issued them, with the same clock.
pub const DEFAULT_LEEWAY_SECS: u64 = 0;
/// Largest accepted [`Validation::leeway_secs`]; more would make `exp`
/// meaningless for short-lived tokens.
pub const MAX_LEEWAY_SECS: u64 = 60;

/// Claim names [`Claims`] owns; [`Claims::extra`] must not reuse them.
const RESERVED_CLAIMS: [&str; 5] = ["sub", "aud", "exp", "nbf", "iat"];

/// The `aud` claim: one audience or several (RFC 7519 allows both).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// `"aud": "svc"`.
    One(String),
    /// `"aud": ["svc-a", "svc-b"]`.
    Many(Vec<String>),
}

impl Audience {
    /// Whether `audience` is (one of) the token's audiences.
    pub fn contains(&self, audience: &str) -> bool {
        match self {
            Audience::One(one) => one == audience,
            Audience::Many(many) => many.iter().any(|a| a == audience),
        }
    }
}

impl From<&str> for Audience {
    fn from(audience: &str) -> Self {
        Audience::One(audience.to_owned())
    }
}

impl From<String> for Audience {
    fn from(audience: String) -> Self {
        Audience::One(audience)
    }
}

impl From<Vec<String>> for Audience {
    fn from(audiences: Vec<String>) -> Self {
        Audience::Many(audiences)
    }
}

/// A token's claim set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    /// Subject: who the token speaks for.
    pub sub: String,
    /// Audience: who may accept the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
    /// Expiry, seconds since the Unix epoch; required so no token lives forever.
    pub exp: u64,
    /// Not before, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at, seconds since the Unix epoch.
    pub iat: u64,
    /// Every other claim (`iss`, `jti`, application claims), flattened into the
    /// same JSON object.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Claims {
    /// Claims for `sub`, issued at `iat`, expiring at `exp`; no audience, no
    /// `nbf`, no custom claims.
    pub fn new(sub: impl Into<String>, iat: u64, exp: u64) -> Self {
        Self {
            sub: sub.into(),
            aud: None,
            exp,
            nbf: None,
            iat,
            extra: Map::new(),
        }
    }

    /// Sets `aud`.
    pub fn with_audience(mut self, aud: impl Into<Audience>) -> Self {
        self.aud = Some(aud.into());
        self
    }

    /// Sets `nbf`.
    pub fn with_not_before(mut self, nbf: u64) -> Self {
        self.nbf = Some(nbf);
        self
    }

    /// Adds a custom claim.
    pub fn with_claim(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.extra.insert(name.into(), value.into());
        self
    }
}

/// How [`verify`] checks the claims.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Validation {
    /// This verifier's audience. `Some`: the token's `aud` must contain it.
    /// `None`: the token must have no `aud`, since RFC 7519 §4.1.3 says a
    /// token addressed to someone must be refused by a verifier that is not.
    pub audience: Option<String>,
    /// Seconds of clock skew tolerated on `exp` and `nbf`, at most
    /// [`MAX_LEEWAY_SECS`].
    pub leeway_secs: u64,
    /// The current time in seconds since the Unix epoch; `None` reads the
    /// system clock. Set it in tests.
    pub now: Option<u64>,
}

impl Validation {
    /// No audience (tokens carrying `aud` are refused), [`DEFAULT_LEEWAY_SECS`]
    /// of leeway, the system clock.
    pub fn new() -> Self {
        Self {
            audience: None,
            leeway_secs: DEFAULT_LEEWAY_SECS,
            now: None,
        }
    }

    /// Requires the token's `aud` to contain `audience`.
    pub fn with_audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// Tolerates `secs` of clock skew (at most [`MAX_LEEWAY_SECS`]).
    pub fn with_leeway_secs(mut self, secs: u64) -> Self {
        self.leeway_secs = secs;
        self
    }

    /// Validates as if the time were `now` (seconds since the Unix epoch).
    pub fn at(mut self, now: u64) -> Self {
        self.now = Some(now);
        self
    }
}

/// The current time in seconds since the Unix epoch (0 if the clock is set
/// before 1970), for building [`Claims`].
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[derive(Serialize)]
struct HeaderOut<'a> {
    alg: &'a str,
    typ: &'a str,
    kid: String,
}

/// The header fields [`verify`] acts on. A derived struct, unlike a map,
/// refuses duplicate keys, so `{"alg":"EdDSA","alg":"none"}` cannot be read
/// one way here and another way elsewhere.
#[derive(Deserialize)]
struct HeaderIn {
    alg: String,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<IgnoredAny>,
}

/// Signs `claims` into a compact JWS.
///
/// Fails with [`TokenError::ReservedClaim`] if [`Claims::extra`] holds `sub`,
/// `aud`, `exp`, `nbf` or `iat`, and with [`TokenError::TooLarge`] if the
/// token would exceed [`MAX_TOKEN_LEN`].
pub fn issue(key: &SigningKey, claims: &Claims) -> Result<String, TokenError> {
    if let Some(name) = RESERVED_CLAIMS
        .iter()
        .find(|name| claims.extra.contains_key(**name))
    {
        return Err(TokenError::ReservedClaim {
            name: (*name).to_owned(),
        });
    }
    let header = HeaderOut {
        alg: ALGORITHM,
        typ: "JWT",
        kid: key.key_id().to_string(),
    };
    // Serializing strings, integers and a `Map<String, Value>` cannot fail.
    let header = serde_json::to_vec(&header).map_err(|_| TokenError::InvalidClaims)?;
    let payload = serde_json::to_vec(claims).map_err(|_| TokenError::InvalidClaims)?;

    let mut token = URL_SAFE_NO_PAD.encode(header);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(payload, &mut token);
    let signature = key.sign(token.as_bytes());
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(signature, &mut token);
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::TooLarge);
    }
    Ok(token)
}

/// Checks `token`'s signature with `key` and its claims against `validation`,
/// and returns the claims. See the [module docs](self) for what is rejected.
pub fn verify(key: &PublicKey, token: &str, validation: &Validation) -> Result<Claims, TokenError> {
    if validation.leeway_secs > MAX_LEEWAY_SECS {
        return Err(TokenError::LeewayTooLarge {
            leeway_secs: validation.leeway_secs,
            max: MAX_LEEWAY_SECS,
        });
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::TooLarge);
    }
    let mut segments = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) = (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) else {
        return Err(TokenError::Malformed);
    };

    let header = decode_segment(header_b64)?;
    // serde also reads a JSON array into a struct, field by position; a JOSE
    // header is an object, so anything else is refused up front.
    if header.trim_ascii_start().first() != Some(&b'{') {
        return Err(TokenError::Malformed);
    }
    let header: HeaderIn = serde_json::from_slice(&header).map_err(|_| TokenError::Malformed)?;
    if header.alg.eq_ignore_ascii_case("none") {
        return Err(TokenError::Unsigned);
    }
    if header.alg != ALGORITHM {
        return Err(TokenError::UnsupportedAlgorithm);
    }
    // `crit` lists extensions the verifier must understand (RFC 7515 §4.1.11);
    // this one understands none.
    if header.crit.is_some() {
        return Err(TokenError::UnsupportedHeader);
    }
    if header
        .typ
        .is_some_and(|typ| !typ.eq_ignore_ascii_case("JWT"))
    {
        return Err(TokenError::UnsupportedHeader);
    }
    if header
        .kid
        .is_some_and(|kid| kid != key.key_id().to_string())
    {
        return Err(TokenError::KeyMismatch);
    }

    let signature: [u8; 64] = decode_segment(signature_b64)?
        .try_into()
        .map_err(|_| TokenError::Malformed)?;
    // The signing input is the token's own ASCII up to the second dot, not a
    // re-encoding, so what was signed is exactly what was received.
    let signing_input = &token[..header_b64.len() + 1 + payload_b64.len()];
    if !key.verify(signing_input.as_bytes(), &signature) {
        return Err(TokenError::BadSignature);
    }

    let claims: Claims = serde_json::from_slice(&decode_segment(payload_b64)?)
        .map_err(|_| TokenError::InvalidClaims)?;
    check_claims(&claims, validation)?;
    Ok(claims)
}

fn check_claims(claims: &Claims, validation: &Validation) -> Result<(), TokenError> {
    let now = validation.now.unwrap_or_else(unix_now);
    let leeway = validation.leeway_secs;
    // RFC 7519 §4.1.4: the current time must be *before* `exp`.
    if now >= claims.exp.saturating_add(leeway) {
        return Err(TokenError::Expired);
    }
    if claims
        .nbf
        .is_some_and(|nbf| now.saturating_add(leeway) < nbf)
    {
        return Err(TokenError::NotYetValid);
    }
    match (&validation.audience, &claims.aud) {
        (Some(want), Some(aud)) if aud.contains(want) => Ok(()),
        (Some(_), None) => Err(TokenError::MissingAudience),
        (Some(_), Some(_)) | (None, Some(_)) => Err(TokenError::WrongAudience),
        (None, None) => Ok(()),
    }
}

/// Strict base64url: no padding, and no stray bits in the last character, so
/// each byte string has exactly one encoding.
fn decode_segment(segment: &str) -> Result<Vec<u8>, TokenError> {
    URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| TokenError::Malformed)
}

#[cfg(test)]
mod tests {
    use hmac::{Hmac, Mac as _};
    use serde_json::json;
    use sha2::Sha256;

    use super::*;

    const NOW: u64 = 1_750_000_000;

    fn key() -> SigningKey {
        SigningKey::from_seed(&[1u8; 32])
    }

    fn claims() -> Claims {
        Claims::new("agent:alice", NOW - 10, NOW + 300)
    }

    fn at_now() -> Validation {
        Validation::new().at(NOW)
    }

    fn b64(bytes: impl AsRef<[u8]>) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// A token with a hand-written header and payload, signed by `sign`.
    fn forge(header: &str, payload: &str, sign: impl FnOnce(&[u8]) -> Vec<u8>) -> String {
        let input = format!("{}.{}", b64(header), b64(payload));
        let signature = sign(input.as_bytes());
        format!("{input}.{}", b64(signature))
    }

    fn ed25519(key: &SigningKey) -> impl FnOnce(&[u8]) -> Vec<u8> + '_ {
        |input| key.sign(input).to_vec()
    }

    fn verify_now(token: &str) -> Result<Claims, TokenError> {
        verify(&key().verifying_key(), token, &at_now())
    }

    #[test]
    fn round_trip_with_custom_claims() {
        let claims = claims()
            .with_audience("toka:kv")
            .with_not_before(NOW - 5)
            .with_claim("iss", "toka")
            .with_claim("role", "admin")
            .with_claim("scopes", json!(["read", "write"]))
            .with_claim("n", 3);
        let token = issue(&key(), &claims).unwrap();
        let got = verify(
            &key().verifying_key(),
            &token,
            &at_now().with_audience("toka:kv"),
        )
        .unwrap();
        assert_eq!(got, claims);
        assert_eq!(got.extra["role"], "admin");
    }

    #[test]
    fn header_is_standard_eddsa() {
        let token = issue(&key(), &claims()).unwrap();
        let header = decode_segment(token.split('.').next().unwrap()).unwrap();
        let header: Value = serde_json::from_slice(&header).unwrap();
        assert_eq!(
            header,
            json!({"alg": "EdDSA", "typ": "JWT", "kid": key().key_id().to_string()})
        );
    }

    #[test]
    fn audience_lists_are_searched() {
        let claims = claims().with_audience(vec!["a".to_owned(), "b".to_owned()]);
        let token = issue(&key(), &claims).unwrap();
        verify(&key().verifying_key(), &token, &at_now().with_audience("b")).unwrap();
    }

    #[test]
    fn expired() {
        let token = issue(&key(), &Claims::new("s", NOW - 100, NOW)).unwrap();
        // `exp` itself is already too late.
        assert_eq!(verify_now(&token), Err(TokenError::Expired));
        let lenient = at_now().with_leeway_secs(1);
        verify(&key().verifying_key(), &token, &lenient).unwrap();
    }

    #[test]
    fn not_yet_valid() {
        let token = issue(&key(), &claims().with_not_before(NOW + 30)).unwrap();
        assert_eq!(verify_now(&token), Err(TokenError::NotYetValid));
        let lenient = at_now().with_leeway_secs(30);
        verify(&key().verifying_key(), &token, &lenient).unwrap();
    }

    #[test]
    fn leeway_is_capped() {
        let token = issue(&key(), &claims()).unwrap();
        let too_lenient = at_now().with_leeway_secs(MAX_LEEWAY_SECS + 1);
        assert!(matches!(
            verify(&key().verifying_key(), &token, &too_lenient),
            Err(TokenError::LeewayTooLarge { .. })
        ));
    }

    #[test]
    fn wrong_audience() {
        let token = issue(&key(), &claims().with_audience("toka:kv")).unwrap();
        let other = at_now().with_audience("toka:vault");
        assert_eq!(
            verify(&key().verifying_key(), &token, &other),
            Err(TokenError::WrongAudience)
        );
        // Addressed to someone, presented to a verifier that is nobody.
        assert_eq!(verify_now(&token), Err(TokenError::WrongAudience));
    }

    #[test]
    fn missing_audience() {
        let token = issue(&key(), &claims()).unwrap();
        let wants = at_now().with_audience("toka:kv");
        assert_eq!(
            verify(&key().verifying_key(), &token, &wants),
            Err(TokenError::MissingAudience)
        );
    }

    #[test]
    fn tampered_payload() {
        let token = issue(&key(), &claims()).unwrap();
        let [header, _, signature] = token.split('.').collect::<Vec<_>>()[..] else {
            unreachable!()
        };
        let mut forged = claims();
        forged.sub = "agent:root".to_owned();
        let payload = b64(serde_json::to_vec(&forged).unwrap());
        let tampered = format!("{header}.{payload}.{signature}");
        assert_eq!(verify_now(&tampered), Err(TokenError::BadSignature));
    }

    #[test]
    fn tampered_signature() {
        let token = issue(&key(), &claims()).unwrap();
        let (input, signature) = token.rsplit_once('.').unwrap();
        let mut signature = decode_segment(signature).unwrap();
        signature[10] ^= 0x01;
        let tampered = format!("{input}.{}", b64(signature));
        assert_eq!(verify_now(&tampered), Err(TokenError::BadSignature));
    }

    #[test]
    fn alg_none_is_unsigned() {
        let payload = serde_json::to_string(&claims()).unwrap();
        for alg in ["none", "None", "NONE"] {
            let header = format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#);
            let unsigned = forge(&header, &payload, |_| Vec::new());
            assert_eq!(verify_now(&unsigned), Err(TokenError::Unsigned), "{alg}");
        }
    }

    #[test]
    fn algorithm_confusion_hs256_with_public_key() {
        let public = key().verifying_key().to_bytes();
        let payload = serde_json::to_string(&claims()).unwrap();
        let token = forge(r#"{"alg":"HS256","typ":"JWT"}"#, &payload, |input| {
            let mut mac = Hmac::<Sha256>::new_from_slice(&public).unwrap();
            mac.update(input);
            mac.finalize().into_bytes().to_vec()
        });
        assert_eq!(verify_now(&token), Err(TokenError::UnsupportedAlgorithm));
    }

    #[test]
    fn signed_by_another_key() {
        let other = SigningKey::from_seed(&[2u8; 32]);
        let token = issue(&other, &claims()).unwrap();
        assert_eq!(verify_now(&token), Err(TokenError::KeyMismatch));

        // Without a `kid` to go by, the signature itself gives it away.
        let payload = serde_json::to_string(&claims()).unwrap();
        let anonymous = forge(r#"{"alg":"EdDSA","typ":"JWT"}"#, &payload, ed25519(&other));
        assert_eq!(verify_now(&anonymous), Err(TokenError::BadSignature));
        // Lying about the `kid` does not help either.
        let header = format!(r#"{{"alg":"EdDSA","kid":"{}"}}"#, key().key_id());
        let lying = forge(&header, &payload, ed25519(&other));
        assert_eq!(verify_now(&lying), Err(TokenError::BadSignature));
    }

    #[test]
    fn garbage_is_malformed() {
        let token = issue(&key(), &claims()).unwrap();
        let (input, _) = token.rsplit_once('.').unwrap();
        let header = token.split('.').next().unwrap();
        for garbage in [
            String::new(),
            "garbage".to_owned(),
            "a.b.c".to_owned(),
            "...".to_owned(),
            format!("{token}.extra"),
            format!("{input}."),
            format!("{input}.AAAA"),
            format!("{header}==.e30.AAAA"),
            "\u{1F600}.\u{1F600}.\u{1F600}".to_owned(),
            // Header is JSON but not an object.
            forge(r#"["EdDSA"]"#, "{}", |_| vec![0; 64]),
            forge(r#"{"typ":"JWT"}"#, "{}", |_| vec![0; 64]),
            forge(r#"{"alg":7}"#, "{}", |_| vec![0; 64]),
            // A duplicate key could be read differently by another parser.
            forge(r#"{"alg":"EdDSA","alg":"none"}"#, "{}", |_| vec![0; 64]),
        ] {
            assert_eq!(
                verify_now(&garbage),
                Err(TokenError::Malformed),
                "{garbage:?}"
            );
        }
    }

    #[test]
    fn oversized_tokens_are_not_parsed() {
        let huge = "a".repeat(MAX_TOKEN_LEN + 1);
        assert_eq!(verify_now(&huge), Err(TokenError::TooLarge));
        let fat = claims().with_claim("blob", "x".repeat(MAX_TOKEN_LEN));
        assert_eq!(issue(&key(), &fat), Err(TokenError::TooLarge));
    }

    #[test]
    fn unsupported_header_features() {
        let payload = serde_json::to_string(&claims()).unwrap();
        for header in [
            r#"{"alg":"EdDSA","crit":["b64"],"b64":false}"#,
            r#"{"alg":"EdDSA","typ":"at+jwt"}"#,
        ] {
            let token = forge(header, &payload, ed25519(&key()));
            assert_eq!(
                verify_now(&token),
                Err(TokenError::UnsupportedHeader),
                "{header}"
            );
        }
    }

    #[test]
    fn signed_but_invalid_claims() {
        for payload in [
            r#"{"sub":"s","iat":1}"#,
            r#"{"sub":"s","iat":1,"exp":"tomorrow"}"#,
            r#"{"sub":"s","sub":"t","iat":1,"exp":9999999999}"#,
            r#"["s",null,9999999999,null,1]"#,
            "not json",
        ] {
            let token = forge(r#"{"alg":"EdDSA"}"#, payload, ed25519(&key()));
            assert_eq!(
                verify_now(&token),
                Err(TokenError::InvalidClaims),
                "{payload}"
            );
        }
    }

    #[test]
    fn reserved_claims_cannot_be_shadowed() {
        let claims = claims().with_claim("exp", u64::MAX);
        assert_eq!(
            issue(&key(), &claims),
            Err(TokenError::ReservedClaim {
                name: "exp".to_owned()
            })
        );
    }

    #[test]
    fn errors_do_not_echo_the_token() {
        let token = issue(&key(), &claims().with_audience("toka:kv")).unwrap();
        let signature = token.rsplit_once('.').unwrap().1;
        let rejections = [
            verify(
                &key().verifying_key(),
                &token,
                &Validation::new().at(NOW + 1000),
            ),
            verify(&key().verifying_key(), &token, &at_now()),
            verify(
                &SigningKey::from_seed(&[3; 32]).verifying_key(),
                &token,
                &at_now(),
            ),
            verify_now(&format!("{token}x")),
        ];
        for err in rejections {
            let err = err.unwrap_err();
            for text in [err.to_string(), format!("{err:?}")] {
                assert!(!text.contains(signature), "{text}");
                assert!(!text.contains("agent:alice"), "{text}");
            }
        }
    }
}
