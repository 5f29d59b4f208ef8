//! The contract of the five public payloads, in one table per stream: what the edge
//! accepts, what consumers accept, and the JSON Schema both are documented by
//! ([`Payload::json_schema`], exported by [`crate::catalog`] to `/asyncapi.json`,
//! `astra-bus catalog` and `/openapi.json`).
//!
//! Bounds, and why: every string becomes part of a Redis key, a sorted-set member or a log
//! line, so ids are short and drawn from a key-safe set (`A–Z a–z 0–9 . _ : @ -`, no
//! braces: a `{` would move a key to another cluster slot); human text is short and has no
//! control characters; amounts are finite, positive where zero makes no sense, and bounded
//! so every product the handlers take (quantity × price, in cents) fits an `i64`
//! (10^6 × 10^6 USD = 10^14 cents).
//!
//! Cost: [`Payload::parse`] walks the JSON once (serde's streaming deserializer), stops at
//! the first unknown field, mistyped value or bound violation, and names it; it never
//! re-parses, so validation is linear in the body whatever the body holds.

use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde_json::{Map, Value, json};

use super::streams;

/// What a field holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// An identifier: 1 to `n` of `A–Z a–z 0–9 . _ : @ -`.
    Id(usize),
    /// A ticker symbol: 1 to `n` of `A–Z a–z 0–9 . _ / -`.
    Symbol(usize),
    /// Human text: 1 to `n` characters, no control characters.
    Text(usize),
    /// One of these strings.
    Enum(&'static [&'static str]),
    /// A finite number in `(min, max]` (`exclusive_min`) or `[min, max]`.
    Number {
        min: f64,
        exclusive_min: bool,
        max: f64,
    },
}

/// One field of a payload.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    /// JSON name.
    pub name: &'static str,
    /// What it holds.
    pub kind: Kind,
    /// Whether it must be present.
    pub required: bool,
    /// One line for the schema's description.
    pub doc: &'static str,
}

/// A public payload: its stream and fields.
#[derive(Debug)]
pub struct Payload {
    /// The stream it is published to.
    pub stream: &'static str,
    /// Its fields.
    pub fields: &'static [Field],
    /// The field naming the user who acts (bound to a key's fixed user at the edge).
    pub actor: &'static str,
}

/// A validation failure: the field (when one is to blame) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The field.
    pub field: Option<String>,
    /// What is wrong and what is expected.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(x) => write!(f, "{x}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl Problem {
    fn at(field: &str, message: impl Into<String>) -> Problem {
        Problem {
            field: Some(field.to_string()),
            message: message.into(),
        }
    }
}

const ID: Kind = Kind::Id(128);
const USD: f64 = 1e6;

const fn req(name: &'static str, kind: Kind, doc: &'static str) -> Field {
    Field {
        name,
        kind,
        required: true,
        doc,
    }
}

const fn opt(name: &'static str, kind: Kind, doc: &'static str) -> Field {
    Field {
        name,
        kind,
        required: false,
        doc,
    }
}

const fn positive(max: f64) -> Kind {
    Kind::Number {
        min: 0.0,
        exclusive_min: true,
        max,
    }
}

const fn non_negative(max: f64) -> Kind {
    Kind::Number {
        min: 0.0,
        exclusive_min: false,
        max,
    }
}

/// `astra.trading.trade_executed.v1`.
pub static TRADE_EXECUTED: Payload = Payload {
    stream: streams::TRADE_EXECUTED,
    actor: "user_id",
    fields: &[
        req("trade_id", ID, "the trade's id (unique per trade)"),
        req("user_id", ID, "the trader"),
        req(
            "symbol",
            Kind::Symbol(32),
            "instrument, e.g. BTC or ETH-USD",
        ),
        req("side", Kind::Enum(&["buy", "sell"]), "buy or sell"),
        req(
            "quantity",
            positive(1e6),
            "units traded (> 0, at most 10^6)",
        ),
        req(
            "price_usd",
            positive(USD),
            "price per unit in USD (> 0, at most 10^6)",
        ),
        opt(
            "fee_usd",
            non_negative(USD),
            "fee charged in USD (else the default fee rate)",
        ),
    ],
};

