//! JSON Schemas a stream declares itself (`schema = "schemas/x.json"` in `streams.toml`):
//! checked once when the config loads ([`CustomSchema::compile`]: a keyword outside the
//! subset below is an error naming its place), then enforced by the edge and
//! `astra-bus publish` on every payload ([`CustomSchema::check`]: the first violation,
//! naming the field), and exported by the catalog as written.
//!
//! The subset (draft-07 meaning, which 2020-12 shares for these keywords):
//!
//! | keywords | on |
//! |---|---|
//! | `type` (a name or a list: `object`, `array`, `string`, `number`, `integer`, `boolean`, `null`), `enum`, `const` | any value |
//! | `properties`, `required`, `additionalProperties` (`true`, `false` or a schema) | objects |
//! | `items` (one schema), `minItems`, `maxItems` | arrays |
//! | `minLength`, `maxLength` (characters), `pattern` (Rust `regex` syntax, unanchored: no look-around or back-references; `\d` and `\w` are Unicode) | strings |
//! | `minimum`, `maximum`, `exclusiveMinimum`, `exclusiveMaximum` (numbers, draft-07) | numbers |
//! | `$schema`, `$id`, `$comment`, `title`, `description`, `default`, `examples`, `deprecated`, `readOnly`, `writeOnly` | annotations, ignored |
//!
//! Anything else (`$ref`, `oneOf`, `if`, `format`, …) is refused rather than ignored, so
//! a schema never promises a check the edge does not make. Bounds: files up to 1 MiB,
//! nesting up to 32 levels, each pattern's compiled program up to 1 MiB.

use serde_json::{Map, Value};

use super::schema::Problem;

/// Largest schema file read.
pub const MAX_FILE_BYTES: usize = 1 << 20;
const MAX_DEPTH: usize = 32;

const ANNOTATIONS: &[&str] = &[
    "$schema",
    "$id",
    "$comment",
    "title",
    "description",
    "default",
    "examples",
    "deprecated",
    "readOnly",
    "writeOnly",
];
const TYPES: &[&str] = &[
    "object", "array", "string", "number", "integer", "boolean", "null",
];

#[derive(Debug, Clone, Default)]
pub(super) struct Node {
    pub(super) types: Option<Vec<String>>,
    pub(super) allowed: Option<Vec<Value>>,
    pub(super) properties: Vec<(String, Node)>,
    pub(super) required: Vec<String>,
    /// `None`: any further property; `Some(None)`: none; `Some(Some(n))`: each matches `n`.
    pub(super) additional: Option<Option<Box<Node>>>,
    pub(super) items: Option<Box<Node>>,
    pub(super) min_items: Option<u64>,
    pub(super) max_items: Option<u64>,
    pub(super) min_length: Option<u64>,
    pub(super) max_length: Option<u64>,
    pub(super) pattern: Option<regex::Regex>,
    pub(super) minimum: Option<f64>,
    pub(super) maximum: Option<f64>,
    pub(super) exclusive_minimum: Option<f64>,
    pub(super) exclusive_maximum: Option<f64>,
}

/// A compiled stream schema and its source (what the catalog exports).
#[derive(Debug, Clone)]
pub struct CustomSchema {
    /// The schema as written.
    pub source: Value,
    pub(super) root: Node,
}

