//! The host side of `toka:runtime/auth` (feature `host`): Argon2id password hashes and
//! Ed25519-signed tokens, each operation granted on its own
//! (`auth = ["password", "issue-token", "verify-token"]`).
//!
//! The token signing key lives in the secret store under
//! [`TOKEN_KEY_SECRET`]; the runtime creates it on first use, so it never
//! sits in a config file. Passwords and tokens are never logged.

use std::sync::Arc;

use toka_capability::bindings::{auth, types};
use toka_capability::{CapError, Capability, Has, OpenCx, View};
use toka_core::{AgentConfig, RuntimeConfig};
use toka_secrets::SecretStore;
use wasmtime::component::{HasData, Linker};

use crate::token::{self, Audience, Claims, Validation};
use crate::{SigningKey, password};

/// The `auth` capability.
#[derive(Debug)]
pub struct Auth {
    /// The token key, when some agent may issue or verify tokens.
    key: Option<Arc<SigningKey>>,
}

impl Capability for Auth {
    const NAME: &'static str = "auth";
    const AGENT_KEYS: &'static [&'static str] = &["auth"];
    const INTERFACES: &'static [(&'static str, &'static str)] = &[(
        "toka:runtime/auth",
        "toka auth: password hashes and signed tokens, each operation as granted",
    )];
    /// The operations granted (`password`, `issue-token`, `verify-token`).
    type Grant = Vec<String>;
    type AgentState = AuthCtx;

    /// `auth = ["password", "verify-token"]`: any of [`OPERATIONS`], each
    /// granted on its own; absent or `[]` grants nothing.
    fn grant(agent: &AgentConfig) -> Result<Option<Vec<String>>, CapError> {
        let keys = agent.keys();
        let ops = keys
            .get_strings("auth")
            .map_err(|e| CapError::config(agent, e))?
            .unwrap_or_default();
        if let Some(bad) = ops.iter().find(|op| !OPERATIONS.contains(&op.as_str())) {
            let message = format!("unknown auth grant {bad:?}; expected any of {OPERATIONS:?}");
            return Err(CapError::config(agent, keys.invalid("auth", message)));
        }
        Ok((!ops.is_empty()).then_some(ops))
    }

    fn open(
        config: &RuntimeConfig,
        granted: &[(&AgentConfig, &Vec<String>)],
        cx: &mut OpenCx,
    ) -> Result<Self, CapError> {
        let tokens = granted
            .iter()
            .any(|(_, ops)| ops.iter().any(|op| op.ends_with("-token")));
        let key = if tokens {
            let store = toka_secrets::host::store(config, cx)?;
            Some(Arc::new(token_key(&store)?))
        } else {
            None
        };
        Ok(Auth { key })
    }

    fn for_agent(&self, agent: &AgentConfig, ops: Vec<String>) -> Result<AuthCtx, CapError> {
        Ok(AuthCtx::new(&agent.name, &ops, self.key.clone()))
    }

    fn link<T: Has<Self>>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
        auth::add_to_linker::<T, AuthData>(linker, |t| AuthHost(t.view()))
    }

    fn describe(ops: &Vec<String>) -> String {
        format!("auth: {}", ops.join(", "))
    }
}

/// The operations `auth = [...]` may grant, each on its own.
pub const OPERATIONS: [&str; 3] = ["password", "issue-token", "verify-token"];

/// The secret holding the token signing key.
pub const TOKEN_KEY_SECRET: &str = "toka/auth/token-key";

/// Load the token signing key from `store`, creating it on first use.
pub fn token_key(store: &SecretStore) -> Result<SigningKey, CapError> {
    // The store is open and the key is the runtime's own: nothing here is
    // the operator's input, so every error is a failure (a store that
    // fails, a key record that is damaged).
    let fail = |what: String| {
        CapError::failure(format!(
            "token signing key (`{TOKEN_KEY_SECRET}` in the secret store): {what}"
        ))
    };
    match store
        .get(TOKEN_KEY_SECRET)
        .map_err(|e| fail(e.to_string()))?
    {
        Some(text) => {
            let text = std::str::from_utf8(text.expose()).map_err(|_| fail("not UTF-8".into()))?;
            SigningKey::from_text(text).map_err(|e| fail(e.to_string()))
        }
        None => {
            let key = SigningKey::generate().map_err(|e| fail(e.to_string()))?;
            store
                .set(TOKEN_KEY_SECRET, key.to_text().expose().as_bytes())
                .map_err(|e| fail(e.to_string()))?;
            tracing::info!(key_id = %key.key_id(), "created the token signing key in the secret store");
            Ok(key)
        }
    }
}

