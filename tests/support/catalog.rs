//! The catalog's tools: `astra-bus catalog`, the official AsyncAPI CLI and Python's
//! `jsonschema` (both installed by `setup/test`).
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use super::{TempDir, bin};

/// `astra-bus catalog --format <format> --config <dir>`, parsed.
pub fn catalog(dir: &Path, format: &str) -> Value {
    let o = Command::new(bin())
        .args([
            "catalog",
            "--format",
            format,
            "--config",
            &dir.to_string_lossy(),
        ])
        .env("ASTRA_LOG", "warn")
        .output()
        .expect("run astra-bus catalog");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).expect("catalog prints JSON")
}

/// `asyncapi validate` of `doc`; warnings fail too. Usage metrics off (their config file
/// in `tmp`, not the home directory).
pub fn asyncapi_validate(tmp: &TempDir, name: &str, doc: &Value) -> (bool, String) {
    let file = tmp.join(name);
    std::fs::write(&file, serde_json::to_vec_pretty(doc).unwrap()).unwrap();
    let metrics = tmp.join("asyncapi-analytics.json");
    std::fs::write(
        &metrics,
        r#"{"analyticsEnabled":"false","infoMessageShown":"true","userID":"astra-bus-test"}"#,
    )
    .unwrap();
    let o: Output = Command::new("asyncapi")
        .args(["validate", &file.to_string_lossy(), "--fail-severity", "warn"])
        .env("ASYNCAPI_METRICS_CONFIG_PATH", &metrics)
        .env("SUPPRESS_NO_CONFIG_WARNING", "1")
        .current_dir(&tmp.path)
        .output()
        .expect("the AsyncAPI CLI (`asyncapi`) is installed by setup/test: npm install -g @asyncapi/cli");
    let text =
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    (o.status.success(), text)
}

/// Runs `check.py <mode>`: `check` checks every schema (draft-07 metaschema); `validate`
/// judges each `(schema name, instance)` job, printing `[ecma, re, error]` per job: the
/// verdict with ECMA-262's `$` (end of input, as JSON Schema specifies), the verdict of
/// Python's `re` as `jsonschema` uses it (`$` also before a final newline), the error.
pub fn python(tmp: &TempDir, mode: &str, schemas: &Value, jobs: &[(String, Value)]) -> Vec<Value> {
    let script = tmp.join("check.py");
    std::fs::write(&script, CHECK_PY).unwrap();
    let s = tmp.join("schemas.json");
    std::fs::write(&s, schemas.to_string()).unwrap();
    let j = tmp.join("jobs.json");
    std::fs::write(&j, serde_json::to_string(jobs).unwrap()).unwrap();
    let o = Command::new("python3")
        .args([&script, &s, &j].map(|p| p.to_string_lossy().into_owned()))
        .arg(mode)
        .output()
        .expect("python3 with jsonschema (setup/test installs it: pip install jsonschema)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

const CHECK_PY: &str = r#"
import json, re, sys
import jsonschema
from jsonschema import Draft7Validator, ValidationError, validators

schemas = json.load(open(sys.argv[1]))
jobs = json.load(open(sys.argv[2]))
if sys.argv[3] == "check":
    for s in schemas.values():
        Draft7Validator.check_schema(s)
    print(json.dumps(list(schemas)))
    sys.exit(0)

def ecma_pattern(validator, pattern, instance, schema):
    # ECMA-262 '$' (no multiline flag) is the end of the input; Python's also matches
    # before a final newline. Every catalog pattern ends with an unescaped '$'.
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"
    if validator.is_type(instance, "string") and not re.search(pattern, instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")

Ecma = validators.extend(Draft7Validator, {"pattern": ecma_pattern})
out = []
for name, instance in jobs:
    s = schemas[name]
    err = jsonschema.exceptions.best_match(Ecma(s).iter_errors(instance))
    out.append([err is None, Draft7Validator(s).is_valid(instance),
                None if err is None else err.message[:200]])
print(json.dumps(out))
"#;