impl PartialEq for CustomSchema {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for CustomSchema {}

/// Why a schema file is refused: where in it (a JSON pointer) and what.
fn at(ptr: &str, msg: impl std::fmt::Display) -> String {
    format!("at {}: {msg}", if ptr.is_empty() { "/" } else { ptr })
}

fn count(ptr: &str, k: &str, v: &Value) -> Result<u64, String> {
    v.as_u64()
        .ok_or_else(|| at(&format!("{ptr}/{k}"), "must be a non-negative integer"))
}

fn number(ptr: &str, k: &str, v: &Value) -> Result<f64, String> {
    v.as_f64().ok_or_else(|| {
        at(
            &format!("{ptr}/{k}"),
            "must be a number (draft-07; a boolean exclusiveMinimum/Maximum is draft-04's)",
        )
    })
}

fn compile_node(v: &Value, ptr: &str, depth: usize) -> Result<Node, String> {
    if depth > MAX_DEPTH {
        return Err(at(ptr, format!("nested deeper than {MAX_DEPTH} levels")));
    }
    let Some(obj) = v.as_object() else {
        return Err(at(ptr, "a schema must be a JSON object"));
    };
    let mut n = Node::default();
    for (k, val) in obj {
        let here = format!("{ptr}/{k}");
        match k.as_str() {
            k if ANNOTATIONS.contains(&k) => {}
            "type" => {
                let names: Vec<&Value> = match val {
                    Value::Array(a) => a.iter().collect(),
                    v => vec![v],
                };
                let mut types = vec![];
                for t in names {
                    match t.as_str() {
                        Some(t) if TYPES.contains(&t) => types.push(t.to_string()),
                        _ => {
                            return Err(at(
                                &here,
                                format!("unknown type {t} (known: {})", TYPES.join(", ")),
                            ));
                        }
                    }
                }
                n.types = Some(types);
            }
            "enum" => match val {
                Value::Array(a) if !a.is_empty() => n.allowed = Some(a.clone()),
                _ => return Err(at(&here, "must be a non-empty array")),
            },
            "const" => n.allowed = Some(vec![val.clone()]),
            "properties" => {
                let Some(ps) = val.as_object() else {
                    return Err(at(&here, "must be an object of schemas"));
                };
                for (name, s) in ps {
                    let p = format!("{here}/{}", name.replace('~', "~0").replace('/', "~1"));
                    n.properties
                        .push((name.clone(), compile_node(s, &p, depth + 1)?));
                }
            }
            "required" => {
                let names = val.as_array().and_then(|a| {
                    a.iter()
                        .map(|s| s.as_str().map(str::to_string))
                        .collect::<Option<Vec<_>>>()
                });
                n.required =
                    names.ok_or_else(|| at(&here, "must be an array of property names"))?;
            }
            "additionalProperties" => {
                n.additional = match val {
                    Value::Bool(true) => None,
                    Value::Bool(false) => Some(None),
                    s => Some(Some(Box::new(compile_node(s, &here, depth + 1)?))),
                };
            }
            "items" => n.items = Some(Box::new(compile_node(val, &here, depth + 1)?)),
            "minItems" => n.min_items = Some(count(ptr, k, val)?),
            "maxItems" => n.max_items = Some(count(ptr, k, val)?),
            "minLength" => n.min_length = Some(count(ptr, k, val)?),
            "maxLength" => n.max_length = Some(count(ptr, k, val)?),
            "pattern" => {
                let p = val.as_str().ok_or_else(|| at(&here, "must be a string"))?;
                let re = regex::RegexBuilder::new(p)
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|e| at(&here, format!("not a pattern this binary can run: {e}")))?;
                n.pattern = Some(re);
            }
            "minimum" => n.minimum = Some(number(ptr, k, val)?),
            "maximum" => n.maximum = Some(number(ptr, k, val)?),
            "exclusiveMinimum" => n.exclusive_minimum = Some(number(ptr, k, val)?),
            "exclusiveMaximum" => n.exclusive_maximum = Some(number(ptr, k, val)?),
            other => {
                return Err(at(
                    &here,
                    format!(
                        "keyword {other:?} is not in the subset astra-bus enforces (see the README)"
                    ),
                ));
            }
        }
    }
    Ok(n)
}

fn type_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn is_integer(v: &Value) -> bool {
    v.as_i64().is_some() || v.as_u64().is_some() || v.as_f64().is_some_and(|x| x.fract() == 0.0)
}

/// JSON Schema equality: numbers by value (`1` equals `1.0`).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn fail(path: &str, message: String) -> Problem {
    Problem {
        field: (!path.is_empty()).then(|| path.to_string()),
        message,
    }
}

impl Node {
    /// The first violation of this node by `v` (fields named from the node down).
    pub(super) fn check_value(&self, v: &Value) -> Result<(), Problem> {
        self.check(v, "")
    }