/// One agent's auth grants.
pub struct AuthCtx {
    agent: Arc<str>,
    password: bool,
    issue: bool,
    verify: bool,
    key: Option<Arc<SigningKey>>,
}

impl std::fmt::Debug for AuthCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthCtx")
            .field("agent", &self.agent)
            .field("password", &self.password)
            .field("issue", &self.issue)
            .field("verify", &self.verify)
            .finish_non_exhaustive()
    }
}

impl AuthCtx {
    /// `ops` are the agent's `auth` grants; `key` the token key when any
    /// agent may use tokens.
    pub fn new(agent: &str, ops: &[String], key: Option<Arc<SigningKey>>) -> Self {
        let has = |op: &str| ops.iter().any(|o| o == op);
        AuthCtx {
            agent: agent.into(),
            password: has("password"),
            issue: has("issue-token"),
            verify: has("verify-token"),
            key,
        }
    }
}

/// `toka:runtime/auth` as an agent calls it: its [`View`].
#[derive(Debug)]
pub struct AuthHost<'a>(pub View<'a, Auth>);

/// The [`HasData`] marker linking [`AuthHost`].
#[derive(Debug)]
pub struct AuthData;

impl HasData for AuthData {
    type Data<'a> = AuthHost<'a>;
}

impl AuthHost<'_> {
    fn auth_ctx(&self, op: &str, allowed: fn(&AuthCtx) -> bool) -> Result<&AuthCtx, types::Error> {
        match self.0.state {
            Some(cx) if allowed(cx) => Ok(cx),
            _ => {
                tracing::warn!(agent = %self.0.agent, op, "auth call denied: not granted");
                Err(types::Error::AccessDenied)
            }
        }
    }
}

fn invalid(e: impl std::fmt::Display) -> types::Error {
    types::Error::Invalid(e.to_string())
}

fn to_wit(c: Claims) -> auth::Claims {
    let aud = match c.aud {
        Some(Audience::One(a)) => Some(a),
        Some(Audience::Many(v)) => v.into_iter().next(),
        None => None,
    };
    auth::Claims {
        sub: c.sub,
        aud,
        exp: c.exp,
        nbf: c.nbf,
        iat: c.iat,
        extra_json: serde_json::Value::Object(c.extra).to_string(),
    }
}