/// `astra.social.interaction.v1`.
pub static INTERACTION: Payload = Payload {
    stream: streams::INTERACTION,
    actor: "user_id",
    fields: &[
        req("user_id", ID, "the actor"),
        req("target_user_id", ID, "the user acted upon"),
        req(
            "kind",
            Kind::Enum(&["like", "comment", "share", "follow"]),
            "what the actor did",
        ),
    ],
};

/// `astra.user.registered.v1`.
pub static REGISTERED: Payload = Payload {
    stream: streams::REGISTERED,
    actor: "user_id",
    fields: &[
        req("user_id", ID, "the new user"),
        req(
            "display_name",
            Kind::Text(64),
            "shown name (no control characters)",
        ),
        opt("clan", Kind::Id(64), "the clan joined"),
    ],
};

/// `astra.financial.subscription_changed.v1`.
pub static SUBSCRIPTION_CHANGED: Payload = Payload {
    stream: streams::SUBSCRIPTION_CHANGED,
    actor: "user_id",
    fields: &[
        req("user_id", ID, "the subscriber"),
        req("plan", Kind::Id(64), "plan name"),
        req(
            "action",
            Kind::Enum(&["started", "renewed", "cancelled"]),
            "what happened",
        ),
        req(
            "price_usd",
            non_negative(1e5),
            "plan price in USD per period (0 for free plans)",
        ),
    ],
};

/// `astra.nft.sale_completed.v1`.
pub static SALE_COMPLETED: Payload = Payload {
    stream: streams::SALE_COMPLETED,
    actor: "buyer_id",
    fields: &[
        req("sale_id", ID, "the sale's id"),
        req("collection", Kind::Id(128), "collection"),
        req("token_id", ID, "token within the collection"),
        req("seller_id", ID, "the seller"),
        req("buyer_id", ID, "the buyer (the acting user)"),
        req(
            "price_usd",
            positive(1e7),
            "sale price in USD (> 0, at most 10^7)",
        ),
    ],
};

/// Every public payload.
pub static PUBLIC: [&Payload; 5] = [
    &TRADE_EXECUTED,
    &INTERACTION,
    &REGISTERED,
    &SUBSCRIPTION_CHANGED,
    &SALE_COMPLETED,
];

/// The contract of `stream`, if it is a public input.
pub fn payload(stream: &str) -> Option<&'static Payload> {
    PUBLIC.iter().copied().find(|p| p.stream == stream)
}

/// Key-safe identifier characters.
pub fn id_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'@' | b'-')
}

fn symbol_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'/' | b'-')
}

fn control(c: char) -> bool {
    ('\u{0}'..='\u{1f}').contains(&c) || ('\u{7f}'..='\u{9f}').contains(&c)
}

/// Whether `s` is a valid user id (the `Id(128)` kind): X-User-ID, paths, keys' users.
pub fn valid_id(s: &str) -> bool {
    check_str(ID, s).is_ok()
}

fn check_str(kind: Kind, s: &str) -> Result<(), String> {
    let ascii = |n: usize, ok: fn(u8) -> bool, what: &str| {
        if s.is_empty() || s.len() > n || !s.bytes().all(ok) {
            Err(format!("must be 1-{n} characters of {what}"))
        } else {
            Ok(())
        }
    };
    match kind {
        Kind::Id(n) => ascii(n, id_char, "A-Z a-z 0-9 . _ : @ -"),
        Kind::Symbol(n) => ascii(n, symbol_char, "A-Z a-z 0-9 . _ / -"),
        Kind::Text(n) => {
            // Count up to n + 1 characters only: the cost stays bounded by n.
            let count = s.chars().take(n + 1).count();
            if count == 0 || count > n || s.chars().any(control) {
                Err(format!(
                    "must be 1-{n} characters without control characters"
                ))
            } else {
                Ok(())
            }
        }
        Kind::Enum(values) => {
            if values.contains(&s) {
                Ok(())
            } else {
                Err(format!("must be one of {}", values.join(", ")))
            }
        }
        Kind::Number { .. } => Err("must be a number".into()),
    }
}

