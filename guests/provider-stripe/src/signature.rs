//! Verifying a `Stripe-Signature` header, as Stripe's libraries do
//! (stripe-python `WebhookSignature.verify_header`, stripe-go
//! `webhook.ValidatePayload`).
//!
//! The header is `t=<unix seconds>,v1=<hex>[,v1=<hex>…][,v0=…]`: items
//! separated by `,`, each `key=value`. Only `v1` counts; other keys are
//! ignored. A `v1` is the hex HMAC-SHA256, keyed with the whole `whsec_…`
//! secret as given, of `"<t>." + body` (the raw body bytes). The header is
//! accepted when **any** `v1` matches under **any** configured secret (Stripe
//! sends several `v1` while a rolled secret is live; several secrets let the
//! operator rotate on Toka's side). Each comparison is constant-time
//! (`Mac::verify_slice`); a `v1` that is not 64 hex digits never matches.
//!
//! Order and outcome, as stripe-python's: a header that cannot be parsed
//! (missing, no `t`, a `t` that is not decimal digits, an item without `=`)
//! is [`Failure::Malformed`]; then no `v1`, or none matching, is
//! [`Failure::BadSignature`]; only a valid signature is then checked against
//! the clock: older than `tolerance` seconds is [`Failure::Expired`].
//! Stricter than the libraries: a second `t` is malformed, and a timestamp
//! more than `tolerance` seconds in the future is expired too.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Why a header was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The header is missing or cannot be parsed; the text says why.
    Malformed(&'static str),
    /// No `v1` signature, or none matches the body under any secret.
    BadSignature(&'static str),
    /// The signature is valid but its timestamp `t` is outside the tolerance.
    Expired(i64),
}

impl Failure {
    /// The typed error name of the reply (`malformed`, `bad-signature`,
    /// `expired`).
    pub fn name(&self) -> &'static str {
        match self {
            Failure::Malformed(_) => "malformed",
            Failure::BadSignature(_) => "bad-signature",
            Failure::Expired(_) => "expired",
        }
    }

    /// A sentence for the reply's `message`.
    pub fn message(&self) -> String {
        match self {
            Failure::Malformed(why) | Failure::BadSignature(why) => (*why).to_owned(),
            Failure::Expired(t) => format!("timestamp {t} is outside the tolerance"),
        }
    }
}

/// The parsed header: `t` and the `v1` values.
fn parse(header: &str) -> Result<(i64, Vec<&str>), Failure> {
    if header.is_empty() {
        return Err(Failure::Malformed("no Stripe-Signature header"));
    }
    let mut t = None;
    let mut v1 = Vec::new();
    for item in header.split(',') {
        let (key, value) = item.split_once('=').ok_or(Failure::Malformed(
            "unable to extract timestamp and signatures from the header",
        ))?;
        match key {
            "t" => {
                if t.is_some() {
                    return Err(Failure::Malformed("more than one timestamp in the header"));
                }
                if value.is_empty()
                    || value.len() > 18
                    || !value.bytes().all(|b| b.is_ascii_digit())
                {
                    return Err(Failure::Malformed("the header's timestamp is not a number"));
                }
                t = Some(value.parse::<i64>().expect("at most 18 digits"));
            }
            "v1" => v1.push(value),
            _ => {}
        }
    }
    let t = t.ok_or(Failure::Malformed("no timestamp in the header"))?;
    Ok((t, v1))
}

fn unhex(text: &str) -> Option<[u8; 32]> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

/// The hex `v1` signature of `body` at `t` under `secret` (what Stripe sends).
pub fn sign(secret: &str, t: i64, body: &[u8]) -> String {
    mac(secret, t, body)
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn mac(secret: &str, t: i64, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// Check `header` for `body` against `secrets` at `now` (unix seconds) with
/// `tolerance` seconds; the header's timestamp when it is accepted.
pub fn verify(
    header: &str,
    body: &[u8],
    secrets: &[String],
    now: i64,
    tolerance: i64,
) -> Result<i64, Failure> {
    let (t, v1) = parse(header)?;
    if v1.is_empty() {
        return Err(Failure::BadSignature(
            "no signatures found with expected scheme v1",
        ));
    }
    let candidates: Vec<[u8; 32]> = v1.iter().filter_map(|s| unhex(s)).collect();
    let mut matched = false;
    for secret in secrets {
        let mac = mac(secret, t, body);
        for candidate in &candidates {
            // Constant-time; every candidate is tried (no early exit on a
            // match, so timing does not tell which one matched).
            matched |= mac.clone().verify_slice(candidate).is_ok();
        }
    }
    if !matched {
        return Err(Failure::BadSignature(
            "no signatures found matching the expected signature for the payload",
        ));
    }
    if now.saturating_sub(t) > tolerance || t.saturating_sub(now) > tolerance {
        return Err(Failure::Expired(t));
    }
    Ok(t)
}

/// The secrets of a `webhook_secret` setting: one, or several separated by
/// commas or white space (for rotation).
pub fn secrets(setting: &str) -> Vec<String> {
    setting
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000;
    const BODY: &[u8] = br#"{"id":"evt_1","type":"checkout.session.completed"}"#;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn accepts_any_v1_under_any_secret() {
        let good = sign("whsec_b", NOW, BODY);
        let header = format!("t={NOW},v1=deadbeef,v1={good},v0=xyz");
        assert_eq!(
            verify(&header, BODY, &s(&["whsec_a", "whsec_b"]), NOW, 300),
            Ok(NOW)
        );
        assert_eq!(
            verify(&header, BODY, &s(&["whsec_a"]), NOW, 300)
                .unwrap_err()
                .name(),
            "bad-signature"
        );
    }

    #[test]
    fn refusals() {
        let secrets = s(&["whsec_a"]);
        let good = sign("whsec_a", NOW, BODY);
        for (header, name) in [
            ("", "malformed"),
            ("i'm not even a real signature header", "malformed"),
            ("v1,t=1", "malformed"),
            ("t=", "malformed"),
            (&format!("t={NOW},t={NOW},v1={good}"), "malformed"),
            (&format!("t={NOW},v0={good}"), "bad-signature"),
            (&format!("t={NOW},v1=bad_signature"), "bad-signature"),
            (&format!("t={},v1={good}", NOW + 1), "bad-signature"),
        ] {
            assert_eq!(
                verify(header, BODY, &secrets, NOW, 300).unwrap_err().name(),
                name,
                "{header}"
            );
        }
        let old = NOW - 301;
        let header = format!("t={old},v1={}", sign("whsec_a", old, BODY));
        assert_eq!(
            verify(&header, BODY, &secrets, NOW, 300),
            Err(Failure::Expired(old))
        );
        assert_eq!(verify(&header, BODY, &secrets, NOW, 301), Ok(old));
        let future = NOW + 301;
        let header = format!("t={future},v1={}", sign("whsec_a", future, BODY));
        assert_eq!(
            verify(&header, BODY, &secrets, NOW, 300),
            Err(Failure::Expired(future))
        );
    }

    #[test]
    fn secrets_split_on_commas_and_spaces() {
        assert_eq!(
            secrets(" whsec_a, whsec_b\twhsec_c,,"),
            s(&["whsec_a", "whsec_b", "whsec_c"])
        );
    }
}
