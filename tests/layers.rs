//! One-way layers (issue 17): reads every `src/**/*.rs`, collects the crate-internal
//! imports of each top-level module and checks that they point one way only.
//!
//! A file belongs to its top-level module (`src/bus/commit/encode.rs` → `bus`,
//! `src/kpi.rs` → `kpi`, `src/lib.rs` → the crate root, `src/main.rs` → `main`). An import
//! is any `use crate::…` / `pub use crate::…` (groups expanded), a `crate::X::…` or
//! `$crate::X::…` path in code, a `super::…` path resolved against the file's module and
//! its inline `mod … { }` blocks, and in `main.rs` an `astra_bus::X` path. Comments (doc
//! comments and intra-doc links included) and string literals are not code and do not
//! count.
//!
//! The layers, bottom first (a module may import its own layer and the ones it names):
//!
//! | layer | modules | may import |
//! |---|---|---|
//! | bottom | `envelope`, `events`, `calendar`, `group`, `handler`, `shutdown`, `logging`, `telemetry`, `watchdog` | bottom |
//! | domain | `handlers` | bottom |
//! | domain | `config` | bottom; `handlers::Registry` (handler-name validation), `handlers::testing` in unit tests |
//! | observability | `metrics`, `internal_events`, `kpi`, `health` | bottom, `handlers` (the analytics field names), observability |
//! | bus | `bus` | bottom, `config`, `handlers`, observability |
//! | bus | `catalog` (the topology as AsyncAPI and JSON Schemas; no Redis) | as `bus` |
//! | upstream | `upstream` (breakers and routing to the registry's instances) | as `bus`, and `bus` |
//! | top | `daemon`, `edge`, `cli`, `main` | everything |
//!
//! `watchdog` (heartbeats of the delivery loops) and `kpi`/`health` are not in the
//! issue's table: `watchdog` imports only `shutdown`, so it sits with it at the bottom;
//! `kpi` and `health` are what `metrics` exports, so they sit beside it; `internal_events`
//! (the delivery path's metrics paired with their log lines) is `metrics` seen from `bus`.
//!
//! Only `src/bus/` speaks Redis: no file outside it names `fred`, calls `.cmd(…)`,
//! `.blocking_cmd(…)` or `.pipeline(…)` with arguments, builds a `("XLEN", vec![…])`
//! pipeline command (handler code excepted: an op names its command by design, and
//! handlers cannot import `bus`), or uses `bus::client::{arg, Value}` (the raw command
//! arguments and replies).

#[path = "layers/reader.rs"]
mod reader;

use std::collections::BTreeSet;

use reader::{Import, ROOT, Tok, cycles, graph, imports, sources, top_of};

const BOTTOM: &[&str] = &[
    "envelope",
    "events",
    "calendar",
    "group",
    "handler",
    "shutdown",
    "logging",
    "telemetry",
    "watchdog",
];
const OBSERVABILITY: &[&str] = &["metrics", "internal_events", "kpi", "health"];
const TOP: &[&str] = &["daemon", "edge", "cli", "main"];

/// Which modules `from` may import, or `None` for a module without a layer.
fn may_import(from: &str) -> Option<Vec<&'static str>> {
    let mut v: Vec<&'static str> = BOTTOM.to_vec();
    if BOTTOM.contains(&from) || from == "handlers" {
        return Some(v);
    }
    if from == "config" {
        v.push("handlers");
        return Some(v);
    }
    v.push("handlers");
    v.extend(OBSERVABILITY);
    if OBSERVABILITY.contains(&from) {
        return Some(v);
    }
    v.push("config");
    // `catalog` describes the validated topology (no Redis): beside `bus`, below the top.
    if from == "bus" || from == "catalog" {
        return Some(v);
    }
    v.push("bus");
    if from == "upstream" {
        return Some(v);
    }
    if TOP.contains(&from) || from == ROOT {
        v.push("catalog");
        v.push("upstream");
        v.extend(TOP);
        return Some(v);
    }
    None
}

/// The one edge between the two domain modules, and how narrow it must stay.
fn config_may_use_from_handlers(item: &str, in_test: bool) -> bool {
    item == "Registry" || (in_test && item == "testing")
}

fn show(imp: &Import) -> String {
    format!(
        "{}:{}: `{}` imports `{}` (`{}`){}",
        imp.file,
        imp.line,
        imp.from,
        imp.to,
        imp.path,
        if imp.in_test { " [unit tests]" } else { "" }
    )
}

#[test]
fn the_module_graph_has_no_cycles() {
    let files = sources();
    let imps = imports(&files);
    let g = graph(&imps);
    let found = cycles(&g);
    let mut msg = String::new();
    for c in &found {
        msg.push_str(&format!("cycle: {}\n", c.join(" -> ")));
        for w in c.windows(2) {
            let imp = g[&w[0]][&w[1]];
            let n = imps
                .iter()
                .filter(|i| i.from == w[0] && i.to == w[1])
                .count();
            msg.push_str(&format!("  {} ({n} import(s) in all)\n", show(imp)));
        }
    }
    assert!(found.is_empty(), "the module graph has cycles:\n{msg}");
}

