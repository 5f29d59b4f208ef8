//! API key scopes: what a key may do (`publish:<stream>`, `publish:<prefix>*`, `read`,
//! `ops`, `register:<service>`, `proxy:<service>`, `proxy:*`, `*`), their syntax, and the
//! service-name rule the registry, the gateway proxy and the scopes share.

use super::StreamConfig;

/// What a key may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Publish to one stream (`exact`) or every stream starting with `prefix`.
    Publish { prefix: String, exact: bool },
    /// The projection reads (`GET /api/v1/...`).
    Read,
    /// The operations routes when `edge.ops = "keys"`.
    Ops,
    /// Register, heartbeat and remove instances of one service in the service registry
    /// (`register:<service>`), and nothing else: what a service's own key needs.
    Register { service: String },
    /// Call one service through the gateway proxy (`proxy:<service>`), or every one
    /// (`proxy:*`, held as `service = "*"`).
    Proxy { service: String },
    /// Everything.
    All,
}

/// What [`valid_service`] asks, as error messages say it.
pub const SERVICE_NAME_RULE: &str = "a service name is 1-64 characters of a-z, 0-9, _ and -";

/// Whether `s` names a service of the registry: 1-64 of `[a-z0-9_-]`, as the
/// `/api/v1/<service>/…` path segment.
pub fn valid_service(s: &str) -> bool {
    crate::group::valid_service_name(s)
}

impl Scope {
    /// Whether this scope allows calling `service` through the gateway proxy.
    pub fn allows_proxy(&self, to: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Proxy { service } => service == "*" || service == to,
            _ => false,
        }
    }

    /// Whether this scope allows publishing to `stream`.
    pub fn allows_publish(&self, stream: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Publish { prefix, exact } => {
                if *exact {
                    stream == prefix
                } else {
                    stream.starts_with(prefix.as_str())
                }
            }
            _ => false,
        }
    }
}

/// Parses one scope string; `streams` are the declared streams (a publish scope must match
/// at least one, which catches typos).
pub(super) fn parse_scope(s: &str, streams: &[StreamConfig]) -> Result<Scope, String> {
    let scope = scope_syntax(s)?;
    if let Scope::Publish { .. } = scope
        && !streams.iter().any(|st| scope.allows_publish(&st.name))
    {
        return Err(format!("scope {s:?} matches no declared stream"));
    }
    Ok(scope)
}

/// Parses one scope string without the config (`astra-bus key new`): its form only; a
/// publish scope's streams are checked when the config loads.
pub fn scope_syntax(s: &str) -> Result<Scope, String> {
    match s {
        "*" => return Ok(Scope::All),
        "read" => return Ok(Scope::Read),
        "ops" => return Ok(Scope::Ops),
        _ => {}
    }
    if let Some(service) = s.strip_prefix("register:") {
        if !valid_service(service) {
            return Err(format!("scope {s:?}: {SERVICE_NAME_RULE}"));
        }
        return Ok(Scope::Register {
            service: service.to_string(),
        });
    }
    if let Some(service) = s.strip_prefix("proxy:") {
        if service != "*" && !valid_service(service) {
            return Err(format!(
                "scope {s:?}: {SERVICE_NAME_RULE}, or * for every service"
            ));
        }
        return Ok(Scope::Proxy {
            service: service.to_string(),
        });
    }
    let Some(pattern) = s.strip_prefix("publish:") else {
        return Err(format!(
            "scope {s:?} is not one of \"publish:<stream>\", \"publish:<prefix>*\", \"read\", \"ops\", \"register:<service>\", \"proxy:<service>\", \"proxy:*\", \"*\""
        ));
    };
    if pattern.is_empty() || !pattern.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "scope {s:?}: publish: needs a stream name or a prefix ending in *"
        ));
    }
    Ok(match pattern.strip_suffix('*') {
        Some(prefix) => Scope::Publish {
            prefix: prefix.to_string(),
            exact: false,
        },
        None => Scope::Publish {
            prefix: pattern.to_string(),
            exact: true,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_scopes_match_exact_or_prefix() {
        let exact = Scope::Publish {
            prefix: "astra.trading.trade_executed.v1".into(),
            exact: true,
        };
        assert!(exact.allows_publish("astra.trading.trade_executed.v1"));
        assert!(!exact.allows_publish("astra.trading.trade_executed.v10"));
        let prefix = Scope::Publish {
            prefix: "astra.trading.".into(),
            exact: false,
        };
        assert!(prefix.allows_publish("astra.trading.position_updated.v1"));
        assert!(!prefix.allows_publish("astra.user.registered.v1"));
        assert!(!Scope::Read.allows_publish("astra.user.registered.v1"));
        assert!(Scope::All.allows_publish("astra.user.registered.v1"));
    }

    #[test]
    fn register_scopes_name_one_valid_service() {
        assert_eq!(
            parse_scope("register:trading", &[]),
            Ok(Scope::Register {
                service: "trading".into()
            })
        );
        for bad in ["register:", "register:Trading", "register:a/b"] {
            let e = parse_scope(bad, &[]).unwrap_err();
            assert!(
                e.contains("a service name is 1-64 characters"),
                "{bad}: {e}"
            );
        }
        assert!(
            !Scope::Register {
                service: "t".into()
            }
            .allows_publish("astra.user.registered.v1")
        );
    }

    #[test]
    fn proxy_scopes_name_one_service_or_all() {
        let one = parse_scope("proxy:pricing", &[]).unwrap();
        assert!(one.allows_proxy("pricing"));
        assert!(!one.allows_proxy("billing"));
        let all = parse_scope("proxy:*", &[]).unwrap();
        assert!(all.allows_proxy("billing"));
        assert!(Scope::All.allows_proxy("billing"));
        assert!(!Scope::Read.allows_proxy("billing"));
        for bad in ["proxy:", "proxy:Pricing", "proxy:a/b", "proxy:**"] {
            let e = parse_scope(bad, &[]).unwrap_err();
            assert!(e.contains("service name"), "{bad}: {e}");
        }
    }
}
