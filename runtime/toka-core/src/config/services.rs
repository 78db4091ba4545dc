//! `[drivers.NAME]` and `[providers.NAME]`: the seed's drivers (S3) and
//! providers (Stripe), each run as a service agent named `NAME`.
//!
//! A section is an `[[agents]]` table with defaults that follow from its
//! name, so everything an agent's table may say (limits, grants, `module`)
//! it may say too, and its other keys are the settings its `init` gets:
//!
//! | key | default |
//! |---|---|
//! | `name` | `NAME` (may not be given) |
//! | `module` | `driver_NAME.wasm` / `provider_NAME.wasm` in `modules_dir` |
//! | `serve` | `["NAME.>"]`; may be narrowed, never past `NAME.>` |
//! | `publish` | drivers: none; providers: `["NAME.>"]`, never past it |
//! | `allowed_hosts` | the origin of its `endpoint` or `api_base` setting |
//! | `api_base` | `providers.stripe`: `"https://api.stripe.com"` |
//!
//! So a driver reaches exactly the endpoint its configuration names and
//! answers only its own kinds; an agent uses it through `request =
//! ["NAME.>"]` and never sees its credentials. A provider with `webhook =
//! "/path"` also gets `NAME-webhook`: the same module, served by that
//! `[[http.routes]]` path (see [`ServiceRoute`]), granted only `request =
//! ["NAME.webhook"]` so it hands each delivery to `NAME`, which holds the
//! secrets.
//!
//! Setting values may be `${VAR}` (the environment, as everywhere) or
//! `secret:NAME`, read from the secret store when the runtime starts and
//! handed to `init` only: `toka check` shows setting names, never values.

use std::path::Path;
use std::sync::Arc;

use super::agents::{AgentConfig, Origin, parse_agent, valid_agent_name};
use super::error::{Result, child};
use super::limits::Limits;
use super::located::{Doc, Entry, Item, Table};

/// The prefix of a setting whose value is read from the secret store.
pub const SECRET_PREFIX: &str = "secret:";

/// Keys a section may not set: its name is the section's.
const RESERVED: &[&str] = &["name"];

/// A route a provider's `webhook` key asks for: `path` served by `agent`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRoute {
    /// The request path (`/stripe/webhook`).
    pub path: String,
    /// The routed agent (`stripe-webhook`).
    pub agent: String,
    /// Where the `webhook` key was written.
    pub location: String,
    /// Its byte offset, for an error about it.
    pub(crate) at: usize,
}

