//! Lua that runs inside Redis, as Redis Functions an admin loaded (never EVAL).
//!
//! Every [`Script`] of the crate becomes one function of a single library,
//! `astra_<version>`, where the version is a digest of every script's name and body: a
//! binary with other scripts needs (and notices) another library, and two binaries of
//! different versions can run side by side during an upgrade, each calling its own
//! functions (`<name>_<version>`). A body keeps its `#!lua` shebang in its file; the loader
//! wraps it as `function(KEYS, ARGV) <body> end` (so `KEYS`/`ARGV` mean what they mean under
//! EVAL) and turns shebang `flags=` into the function's flags. Nothing here cares what a
//! body contains.
//!
//! Why Functions: with EVAL/EVALSHA (and SCRIPT LOAD) any user allowed to run our scripts
//! can run any Lua, e.g. a loop that leaves Redis BUSY. FCALL runs only code an admin
//! loaded with FUNCTION LOAD, which the daemon's users are not granted. Commands inside a
//! function are still checked against the caller's ACL, so calling one of our functions
//! gives a user nothing it could not do with its own commands.
//!
//! Who loads: `astra-bus declare` (and a daemon whose user may, e.g. a development Redis
//! without ACLs) runs [`ensure`], which loads the library on every master (Redis Cluster:
//! each master has its own functions) where it is missing. A user without `FUNCTION
//! LOAD` gets [`BusError::Functions`], which names the library and the fix.

use std::sync::OnceLock;

use sha2::{Digest, Sha256};

use super::client::{BusError, Redis, Value, arg, as_array, as_pairs, as_string};

/// A Lua body run as a Redis function.
pub struct Script {
    name: &'static str,
    source: &'static str,
}

impl Script {
    /// Declares a script. `source` must begin with a `#!lua` shebang (`#!lua flags=...`
    /// becomes the function's flags). Add it to [`all`] so the library contains it.
    pub const fn new(name: &'static str, source: &'static str) -> Script {
        Script { name, source }
    }

    /// The script's name, for errors and metrics.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The name of its function in this binary's library.
    pub fn function(&self) -> String {
        format!("{}_{}", self.name, library().version)
    }

    /// Runs the script with FCALL. When Redis does not know the function (restarted
    /// without persistence, or never loaded) the library is loaded if this user may, and
    /// the call is repeated once; otherwise the error says how to load it.
    pub async fn call(
        &self,
        redis: &Redis,
        keys: Vec<Value>,
        args: Vec<Value>,
    ) -> Result<Value, BusError> {
        let f = self.function();
        match redis.cmd("FCALL", fcall_args(&f, &keys, &args)).await {
            Err(BusError::Command(msg)) if msg.contains("Function not found") => {
                ensure(redis).await?;
                redis.cmd("FCALL", fcall_args(&f, &keys, &args)).await
            }
            other => other,
        }
    }
}

/// Every script the crate runs, in one list: the library is built from it. (A unit test
/// fails when a `Script::new` in `src/bus` is missing here.)
pub fn all() -> [&'static Script; 9] {
    [
        &super::commit::COMMIT,
        &super::commit::COMMIT_SLOT,
        &super::deadletter::DEAD_LETTER,
        &super::deadletter::ACK_IF_OURS,
        &super::declare::ENSURE_STREAM,
        &super::reclaim::DELETE_IDLE_CONSUMER,
        &super::audit::SNAPSHOT,
        &super::idempotent::SCRIPT,
        &super::ratelimit::SCRIPT,
    ]
}

/// The function library of this binary.
pub struct Library {
    /// `astra_<version>`.
    pub name: String,
    /// Digest of every script's name and body (16 hex digits).
    pub version: String,
    /// The code for `FUNCTION LOAD`.
    pub code: String,
}

/// This binary's library (built once).
pub fn library() -> &'static Library {
    static LIB: OnceLock<Library> = OnceLock::new();
    LIB.get_or_init(|| build(&all()))
}

fn build(scripts: &[&Script]) -> Library {
    let mut h = Sha256::new();
    for s in scripts {
        h.update(s.name.as_bytes());
        h.update([0]);
        h.update(s.source.as_bytes());
        h.update([0]);
    }
    let version = crate::config::hex(&h.finalize()[..8]);
    let name = format!("astra_{version}");
    let mut code = format!("#!lua name={name}\n");
    for s in scripts {
        let (flags, body) = split_shebang(s.source);
        let flags: Vec<String> = flags.iter().map(|f| format!("'{f}'")).collect();
        code.push_str(&format!(
            "redis.register_function{{function_name='{}_{version}', flags={{{}}}, callback=function(KEYS, ARGV)\n{body}\nend}}\n",
            s.name,
            flags.join(", "),
        ));
    }
    Library {
        name,
        version,
        code,
    }
}

/// `#!lua flags=a,b\n<body>` → (`[a, b]`, body).
fn split_shebang(source: &str) -> (Vec<&str>, &str) {
    let (first, body) = source.split_once('\n').unwrap_or((source, ""));
    let Some(rest) = first.strip_prefix("#!lua") else {
        // Not a shebang line: the whole source is the body.
        return (vec![], source);
    };
    let flags = rest
        .split_whitespace()
        .find_map(|w| w.strip_prefix("flags="))
        .map(|f| f.split(',').filter(|x| !x.is_empty()).collect())
        .unwrap_or_default();
    (flags, body)
}

