//! `astra-bus trace <cid>`: the tree of events that share a correlation id, found by
//! scanning the declared streams over a time window (no index is kept on the hot path).

use super::client::{BusError, Redis, arg, parse_entries};
use crate::config::Config;
use crate::envelope::Envelope;

/// One event of a trace.
#[derive(Debug, Clone)]
pub struct TraceNode {
    /// Stream it is on.
    pub stream: String,
    /// Entry id.
    pub entry_id: String,
    /// The event.
    pub env: Envelope,
}

/// Every event with correlation id `cid` whose entry id time lies in `[from_ms, to_ms]`.
pub async fn collect(
    redis: &Redis,
    cfg: &Config,
    cid: &str,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<TraceNode>, BusError> {
    let mut out = vec![];
    for s in &cfg.streams {
        let mut start = format!("{}", from_ms.max(0));
        let end = format!("{}", to_ms.max(0));
        loop {
            let v = redis
                .cmd(
                    "XRANGE",
                    vec![
                        arg(s.name.as_str()),
                        arg(start.as_str()),
                        arg(end.as_str()),
                        arg("COUNT"),
                        arg(1000),
                    ],
                )
                .await?;
            let page = parse_entries(v);
            let n = page.len();
            let last = page.last().map(|e| e.id.clone());
            for e in page {
                let Some(fields) = e.fields else { continue };
                let is_match = fields
                    .iter()
                    .any(|(k, v)| k.as_slice() == b"cid" && v.as_slice() == cid.as_bytes())
                    || fields
                        .iter()
                        .any(|(k, v)| k.as_slice() == b"id" && v.as_slice() == cid.as_bytes());
                if is_match && let Ok(env) = Envelope::from_fields(&fields) {
                    out.push(TraceNode {
                        stream: s.name.clone(),
                        entry_id: e.id,
                        env,
                    });
                }
            }
            match last {
                Some(l) if n == 1000 => start = format!("({l}"),
                _ => break,
            }
        }
    }
    out.sort_by(|a, b| a.env.ts.cmp(&b.env.ts).then(a.entry_id.cmp(&b.entry_id)));
    Ok(out)
}

/// One node's line: type, id, where it is, payload.
fn node_line(n: &TraceNode) -> String {
    let data = n
        .env
        .data_as_json()
        .map(|v| v.to_string())
        .unwrap_or_default();
    format!(
        "{} {} [{} {}] {}",
        n.env.event_type, n.env.id, n.stream, n.entry_id, data
    )
}

/// Renders the nodes as a tree by causation (`caus`), roots first.
pub fn render(nodes: &[TraceNode]) -> String {
    use std::fmt::Write;
    let ids: std::collections::HashSet<&str> = nodes.iter().map(|n| n.env.id.as_str()).collect();
    let mut out = String::new();
    fn walk(
        nodes: &[TraceNode],
        parent: &str,
        depth: usize,
        out: &mut String,
        seen: &mut Vec<String>,
    ) {
        for n in nodes
            .iter()
            .filter(|n| n.env.caus.as_deref() == Some(parent))
        {
            if seen.contains(&n.env.id) {
                continue;
            }
            seen.push(n.env.id.clone());
            let _ = writeln!(out, "{}└─ {}", "   ".repeat(depth), node_line(n));
            walk(nodes, &n.env.id, depth + 1, out, seen);
        }
    }
    let mut seen = vec![];
    for root in nodes
        .iter()
        .filter(|n| n.env.caus.as_deref().is_none_or(|c| !ids.contains(c)))
    {
        if seen.contains(&root.env.id) {
            continue;
        }
        seen.push(root.env.id.clone());
        let _ = writeln!(out, "{}", node_line(root));
        walk(nodes, &root.env.id, 1, &mut out, &mut seen);
    }
    out
}