/// The agents (and routes) of `[drivers]` or `[providers]`.
pub(super) fn parse(
    doc: &Arc<Doc>,
    node: &Item,
    taken: &[AgentConfig],
    origin: Origin,
    modules_dir: &Path,
    defaults: &Limits,
    owned: &[&str],
) -> Result<(Vec<AgentConfig>, Vec<ServiceRoute>)> {
    let section = origin.section();
    let sections = doc.table(node, section)?;
    let (mut agents, mut routes) = (Vec::new(), Vec::new());
    for entry in sections {
        let name = entry.key.as_str();
        let prefix = child(section, name);
        if !valid_agent_name(name) || name.eq_ignore_ascii_case("toka") {
            return Err(doc.invalid(
                &entry.item,
                &prefix,
                format!(
                    "invalid {} name {name:?}: it names its agent, so use 1-64 characters of A-Z a-z 0-9 _ - (not `toka`)",
                    &section[..section.len() - 1]
                ),
            ));
        }
        let table = doc.table(&entry.item, &prefix)?;
        let clash = [name.to_owned(), format!("{name}-webhook")];
        if let Some(first) = taken
            .iter()
            .chain(agents.iter())
            .find(|a| clash.contains(&a.name))
        {
            return Err(doc.invalid(
                &entry.item,
                &prefix,
                format!(
                    "its agent would be named like the agent `{}` at {}: rename one",
                    first.name, first.location
                ),
            ));
        }
        for key in RESERVED {
            if let Some(item) = table.get(key) {
                return Err(doc.invalid(
                    item,
                    &child(&prefix, key),
                    format!("the section's name is its agent's name: remove `{key}`"),
                ));
            }
        }
        let at = &entry.item;
        let mut t = table.clone();
        let set = |t: &mut Table, key: &str, item: Item| {
            t.push(Entry {
                key: key.to_owned(),
                key_at: at.at(),
                item,
            });
        };
        set(&mut t, "name", Item::string_at(at, name));
        if t.get("module").is_none() {
            let module = format!("{}_{name}.wasm", &section[..section.len() - 1]);
            set(&mut t, "module", Item::string_at(at, module));
        }
        let own = format!("{name}.>");
        if t.get("serve").is_none() {
            set(
                &mut t,
                "serve",
                Item::strings_at(at, std::slice::from_ref(&own)),
            );
        }
        if origin == Origin::Provider && t.get("publish").is_none() {
            set(
                &mut t,
                "publish",
                Item::strings_at(at, std::slice::from_ref(&own)),
            );
        }
        if origin == Origin::Provider && name == "stripe" && t.get("api_base").is_none() {
            set(
                &mut t,
                "api_base",
                Item::string_at(at, "https://api.stripe.com"),
            );
        }
        if t.get("allowed_hosts").is_none() {
            let base = ["endpoint", "api_base"]
                .iter()
                .find_map(|k| t.get(k).map(|item| (*k, item)));
            if let Some((key, item)) = base {
                let url = doc.str(item, &child(&prefix, key))?;
                let origin = url_origin(url).ok_or_else(|| {
                    doc.invalid(
                        item,
                        &child(&prefix, key),
                        format!("`{url}` is not an http:// or https:// URL"),
                    )
                })?;
                set(&mut t, "allowed_hosts", Item::strings_at(at, &[origin]));
            }
        }
        let webhook = match (origin, t.get("webhook")) {
            (Origin::Provider, Some(item)) => {
                let path = doc.str(item, &child(&prefix, "webhook"))?.to_owned();
                Some((path, doc.location(item.at()), item.at()))
            }
            _ => None,
        };
        let module_item = t.get("module").expect("set above").clone();
        let agent = parse_agent(
            doc,
            prefix.clone(),
            origin,
            &Item::table_at(at, t),
            modules_dir,
            defaults,
            owned,
        )?;
        for (key, set) in [("serve", &agent.serve), ("publish", &agent.publish)] {
            if let Some(p) = set
                .patterns()
                .iter()
                .map(ToString::to_string)
                .find(|p| !within(p, name))
            {
                let item = table.get(key).unwrap_or(at);
                return Err(doc.invalid(
                    item,
                    &child(&prefix, key),
                    format!("`{p}` is outside `{own}`: a {section} section may only narrow it"),
                ));
            }
        }
        if let Some((path, location, offset)) = webhook {
            let hook = format!("{name}-webhook");
            let mut w = Table::default();
            set(&mut w, "name", Item::string_at(at, hook.clone()));
            // The section's own `module` item (given or implied), not the
            // resolved path: parsing resolves it against `modules_dir` again.
            set(&mut w, "module", module_item);
            let kind = format!("{name}.webhook");
            set(&mut w, "request", Item::strings_at(at, &[kind]));
            for key in ["timeout_ms", "memory_mb", "max_payload_bytes"] {
                if let Some(item) = table.get(key) {
                    set(&mut w, key, item.clone());
                }
            }
            agents.push(agent);
            agents.push(parse_agent(
                doc,
                child(&prefix, "webhook"),
                origin,
                &Item::table_at(at, w),
                modules_dir,
                defaults,
                owned,
            )?);
            routes.push(ServiceRoute {
                path,
                agent: hook,
                location,
                at: offset,
            });
        } else {
            agents.push(agent);
        }
    }
    Ok((agents, routes))
}

/// True when the pattern `p` (as written) stays within `name.>`.
fn within(p: &str, name: &str) -> bool {
    p.split('.').next() == Some(name) && p.contains('.')
}

/// `scheme://host[:port]` of an http(s) URL, as `allowed_hosts` spells it.
fn url_origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    if !matches!(scheme, "http" | "https") {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next()?;
    // Credentials in a URL never reach a grant.
    let host = authority.rsplit('@').next()?;
    (!host.is_empty()).then(|| format!("{scheme}://{host}"))
}

