//! The JSON Schema of every payload this binary knows, draft-07 keywords only (so each
//! reads the same as JSON Schema 2020-12 and as an AsyncAPI 3.0 Schema Object):
//!
//! - the five public inputs: their contract table in [`crate::events::schema`], every
//!   bound the edge enforces (required fields, enums, number ranges, string lengths and
//!   character sets; unknown fields refused);
//! - the derived events: the structs of [`crate::events`] the handlers serialize, read
//!   through their `Deserialize` impls ([`super::trace`]): field names, JSON types,
//!   `Option` fields optional and nullable, unsigned ranges; other fields tolerated, as
//!   readers tolerate them;
//! - the envelope (the entry's fields other than `data`) and the dead-letter entry.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use super::trace::{self, Ty};
use crate::config::StreamConfig;
use crate::events::{self, schema, streams};

/// A derived event: its stream, the struct's fields, and notes for some of them.
struct Derived {
    stream: &'static str,
    fields: fn() -> trace::Traced,
    notes: &'static [(&'static str, &'static str)],
}

const fn derived<T: DeserializeOwned>(
    stream: &'static str,
    notes: &'static [(&'static str, &'static str)],
) -> Derived {
    Derived {
        stream,
        fields: trace::fields::<T>,
        notes,
    }
}

static DERIVED: &[Derived] = &[
    derived::<events::PositionUpdated>(
        streams::POSITION_UPDATED,
        &[
            (
                "net_quantity",
                "net position after the trade (buys minus sells), in units",
            ),
            ("trade_count", "the user's trade count after this trade"),
            ("volume_cents", "the user's total traded notional, in cents"),
        ],
    ),
    derived::<events::RiskAlert>(
        streams::RISK_ALERT,
        &[
            (
                "exposure_cents",
                "gross exposure over the window when the limit was crossed, cents",
            ),
            ("trade_id", "the trade that crossed the limit"),
        ],
    ),
    derived::<events::XpAwarded>(
        streams::XP_AWARDED,
        &[
            ("amount", "XP added by this event"),
            ("total", "the user's XP total after this award"),
            ("level", "the user's level after this award"),
            ("reason", "trade, like, comment, share or follow"),
        ],
    ),
    derived::<events::LevelUp>(streams::LEVEL_UP, &[]),
    derived::<events::LeaderboardUpdated>(
        streams::LEADERBOARD_UPDATED,
        &[
            ("board", "daily, weekly or all_time"),
            ("period", "2026-11-21 (daily), 2026-W47 (weekly) or all"),
            ("rank", "1-based rank after the update"),
            (
                "previous_rank",
                "1-based rank before; null when it was not in the top N",
            ),
        ],
    ),
    derived::<events::AchievementUnlocked>(
        streams::ACHIEVEMENT_UNLOCKED,
        &[(
            "achievement",
            "first_trade, trades_10, trades_100, volume_100k, level_5, level_10 or xp_10k",
        )],
    ),
    derived::<events::FeedItemPosted>(
        streams::FEED_ITEM_POSTED,
        &[
            ("kind", "achievement, level_up or large_trade"),
            ("text", "human-readable line"),
            ("source_event_id", "id of the event the item is about"),
        ],
    ),
    derived::<events::ClanScoreUpdated>(
        streams::CLAN_SCORE_UPDATED,
        &[
            ("week", "ISO week, 2026-W47"),
            ("score", "weekly score after the update"),
            ("user_id", "member whose XP moved the score"),
        ],
    ),
    derived::<events::InfluenceUpdated>(
        streams::INFLUENCE_UPDATED,
        &[(
            "user_id",
            "the user whose influence changed (the interaction's target)",
        )],
    ),
    derived::<events::RevenueRecorded>(
        streams::REVENUE_RECORDED,
        &[
            ("source", "trade_fee, subscription or nft_fee"),
            (
                "amount_usd",
                "display value; the exact amount is amount_cents",
            ),
            ("day", "UTC day the revenue is booked on, 2026-11-21"),
        ],
    ),
    derived::<events::ComplianceFlagged>(
        streams::COMPLIANCE_FLAGGED,
        &[
            ("reason", "large_trade or velocity"),
            (
                "trades_in_window",
                "trades by the user in the velocity window (velocity flags)",
            ),
        ],
    ),
    derived::<events::RewardIssued>(
        streams::REWARD_ISSUED,
        &[
            (
                "reward",
                "bronze_badge, silver_badge, gold_badge or <achievement>_badge",
            ),
            (
                "reason",
                "what earned it: level_5, an achievement name, ...",
            ),
        ],
    ),
    derived::<events::ProfileUpdated>(streams::PROFILE_UPDATED, &[]),
    derived::<events::NotificationRequested>(
        streams::NOTIFICATION_REQUESTED,
        &[(
            "template",
            "achievement_unlocked, reward_issued or level_up",
        )],
    ),
];