/// `<function> <numkeys> <keys...> <args...>`.
fn fcall_args(function: &str, keys: &[Value], args: &[Value]) -> Vec<Value> {
    let mut full = Vec::with_capacity(keys.len() + args.len() + 2);
    full.push(arg(function));
    full.push(arg(keys.len() as i64));
    full.extend_from_slice(keys);
    full.extend_from_slice(args);
    full
}

/// What [`ensure`] found and did, per master.
#[derive(Debug, Default, Clone)]
pub struct LibraryReport {
    /// This binary's library.
    pub name: String,
    /// Masters where it was loaded now.
    pub loaded: Vec<String>,
    /// Masters where it already was.
    pub present: Vec<String>,
    /// Other `astra_*` libraries found (older or newer binaries'); left alone.
    pub others: Vec<String>,
}

/// Library names in a FUNCTION LIST reply.
fn library_names(v: Value) -> Vec<String> {
    as_array(v)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|lib| {
            as_pairs(lib)
                .into_iter()
                .find(|(k, _)| k == "library_name")
                .and_then(|(_, v)| as_string(&v))
        })
        .collect()
}

/// Makes sure every master has this binary's library: lists the `astra_*` libraries on
/// each and loads ours where it is missing. Other versions are reported, never deleted
/// (a binary of that version may still be running).
pub async fn ensure(redis: &Redis) -> Result<LibraryReport, BusError> {
    let lib = library();
    let mut report = LibraryReport {
        name: lib.name.clone(),
        ..Default::default()
    };
    let listed = redis
        .on_every_primary(
            "FUNCTION",
            vec![arg("LIST"), arg("LIBRARYNAME"), arg("astra_*")],
        )
        .await?;
    let mut missing = vec![];
    for (node, reply) in listed {
        match reply {
            Ok(v) => {
                let names = library_names(v);
                for n in &names {
                    if *n != lib.name && !report.others.contains(n) {
                        report.others.push(n.clone());
                    }
                }
                if names.contains(&lib.name) {
                    report.present.push(node);
                } else {
                    missing.push(node);
                }
            }
            // A user that may not list may still call: let the load attempt tell.
            Err(BusError::Command(m)) if m.starts_with("NOPERM") => missing.push(node),
            Err(e) => return Err(e),
        }
    }
    if missing.is_empty() {
        return Ok(report);
    }
    let loads = redis
        .on_every_primary(
            "FUNCTION",
            vec![arg("LOAD"), arg("REPLACE"), arg(lib.code.as_str())],
        )
        .await?;
    for (node, reply) in loads {
        match reply {
            Ok(_) => {
                if missing.contains(&node) {
                    report.loaded.push(node);
                }
            }
            Err(BusError::Command(m)) if m.starts_with("NOPERM") => {
                if report.present.contains(&node) {
                    continue;
                }
                let found = if report.others.is_empty() {
                    "no astra library".to_string()
                } else {
                    format!("only {}", report.others.join(", "))
                };
                return Err(BusError::Functions(format!(
                    "the Redis function library {} (this binary's scripts) is not loaded on {node} \
                     ({found} there), and this Redis user may not load it ({m}). Load it once as an \
                     admin: `astra-bus declare` with a user allowed FUNCTION LOAD (astra-admin in \
                     setup/redis-users.acl), or `astra-bus functions | redis-cli -x FUNCTION LOAD \
                     REPLACE` on every master",
                    lib.name
                )));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shebang_flags_become_function_flags() {
        assert_eq!(
            split_shebang("#!lua flags=no-writes,allow-oom\nreturn 1"),
            (vec!["no-writes", "allow-oom"], "return 1")
        );
        assert_eq!(split_shebang("#!lua\nreturn 1"), (vec![], "return 1"));
        let s = Script::new("x", "#!lua flags=no-writes\nreturn KEYS[1]");
        let lib = build(&[&s]);
        assert!(
            lib.code
                .starts_with(&format!("#!lua name=astra_{}\n", lib.version))
        );
        assert!(lib.code.contains(&format!(
            "function_name='x_{}', flags={{'no-writes'}}, callback=function(KEYS, ARGV)\nreturn KEYS[1]\nend}}",
            lib.version
        )));
    }

    #[test]
    fn the_version_follows_every_body() {
        let a = Script::new("a", "#!lua\nreturn 1");
        let b = Script::new("a", "#!lua\nreturn 2");
        assert_ne!(build(&[&a]).version, build(&[&b]).version);
        assert_eq!(build(&[&a]).version, build(&[&a]).version);
    }

    #[test]
    fn every_script_of_the_crate_is_in_the_library() {
        // Count `Script::new(` in src/bus (this file's own mentions excluded): a script
        // declared but not listed in `all()` would be missing from the library.
        fn count(dir: &std::path::Path) -> usize {
            let mut declared = 0;
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    declared += count(&p);
                } else if p.extension().is_some_and(|x| x == "rs") && !p.ends_with("script.rs") {
                    declared += std::fs::read_to_string(&p)
                        .unwrap()
                        .matches("Script::new(")
                        .count();
                }
            }
            declared
        }
        let declared = count(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/bus"));
        assert_eq!(declared, all().len(), "add every Script to script::all()");
        let names: std::collections::BTreeSet<&str> = all().iter().map(|s| s.name).collect();
        assert_eq!(names.len(), all().len(), "script names are unique");
    }
}
