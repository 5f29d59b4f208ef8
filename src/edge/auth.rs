//! API keys and scopes. A key is presented as `Authorization: Bearer <key>`; the edge
//! hashes it and compares the digest with every configured digest in constant time (no
//! early exit, so timing says nothing about which key or how much of it matched).

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};

use super::error::ApiError;
use crate::config::{ApiKey, AuthMode, EdgeConfig, Scope, key_sha256, valid_user_id};

/// Who is calling, as far as the edge could verify it.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The key used (None when `edge.auth = "off"`).
    pub key: Option<Arc<ApiKey>>,
    /// The user the request acts for. With keys: the key's fixed user, or `X-User-ID`
    /// sent with a key allowed to act for users; never a bare header. With auth off:
    /// `X-User-ID` as the (loopback) client says.
    pub user: Option<String>,
    /// Whether `user` was verified (a key vouches for it), so payloads must act for it.
    pub verified_user: bool,
}

fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut diff = 0u8;
    for i in 0..32 {
        diff |= a[i] ^ b[i];
    }
    diff == 0
}

/// 401 with the `WWW-Authenticate` challenge.
pub fn unauthorized(detail: &str, invalid: bool) -> ApiError {
    let challenge = if invalid {
        "Bearer realm=\"astra-bus\", error=\"invalid_token\""
    } else {
        "Bearer realm=\"astra-bus\""
    };
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", detail).header(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    )
}

/// Finds the key whose digest matches `presented`, checking every key.
pub fn find_key<'a>(keys: &'a [Arc<ApiKey>], presented: &str) -> Option<&'a Arc<ApiKey>> {
    let digest = key_sha256(presented);
    let mut found = None;
    for k in keys {
        if ct_eq(&k.sha256, &digest) && found.is_none() {
            found = Some(k);
        }
    }
    found
}

/// Why authentication failed.
pub enum Refusal {
    /// No credentials presented (not counted as a failed attempt).
    Missing(ApiError),
    /// Credentials presented and wrong: counted per client address.
    Invalid(ApiError),
    /// The request is malformed or not allowed (400/403).
    Other(ApiError),
}

/// Authenticates a request and works out its user (400 for a malformed `X-User-ID`, 403
/// for a fixed-user key naming another user).
pub fn authenticate(
    cfg: &EdgeConfig,
    keys: &[Arc<ApiKey>],
    headers: &HeaderMap,
) -> Result<Caller, Refusal> {
    let header_user = match headers.get("x-user-id") {
        None => None,
        Some(v) => match v.to_str() {
            Ok(u) if valid_user_id(u) => Some(u.to_string()),
            _ => {
                return Err(Refusal::Other(
                    ApiError::bad_request(
                        "invalid_header",
                        "X-User-ID must be 1-128 of A-Z a-z 0-9 . _ : @ -",
                    )
                    .with("header", "X-User-ID"),
                ));
            }
        },
    };
    if cfg.auth == AuthMode::Off {
        return Ok(Caller {
            key: None,
            user: header_user,
            verified_user: false,
        });
    }
    let Some(auth) = headers.get(header::AUTHORIZATION) else {
        return Err(Refusal::Missing(unauthorized(
            "this route needs an API key: send `Authorization: Bearer <key>`",
            false,
        )));
    };
    let presented = auth
        .to_str()
        .ok()
        .and_then(|s| {
            s.strip_prefix("Bearer ")
                .or_else(|| s.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let Some(presented) = presented else {
        return Err(Refusal::Invalid(unauthorized(
            "the Authorization header must be `Bearer <key>`",
            true,
        )));
    };
    let Some(key) = find_key(keys, presented) else {
        return Err(Refusal::Invalid(unauthorized("unknown API key", true)));
    };
    let (user, verified_user) = match (&key.user, header_user) {
        (Some(fixed), Some(h)) if *fixed != h => {
            return Err(Refusal::Other(ApiError::forbidden(
                "user_mismatch",
                format!(
                    "key {:?} acts for user {fixed:?} only; X-User-ID {h:?} names another",
                    key.name
                ),
            )));
        }
        (Some(fixed), _) => (Some(fixed.clone()), true),
        // A key that may act for users vouches for the user it names.
        (None, Some(h)) if key.act_for_users => (Some(h), true),
        // Anyone else's X-User-ID is a bare claim: it chooses nothing.
        (None, _) => (None, false),
    };
    Ok(Caller {
        user,
        verified_user,
        key: Some(key.clone()),
    })
}

impl Caller {
    /// The key's name, or `-` without auth.
    pub fn name(&self) -> &str {
        self.key.as_ref().map(|k| k.name.as_str()).unwrap_or("-")
    }

    fn allows(&self, f: impl Fn(&Scope) -> bool) -> bool {
        match &self.key {
            None => true,
            Some(k) => k.scopes.iter().any(|s| *s == Scope::All || f(s)),
        }
    }

    /// Whether the caller's key has a scope `f` accepts (or `*`; always without a key).
    pub fn has(&self, f: impl Fn(&Scope) -> bool) -> bool {
        self.allows(f)
    }

    /// Who the caller is for idempotency records and client-chosen event ids: the key
    /// (and the user it vouches for), or with auth off the client address and its
    /// `X-User-ID`.
    pub fn identity(&self, peer: Option<std::net::SocketAddr>) -> String {
        match &self.key {
            Some(k) => format!("key:{}\u{0}{}", k.name, self.user.as_deref().unwrap_or("")),
            None => format!(
                "addr:{}\u{0}{}",
                peer.map(|p| p.ip().to_string()).unwrap_or_default(),
                self.user.as_deref().unwrap_or("")
            ),
        }
    }

    /// 403 unless the key may publish to `stream`.
    pub fn require_publish(&self, stream: &str) -> Result<(), ApiError> {
        if self.allows(|s| s.allows_publish(stream)) {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                "out_of_scope",
                format!(
                    "key {:?} may not publish to {stream} (add scope \"publish:{stream}\")",
                    self.name()
                ),
            ))
        }
    }

    /// 403 unless the key has `scope` (`read` or `ops`).
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        let name = match scope {
            Scope::Read => "read",
            Scope::Ops => "ops",
            _ => "*",
        };
        if self.allows(|s| *s == scope) {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                "out_of_scope",
                format!(
                    "key {:?} lacks the \"{name}\" scope this route needs",
                    self.name()
                ),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, secret: &str) -> Arc<ApiKey> {
        Arc::new(ApiKey {
            name: name.into(),
            sha256: key_sha256(secret),
            scopes: vec![Scope::Read],
            user: None,
            act_for_users: false,
        })
    }

    #[test]
    fn finds_only_the_matching_key() {
        let keys = vec![key("a", "alpha"), key("b", "beta")];
        assert_eq!(find_key(&keys, "beta").unwrap().name, "b");
        assert!(find_key(&keys, "gamma").is_none());
        assert!(find_key(&keys, "").is_none());
    }

    #[test]
    fn scopes_gate_routes() {
        let c = Caller {
            key: Some(key("a", "alpha")),
            user: None,
            verified_user: false,
        };
        assert!(c.require(Scope::Read).is_ok());
        assert_eq!(c.require(Scope::Ops).unwrap_err().status, 403);
        assert_eq!(
            c.require_publish("astra.user.registered.v1")
                .unwrap_err()
                .status,
            403
        );
        let open = Caller {
            key: None,
            user: None,
            verified_user: false,
        };
        assert!(open.require(Scope::Ops).is_ok());
        assert!(open.require_publish("astra.user.registered.v1").is_ok());
    }
}