fn ty_schema(t: &Ty) -> Value {
    match t {
        Ty::Str => json!({"type": "string"}),
        Ty::Bool => json!({"type": "boolean"}),
        Ty::I64 => json!({"type": "integer"}),
        Ty::U32 => json!({"type": "integer", "minimum": 0, "maximum": u32::MAX}),
        Ty::U64 => json!({"type": "integer", "minimum": 0}),
        Ty::F64 => json!({"type": "number"}),
        Ty::Opt(inner) => {
            let mut s = ty_schema(inner);
            let t = s["type"].take();
            s["type"] = json!([t, "null"]);
            s
        }
        Ty::Map(v) => json!({"type": "object", "additionalProperties": ty_schema(v)}),
    }
}

fn derived_schema(d: &Derived) -> Value {
    // The derive of a payload struct is traceable by construction (a unit test runs
    // every entry); a struct that is not would be a programming error caught there.
    let fields = (d.fields)().unwrap_or_default();
    let mut props = Map::new();
    let mut required = vec![];
    for (name, ty) in &fields {
        let mut s = ty_schema(ty);
        if let Some((_, note)) = d.notes.iter().find(|(n, _)| n == name) {
            s["description"] = Value::from(*note);
        }
        props.insert(name.to_string(), s);
        if !matches!(ty, Ty::Opt(_)) {
            required.push(*name);
        }
    }
    json!({
        "type": "object",
        "description": format!(
            "Payload of {} (written by the bus's handlers as MessagePack with named fields; \
             readers tolerate fields they do not know)",
            d.stream
        ),
        "required": required,
        "properties": props,
    })
}

/// The payload schema of `stream`: its contract or struct when this binary has one, else
/// any JSON object (what the edge and `publish` accept there). `optional`: required
/// fields of a public contract a route fills when absent.
pub fn payload(stream: &str, optional: &[&str]) -> Value {
    if let Some(p) = schema::payload(stream) {
        return p.json_schema(optional);
    }
    match DERIVED.iter().find(|d| d.stream == stream) {
        Some(d) => derived_schema(d),
        None => json!({
            "type": "object",
            "description": "Any JSON object (no contract known to this binary)",
        }),
    }
}

/// The dead-letter entry's own fields (the original entry's fields follow unchanged).
pub fn dead_letter_headers() -> Value {
    let s = |d: &str| json!({"type": "string", "description": d});
    json!({
        "type": "object",
        "description": "A dead letter: these fields, then the original entry's fields unchanged \
                        (or, for an original of more than 256 fields, all of them packed in \
                        `dlq_fields`)",
        "required": ["dlq_reason", "dlq_error", "dlq_group", "dlq_stream", "dlq_entry_id",
                     "dlq_attempts", "dlq_ts"],
        "properties": {
            "dlq_reason": {"type": "string", "enum": ["malformed", "poison", "max_deliveries", "failed"],
                           "description": "why the entry was dead-lettered"},
            "dlq_error": s("the last error, naming the field and the cause"),
            "dlq_group": s("the group that dead-lettered it (a replay goes to it alone)"),
            "dlq_stream": s("the stream the event belongs to"),
            "dlq_entry_id": {"type": "string", "pattern": "^[0-9]+-[0-9]+$",
                             "description": "the entry's id in that stream"},
            "dlq_attempts": {"type": "string", "pattern": "^[0-9]+$", "description": "deliveries so far"},
            "dlq_ts": {"type": "string", "pattern": "^[0-9]+$", "description": "when, Unix milliseconds"},
            "dlq_fields": s("MessagePack array of [name, value] byte-string pairs: the original's fields, when it had more than 256"),
        },
    })
}