#[cfg(test)]
mod tests {
    use super::super::testing::no_env;
    use super::super::{ConfigError, Declared, RuntimeConfig};
    use super::*;

    fn parse(text: &str) -> std::result::Result<RuntimeConfig, ConfigError> {
        RuntimeConfig::parse_declared(
            text,
            Path::new("config/x.toml"),
            Path::new("/etc/toka"),
            &Declared {
                sections: &["drivers", "providers", "http"],
                agent_keys: &["allowed_hosts"],
            },
            &|k| (k == "AWS_KEY").then(|| "AKIA1".to_owned()),
        )
    }

    const SEED: &str = r#"
[drivers.s3]
access_key = "${AWS_KEY}"
secret_key = "secret:aws/secret-key"
bucket     = "my-assets"
endpoint   = "http://127.0.0.1:5000"

[providers.stripe]
secret_key = "secret:stripe/sk"
webhook = "/stripe/webhook"

[[agents]]
name = "SchedulerAgent"
default_driver = "s3"
request = ["s3.>"]

[http]
listen = "127.0.0.1:0"
"#;

    /// `config/portable.toml` lives beside `../target/modules`: a relative
    /// base must not be applied twice to the webhook agent's module.
    #[test]
    fn the_webhook_agent_runs_the_providers_module_under_a_relative_base() {
        let cfg = RuntimeConfig::parse_declared(
            "modules_dir = \"../mods\"\n[providers.stripe]\nwebhook = \"/hook\"\n\
             [http]\nlisten = \"127.0.0.1:0\"\n",
            Path::new("config/x.toml"),
            Path::new("config"),
            &Declared {
                sections: &["drivers", "providers", "http"],
                agent_keys: &["allowed_hosts"],
            },
            &no_env,
        )
        .unwrap();
        let modules: Vec<&Path> = cfg.agents.iter().map(|a| a.module.as_path()).collect();
        let expected = Path::new("config/../mods/provider_stripe.wasm");
        assert_eq!(modules, [expected, expected]);
    }

