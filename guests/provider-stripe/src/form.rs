//! Stripe's form encoding of API parameters, byte for byte as stripe-python
//! writes a request body: `urlencode(list(_api_encode(params)))` with `%5B`
//! and `%5D` turned back into `[` and `]` (`stripe/_api_requestor.py`).
//!
//! - keys keep the order the caller wrote them in (a JSON object read with
//!   `preserve_order`, as a Python dict keeps insertion order);
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

use serde_json::{Map, Value};

/// The `(name, value)` pairs of `params`, in order, before percent-encoding.
pub fn pairs(params: &Map<String, Value>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (key, value) in params {
        push(key.clone(), value, &mut out);
    }
    out
}

fn push(key: String, value: &Value, out: &mut Vec<(String, String)>) {
    match value {
        Value::Null => {}
        Value::Bool(b) => out.push((key, b.to_string())),
        Value::Number(n) => out.push((key, n.to_string())),
        Value::String(s) => out.push((key, s.clone())),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                push(format!("{key}[{i}]"), item, out);
            }
        }
        Value::Object(map) => {
            for (sub, item) in map {
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
pub fn encode(params: &Map<String, Value>) -> String {
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
    use serde_json::json;

    fn enc(v: Value) -> String {
        encode(v.as_object().unwrap())
    }

    #[test]
    fn nested_objects_arrays_and_scalars() {
        assert_eq!(
            enc(json!({"amount": 2000, "currency": "eur", "metadata": {"order": "1"}})),
            "amount=2000&currency=eur&metadata[order]=1"
        );
        assert_eq!(
            enc(json!({"expand": ["customer", "latest_charge"]})),
            "expand[0]=customer&expand[1]=latest_charge"
        );
        assert_eq!(
            enc(json!({"items": [{"price": "p_1", "quantity": 2}], "confirm": true, "x": false})),
            "items[0][price]=p_1&items[0][quantity]=2&confirm=true&x=false"
        );
        assert_eq!(enc(json!({"a": null, "b": ""})), "b=");
        assert_eq!(
            enc(json!({"nested": [[1, 2]]})),
            "nested[0][0]=1&nested[0][1]=2"
        );
    }

    #[test]
    fn percent_encoding_is_quote_plus() {
        assert_eq!(
            enc(json!({"name": "Zoë & Co/1+1=2 [x]~"})),
            "name=Zo%C3%AB+%26+Co%2F1%2B1%3D2+[x]~"
        );
        assert_eq!(
            enc(json!({"metadata": {"a b": "é"}})),
            "metadata[a+b]=%C3%A9"
        );
    }

    #[test]
    fn booleans_in_arrays_are_lower_case() {
        assert_eq!(
            enc(json!({"f": [true, null, false]})),
            "f[0]=true&f[2]=false"
        );
    }
}
