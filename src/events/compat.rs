//! Whether a stream's next version can be read by the readers of the one before it.
//!
//! A stream evolves by a new name (`….v2` beside `….v1`). Readers written against v1
//! (a consumer group, another application holding v1's exported schema) are safe on v2
//! entries only if every payload v2's schema accepts is one v1's schema accepts too
//! ("forward compatible" in schema-registry terms). [`forward_breaks`] lists each place
//! where that fails, as a JSON pointer into v2's schema and what a v1 reader would see.
//!
//! The check is sound and conservative: when it finds nothing, no v2 payload is refused by
//! v1; it may report a break that a hand proof would dismiss (for example `integer >= 1`
//! against `integer > 0`). Values listed by `enum`/`const` are checked one by one, exactly.

use serde_json::Value;

use super::custom::{CustomSchema, Node};

/// Each place where a payload valid under `new` is refused by `old`, as
/// `"at <pointer into new>: <what>"`. Empty when every `new` payload is an `old` payload.
pub fn forward_breaks(old: &CustomSchema, new: &CustomSchema) -> Vec<String> {
    // A payload is a JSON object whatever the root says (`CustomSchema::check` refuses
    // anything else), so the roots are compared on objects alone: a v2 without a root
    // `type` accepts no more than a v1 with `"type": "object"`.
    let objects = |n: &Node| Node {
        types: Some(vec!["object".to_string()]),
        ..n.clone()
    };
    let mut out = vec![];
    node(&objects(&old.root), &objects(&new.root), "", &mut out);
    out
}

fn at(ptr: &str) -> &str {
    if ptr.is_empty() { "/" } else { ptr }
}

/// The JSON types a node accepts (`None`: every type).
fn accepts(n: &Node, t: &str) -> bool {
    match &n.types {
        None => true,
        Some(ts) => ts
            .iter()
            .any(|w| w == t || (t == "integer" && w == "number")),
    }
}

const ALL_TYPES: &[&str] = &[
    "object", "array", "string", "number", "integer", "boolean", "null",
];

fn node(old: &Node, new: &Node, ptr: &str, out: &mut Vec<String>) {
    // A finite set on the new side: check each value against the old schema, exactly.
    if let Some(values) = &new.allowed {
        for v in values {
            if new.check_value(v).is_err() {
                continue; // v2 refuses it too
            }
            if let Err(p) = old.check_value(v) {
                out.push(format!(
                    "at {}: v2 allows {v}, which v1 refuses ({p})",
                    at(ptr)
                ));
            }
        }
        return;
    }
    if let Some(values) = &old.allowed {
        let shown: Vec<String> = values.iter().map(Value::to_string).collect();
        out.push(format!(
            "at {}: v1 allows only {}, v2 has no enum or const",
            at(ptr),
            shown.join(", ")
        ));
        return;
    }
    // Types: each type v2 accepts must be one v1 accepts ("integer" is within "number").
    let new_types: Vec<&str> = match &new.types {
        None => ALL_TYPES.to_vec(),
        Some(ts) => ts.iter().map(String::as_str).collect(),
    };
    let widened: Vec<&str> = new_types
        .iter()
        .copied()
        .filter(|t| !accepts(old, t))
        .filter(|t| !(*t == "integer" && new_types.contains(&"number")))
        .collect();
    if !widened.is_empty() {
        out.push(format!(
            "at {}: v2 accepts type {}, which v1 refuses (v1: {})",
            at(ptr),
            widened.join(", "),
            old.types.as_ref().map_or("any".into(), |t| t.join(", "))
        ));
    }
    let both = |t: &str| new_types.contains(&t) && accepts(old, t);
    if both("object") {
        object(old, new, ptr, out);
    }
    if both("array") {
        array(old, new, ptr, out);
    }
    if both("string") {
        string(old, new, ptr, out);
    }
    if both("number") || both("integer") {
        numbers(old, new, ptr, out);
    }
}

/// What a node says about one property name: its own schema, the additional one, or none.
enum Prop<'a> {
    Any,
    Forbidden,
    Schema(&'a Node),
}

fn prop<'a>(n: &'a Node, name: Option<&str>) -> Prop<'a> {
    if let Some(name) = name
        && let Some((_, s)) = n.properties.iter().find(|(k, _)| k == name)
    {
        return Prop::Schema(s);
    }
    match &n.additional {
        None => Prop::Any,
        Some(None) => Prop::Forbidden,
        Some(Some(s)) => Prop::Schema(s),
    }
}