fn check_num(kind: Kind, x: f64) -> Result<(), String> {
    let Kind::Number {
        min,
        exclusive_min,
        max,
    } = kind
    else {
        return Err("must be a string".into());
    };
    let low_ok = if exclusive_min { x > min } else { x >= min };
    if !x.is_finite() || !low_ok || x > max {
        let low = if exclusive_min { ">" } else { ">=" };
        return Err(format!(
            "must be a number {low} {min} and <= {max}, got {x}"
        ));
    }
    Ok(())
}

/// Checks one JSON value against a field (consumers use it on decoded payloads).
pub fn check_value(f: &Field, v: &Value) -> Result<(), String> {
    match (f.kind, v) {
        (Kind::Number { .. }, Value::Number(n)) => {
            check_num(f.kind, n.as_f64().unwrap_or(f64::INFINITY))
        }
        (Kind::Number { .. }, _) => Err("must be a number".into()),
        (_, Value::String(s)) => check_str(f.kind, s),
        _ => Err("must be a string".into()),
    }
}

impl Payload {
    /// The field named `name`.
    pub fn field(&self, name: &str) -> Option<&'static Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// Parses a JSON object strictly: unknown, repeated, mistyped or out-of-bounds fields
    /// are refused at the first one (named). Required fields are checked by
    /// [`Payload::complete`], so a caller may fill defaults in between.
    pub fn parse(&'static self, json: &[u8]) -> Result<Map<String, Value>, Problem> {
        let mut de = serde_json::Deserializer::from_slice(json);
        let mut problem = None;
        let seed = ObjectSeed {
            payload: self,
            problem: &mut problem,
        };
        match seed.deserialize(&mut de).and_then(|m| de.end().map(|_| m)) {
            Ok(m) => Ok(m),
            Err(e) => Err(problem.unwrap_or_else(|| Problem {
                field: None,
                message: e.to_string(),
            })),
        }
    }

    /// Checks that every required field is present.
    pub fn complete(&self, m: &Map<String, Value>) -> Result<(), Problem> {
        match self
            .fields
            .iter()
            .find(|f| f.required && !m.contains_key(f.name))
        {
            Some(f) => Err(Problem::at(f.name, "missing (required)")),
            None => Ok(()),
        }
    }

    /// Checks a decoded payload as consumers do: fields they do not know are tolerated
    /// (producers may add optional fields within a version), the strings they know must
    /// fit (they become keys and members). Numbers are left to each handler's own rules,
    /// which name their limits (the edge applies the tighter bounds above).
    pub fn check_consumed(&self, v: &Value) -> Result<(), Problem> {
        let Some(obj) = v.as_object() else {
            return Err(Problem {
                field: None,
                message: "payload must be an object".into(),
            });
        };
        for f in self.fields {
            if matches!(f.kind, Kind::Number { .. }) {
                continue;
            }
            if let Some(v @ Value::String(_)) = obj.get(f.name) {
                check_value(f, v).map_err(|m| Problem::at(f.name, m))?;
            }
        }
        Ok(())
    }

    /// Checks a payload against every bound (the CLI's publish): fields it does not know
    /// are tolerated, known ones must fit.
    pub fn check_lenient(&self, v: &Value) -> Result<(), Problem> {
        let Some(obj) = v.as_object() else {
            return Err(Problem {
                field: None,
                message: "payload must be an object".into(),
            });
        };
        for f in self.fields {
            match obj.get(f.name) {
                Some(v) => check_value(f, v).map_err(|m| Problem::at(f.name, m))?,
                None if f.required => return Err(Problem::at(f.name, "missing (required)")),
                None => {}
            }
        }
        Ok(())
    }