#[test]
fn imports_point_down_the_layers() {
    let files = sources();
    let imps = imports(&files);
    let mut bad = vec![];
    let mut unplaced = BTreeSet::new();
    for f in &files {
        let top = top_of(f);
        if may_import(&top).is_none() {
            unplaced.insert(format!("{} (module `{top}`)", f.rel));
        }
    }
    for imp in &imps {
        let Some(allowed) = may_import(&imp.from) else {
            continue;
        };
        if !allowed.contains(&imp.to.as_str()) {
            bad.push(format!(
                "{}; `{}` may import only {}",
                show(imp),
                imp.from,
                allowed.join(", ")
            ));
        } else if imp.from == "config"
            && imp.to == "handlers"
            && !config_may_use_from_handlers(&imp.item, imp.in_test)
        {
            bad.push(format!(
                "{}; `config` may use only `handlers::Registry` (handler-name validation), \
                 and `handlers::testing` in its unit tests",
                show(imp)
            ));
        }
    }
    assert!(
        unplaced.is_empty(),
        "modules without a layer (add them to tests/layers.rs):\n  {}",
        unplaced.into_iter().collect::<Vec<_>>().join("\n  ")
    );
    assert!(
        bad.is_empty(),
        "{} import(s) point up or sideways:\n  {}",
        bad.len(),
        bad.join("\n  ")
    );
}

/// Whether a string literal has the shape of a Redis command name (`XADD`, `XINFO`).
fn command_like(s: &str) -> bool {
    s.len() >= 3 && s.bytes().all(|b| b.is_ascii_uppercase())
}

#[test]
fn only_the_bus_speaks_redis() {
    let files = sources();
    let mut bad = vec![];
    for f in files.iter().filter(|f| !f.rel.starts_with("src/bus/")) {
        let t = &f.tokens;
        let handler_code = f.rel == "src/handler.rs" || f.rel.starts_with("src/handlers/");
        for (i, tk) in t.iter().enumerate() {
            let at = |k: usize| t.get(k).map(|x| &x.tok);
            match &tk.tok {
                Tok::Ident(s) if s == "fred" => bad.push(format!(
                    "{}:{}: names `fred` (only src/bus/ may)",
                    f.rel, tk.line
                )),
                // `.cmd(…)`, `.blocking_cmd(…)`, `.pipeline(…)` with arguments.
                Tok::Ident(s)
                    if ["cmd", "blocking_cmd", "pipeline"].contains(&s.as_str())
                        && i > 0
                        && at(i - 1) == Some(&Tok::Punct('.'))
                        && at(i + 1) == Some(&Tok::Punct('('))
                        && at(i + 2) != Some(&Tok::Punct(')')) =>
                {
                    let mut depth = 0;
                    let mut names = vec![];
                    for x in &t[i + 1..] {
                        match &x.tok {
                            Tok::Punct('(' | '[' | '{') => depth += 1,
                            Tok::Punct(')' | ']' | '}') => {
                                depth -= 1;
                                if depth == 0 {
                                    break;
                                }
                            }
                            Tok::Str(c) if command_like(c) => names.push(format!("{c:?}")),
                            _ => {}
                        }
                    }
                    bad.push(format!(
                        "{}:{}: `.{s}({})` sends a raw Redis command",
                        f.rel,
                        tk.line,
                        if names.is_empty() {
                            "…".to_string()
                        } else {
                            format!("{}, …", names.join(", "))
                        }
                    ));
                }
                // `("XLEN", vec![…])`: a command for a pipeline. (Handler ops name their
                // command by design, from `handler::COMMANDS`, and handlers cannot reach a
                // Redis client: they may not import `bus`.)
                Tok::Str(c)
                    if !handler_code
                        && command_like(c)
                        && i > 0
                        && at(i - 1) == Some(&Tok::Punct('('))
                        && !matches!(i.checked_sub(2).and_then(at), Some(Tok::Ident(m))
                            if ["cmd", "blocking_cmd", "pipeline"].contains(&m.as_str()))
                        && at(i + 1) == Some(&Tok::Punct(','))
                        && matches!(at(i + 2), Some(Tok::Ident(v)) if v == "vec" || v == "Vec") =>
                {
                    bad.push(format!(
                        "{}:{}: `({c:?}, vec![…])` builds a raw Redis command",
                        f.rel, tk.line
                    ));
                }
                _ => {}
            }
        }
    }
    for imp in imports(&files) {
        if imp.to == "bus"
            && !imp.file.starts_with("src/bus/")
            && (imp.path.ends_with("client::arg") || imp.path.ends_with("client::Value"))
        {
            bad.push(format!(
                "{}:{}: uses `{}`, raw command arguments or replies (only src/bus/ may)",
                imp.file, imp.line, imp.path
            ));
        }
    }
    assert!(
        bad.is_empty(),
        "{} place(s) outside src/bus/ speak Redis directly (give each a typed function in \
         src/bus/, e.g. src/bus/query.rs):\n  {}",
        bad.len(),
        bad.join("\n  ")
    );
}