    #[test]
    fn sections_become_service_agents_with_implied_grants() {
        let cfg = parse(SEED).unwrap();
        let names: Vec<&str> = cfg.agents.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["SchedulerAgent", "s3", "stripe", "stripe-webhook"]);
        let s3 = &cfg.agents[1];
        assert_eq!(s3.origin, Origin::Driver);
        assert_eq!(s3.module, Path::new("/etc/toka/modules/driver_s3.wasm"));
        assert!(s3.serve.matches("s3.put") && !s3.serve.matches("stripe.x"));
        assert!(!s3.publish.matches("s3.put"), "a driver publishes nothing");
        let hosts = s3.keys().get_strings("allowed_hosts").unwrap();
        assert_eq!(hosts, Some(vec!["http://127.0.0.1:5000".to_owned()]));
        // Settings reach init; env is interpolated, secret: is left for the
        // runtime to read from the store.
        let settings: Vec<(&str, &str)> = s3
            .settings
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            settings,
            [
                ("access_key", "AKIA1"),
                ("secret_key", "secret:aws/secret-key"),
                ("bucket", "my-assets"),
                ("endpoint", "http://127.0.0.1:5000"),
            ]
        );
        assert!(
            s3.location.starts_with("config/x.toml:2:"),
            "{}",
            s3.location
        );

        let stripe = &cfg.agents[2];
        assert_eq!(stripe.origin, Origin::Provider);
        assert!(stripe.publish.matches("stripe.checkout.session.completed"));
        assert!(
            stripe
                .settings
                .contains(&("api_base".into(), "https://api.stripe.com".into()))
        );
        assert_eq!(
            stripe.keys().get_strings("allowed_hosts").unwrap(),
            Some(vec!["https://api.stripe.com".to_owned()])
        );
        let hook = &cfg.agents[3];
        assert_eq!(hook.module, stripe.module);
        assert!(
            hook.request.matches("stripe.webhook")
                && !hook.request.matches("stripe.refunds.create")
        );
        assert!(hook.serve.patterns().is_empty() && hook.settings.is_empty());
        assert_eq!(
            cfg.service_routes,
            [ServiceRoute {
                path: "/stripe/webhook".into(),
                agent: "stripe-webhook".into(),
                location: "config/x.toml:10:11".into(),
                at: cfg.service_routes[0].at,
            }]
        );
    }

    #[test]
    fn grants_may_be_narrowed_never_widened() {
        let cfg =
            parse("[drivers.s3]\nserve = [\"s3.get\"]\nallowed_hosts = []\nmodule = \"my.wasm\"\n")
                .unwrap();
        let s3 = &cfg.agents[0];
        assert!(s3.serve.matches("s3.get") && !s3.serve.matches("s3.put"));
        assert_eq!(
            s3.keys().get_strings("allowed_hosts").unwrap(),
            Some(vec![])
        );
        assert_eq!(s3.module, Path::new("/etc/toka/modules/my.wasm"));

        let err = parse("[drivers.s3]\nserve = [\"s3.>\", \"orders.>\"]\n").unwrap_err();
        assert_eq!(err.key(), Some("drivers.s3.serve"));
        assert_eq!(err.line(), Some(2));
        assert!(err.to_string().contains("outside `s3.>`"), "{err}");
        let err = parse("[providers.stripe]\npublish = [\">\"]\n").unwrap_err();
        assert_eq!(err.key(), Some("providers.stripe.publish"));
    }

    #[test]
    fn mistakes_name_the_section_and_key() {
        let err = parse("[drivers.s3]\nname = \"x\"\n").unwrap_err();
        assert_eq!((err.key(), err.line()), (Some("drivers.s3.name"), Some(2)));
        let err = parse("[drivers.s3]\nendpoint = \"s3.example.com\"\n").unwrap_err();
        assert_eq!(err.key(), Some("drivers.s3.endpoint"));
        assert!(
            err.to_string().contains("not an http:// or https:// URL"),
            "{err}"
        );
        let err = parse("[drivers.s3]\ntimeout_ms = \"soon\"\n").unwrap_err();
        assert_eq!(err.key(), Some("drivers.s3.timeout_ms"));
        let err = parse("[[agents]]\nname = \"s3\"\n[drivers.s3]\n").unwrap_err();
        assert_eq!(err.key(), Some("drivers.s3"));
        assert!(
            err.to_string().contains("named like the agent `s3`"),
            "{err}"
        );
        let err = parse("[drivers]\ns3 = 1\n").unwrap_err();
        assert_eq!(err.key(), Some("drivers.s3"));
        let err = parse("[drivers.\"bad name\"]\n").unwrap_err();
        assert!(err.to_string().contains("invalid driver name"), "{err}");
        let err = parse("[providers.stripe]\nwebhook = \"/hook\"\n").unwrap_err();
        assert_eq!(
            (err.key(), err.line()),
            (Some("providers.stripe.webhook"), Some(2))
        );
        assert!(err.to_string().contains("set `[http] listen`"), "{err}");
        // An unset variable is reported where it is used.
        let err = parse("[drivers.s3]\nsecret_key = \"${AWS_SECRET}\"\n").unwrap_err();
        assert!(err.to_string().contains("AWS_SECRET"), "{err}");
    }

    #[test]
    fn undeclared_sections_stay_ignored_and_uninterpolated() {
        let cfg = RuntimeConfig::parse_str_with_env(
            SEED,
            Path::new("x.toml"),
            Path::new("."),
            &[],
            &no_env,
        )
        .unwrap();
        assert_eq!(cfg.ignored_sections, ["drivers", "http", "providers"]);
        assert_eq!(cfg.agents.len(), 1);
    }

    #[test]
    fn origins_are_scheme_host_and_port() {
        assert_eq!(
            url_origin("http://127.0.0.1:5000/x?y").as_deref(),
            Some("http://127.0.0.1:5000")
        );
        assert_eq!(
            url_origin("https://u:p@api.stripe.com").as_deref(),
            Some("https://api.stripe.com")
        );
        assert_eq!(url_origin("ftp://x"), None);
        assert_eq!(url_origin("https://"), None);
        assert!(within("s3.put", "s3") && within("s3.>", "s3"));
        assert!(!within(">", "s3") && !within("s3", "s3") && !within("s4.put", "s3"));
    }
}