    /// The payload's JSON Schema, draft-07 keywords only (so it reads the same as JSON
    /// Schema 2020-12 and as an AsyncAPI 3.0 schema; [`crate::catalog::openapi_30`] turns
    /// it into OpenAPI 3.0's dialect). Patterns are ECMA-262 and anchored with `^…$`;
    /// lengths count characters (code points). `optional` names required fields the
    /// route fills when absent.
    pub fn json_schema(&self, optional: &[&str]) -> Value {
        let mut props = Map::new();
        let mut required = vec![];
        for f in self.fields {
            props.insert(f.name.to_string(), kind_schema(f));
            if f.required && !optional.contains(&f.name) {
                required.push(f.name);
            }
        }
        json!({
            "type": "object",
            "description": format!("Payload of {}", self.stream),
            "additionalProperties": false,
            "required": required,
            "properties": props,
        })
    }
}

fn kind_schema(f: &Field) -> Value {
    let mut s = match f.kind {
        Kind::Id(n) => json!({"type": "string", "minLength": 1, "maxLength": n,
            "pattern": format!("^[A-Za-z0-9._:@-]{{1,{n}}}$")}),
        Kind::Symbol(n) => json!({"type": "string", "minLength": 1, "maxLength": n,
            "pattern": format!("^[A-Za-z0-9._/-]{{1,{n}}}$")}),
        // The length is minLength/maxLength's (code points): a quantifier in the pattern
        // would count UTF-16 units in ECMA-262 engines.
        Kind::Text(n) => json!({"type": "string", "minLength": 1, "maxLength": n,
            "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"}),
        Kind::Enum(v) => json!({"type": "string", "enum": v}),
        Kind::Number {
            min,
            exclusive_min,
            max,
        } if exclusive_min => json!({"type": "number", "exclusiveMinimum": min, "maximum": max}),
        Kind::Number { min, max, .. } => json!({"type": "number", "minimum": min, "maximum": max}),
    };
    s["description"] = Value::from(f.doc);
    s
}

/// Deserializes the object, checking each field as it comes.
struct ObjectSeed<'p> {
    payload: &'static Payload,
    problem: &'p mut Option<Problem>,
}

impl<'de> DeserializeSeed<'de> for ObjectSeed<'_> {
    type Value = Map<String, Value>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ObjectSeed<'_> {
    type Value = Map<String, Value>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a JSON object (the payload of {})", self.payload.stream)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            let Some(f) = self.payload.field(&key) else {
                let known: Vec<&str> = self.payload.fields.iter().map(|f| f.name).collect();
                let shown: String = key.chars().take(64).collect();
                *self.problem = Some(Problem::at(
                    &shown,
                    format!("unknown field (known: {})", known.join(", ")),
                ));
                return Err(de::Error::custom("unknown field"));
            };
            if out.contains_key(f.name) {
                *self.problem = Some(Problem::at(f.name, "given twice"));
                return Err(de::Error::custom("duplicate field"));
            }
            let v = match f.kind {
                Kind::Number { .. } => map
                    .next_value::<f64>()
                    .map(|x| check_num(f.kind, x).map(|()| Value::from(x))),
                _ => map
                    .next_value::<String>()
                    .map(|s| check_str(f.kind, &s).map(|()| Value::String(s))),
            };
            match v {
                Ok(Ok(v)) => {
                    out.insert(f.name.to_string(), v);
                }
                Ok(Err(m)) => {
                    *self.problem = Some(Problem::at(f.name, m));
                    return Err(de::Error::custom("invalid field"));
                }
                Err(e) => {
                    *self.problem = Some(Problem::at(f.name, e.to_string()));
                    return Err(e);
                }
            }
        }
        Ok(out)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(de::Error::custom(
            "payload must be a JSON object, not an array",
        ))
    }
}

