//! API keys and scopes. A key is presented as `Authorization: Bearer <key>`; the edge
//! hashes it and compares the digest with every configured digest in constant time (no
//! early exit, so timing says nothing about which key or how much of it matched).

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};

use super::error::ApiError;
use crate::config::{ApiKey, AuthMode, EdgeConfig, Scope, key_sha256, valid_user_id};

/// Who is calling.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The key used (None when `edge.auth = "off"`).
    pub key: Option<Arc<ApiKey>>,
    /// The user the request acts for: the key's user, else `X-User-ID`, else None.
    pub user: Option<String>,
}

fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut diff = 0u8;
    for i in 0..32 {
        diff |= a[i] ^ b[i];
    }
    diff == 0
}

fn unauthorized(detail: &str, invalid: bool) -> ApiError {
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

/// Authenticates a request (401 when a key is required and missing or unknown) and works
/// out its user (400 for a malformed `X-User-ID`).
pub fn authenticate(
    cfg: &EdgeConfig,
    keys: &[Arc<ApiKey>],
    headers: &HeaderMap,
) -> Result<Caller, ApiError> {
    let header_user = match headers.get("x-user-id") {
        None => None,
        Some(v) => match v.to_str() {
            Ok(u) if valid_user_id(u) => Some(u.to_string()),
            _ => {
                return Err(ApiError::bad_request(
                    "invalid_header",
                    "X-User-ID must be 1-128 visible ASCII characters",
                )
                .with("header", "X-User-ID"));
            }
        },
    };
    if cfg.auth == AuthMode::Off {
        return Ok(Caller {
            key: None,
            user: header_user,
        });
    }
    let Some(auth) = headers.get(header::AUTHORIZATION) else {
        return Err(unauthorized(
            "this route needs an API key: send `Authorization: Bearer <key>`",
            false,
        ));
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
        return Err(unauthorized(
            "the Authorization header must be `Bearer <key>`",
            true,
        ));
    };
    let Some(key) = find_key(keys, presented) else {
        return Err(unauthorized("unknown API key", true));
    };
    Ok(Caller {
        user: key.user.clone().or(header_user),
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
        };
        assert!(open.require(Scope::Ops).is_ok());
        assert!(open.require_publish("astra.user.registered.v1").is_ok());
    }
}
