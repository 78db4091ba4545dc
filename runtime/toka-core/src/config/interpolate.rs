//! `${VAR}`, `${VAR:-default}` and `$$` in configuration strings.
//!
//! Runs over `toml`'s own tree, before any value is copied out or
//! type-checked, so interpolation only ever produces strings and a bad
//! placeholder is reported even where a type error follows. The rules are in
//! the [module docs](super#interpolation).

use std::borrow::Cow;

use toml::de::DeValue;

use super::error::{Result, child};
use super::located::{Doc, Node};

/// Expands every string in `node` (dotted path `path`) in place.
pub(super) fn interpolate(
    doc: &Doc,
    node: &mut Node<'_>,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<()> {
    let at = node.span().start;
    match node.get_mut() {
        DeValue::String(s) => {
            if s.contains('$') {
                let expanded =
                    expand(s, env).map_err(|message| doc.error(at, Some(path), message))?;
                *s = Cow::Owned(expanded);
            }
        }
        DeValue::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                interpolate(doc, item, &format!("{path}[{i}]"), env)?;
            }
        }
        DeValue::Table(table) => {
            for (key, value) in table.iter_mut() {
                interpolate(doc, value, &child(path, key.get_ref()), env)?;
            }
        }
        DeValue::Integer(_) | DeValue::Float(_) | DeValue::Boolean(_) | DeValue::Datetime(_) => {}
    }
    Ok(())
}

fn valid_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Expands `${VAR}`, `${VAR:-default}` and `$$`; the error is the message.
fn expand(s: &str, env: &dyn Fn(&str) -> Option<String>) -> std::result::Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('{') {
            let Some(end) = tail.find('}') else {
                return Err(format!(
                    "unterminated `${{` in {s:?} (write `$$` for a literal `$`)"
                ));
            };
            let inner = &tail[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (inner, None),
            };
            if !valid_var_name(name) {
                return Err(format!(
                    "invalid variable name {name:?} in `${{{inner}}}` (expected [A-Za-z_][A-Za-z0-9_]*; write `$$` for a literal `$`)"
                ));
            }
            match (env(name), default) {
                (Some(v), Some(d)) if v.is_empty() => out.push_str(d),
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {
                    return Err(format!(
                        "environment variable `{name}` is not set (use ${{{name}:-default}} to give a default)"
                    ));
                }
            }
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use crate::config::testing::{parse_env, parse_err};

    #[test]
    fn interpolation_expands_defaults_and_escapes() {
        let env = |k: &str| match k {
            "HOME_DIR" => Some("/home/me".to_owned()),
            "EMPTY" => Some(String::new()),
            _ => None,
        };
        let cfg = parse_env(
            r#"
modules_dir = "${HOME_DIR}/mods"
[[agents]]
name = "A"
price = "$$5 ${MISSING:-dflt} ${EMPTY:-fallback} [${EMPTY}] $x"
list = ["${HOME_DIR}", 1]
"#,
            &env,
        )
        .unwrap();
        assert_eq!(cfg.modules_dir, PathBuf::from("/home/me/mods"));
        assert_eq!(cfg.agents[0].settings[0].1, "$5 dflt fallback [] $x");
        assert_eq!(cfg.agents[0].settings[1].1, r#"["/home/me", 1]"#);
    }

    #[test]
    fn unset_variable_names_it_with_key_and_line() {
        let err = parse_err("[[agents]]\nname = \"A\"\n\ntoken = \"Bearer ${API_TOKEN}\"\n");
        assert_eq!(err.key(), Some("agents[0].token"));
        assert_eq!((err.line(), err.column()), (Some(4), Some(9)));
        let shown = err.to_string();
        assert!(shown.contains("`API_TOKEN` is not set"), "{shown}");
        assert!(shown.contains("${API_TOKEN:-default}"), "{shown}");
    }

    #[test]
    fn malformed_placeholders_are_errors() {
        let err = parse_err("[[agents]]\nname = \"A\"\nx = \"${OPEN\"\n");
        assert_eq!(err.key(), Some("agents[0].x"));
        assert!(err.to_string().contains("unterminated"), "{err}");
        let err = parse_err("[[agents]]\nname = \"A\"\nx = [\"ok\", \"${1BAD}\"]\n");
        assert_eq!(err.key(), Some("agents[0].x[1]"));
        assert!(err.to_string().contains("invalid variable name"), "{err}");
    }

    #[test]
    fn interpolation_never_changes_types() {
        let env = |_: &str| Some("42".to_owned());
        let err = parse_env("[event_bus]\nbuffer_size = \"${N}\"\n", &env).unwrap_err();
        assert_eq!(err.key(), Some("event_bus.buffer_size"));
        assert!(err.to_string().contains("found a string"), "{err}");
    }
}
