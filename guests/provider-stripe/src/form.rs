//! Stripe's form encoding of API parameters, byte for byte as stripe-python
//! writes a request body: `urlencode(list(_api_encode(params)))` with `%5B`
//! and `%5D` turned back into `[` and `]` (`stripe/_api_requestor.py`).
//!
//! - keys keep the order the caller wrote them in (a JSON object read as a
//!   [`Param`], whose objects are lists, as a Python dict keeps insertion
//!   order);
//! - a nested object is `key[sub]=v` (`metadata[order]=1`), to any depth;
//! - an array is indexed, `expand[0]=a&expand[1]=b`, its objects
//!   `items[0][price]=p`;
//! - `true`/`false` for booleans, integers and floats in their JSON
//!   spelling, strings as given;
//! - `null` is left out (stripe-python skips `None`), and an empty string is
//!   sent as `key=` (how Stripe unsets a field);
//! - names and values are percent-encoded as Python's `quote_plus`: ASCII
//!   letters, digits and `_.-~` stay, a space is `+`, everything else is
//!   `%XX` of its UTF-8 bytes (upper-case hex), then `[` and `]` are written
//!   literally, in values too, as stripe-python does.
//!
//! One deliberate difference: a boolean (or `null`) directly inside an
//! array. stripe-python yields the Python value there unconverted, so
//! `[True]` becomes `flags[0]=True` (and `[None]` `flags[0]=None`); here it
//! is `flags[0]=true` (and the `null` is left out), what Stripe's API reads.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// A JSON value whose objects keep their keys in the order written (a
/// duplicate key is kept twice, as written).
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number, in its JSON spelling (`serde_json::Number`'s).
    Number(String),
    /// A string.
    String(String),
    /// An array.
    Array(Vec<Param>),
    /// An object, its entries in order.
    Object(Vec<(String, Param)>),
}

impl<'de> Deserialize<'de> for Param {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Param;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_unit<E>(self) -> Result<Param, E> {
                Ok(Param::Null)
            }
            fn visit_none<E>(self) -> Result<Param, E> {
                Ok(Param::Null)
            }
            fn visit_bool<E>(self, b: bool) -> Result<Param, E> {
                Ok(Param::Bool(b))
            }
            fn visit_u64<E>(self, n: u64) -> Result<Param, E> {
                Ok(Param::Number(n.to_string()))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Param, E> {
                Ok(Param::Number(n.to_string()))
            }
            fn visit_f64<E>(self, n: f64) -> Result<Param, E> {
                Ok(Param::Number(
                    serde_json::Number::from_f64(n)
                        .map_or_else(|| "null".into(), |n| n.to_string()),
                ))
            }
            fn visit_str<E>(self, s: &str) -> Result<Param, E> {
                Ok(Param::String(s.to_owned()))
            }
            fn visit_string<E>(self, s: String) -> Result<Param, E> {
                Ok(Param::String(s))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Param, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Param::Array(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Param, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Param::Object(entries))
            }
        }
        d.deserialize_any(V)
    }
}

/// The `(name, value)` pairs of `params`, in order, before percent-encoding.
pub fn pairs(params: &[(String, Param)]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (key, value) in params {
        push(key.clone(), value, &mut out);
    }
    out
}

fn push(key: String, value: &Param, out: &mut Vec<(String, String)>) {
    match value {
        Param::Null => {}
        Param::Bool(b) => out.push((key, b.to_string())),
        Param::Number(n) => out.push((key, n.clone())),
        Param::String(s) => out.push((key, s.clone())),
        Param::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                push(format!("{key}[{i}]"), item, out);
            }
        }
        Param::Object(entries) => {
            for (sub, item) in entries {
                push(format!("{key}[{sub}]"), item, out);
            }
        }
    }
}

/// Python's `quote_plus`, then `[`/`]` literal again (stripe-python's
/// `replace("%5B", "[").replace("%5D", "]")`).
pub fn quote(text: &str, out: &mut String) {
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-' | b'~' | b'[' | b']' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => {
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                out.push('%');
                out.push(HEX[usize::from(b >> 4)] as char);
                out.push(HEX[usize::from(b & 15)] as char);
            }
        }
    }
}

/// The whole body (or query string): `name=value` pairs joined by `&`.
pub fn encode(params: &[(String, Param)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in pairs(params).iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        quote(k, &mut out);
        out.push('=');
        quote(v, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(json: &str) -> String {
        match serde_json::from_str(json).unwrap() {
            Param::Object(entries) => encode(&entries),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn nested_objects_arrays_and_scalars() {
        assert_eq!(
            enc(r#"{"amount": 2000, "currency": "eur", "metadata": {"order": "1"}}"#),
            "amount=2000&currency=eur&metadata[order]=1"
        );
        assert_eq!(
            enc(r#"{"expand": ["customer", "latest_charge"]}"#),
            "expand[0]=customer&expand[1]=latest_charge"
        );
        assert_eq!(
            enc(r#"{"items": [{"price": "p_1", "quantity": 2}], "confirm": true, "x": false}"#),
            "items[0][price]=p_1&items[0][quantity]=2&confirm=true&x=false"
        );
        assert_eq!(enc(r#"{"a": null, "b": ""}"#), "b=");
        assert_eq!(
            enc(r#"{"nested": [[1, 2]]}"#),
            "nested[0][0]=1&nested[0][1]=2"
        );
    }

    #[test]
    fn percent_encoding_is_quote_plus() {
        assert_eq!(
            enc(r#"{"name": "Zoë & Co/1+1=2 [x]~"}"#),
            "name=Zo%C3%AB+%26+Co%2F1%2B1%3D2+[x]~"
        );
        assert_eq!(enc(r#"{"metadata": {"a b": "é"}}"#), "metadata[a+b]=%C3%A9");
    }

    #[test]
    fn keys_keep_the_callers_order() {
        assert_eq!(
            enc(r#"{"z": 1, "a": {"y": 2, "b": 3}}"#),
            "z=1&a[y]=2&a[b]=3"
        );
        assert_eq!(
            enc(r#"{"big": 9007199254740993, "neg": -1, "f": 1.5}"#),
            "big=9007199254740993&neg=-1&f=1.5"
        );
    }

    #[test]
    fn booleans_in_arrays_are_lower_case() {
        assert_eq!(enc(r#"{"f": [true, null, false]}"#), "f[0]=true&f[2]=false");
    }
}