fn escape(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

fn object(old: &Node, new: &Node, ptr: &str, out: &mut Vec<String>) {
    for r in &old.required {
        if !new.required.contains(r) {
            out.push(format!(
                "at {}/required: v1 requires {r:?}, v2 does not (a v2 payload without it is refused by v1)",
                ptr
            ));
        }
    }
    let mut names: Vec<&str> = new.properties.iter().map(|(k, _)| k.as_str()).collect();
    for (k, _) in &old.properties {
        if !names.contains(&k.as_str()) {
            names.push(k);
        }
    }
    for name in names {
        let here = if new.properties.iter().any(|(k, _)| k == name) {
            format!("{ptr}/properties/{}", escape(name))
        } else {
            format!("{ptr}/additionalProperties")
        };
        pair(
            prop(old, Some(name)),
            prop(new, Some(name)),
            &here,
            name,
            out,
        );
    }
    // Names neither lists.
    pair(
        prop(old, None),
        prop(new, None),
        &format!("{ptr}/additionalProperties"),
        "",
        out,
    );
}

fn pair(old: Prop, new: Prop, here: &str, name: &str, out: &mut Vec<String>) {
    match (old, new) {
        (_, Prop::Forbidden) | (Prop::Any, _) => {}
        (Prop::Forbidden, _) if name.is_empty() => out.push(format!(
            "at {here}: v2 allows properties v1 does not list; v1 refuses them (additionalProperties: false)"
        )),
        (Prop::Forbidden, _) => out.push(format!(
            "at {here}: v2 allows property {name:?}, which v1 refuses (additionalProperties: false)"
        )),
        (Prop::Schema(_), Prop::Any) => out.push(format!(
            "at {here}: v2 accepts any value{}, v1 constrains it",
            if name.is_empty() {
                " for unlisted properties".to_string()
            } else {
                format!(" for {name:?}")
            }
        )),
        (Prop::Schema(o), Prop::Schema(n)) => node(o, n, here, out),
    }
}

fn array(old: &Node, new: &Node, ptr: &str, out: &mut Vec<String>) {
    lower_count(old.min_items, new.min_items, ptr, "minItems", out);
    upper_count(old.max_items, new.max_items, ptr, "maxItems", out);
    match (&old.items, &new.items) {
        (None, _) => {}
        (Some(_), None) if new.max_items == Some(0) => {}
        (Some(_), None) => out.push(format!(
            "at {}: v2 accepts array items of any kind, v1 constrains them (items)",
            at(ptr)
        )),
        (Some(o), Some(n)) => node(o, n, &format!("{ptr}/items"), out),
    }
}

fn string(old: &Node, new: &Node, ptr: &str, out: &mut Vec<String>) {
    lower_count(old.min_length, new.min_length, ptr, "minLength", out);
    upper_count(old.max_length, new.max_length, ptr, "maxLength", out);
    if let Some(o) = &old.pattern {
        match &new.pattern {
            Some(n) if n.as_str() == o.as_str() => {}
            Some(n) => out.push(format!(
                "at {ptr}/pattern: v2's pattern {:?} differs from v1's {:?} (only an identical pattern is known to accept no more)",
                n.as_str(),
                o.as_str()
            )),
            None => out.push(format!(
                "at {}: v1 requires pattern {:?}, v2 has none",
                at(ptr),
                o.as_str()
            )),
        }
    }
}

fn lower_count(old: Option<u64>, new: Option<u64>, ptr: &str, kw: &str, out: &mut Vec<String>) {
    let (o, n) = (old.unwrap_or(0), new.unwrap_or(0));
    if n < o {
        out.push(format!("at {ptr}/{kw}: v2's {kw} {n} is below v1's {o}"));
    }
}

fn upper_count(old: Option<u64>, new: Option<u64>, ptr: &str, kw: &str, out: &mut Vec<String>) {
    match (old, new) {
        (None, _) => {}
        (Some(o), None) => out.push(format!("at {}: v1 has {kw} {o}, v2 has none", at(ptr))),
        (Some(o), Some(n)) if n > o => {
            out.push(format!("at {ptr}/{kw}: v2's {kw} {n} is above v1's {o}"))
        }
        _ => {}
    }
}

/// A bound on one side: its value and whether the value itself is excluded.
type Bound = Option<(f64, bool)>;

fn tightest(inclusive: Option<f64>, exclusive: Option<f64>, lower: bool) -> Bound {
    match (inclusive, exclusive) {
        (None, None) => None,
        (Some(i), None) => Some((i, false)),
        (None, Some(e)) => Some((e, true)),
        (Some(i), Some(e)) => {
            let e_wins = if lower { e >= i } else { e <= i };
            Some(if e_wins { (e, true) } else { (i, false) })
        }
    }
}

fn show(b: (f64, bool), lower: bool) -> String {
    let op = match (lower, b.1) {
        (true, false) => ">=",
        (true, true) => ">",
        (false, false) => "<=",
        (false, true) => "<",
    };
    format!("{op} {}", b.0)
}

fn numbers(old: &Node, new: &Node, ptr: &str, out: &mut Vec<String>) {
    for lower in [true, false] {
        let (o, n) = if lower {
            (
                tightest(old.minimum, old.exclusive_minimum, true),
                tightest(new.minimum, new.exclusive_minimum, true),
            )
        } else {
            (
                tightest(old.maximum, old.exclusive_maximum, false),
                tightest(new.maximum, new.exclusive_maximum, false),
            )
        };
        let Some(o) = o else { continue };
        let side = if lower { "lower" } else { "upper" };
        match n {
            None => out.push(format!(
                "at {}: v1 requires numbers {}, v2 has no {side} bound",
                at(ptr),
                show(o, lower)
            )),
            Some(n) => {
                let inside = if lower {
                    n.0 > o.0 || (n.0 == o.0 && (n.1 || !o.1))
                } else {
                    n.0 < o.0 || (n.0 == o.0 && (n.1 || !o.1))
                };
                if !inside {
                    out.push(format!(
                        "at {}: v2's {side} bound {} is looser than v1's {}",
                        at(ptr),
                        show(n, lower),
                        show(o, lower)
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn s(v: Value) -> CustomSchema {
        CustomSchema::compile(v).unwrap()
    }

    fn breaks(old: Value, new: Value) -> Vec<String> {
        forward_breaks(&s(old), &s(new))
    }

    fn v1() -> Value {
        json!({
            "type": "object", "additionalProperties": false,
            "required": ["order_id", "amount"],
            "properties": {
                "order_id": {"type": "string", "minLength": 1, "maxLength": 16, "pattern": "^[a-z0-9-]+$"},
                "amount": {"type": "number", "exclusiveMinimum": 0, "maximum": 1000},
                "currency": {"enum": ["EUR", "USD"]},
                "lines": {"type": "array", "maxItems": 10, "items": {"type": "object", "required": ["sku"],
                          "properties": {"sku": {"type": "string"}, "qty": {"type": "integer", "minimum": 1}}}},
                "note": {"type": ["string", "null"]}
            }
        })
    }

    #[test]
    fn a_schema_is_compatible_with_itself_and_with_a_narrowing() {
        assert_eq!(breaks(v1(), v1()), Vec::<String>::new());
        let mut narrower = v1();
        narrower["required"] = json!(["order_id", "amount", "currency"]);
        narrower["properties"]["currency"] = json!({"const": "EUR"});
        narrower["properties"]["amount"] = json!({"type": "integer", "minimum": 1, "maximum": 500});
        narrower["properties"]["note"] = json!({"type": "null"});
        narrower["properties"]["lines"]["maxItems"] = json!(3);
        narrower["properties"]["order_id"]["maxLength"] = json!(8);
        narrower["properties"]
            .as_object_mut()
            .unwrap()
            .remove("lines");
        assert_eq!(breaks(v1(), narrower), Vec::<String>::new());
        // Anything is compatible with an open v1.
        assert!(breaks(json!({}), v1()).is_empty());
        // Payloads are objects: a root without `type` is no wider than `"type": "object"`.
        let mut untyped = v1();
        untyped.as_object_mut().unwrap().remove("type");
        assert_eq!(breaks(v1(), untyped.clone()), Vec::<String>::new());
        assert_eq!(breaks(untyped, v1()), Vec::<String>::new());
    }

    type Patch = Box<dyn Fn(&mut Value)>;

    #[test]
    fn each_widening_is_named_at_its_place_in_v2() {
        let cases: Vec<(&str, Patch)> = vec![
            (
                "at /properties/extra: v2 allows property \"extra\"",
                Box::new(|v| {
                    v["properties"]["extra"] = json!({"type": "string"});
                }),
            ),
            (
                "at /additionalProperties: v2 allows properties v1 does not list",
                Box::new(|v| {
                    v["additionalProperties"] = json!(true);
                }),
            ),
            (
                "at /required: v1 requires \"amount\"",
                Box::new(|v| {
                    v["required"] = json!(["order_id"]);
                }),
            ),
            (
                "at /properties/currency: v2 allows \"GBP\", which v1 refuses",
                Box::new(|v| {
                    v["properties"]["currency"] = json!({"enum": ["EUR", "GBP"]});
                }),
            ),
            (
                "at /properties/amount: v2 accepts type string",
                Box::new(|v| {
                    v["properties"]["amount"]["type"] = json!(["number", "string"]);
                }),
            ),
            (
                "at /properties/amount: v2's lower bound >= 0 is looser than v1's > 0",
                Box::new(|v| {
                    v["properties"]["amount"] =
                        json!({"type": "number", "minimum": 0, "maximum": 1000});
                }),
            ),
            (
                "at /properties/amount: v1 requires numbers <= 1000, v2 has no upper bound",
                Box::new(|v| {
                    v["properties"]["amount"] = json!({"type": "number", "exclusiveMinimum": 0});
                }),
            ),
            (
                "at /properties/order_id/maxLength: v2's maxLength 32 is above v1's 16",
                Box::new(|v| {
                    v["properties"]["order_id"]["maxLength"] = json!(32);
                }),
            ),
            (
                "at /properties/order_id/pattern: v2's pattern",
                Box::new(|v| {
                    v["properties"]["order_id"]["pattern"] = json!("^[a-z0-9_-]+$");
                }),
            ),
            (
                "at /properties/lines/items/properties/qty: v2 accepts type number",
                Box::new(|v| {
                    v["properties"]["lines"]["items"]["properties"]["qty"]["type"] =
                        json!("number");
                }),
            ),
            (
                "at /properties/lines/items/required: v1 requires \"sku\"",
                Box::new(|v| {
                    v["properties"]["lines"]["items"]["required"] = json!([]);
                }),
            ),
            (
                "at /properties/lines: v1 has maxItems 10, v2 has none",
                Box::new(|v| {
                    v["properties"]["lines"]
                        .as_object_mut()
                        .unwrap()
                        .remove("maxItems");
                }),
            ),
            (
                "at /properties/note: v2 accepts type object, array, number, boolean, which v1 refuses",
                Box::new(|v| {
                    v["properties"]["note"] = json!({});
                }),
            ),
        ];
        for (want, patch) in cases {
            let mut new = v1();
            patch(&mut new);
            let got = breaks(v1(), new.clone());
            assert!(
                got.iter().any(|b| b.starts_with(want)),
                "{want}\n got {got:?}\n for {new}"
            );
        }
        let typed_extras = json!({"additionalProperties": {"type": "string"}});
        assert_eq!(
            breaks(typed_extras.clone(), json!({})),
            [
                "at /additionalProperties: v2 accepts any value for unlisted properties, v1 constrains it"
            ]
        );
        assert_eq!(
            breaks(
                typed_extras,
                json!({"properties": {"x": {"type": "string", "maxLength": 3}}, "additionalProperties": false})
            ),
            Vec::<String>::new()
        );
    }

    #[test]
    fn every_reported_break_has_a_witness_and_none_is_missed_on_samples() {
        // Soundness on samples: when no break is reported, no sample that v2 accepts is
        // refused by v1.
        let samples = [
            json!({"order_id": "a", "amount": 1}),
            json!({"order_id": "a", "amount": 0.5, "currency": "EUR", "note": null}),
            json!({"order_id": "a", "amount": 1000, "lines": [{"sku": "x", "qty": 2}]}),
            json!({"order_id": "a", "amount": 1, "lines": [{"sku": "x", "qty": 0}]}),
            json!({"order_id": "A", "amount": 1}),
            json!({"order_id": "a", "amount": 0}),
            json!({"order_id": "a", "amount": 1, "extra": 1}),
            json!({"order_id": "a"}),
        ];
        let mut open = v1();
        open["additionalProperties"] = json!(true);
        open["properties"]["amount"] = json!({"type": "number"});
        for new in [v1(), open] {
            let (o, n) = (s(v1()), s(new));
            let b = forward_breaks(&o, &n);
            let refused: Vec<&Value> = samples
                .iter()
                .filter(|x| n.check(x).is_ok() && o.check(x).is_err())
                .collect();
            assert_eq!(b.is_empty(), refused.is_empty(), "{b:?} {refused:?}");
        }
    }
}
