//! The on-disk encoding: composite keys, records and usage rows.
//!
//! - `entries`: `bucket \0 key` → record `[version u64 LE][expires_ms u64
//!   LE, 0 = never][value]`. Bucket names never contain `\0`, so the first
//!   `\0` ends the bucket and every bucket's keys are one contiguous range.
//! - `expiry`: `bucket \0 expires_ms (u64 BE) key` → `()`, one row per key
//!   with a TTL, so the expired keys of a bucket are one range to purge.
//! - `buckets`: `bucket` → usage `[keys u64 LE][bytes u64 LE][writes u64
//!   LE]`, written in the same transaction as every write of the bucket.

use crate::error::{Error, Result};

/// Bytes of a record before its value.
pub(crate) const RECORD_HEADER: usize = 16;

/// `bucket \0 key`.
pub(crate) fn entry_key(bucket: &str, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(bucket.len() + 1 + key.len());
    k.extend_from_slice(bucket.as_bytes());
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k
}

/// `bucket \0`: the first byte string of the bucket's range.
pub(crate) fn bucket_start(bucket: &str) -> Vec<u8> {
    entry_key(bucket, "")
}

/// `bucket \x01`: just past the bucket's range (`\x01` follows `\0`).
pub(crate) fn bucket_end(bucket: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(bucket.len() + 1);
    k.extend_from_slice(bucket.as_bytes());
    k.push(1);
    k
}

/// The key part of an `entries` key of `bucket`.
pub(crate) fn key_of<'k>(bucket: &str, composite: &'k [u8]) -> Result<&'k str> {
    composite
        .get(bucket.len() + 1..)
        .and_then(|k| std::str::from_utf8(k).ok())
        .ok_or_else(|| Error::Corrupt("an entry key is not UTF-8".into()))
}

/// Splits an `entries` key into bucket and key.
pub(crate) fn split_entry_key(composite: &[u8]) -> Result<(&str, &str)> {
    let at = composite
        .iter()
        .position(|&b| b == 0)
        .ok_or_else(|| Error::Corrupt("an entry key has no bucket separator".into()))?;
    let bucket = std::str::from_utf8(&composite[..at])
        .map_err(|_| Error::Corrupt("a bucket name is not UTF-8".into()))?;
    let key = std::str::from_utf8(&composite[at + 1..])
        .map_err(|_| Error::Corrupt("an entry key is not UTF-8".into()))?;
    Ok((bucket, key))
}

/// `bucket \0 expires_ms(BE) key`.
pub(crate) fn expiry_key(bucket: &str, expires_ms: u64, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(bucket.len() + 9 + key.len());
    k.extend_from_slice(bucket.as_bytes());
    k.push(0);
    k.extend_from_slice(&expires_ms.to_be_bytes());
    k.extend_from_slice(key.as_bytes());
    k
}

/// The key of an `expiry` row of `bucket`.
pub(crate) fn expiry_key_of<'k>(bucket: &str, row: &'k [u8]) -> Result<&'k str> {
    row.get(bucket.len() + 9..)
        .and_then(|k| std::str::from_utf8(k).ok())
        .ok_or_else(|| Error::Corrupt("an expiry row is malformed".into()))
}

/// A decoded record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Record<'v> {
    pub(crate) version: u64,
    /// Milliseconds since the Unix epoch; `None` = never.
    pub(crate) expires_ms: Option<u64>,
    pub(crate) value: &'v [u8],
}

impl<'v> Record<'v> {
    pub(crate) fn decode(bytes: &'v [u8]) -> Result<Self> {
        if bytes.len() < RECORD_HEADER {
            return Err(Error::Corrupt(format!(
                "a record of {} bytes is shorter than its header",
                bytes.len()
            )));
        }
        let version = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
        let expires = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
        Ok(Record {
            version,
            expires_ms: (expires != 0).then_some(expires),
            value: &bytes[RECORD_HEADER..],
        })
    }

    pub(crate) fn encode(version: u64, expires_ms: Option<u64>, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(RECORD_HEADER + value.len());
        out.extend_from_slice(&version.to_le_bytes());
        out.extend_from_slice(&expires_ms.unwrap_or(0).to_le_bytes());
        out.extend_from_slice(value);
        out
    }

    /// Whether the record reads as absent at `now_ms`.
    pub(crate) fn expired(&self, now_ms: u64) -> bool {
        self.expires_ms.is_some_and(|at| at <= now_ms)
    }
}

/// A bucket's row in `buckets`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Keys stored (expired keys count until a write to the bucket, or the
    /// next open, purges them; quotas are checked after that purge).
    pub keys: u64,
    /// Bytes stored: the sum of each key's length and its value's length.
    pub bytes: u64,
    /// The bucket's write counter: the version its last write got. It only
    /// grows, and survives the bucket being emptied.
    pub writes: u64,
}

impl Usage {
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self> {
        let field = |i: usize| {
            bytes
                .get(i * 8..i * 8 + 8)
                .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
                .ok_or_else(|| Error::Corrupt("a bucket usage row is too short".into()))
        };
        Ok(Usage {
            keys: field(0)?,
            bytes: field(1)?,
            writes: field(2)?,
        })
    }

    pub(crate) fn encode(&self) -> [u8; 24] {
        let mut out = [0; 24];
        out[..8].copy_from_slice(&self.keys.to_le_bytes());
        out[8..16].copy_from_slice(&self.bytes.to_le_bytes());
        out[16..].copy_from_slice(&self.writes.to_le_bytes());
        out
    }
}

/// What one stored key costs against the bytes quota.
pub(crate) fn cost(key: &str, value_len: usize) -> u64 {
    (key.len() + value_len) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let bytes = Record::encode(7, Some(99), b"hello");
        let r = Record::decode(&bytes).unwrap();
        assert_eq!(
            (r.version, r.expires_ms, r.value),
            (7, Some(99), &b"hello"[..])
        );
        assert!(r.expired(99) && !r.expired(98));
        let bytes = Record::encode(1, None, b"");
        let r = Record::decode(&bytes).unwrap();
        assert_eq!(r.expires_ms, None);
        assert!(!r.expired(u64::MAX));
        assert!(Record::decode(b"short").is_err());
    }

    #[test]
    fn a_bucket_is_one_range_and_keys_split_back() {
        let k = entry_key("a", "x\0y");
        assert!(bucket_start("a") <= k && k < bucket_end("a"));
        // "a" and "ab" do not overlap: the separator sorts below every name byte.
        assert!(entry_key("ab", "") >= bucket_end("a"));
        assert_eq!(split_entry_key(&k).unwrap(), ("a", "x\0y"));
        assert_eq!(key_of("a", &k).unwrap(), "x\0y");
        let e = expiry_key("a", 5, "k");
        assert_eq!(expiry_key_of("a", &e).unwrap(), "k");
        assert!(expiry_key("a", 5, "z") < expiry_key("a", 6, "a"));
    }

    #[test]
    fn usage_round_trips() {
        let u = Usage {
            keys: 1,
            bytes: 2,
            writes: 3,
        };
        assert_eq!(Usage::decode(&u.encode()).unwrap(), u);
    }
}