/// Checks that `json` is one complete JSON value, without building it (so malformed
/// bodies are a 400 before any schema check, at a cost linear in the body).
pub fn well_formed(json: &[u8]) -> Result<(), serde_json::Error> {
    serde_json::from_slice::<IgnoredAny>(json).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trade() -> String {
        r#"{"trade_id":"t1","user_id":"u1","symbol":"BTC","side":"buy","quantity":0.5,"price_usd":100}"#
            .into()
    }

    #[test]
    fn valid_payloads_parse_and_complete() {
        let m = TRADE_EXECUTED.parse(trade().as_bytes()).unwrap();
        TRADE_EXECUTED.complete(&m).unwrap();
        assert_eq!(m["quantity"], 0.5);
    }

    #[test]
    fn the_first_problem_is_named() {
        let bad = |body: &str| TRADE_EXECUTED.parse(body.as_bytes()).unwrap_err();
        let p = bad(r#"{"trade_id":"t","quantity":"lots"}"#);
        assert_eq!(p.field.as_deref(), Some("quantity"), "{p}");
        let p = bad(r#"{"trade_id":"t","junk":1}"#);
        assert_eq!(p.field.as_deref(), Some("junk"), "{p}");
        let p = bad(r#"{"trade_id":"t","trade_id":"u"}"#);
        assert_eq!(p.field.as_deref(), Some("trade_id"));
        for (field, body) in [
            ("price_usd", r#"{"price_usd":0}"#),
            ("price_usd", r#"{"price_usd":-1}"#),
            ("quantity", r#"{"quantity":1e308}"#),
            ("user_id", r#"{"user_id":"a b"}"#),
            ("user_id", r#"{"user_id":"{tag}"}"#),
            ("side", r#"{"side":"hold"}"#),
        ] {
            assert_eq!(bad(body).field.as_deref(), Some(field), "{body}");
        }
        let long = format!(r#"{{"user_id":"{}"}}"#, "x".repeat(129));
        assert_eq!(bad(&long).field.as_deref(), Some("user_id"));
        let m = TRADE_EXECUTED.parse(br#"{"trade_id":"t"}"#).unwrap();
        assert_eq!(
            TRADE_EXECUTED.complete(&m).unwrap_err().field.as_deref(),
            Some("user_id")
        );
        assert!(TRADE_EXECUTED.parse(b"[1]").unwrap_err().field.is_none());
    }

    #[test]
    fn text_has_no_control_characters() {
        assert!(check_str(Kind::Text(4), "Ada é").is_err()); // 5 characters
        assert!(check_str(Kind::Text(5), "Ada é").is_ok());
        assert!(check_str(Kind::Text(64), "a\u{7}b").is_err());
        assert!(check_str(Kind::Text(64), "").is_err());
    }

    #[test]
    fn consumers_check_strings_and_tolerate_unknown_fields() {
        let v: Value = serde_json::from_str(&trade().replace("u1", &"u".repeat(200))).unwrap();
        assert_eq!(
            TRADE_EXECUTED
                .check_consumed(&v)
                .unwrap_err()
                .field
                .as_deref(),
            Some("user_id")
        );
        let v: Value = serde_json::from_str(&trade().replace("}", r#","extra":1}"#)).unwrap();
        TRADE_EXECUTED.check_consumed(&v).unwrap();
    }

    #[test]
    fn the_cli_checks_every_bound_but_tolerates_unknown_fields() {
        let v: Value = serde_json::from_str(&trade().replace("}", r#","extra":1}"#)).unwrap();
        TRADE_EXECUTED.check_lenient(&v).unwrap();
        let v: Value = serde_json::from_str(&trade().replace("100", "0")).unwrap();
        assert_eq!(
            TRADE_EXECUTED
                .check_lenient(&v)
                .unwrap_err()
                .field
                .as_deref(),
            Some("price_usd")
        );
    }

    #[test]
    fn schemas_name_every_field_and_bound() {
        let s = TRADE_EXECUTED.json_schema(&["trade_id"]);
        assert_eq!(s["additionalProperties"], false);
        assert_eq!(s["properties"]["price_usd"]["exclusiveMinimum"], 0.0);
        assert_eq!(s["properties"]["fee_usd"]["minimum"], 0.0);
        let req: Vec<&str> = s["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(!req.contains(&"trade_id") && req.contains(&"user_id"));
        for p in PUBLIC {
            assert!(p.field(p.actor).is_some(), "{}", p.stream);
        }
    }
}