/// The envelope of an event on `s`: the entry's fields other than `data`, every one a
/// Redis string, as [`crate::envelope::Envelope::from_fields`] reads them.
pub fn envelope_headers(s: &StreamConfig) -> Value {
    let text = |d: &str| json!({"type": "string", "minLength": 1, "description": d});
    json!({
        "type": "object",
        "description": "The entry's fields other than `data` (each a Redis string; unknown fields are ignored)",
        "required": ["id", "type", "v", "ts"],
        "properties": {
            "id": {"type": "string", "minLength": 1, "maxLength": 128,
                   "description": "globally unique event id (UUIDv7 or ULID; derived events: computed from (group, source id, index)); consumers de-duplicate on it"},
            "type": {"type": "string", "enum": [s.event_type()], "description": "<domain>.<event>, matching the stream"},
            "v": {"type": "string", "enum": [s.version.to_string()], "description": "schema version, the stream's .v<n>"},
            "cid": text("correlation id (defaults to id), copied to every derived event"),
            "caus": text("id of the event this one was derived from (absent on roots)"),
            "ts": {"type": "string", "pattern": "^[+-]?[0-9]+$", "description": "occurred-at, Unix milliseconds (derived events keep their cause's)"},
            "src": text("producer: the API key's name for edge publishes, the group for derived events"),
            "tp": text("W3C traceparent"),
            "ct": {"type": "string", "enum": ["application/msgpack", "application/x-msgpack", "application/json"],
                   "default": "application/msgpack", "description": "encoding of data"},
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A value of `schema`'s type (required fields only, or every field).
    fn sample(schema: &Value, all: bool) -> Value {
        let t = match &schema["type"] {
            Value::Array(ts) => ts[0].clone(),
            t => t.clone(),
        };
        match t.as_str().unwrap() {
            "string" => json!("x"),
            "integer" => json!(1),
            "number" => json!(1.5),
            "boolean" => json!(true),
            "object" => {
                let mut m = Map::new();
                let req: Vec<&str> = schema["required"]
                    .as_array()
                    .map(|r| r.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                for (k, s) in schema["properties"].as_object().into_iter().flatten() {
                    if all || req.contains(&k.as_str()) {
                        m.insert(k.clone(), sample(s, all));
                    }
                }
                Value::Object(m)
            }
            t => panic!("{t}"),
        }
    }

    #[test]
    fn every_derived_schema_is_its_struct() {
        assert_eq!(DERIVED.len(), 14);
        for d in DERIVED {
            let fields = (d.fields)().unwrap_or_else(|e| panic!("{}: {e}", d.stream));
            let s = derived_schema(d);
            assert_eq!(s["properties"].as_object().unwrap().len(), fields.len());
            for (n, _) in d.notes {
                assert!(s["properties"][n].is_object(), "{}: note on {n}", d.stream);
            }
            // The struct accepts a sample of the schema, with every field and with the
            // required ones only; it refuses one without any required field.
            for all in [true, false] {
                let v = sample(&s, all);
                events::validate_json(d.stream, &v).unwrap_or_else(|e| panic!("{}: {e}", d.stream));
            }
            for r in s["required"].as_array().unwrap() {
                let mut v = sample(&s, true);
                v.as_object_mut().unwrap().remove(r.as_str().unwrap());
                assert!(
                    events::validate_json(d.stream, &v).is_err(),
                    "{} {r}",
                    d.stream
                );
            }
        }
    }

    #[test]
    fn options_are_nullable_and_unsigned_bounded() {
        let s = payload(streams::LEADERBOARD_UPDATED, &[]);
        assert_eq!(
            s["properties"]["previous_rank"]["type"],
            json!(["integer", "null"])
        );
        assert_eq!(s["properties"]["rank"]["minimum"], 0);
        let req = s["required"].as_array().unwrap();
        assert!(!req.contains(&json!("previous_rank")) && req.contains(&json!("rank")));
        let n = payload(streams::NOTIFICATION_REQUESTED, &[]);
        assert_eq!(
            n["properties"]["params"]["additionalProperties"]["type"],
            "string"
        );
        assert_eq!(payload("astra.x.y.v1", &[])["type"], "object");
    }
}