    fn check(&self, v: &Value, path: &str) -> Result<(), Problem> {
        if let Some(types) = &self.types {
            let t = type_of(v);
            let ok = types.iter().any(|w| {
                w == t
                    || (w == "integer" && t == "number" && is_integer(v))
                    || (w == "number" && t == "number")
            });
            if !ok {
                return Err(fail(
                    path,
                    format!("must be {}, got {t}", types.join(" or ")),
                ));
            }
        }
        if let Some(allowed) = &self.allowed
            && !allowed.iter().any(|a| same(a, v))
        {
            let shown: Vec<String> = allowed.iter().map(Value::to_string).collect();
            return Err(fail(path, format!("must be one of {}", shown.join(", "))));
        }
        match v {
            Value::Object(m) => self.check_object(m, path),
            Value::Array(a) => {
                let n = a.len() as u64;
                if self.min_items.is_some_and(|m| n < m) || self.max_items.is_some_and(|m| n > m) {
                    return Err(fail(
                        path,
                        format!(
                            "{n} items, outside [{}, {}]",
                            self.min_items.unwrap_or(0),
                            self.max_items.map_or("∞".into(), |m| m.to_string())
                        ),
                    ));
                }
                match &self.items {
                    Some(items) => a
                        .iter()
                        .enumerate()
                        .try_for_each(|(i, x)| items.check(x, &join(path, &i.to_string()))),
                    None => Ok(()),
                }
            }
            Value::String(s) => {
                // Count up to the bound + 1 characters only.
                let cap = self.max_length.map_or(usize::MAX, |m| m as usize + 1);
                let n = s.chars().take(cap).count() as u64;
                if self.min_length.is_some_and(|m| n < m) || self.max_length.is_some_and(|m| n > m)
                {
                    return Err(fail(
                        path,
                        format!(
                            "must be {}-{} characters",
                            self.min_length.unwrap_or(0),
                            self.max_length.map_or("∞".into(), |m| m.to_string())
                        ),
                    ));
                }
                match &self.pattern {
                    Some(re) if !re.is_match(s) => {
                        Err(fail(path, format!("must match {}", re.as_str())))
                    }
                    _ => Ok(()),
                }
            }
            Value::Number(x) => {
                let x = x.as_f64().unwrap_or(f64::INFINITY);
                let bad = self.minimum.is_some_and(|m| x < m)
                    || self.maximum.is_some_and(|m| x > m)
                    || self.exclusive_minimum.is_some_and(|m| x <= m)
                    || self.exclusive_maximum.is_some_and(|m| x >= m);
                if bad {
                    let b: Vec<String> = [
                        (">=", self.minimum),
                        (">", self.exclusive_minimum),
                        ("<=", self.maximum),
                        ("<", self.exclusive_maximum),
                    ]
                    .iter()
                    .filter_map(|(op, m)| m.map(|m| format!("{op} {m}")))
                    .collect();
                    return Err(fail(path, format!("must be {}, got {x}", b.join(" and "))));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn check_object(&self, m: &Map<String, Value>, path: &str) -> Result<(), Problem> {
        if let Some(r) = self.required.iter().find(|r| !m.contains_key(*r)) {
            return Err(fail(&join(path, r), "missing (required)".into()));
        }
        for (k, v) in m {
            let p = join(path, k);
            match self.properties.iter().find(|(n, _)| n == k) {
                Some((_, s)) => s.check(v, &p)?,
                None => match &self.additional {
                    Some(None) => {
                        let known: Vec<&str> =
                            self.properties.iter().map(|(n, _)| n.as_str()).collect();
                        return Err(fail(
                            &p,
                            format!("unknown field (known: {})", known.join(", ")),
                        ));
                    }
                    Some(Some(s)) => s.check(v, &p)?,
                    None => {}
                },
            }
        }
        Ok(())
    }
}

impl CustomSchema {
    /// Checks that `source` uses only the supported subset, and prepares it. The error
    /// names the place (a JSON pointer into the schema) and what is wrong.
    pub fn compile(source: Value) -> Result<CustomSchema, String> {
        let root = compile_node(&source, "", 0)?;
        if root
            .types
            .as_ref()
            .is_some_and(|t| !t.iter().any(|t| t == "object"))
        {
            return Err(at(
                "/type",
                "a payload schema must allow type object (payloads are JSON objects)",
            ));
        }
        if root.allowed.is_some() {
            return Err(at(
                "/",
                "a payload schema's root may not be an enum or const",
            ));
        }
        Ok(CustomSchema { source, root })
    }

    /// Reads and compiles a schema file's text (a JSON syntax error names its line and
    /// column).
    pub fn parse(text: &str) -> Result<CustomSchema, String> {
        if text.len() > MAX_FILE_BYTES {
            return Err(format!("{} bytes, at most {MAX_FILE_BYTES}", text.len()));
        }
        let v: Value = serde_json::from_str(text)
            .map_err(|e| format!("not JSON (line {}, column {}): {e}", e.line(), e.column()))?;
        Self::compile(v)
    }

    /// The first violation of the schema by `v`, naming the field (dotted path; array
    /// items by index) when one is to blame.
    pub fn check(&self, v: &Value) -> Result<(), Problem> {
        match v {
            Value::Object(m) => self.check_object(m),
            _ => Err(fail("", "payload must be a JSON object".into())),
        }
    }

    /// [`CustomSchema::check`] of an object.
    pub fn check_object(&self, m: &Map<String, Value>) -> Result<(), Problem> {
        // The root allows objects and is no enum (compile checked both).
        self.root.check_object(m, "")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn order() -> CustomSchema {
        CustomSchema::compile(json!({
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object", "additionalProperties": false,
            "required": ["order_id", "amount", "lines"],
            "properties": {
                "order_id": {"type": "string", "minLength": 1, "maxLength": 8, "pattern": "^[a-z0-9-]+$"},
                "amount": {"type": "number", "exclusiveMinimum": 0, "maximum": 1000},
                "currency": {"enum": ["EUR", "USD"]},
                "lines": {"type": "array", "minItems": 1, "items": {"type": "object", "required": ["sku"],
                          "properties": {"sku": {"type": "string"}, "qty": {"type": "integer", "minimum": 1}}}},
                "note": {"type": ["string", "null"]}
            }
        }))
        .unwrap()
    }

    #[test]
    fn payloads_are_checked_and_the_field_named() {
        let s = order();
        let ok = json!({"order_id": "o-1", "amount": 5, "lines": [{"sku": "a", "qty": 2.0}], "note": null});
        s.check(&ok).unwrap();
        for (field, patch) in [
            ("order_id", json!({"order_id": "O 1"})),
            ("order_id", json!({"order_id": "123456789"})),
            ("amount", json!({"amount": 0})),
            ("amount", json!({"amount": "5"})),
            ("currency", json!({"currency": "GBP"})),
            ("lines", json!({"lines": []})),
            ("lines.0.qty", json!({"lines": [{"sku": "a", "qty": 1.5}]})),
            ("lines.0.sku", json!({"lines": [{"qty": 1}]})),
            ("extra", json!({"extra": 1})),
        ] {
            let mut v = ok.clone();
            for (k, x) in patch.as_object().unwrap() {
                v[k] = x.clone();
            }
            let p = s.check(&v).unwrap_err();
            assert_eq!(p.field.as_deref(), Some(field), "{patch}: {p}");
        }
        let mut v = ok.clone();
        v.as_object_mut().unwrap().remove("amount");
        assert_eq!(s.check(&v).unwrap_err().field.as_deref(), Some("amount"));
        assert!(s.check(&json!([1])).unwrap_err().field.is_none());
    }

    #[test]
    fn schemas_outside_the_subset_are_refused_with_their_place() {
        for (schema, place) in [
            (
                json!({"properties": {"a": {"oneOf": []}}}),
                "/properties/a/oneOf",
            ),
            (
                json!({"properties": {"a": {"type": "text"}}}),
                "/properties/a/type",
            ),
            (
                json!({"properties": {"a": {"pattern": "(?=x)"}}}),
                "/properties/a/pattern",
            ),
            (
                json!({"properties": {"a": {"exclusiveMinimum": true}}}),
                "/properties/a/exclusiveMinimum",
            ),
            (json!({"$ref": "#/x"}), "/$ref"),
            (json!({"type": "string"}), "/type"),
            (json!([1]), "/"),
        ] {
            let e = CustomSchema::compile(schema.clone()).unwrap_err();
            assert!(e.starts_with(&format!("at {place}: ")), "{schema}: {e}");
        }
        let e = CustomSchema::parse("{\n  \"type\": \"object\",,\n}").unwrap_err();
        assert!(e.starts_with("not JSON (line 2,"), "{e}");
        let deep = (0..40).fold(json!({}), |s, _| json!({"items": s}));
        assert!(CustomSchema::compile(deep).unwrap_err().contains("deeper"));
    }
}
