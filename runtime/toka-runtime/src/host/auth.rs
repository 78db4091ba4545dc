//! The host side of `toka:runtime/auth`: Argon2id password hashes and
//! Ed25519-signed tokens, each operation granted on its own
//! (`auth = ["password", "issue-token", "verify-token"]`).
//!
//! The token signing key lives in the secret store under
//! [`TOKEN_KEY_SECRET`]; the runtime creates it on first use, so it never
//! sits in a config file. Passwords and tokens are never logged.

use std::sync::Arc;

use toka_auth::token::{self, Audience, Claims, Validation};
use toka_auth::{SigningKey, password};
use toka_secrets::SecretStore;

use super::bindings::{auth, types};
use super::caps::CapError;
use super::state::HostState;

/// The secret holding the token signing key.
pub const TOKEN_KEY_SECRET: &str = "toka/auth/token-key";

/// Load the token signing key from `store`, creating it on first use.
pub fn token_key(store: &SecretStore) -> Result<SigningKey, CapError> {
    let fail = |what: String| CapError {
        agent: None,
        message: format!("token signing key (`{TOKEN_KEY_SECRET}` in the secret store): {what}"),
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

impl HostState {
    fn auth_ctx(
        &self,
        op: &str,
        allowed: fn(&AuthCtx) -> bool,
    ) -> Result<Arc<AuthCtx>, types::Error> {
        match &self.caps.auth {
            Some(cx) if allowed(cx) => Ok(cx.clone()),
            _ => {
                tracing::warn!(agent = %self.publisher.name(), op, "auth call denied: not granted");
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

impl auth::Host for HostState {
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