impl auth::Host for AuthHost<'_> {
    fn hash_password(&mut self, password: String) -> Result<String, types::Error> {
        self.auth_ctx("hash-password", |c| c.password)?;
        password::hash_password(password.as_bytes()).map_err(invalid)
    }

    fn verify_password(&mut self, password: String, hash: String) -> Result<bool, types::Error> {
        self.auth_ctx("verify-password", |c| c.password)?;
        password::verify_password(password.as_bytes(), &hash).map_err(invalid)
    }

    fn issue_token(&mut self, claims: auth::Claims) -> Result<String, types::Error> {
        let cx = self.auth_ctx("issue-token", |c| c.issue)?;
        let key = cx.key.as_ref().ok_or(types::Error::Unavailable)?;
        let extra: serde_json::Value = serde_json::from_str(&claims.extra_json)
            .map_err(|e| invalid(format!("extra-json: {e}")))?;
        let serde_json::Value::Object(extra) = extra else {
            return Err(invalid("extra-json must be a JSON object"));
        };
        let mut c = Claims::new(claims.sub, token::unix_now(), claims.exp);
        if let Some(aud) = claims.aud {
            c = c.with_audience(aud);
        }
        if let Some(nbf) = claims.nbf {
            c = c.with_not_before(nbf);
        }
        c.extra = extra;
        let token = token::issue(key, &c).map_err(invalid)?;
        tracing::info!(agent = %cx.agent, "token issued");
        Ok(token)
    }

    fn verify_token(
        &mut self,
        token: String,
        audience: Option<String>,
    ) -> Result<auth::Claims, types::Error> {
        let cx = self.auth_ctx("verify-token", |c| c.verify)?;
        let key = cx.key.as_ref().ok_or(types::Error::Unavailable)?;
        let mut validation = Validation::new();
        if let Some(aud) = audience {
            validation = validation.with_audience(aud);
        }
        token::verify(&key.verifying_key(), &token, &validation)
            .map(to_wit)
            .map_err(invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use auth::Host as _;
    use toka_capability::ViewParts;

    fn claims() -> auth::Claims {
        auth::Claims {
            sub: "user-1".into(),
            aud: Some("api".into()),
            exp: token::unix_now() + 600,
            nbf: None,
            iat: 0,
            extra_json: "{}".into(),
        }
    }

    #[test]
    fn each_operation_is_granted_on_its_own() {
        let key = Arc::new(SigningKey::generate().unwrap());
        let ctx = AuthCtx::new("gate", &["password".into()], Some(key.clone()));
        let mut parts = ViewParts::default();
        let mut host = AuthHost(parts.view::<Auth>("gate", Some(&ctx)));
        let hash = host.hash_password("hunter2".into()).unwrap();
        assert!(host.verify_password("hunter2".into(), hash).unwrap());
        assert!(matches!(
            host.issue_token(claims()),
            Err(types::Error::AccessDenied)
        ));

        let both = AuthCtx::new(
            "issuer",
            &["issue-token".into(), "verify-token".into()],
            Some(key),
        );
        let mut host = AuthHost(parts.view::<Auth>("issuer", Some(&both)));
        let token = host.issue_token(claims()).unwrap();
        assert_eq!(
            host.verify_token(token, Some("api".into())).unwrap().sub,
            "user-1"
        );
        assert!(matches!(
            host.hash_password("x".into()),
            Err(types::Error::AccessDenied)
        ));
    }

    /// `[[agents]] name = "a"` plus `keys`, loaded as the runtime loads it.
    fn agent(keys: &str) -> AgentConfig {
        let config = RuntimeConfig::parse_declared(
            &format!("[[agents]]\nname = \"a\"\n{keys}\n"),
            std::path::Path::new("t.toml"),
            std::path::Path::new("."),
            &toka_core::Declared {
                sections: &[],
                agent_keys: Auth::AGENT_KEYS,
            },
            &|_| None,
        )
        .unwrap();
        config.agents[0].clone()
    }

    #[test]
    fn the_grant_is_parsed_from_the_agents_own_key() {
        assert_eq!(Auth::grant(&agent("")).unwrap(), None, "denied by default");
        assert_eq!(Auth::grant(&agent("auth = []")).unwrap(), None);
        let ops = Auth::grant(&agent(r#"auth = ["password", "verify-token"]"#)).unwrap();
        assert_eq!(
            ops.as_deref(),
            Some(&["password".into(), "verify-token".into()][..])
        );

        let err = Auth::grant(&agent(r#"auth = ["password", "root"]"#)).unwrap_err();
        assert!(err.is_config());
        assert_eq!(
            err.to_string(),
            "t.toml:3:8: agents[0].auth: unknown auth grant \"root\"; expected any of \
             [\"password\", \"issue-token\", \"verify-token\"]"
        );
    }

    #[test]
    fn an_agent_without_the_grant_is_denied() {
        let mut parts = ViewParts::default();
        let mut host = AuthHost(parts.view::<Auth>("stranger", None));
        assert!(matches!(
            host.hash_password("x".into()),
            Err(types::Error::AccessDenied)
        ));
        assert!(matches!(
            host.verify_token("t".into(), None),
            Err(types::Error::AccessDenied)
        ));
    }
}
