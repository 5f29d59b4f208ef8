//! The console's trace view: the causation tree `astra-bus trace` prints, as data.

use std::collections::HashSet;
use std::sync::Arc;

use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::{
    Edge, MAX_TRACE_NODES, QueryMap, RequestCtx, TRACE_SINCE, TRACE_WINDOW, event_json,
    payload_json, query,
};
use crate::bus::trace::{self, TraceNode};
use crate::edge::error::{ApiError, json as json_response};
use crate::envelope::now_ms;

/// The scan window `astra-bus trace` uses by default (Unix ms, inclusive).
pub fn trace_window(cid: &str, now: i64) -> (i64, i64) {
    match uuid::Uuid::parse_str(cid)
        .ok()
        .and_then(|u| u.get_timestamp())
    {
        Some(t) => {
            let (secs, nanos) = t.to_unix();
            let at = secs as i64 * 1000 + i64::from(nanos / 1_000_000);
            (at - 60_000, at + TRACE_WINDOW.as_millis() as i64)
        }
        None => (now - TRACE_SINCE.as_millis() as i64, now + 60_000),
    }
}

/// The nodes in the order and at the depth [`trace::render`] prints them (roots at 0).
pub fn flatten(nodes: &[TraceNode]) -> Vec<(usize, &TraceNode)> {
    fn walk<'a>(
        nodes: &'a [TraceNode],
        parent: &str,
        depth: usize,
        out: &mut Vec<(usize, &'a TraceNode)>,
        seen: &mut HashSet<&'a str>,
    ) {
        for n in nodes
            .iter()
            .filter(|n| n.env.caus.as_deref() == Some(parent))
        {
            if seen.insert(n.env.id.as_str()) {
                out.push((depth, n));
                walk(nodes, &n.env.id, depth + 1, out, seen);
            }
        }
    }
    let ids: HashSet<&str> = nodes.iter().map(|n| n.env.id.as_str()).collect();
    let mut out = vec![];
    let mut seen = HashSet::new();
    for root in nodes
        .iter()
        .filter(|n| n.env.caus.as_deref().is_none_or(|c| !ids.contains(c)))
    {
        if seen.insert(root.env.id.as_str()) {
            out.push((0, root));
            walk(nodes, &root.env.id, 1, &mut out, &mut seen);
        }
    }
    out
}

/// `GET /console/api/trace?cid=C`: every event with correlation id `C`, as the tree
/// `astra-bus trace C` prints (and its text), with payloads and producing groups.
pub(super) async fn trace_view(
    State(edge): State<Arc<Edge>>,
    Extension(ctx): Extension<RequestCtx>,
    headers: HeaderMap,
    q: QueryMap,
) -> Result<Response, ApiError> {
    edge.authenticate_ops(&ctx, &headers).await?;
    let q = query(q, &["cid"])?;
    let Some(cid) = q
        .get("cid")
        .filter(|c| crate::config::visible_ascii(c, 128))
    else {
        return Err(ApiError::bad_request(
            "invalid_query",
            "cid must be a correlation id of 1-128 visible ASCII characters",
        )
        .with("parameter", "cid"));
    };
    let (from, to) = trace_window(cid, now_ms());
    let redis = edge.redis()?;
    let nodes = trace::collect(redis, &edge.config, cid, from, to)
        .await
        .map_err(|e| ApiError::redis(&e))?;
    if nodes.is_empty() {
        return Err(ApiError::not_found(
            "no_events",
            format!("no events with correlation id {cid} in the scanned window"),
        )
        .with("from_ms", from)
        .with("to_ms", to));
    }
    let groups: HashSet<&str> = edge.config.groups.iter().map(|g| g.name.as_str()).collect();
    let flat = flatten(&nodes);
    let rows: Vec<Value> = flat
        .iter()
        .take(MAX_TRACE_NODES)
        .map(|(depth, n)| {
            let (payload, preview) = payload_json(&n.env);
            let mut v = event_json(&n.env);
            v["depth"] = json!(depth);
            v["stream"] = json!(n.stream);
            v["entry_id"] = json!(n.entry_id);
            // Derived events name the group that produced them in `src`.
            v["group"] = json!(groups.contains(n.env.src.as_str()).then_some(&n.env.src));
            v["payload"] = payload;
            v["payload_preview"] = json!(preview);
            v
        })
        .collect();
    Ok(json_response(
        StatusCode::OK,
        json!({
            "cid": cid,
            "from_ms": from,
            "to_ms": to,
            "count": nodes.len(),
            "truncated": flat.len() > MAX_TRACE_NODES,
            "nodes": rows,
            "text": format!("{}{} events\n", trace::render(&nodes), nodes.len()),
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{ContentType, Envelope};

    fn node(stream: &str, env: Envelope) -> TraceNode {
        TraceNode {
            stream: stream.into(),
            entry_id: format!("{}-0", env.ts),
            env,
        }
    }

    #[test]
    fn the_tree_is_the_one_the_cli_prints() {
        let root = Envelope::root(
            "trading.trade_executed",
            1,
            "t",
            Some("c1".into()),
            ContentType::Json,
            br#"{"a":1}"#.to_vec(),
        );
        let xp = root.derive(
            "gamification.xp_processing",
            0,
            "gamification.xp_awarded",
            1,
            vec![],
        );
        let lvl = root.derive(
            "gamification.xp_processing",
            1,
            "gamification.level_up",
            1,
            vec![],
        );
        let board = xp.derive(
            "gamification.leaderboards",
            0,
            "gamification.leaderboard_updated",
            1,
            vec![],
        );
        let mut orphan = root.derive(
            "social.feed_generation",
            0,
            "social.feed_item_posted",
            1,
            vec![],
        );
        orphan.caus = Some("not-in-the-trace".into());
        let mut nodes = vec![
            node("a", root.clone()),
            node("b", xp.clone()),
            node("c", lvl),
            node("d", board),
            // A cluster duplicate of a derived event (same id, another entry).
            node("b", xp),
            node("e", orphan),
        ];
        nodes[4].entry_id = "9-9".into();
        let flat = flatten(&nodes);
        let rendered = trace::render(&nodes);
        let lines: Vec<&str> = rendered.lines().collect();
        assert_eq!(flat.len(), lines.len(), "{rendered}");
        for ((depth, n), line) in flat.iter().zip(&lines) {
            let prefix = if *depth == 0 {
                String::new()
            } else {
                format!("{}└─ ", "   ".repeat(*depth))
            };
            let rest = line
                .strip_prefix(&prefix)
                .unwrap_or_else(|| panic!("{line:?} at depth {depth}"));
            assert!(
                rest.starts_with(&format!(
                    "{} {} [{} {}]",
                    n.env.event_type, n.env.id, n.stream, n.entry_id
                )),
                "{rest}"
            );
        }
        assert_eq!(
            flat.iter().map(|(d, _)| *d).collect::<Vec<_>>(),
            vec![0, 1, 2, 1, 0]
        );
    }

    #[test]
    fn trace_window_follows_the_cli() {
        let id = crate::envelope::new_id();
        let at = uuid::Uuid::parse_str(&id)
            .unwrap()
            .get_timestamp()
            .unwrap()
            .to_unix()
            .0 as i64
            * 1000;
        let (from, to) = trace_window(&id, 0);
        assert!(from <= at - 59_000 && from >= at - 61_000, "{from} {at}");
        assert!(to >= at + 3_599_000, "{to}");
        assert_eq!(
            trace_window("order-42", 100_000_000),
            (100_000_000 - 86_400_000, 100_060_000)
        );
    }
}
