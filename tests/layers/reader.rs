//! Reading `src/**/*.rs` for `tests/layers.rs`: a small Rust tokenizer (comments dropped,
//! string literals kept whole), the crate-internal imports of every file resolved to
//! top-level modules, and the cycles of the module graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The crate root (`src/lib.rs`): it declares every module and may re-export any.
pub(crate) const ROOT: &str = "lib";

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    Ident(String),
    /// `::`
    Sep,
    Punct(char),
    Str(String),
    /// A char literal or a lifetime (nothing here looks inside either).
    Other,
}

#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub(crate) tok: Tok,
    pub(crate) line: usize,
}

fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80
}

fn utf8_len(b: u8) -> usize {
    match b {
        0xF0..=0xFF => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    }
}

/// Splits Rust source into tokens, dropping comments (nested block comments included)
/// and keeping string literals (plain, raw, byte, C) as one token each.
pub(crate) fn tokenize(src: &str) -> Vec<Token> {
    let b = src.as_bytes();
    let mut out = vec![];
    let mut line = 1;
    let mut i = 0;
    let count_lines = |from: usize, to: usize| b[from..to].iter().filter(|&&c| c == b'\n').count();
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied().unwrap_or(0);
        if c == b'\n' {
            line += 1;
            i += 1;
        } else if c.is_ascii_whitespace() {
            i += 1;
        } else if c == b'/' && next == b'/' {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if c == b'/' && next == b'*' {
            let start = i;
            let mut depth = 0;
            while i < b.len() {
                if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            line += count_lines(start, i);
        } else if c == b'"' {
            let start = i;
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            let text = src[start + 1..i.min(b.len())].to_string();
            out.push(Token {
                tok: Tok::Str(text),
                line,
            });
            i += 1;
            line += count_lines(start, i.min(b.len()));
        } else if c == b'r'
            && (next == b'"' || next == b'#')
            && (i == 0 || !is_ident_byte(b[i - 1]) || (b[i - 1] == b'b' || b[i - 1] == b'c'))
            && {
                let mut j = i + 1;
                while b.get(j) == Some(&b'#') {
                    j += 1;
                }
                b.get(j) == Some(&b'"')
            }
        {
            let start = i;
            let mut j = i + 1;
            let mut hashes = 0;
            while b[j] == b'#' {
                hashes += 1;
                j += 1;
            }
            let body = j + 1;
            let close: String = std::iter::once('"')
                .chain(std::iter::repeat_n('#', hashes))
                .collect();
            let end = src[body..].find(&close).map_or(b.len(), |k| body + k);
            out.push(Token {
                tok: Tok::Str(src[body..end].to_string()),
                line,
            });
            i = (end + close.len()).min(b.len());
            line += count_lines(start, i);
        } else if c == b'\'' {
            // A char literal ('a', '\n', '…') or a lifetime / label ('a, 'static).
            if next == b'\\' {
                i += 2;
                while i < b.len() && b[i] != b'\'' {
                    i += 1;
                }
                i += 1;
            } else if i + 1 < b.len() && b.get(i + 1 + utf8_len(next)) == Some(&b'\'') {
                i += 2 + utf8_len(next);
            } else {
                i += 1;
                while i < b.len() && is_ident_byte(b[i]) {
                    i += 1;
                }
            }
            out.push(Token {
                tok: Tok::Other,
                line,
            });
        } else if is_ident_byte(c) {
            let start = i;
            while i < b.len() && is_ident_byte(b[i]) {
                i += 1;
            }
            out.push(Token {
                tok: Tok::Ident(src[start..i].to_string()),
                line,
            });
        } else if c == b':' && next == b':' {
            out.push(Token {
                tok: Tok::Sep,
                line,
            });
            i += 2;
        } else {
            let ch = src[i..].chars().next().unwrap_or(' ');
            out.push(Token {
                tok: Tok::Punct(ch),
                line,
            });
            i += ch.len_utf8();
        }
    }
    out
}

/// One crate-internal import.
#[derive(Debug, Clone)]
pub(crate) struct Import {
    pub(crate) file: String,
    pub(crate) line: usize,
    /// The importing file's top-level module.
    pub(crate) from: String,
    /// The imported top-level module.
    pub(crate) to: String,
    /// The name right below `to` (`Registry` in `crate::handlers::Registry`).
    pub(crate) item: String,
    /// The path as written, `::`-joined.
    pub(crate) path: String,
    /// Inside a `#[cfg(test)]` module or behind `#[cfg(test)]`.
    pub(crate) in_test: bool,
}

pub(crate) struct SourceFile {
    /// `src/bus/client.rs`
    pub(crate) rel: String,
    /// Module path of the file (`["bus", "client"]`; `[]` for `lib.rs`).
    pub(crate) module: Vec<String>,
    pub(crate) tokens: Vec<Token>,
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            collect(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

pub(crate) fn sources() -> Vec<SourceFile> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut paths = vec![];
    collect(&root.join("src"), &mut paths);
    assert!(
        paths.len() > 20,
        "found only {} files under src/",
        paths.len()
    );
    paths
        .into_iter()
        .map(|p| {
            let rel = p
                .strip_prefix(root)
                .expect("under the manifest dir")
                .to_string_lossy()
                .replace('\\', "/");
            let text = std::fs::read_to_string(&p).expect("read source");
            SourceFile::new(&rel, &text)
        })
        .collect()
}

impl SourceFile {
    /// `rel` (`src/…`) read from `text`.
    pub(crate) fn new(rel: &str, text: &str) -> SourceFile {
        let inner = rel.strip_prefix("src/").expect("under src/");
        let mut module: Vec<String> = inner
            .trim_end_matches(".rs")
            .split('/')
            .map(String::from)
            .collect();
        if module.last().is_some_and(|m| m == "mod") || module == ["lib"] {
            module.pop();
        }
        SourceFile {
            rel: rel.to_string(),
            module,
            tokens: tokenize(text),
        }
    }
}

/// The file's top-level module ([`ROOT`] for `src/lib.rs`).
pub(crate) fn top_of(f: &SourceFile) -> String {
    f.module
        .first()
        .cloned()
        .unwrap_or_else(|| ROOT.to_string())
}

/// Expands one `use` tree starting at `toks[*i]` into full paths.
fn use_tree(toks: &[Token], i: &mut usize, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    let mut segs = prefix;
    while *i < toks.len() {
        match &toks[*i].tok {
            Tok::Ident(s) if s == "as" => {
                *i += 2;
                break;
            }
            Tok::Ident(s) => {
                segs.push(s.clone());
                *i += 1;
            }
            Tok::Punct('$') => *i += 1,
            Tok::Punct('*') => {
                segs.push("*".into());
                *i += 1;
            }
            Tok::Punct('{') => {
                *i += 1;
                while *i < toks.len() && toks[*i].tok != Tok::Punct('}') {
                    use_tree(toks, i, segs.clone(), out);
                    if toks.get(*i).map(|t| &t.tok) == Some(&Tok::Punct(',')) {
                        *i += 1;
                    }
                }
                *i += 1;
                return;
            }
            _ => break,
        }
        if toks.get(*i).map(|t| &t.tok) == Some(&Tok::Sep) {
            *i += 1;
        } else if !matches!(toks.get(*i).map(|t| &t.tok), Some(Tok::Ident(s)) if s == "as") {
            break;
        }
    }
    out.push(segs);
}

/// Where a path of `file` (inside the inline modules `inline`) lands: (top-level module,
/// the name below it), or `None` for paths outside the crate or inside the same module.
fn resolve(
    segs: &[String],
    file: &SourceFile,
    inline: &[String],
    lib_aliases: &BTreeMap<String, String>,
    tops: &BTreeSet<String>,
) -> Option<(String, String)> {
    let is_main = file.rel == "src/main.rs";
    let first = segs.first()?.as_str();
    let (base, rest): (Vec<String>, &[String]) = match first {
        "crate" if !is_main => (vec![], &segs[1..]),
        "astra_bus" if is_main => (vec![], &segs[1..]),
        "super" => {
            let mut here: Vec<String> = file.module.iter().chain(inline).cloned().collect();
            let mut k = 0;
            while segs.get(k).is_some_and(|s| s == "super") {
                here.pop()?;
                k += 1;
            }
            (here, &segs[k..])
        }
        // A bare path in the crate root names a top-level module.
        _ if file.module.is_empty() && !is_main && tops.contains(first) => (vec![], segs),
        _ => return None,
    };
    let mut full: Vec<String> = base;
    full.extend(rest.iter().cloned());
    let mut top = full.first()?.clone();
    if let Some(m) = lib_aliases.get(&top) {
        top = m.clone();
    }
    let item = full.get(1).cloned().unwrap_or_default();
    Some((top, item))
}

/// Every crate-internal import of every file, plus the files' tokens for the Redis check.
pub(crate) fn imports(files: &[SourceFile]) -> Vec<Import> {
    let tops: BTreeSet<String> = files
        .iter()
        .filter_map(|f| f.module.first().cloned())
        .collect();
    // `pub use daemon::run;` in lib.rs: `crate::run` is the daemon's.
    let mut lib_aliases = BTreeMap::new();
    if let Some(lib) = files.iter().find(|f| f.rel == "src/lib.rs") {
        let t = &lib.tokens;
        for k in 0..t.len() {
            if t[k].tok == Tok::Ident("use".into()) {
                let mut i = k + 1;
                let mut paths = vec![];
                use_tree(t, &mut i, vec![], &mut paths);
                for p in paths {
                    if let (Some(m), Some(name)) = (p.first(), p.last())
                        && tops.contains(m)
                        && p.len() > 1
                    {
                        lib_aliases.insert(name.clone(), m.clone());
                    }
                }
            }
        }
    }
    let mut out = vec![];
    for f in files {
        let from = top_of(f);
        let t = &f.tokens;
        let mut depth = 0usize;
        // (name, depth inside its braces, test-only)
        let mut inline: Vec<(String, usize, bool)> = vec![];
        let mut pending_test = false;
        let mut i = 0;
        let mut push =
            |segs: &[String], line: usize, inline: &[(String, usize, bool)], test: bool| {
                let names: Vec<String> = inline.iter().map(|m| m.0.clone()).collect();
                let in_test = test || inline.iter().any(|m| m.2);
                if let Some((to, item)) = resolve(segs, f, &names, &lib_aliases, &tops)
                    && to != from
                {
                    out.push(Import {
                        file: f.rel.clone(),
                        line,
                        from: from.clone(),
                        to,
                        item,
                        path: segs.join("::"),
                        in_test,
                    });
                }
            };
        while i < t.len() {
            match &t[i].tok {
                Tok::Punct('#') => {
                    // `#[cfg(test)]`
                    let want = [
                        Tok::Punct('['),
                        Tok::Ident("cfg".into()),
                        Tok::Punct('('),
                        Tok::Ident("test".into()),
                        Tok::Punct(')'),
                        Tok::Punct(']'),
                    ];
                    if t.len() > i + want.len()
                        && t[i + 1..=i + want.len()]
                            .iter()
                            .map(|x| &x.tok)
                            .eq(want.iter())
                    {
                        pending_test = true;
                        i += want.len() + 1;
                        continue;
                    }
                    i += 1;
                }
                Tok::Punct('{') => {
                    depth += 1;
                    pending_test = false;
                    i += 1;
                }
                Tok::Punct('}') => {
                    if inline.last().is_some_and(|m| m.1 == depth) {
                        inline.pop();
                    }
                    depth = depth.saturating_sub(1);
                    i += 1;
                }
                Tok::Punct(';') => {
                    pending_test = false;
                    i += 1;
                }
                Tok::Ident(s) if s == "mod" => {
                    if let (Some(Tok::Ident(name)), Some(Tok::Punct('{'))) =
                        (t.get(i + 1).map(|x| &x.tok), t.get(i + 2).map(|x| &x.tok))
                    {
                        depth += 1;
                        inline.push((name.clone(), depth, pending_test));
                        pending_test = false;
                        i += 3;
                    } else {
                        i += 1;
                    }
                }
                Tok::Ident(s) if s == "use" => {
                    let line = t[i].line;
                    let test = pending_test;
                    let mut j = i + 1;
                    let mut paths = vec![];
                    use_tree(t, &mut j, vec![], &mut paths);
                    for p in paths {
                        push(&p, line, &inline, test);
                    }
                    i = j;
                }
                Tok::Ident(s)
                    if (s == "crate" || s == "super" || s == "astra_bus")
                        && t.get(i + 1).map(|x| &x.tok) == Some(&Tok::Sep) =>
                {
                    let line = t[i].line;
                    let mut segs = vec![s.clone()];
                    let mut j = i + 1;
                    while t.get(j).map(|x| &x.tok) == Some(&Tok::Sep) {
                        match t.get(j + 1).map(|x| &x.tok) {
                            Some(Tok::Ident(n)) => segs.push(n.clone()),
                            _ => break,
                        }
                        j += 2;
                    }
                    push(&segs, line, &inline, false);
                    i = j;
                }
                _ => i += 1,
            }
        }
    }
    out
}

pub(crate) fn graph(imports: &[Import]) -> BTreeMap<String, BTreeMap<String, &Import>> {
    let mut g: BTreeMap<String, BTreeMap<String, &Import>> = BTreeMap::new();
    for imp in imports {
        if imp.from == ROOT {
            continue;
        }
        g.entry(imp.from.clone())
            .or_default()
            .entry(imp.to.clone())
            .or_insert(imp);
    }
    g
}

/// Every elementary cycle's representative: for each strongly connected component with
/// more than one module, one cycle through it.
pub(crate) fn cycles(g: &BTreeMap<String, BTreeMap<String, &Import>>) -> Vec<Vec<String>> {
    // Tarjan's strongly connected components.
    struct St<'a> {
        g: &'a BTreeMap<String, BTreeMap<String, &'a Import>>,
        index: BTreeMap<String, usize>,
        low: BTreeMap<String, usize>,
        stack: Vec<String>,
        on: BTreeSet<String>,
        next: usize,
        sccs: Vec<Vec<String>>,
    }
    fn visit(s: &mut St, v: &str) {
        s.index.insert(v.into(), s.next);
        s.low.insert(v.into(), s.next);
        s.next += 1;
        s.stack.push(v.into());
        s.on.insert(v.into());
        let succ: Vec<String> =
            s.g.get(v)
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default();
        for w in succ {
            if !s.index.contains_key(&w) {
                visit(s, &w);
                let lw = s.low[&w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if s.on.contains(&w) {
                let iw = s.index[&w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut comp = vec![];
            loop {
                let w = s.stack.pop().expect("on stack");
                s.on.remove(&w);
                comp.push(w.clone());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                s.sccs.push(comp);
            }
        }
    }
    let mut s = St {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: vec![],
        on: BTreeSet::new(),
        next: 0,
        sccs: vec![],
    };
    let nodes: Vec<String> = g.keys().cloned().collect();
    for n in &nodes {
        if !s.index.contains_key(n) {
            visit(&mut s, n);
        }
    }
    // One cycle per component: breadth-first from its smallest member back to itself.
    s.sccs
        .iter()
        .map(|comp| {
            let set: BTreeSet<&String> = comp.iter().collect();
            let start = comp.iter().min().expect("non-empty").clone();
            let mut prev: BTreeMap<String, String> = BTreeMap::new();
            let mut queue = std::collections::VecDeque::from([start.clone()]);
            let mut found = None;
            while let Some(v) = queue.pop_front() {
                for w in g.get(&v).map(|m| m.keys()).into_iter().flatten() {
                    if !set.contains(w) {
                        continue;
                    }
                    if *w == start {
                        found = Some(v.clone());
                        break;
                    }
                    if !prev.contains_key(w) {
                        prev.insert(w.clone(), v.clone());
                        queue.push_back(w.clone());
                    }
                }
                if found.is_some() {
                    break;
                }
            }
            let mut back = vec![];
            let mut v = found.expect("a component has a cycle");
            while v != start {
                back.push(v.clone());
                v = prev[&v].clone();
            }
            back.reverse();
            let mut path = vec![start.clone()];
            path.extend(back);
            path.push(start);
            path
        })
        .collect()
}

#[test]
fn the_reader_resolves_groups_super_and_aliases() {
    let file = SourceFile::new;
    let files = vec![
        file("src/lib.rs", "pub mod a; pub mod b;\npub use b::run;"),
        file(
            "src/a/x.rs",
            "use crate::{b::{self, C}, c::D as E};\n// crate::d::ignored\nuse super::y;\n\
             fn f() { let s = \"crate::e::ignored\"; let c = '{'; crate::run(); super::super::f::g(); }\n\
             #[cfg(test)]\nmod tests {\n    use super::super::super::h;\n}\n",
        ),
        file("src/b.rs", "pub fn run() {}"),
    ];
    let got: Vec<(String, String, String, usize, bool)> = imports(&files)
        .into_iter()
        .filter(|i| i.from != ROOT)
        .map(|i| (i.from, i.to, i.item, i.line, i.in_test))
        .collect();
    let want = vec![
        ("a", "b", "self", 1, false),
        ("a", "b", "C", 1, false),
        ("a", "c", "D", 1, false),
        ("a", "b", "", 4, false),
        ("a", "f", "g", 4, false),
        ("a", "h", "", 7, true),
    ];
    let want: Vec<(String, String, String, usize, bool)> = want
        .into_iter()
        .map(|(a, b, c, l, t)| (a.into(), b.into(), c.into(), l, t))
        .collect();
    assert_eq!(got, want);
}
