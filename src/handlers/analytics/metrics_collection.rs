//! `analytics.metrics_collection`: business KPI counters per UTC day and daily active users.

use std::sync::Arc;

use super::*;
use crate::events::{
    Interaction, RevenueRecorded, SaleCompleted, SubscriptionAction, SubscriptionChanged,
    TradeExecuted, UserRegistered, XpAwarded, notional_cents, streams, usd_to_cents,
};
use crate::group::GroupConfig;
use crate::handler::{Event, Handler, HandlerError, Op, Reply, Step};
use crate::handlers::support::{deny_unknown_options, non_empty, option, poison};
use crate::handlers::typed::{TypedHandler, input};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// True for a plausible `YYYY-MM-DD`.
fn is_day(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if !(digits(0..4) && digits(5..7) && digits(8..10)) {
        return false;
    }
    let month: u32 = s[5..7].parse().unwrap_or(0);
    let day: u32 = s[8..10].parse().unwrap_or(0);
    (1..=12).contains(&month) && (1..=31).contains(&day)
}

input! {
    /// What `analytics.metrics_collection` reads: every business stream, the payload
    /// decoded only where a field is counted.
    pub enum MetricsInput {
        streams::TRADE_EXECUTED => Trade(TradeExecuted),
        streams::INTERACTION => Interaction(Interaction),
        streams::REGISTERED => Registered(UserRegistered),
        streams::XP_AWARDED => Xp(XpAwarded),
        streams::LEVEL_UP => LevelUp,
        streams::ACHIEVEMENT_UNLOCKED => Achievement,
        streams::REWARD_ISSUED => Reward,
        streams::SUBSCRIPTION_CHANGED => Subscription(SubscriptionChanged),
        streams::SALE_COMPLETED => Sale(SaleCompleted),
        streams::REVENUE_RECORDED => Revenue(RevenueRecorded),
        streams::POSITION_UPDATED
            | streams::RISK_ALERT
            | streams::LEADERBOARD_UPDATED
            | streams::FEED_ITEM_POSTED
            | streams::CLAN_SCORE_UPDATED
            | streams::INFLUENCE_UPDATED
            | streams::COMPLIANCE_FLAGGED
            | streams::PROFILE_UPDATED
            | streams::NOTIFICATION_REQUESTED => Uncounted,
    }
}

/// `analytics.metrics_collection`: business KPI counters per UTC day and a daily-active-
/// users HyperLogLog, which the metrics endpoint reads (so several daemons agree).
///
/// Rules, per input (the day is the UTC day of the event's `ts`, except revenue, which
/// is booked on `RevenueRecorded.day` so it matches the financial domain's own books):
///
/// | stream | day-hash fields (`HINCRBY`) | active users (`PFADD`) |
/// |---|---|---|
/// | `trading.trade_executed` | `trades` +1, `volume_cents` +notional; also `INCRBY astra:analytics:trades:min:<minute> 1` | `user_id` |
/// | `social.interaction` | `interactions` +1 | `user_id` (the actor) |
/// | `user.registered` | `registrations` +1 | `user_id` |
/// | `gamification.xp_awarded` | `xp` +amount | `user_id` |
/// | `gamification.level_up` | `level_ups` +1 | — |
/// | `gamification.achievement_unlocked` | `achievements` +1 | — |
/// | `nft.reward_issued` | `rewards` +1 | — |
/// | `financial.subscription_changed` | `subscriptions_started` / `subscriptions_cancelled` +1 (`renewed`: nothing) | `user_id` (started, cancelled) |
/// | `nft.sale_completed` | `nft_sales` +1, `nft_volume_cents` +price | `buyer_id`, `seller_id` |
/// | `financial.revenue_recorded` | `revenue_cents:<source>` +`amount_cents` | — |
/// | any other business stream | — | — |
///
/// "Active" means the user *did* something: the actor of an interaction, not its target
/// (being liked is not activity); a renewal is the billing system acting, not the user.
/// Level-ups, achievements and rewards follow from the user's own trades or interactions,
/// which already count them. Revenue is taken from `financial.revenue_recorded`, never
/// recomputed here. Every written day key gets `EXPIRE` `retain_days` in the same round;
/// the minute counter gets `EXPIRE 3600`. One round, no emits; streams with nothing to
/// count (`position_updated`, `leaderboard_updated`, …) succeed with no ops.
///
/// Poison: an empty user id that would be counted; a trade with `quantity` or
/// `price_usd` not finite or ≤ 0; an NFT sale with `price_usd` not finite or ≤ 0; a
/// negative XP `amount` or `amount_cents`; a revenue `source` other than `trade_fee`,
/// `subscription`, `nft_fee`; a revenue `day` that is not `YYYY-MM-DD`; a stream the
/// handler does not know.
///
/// Keys: [`day_key`], [`dau_key`], [`trades_minute_key`].
/// Emits: nothing.
/// Options: `retain_days` (400): TTL of the day keys, 1 to 36 500.
pub struct MetricsCollection {
    ttl_secs: i64,
}

impl MetricsCollection {
    /// Builds from the group config.
    pub fn build(g: &GroupConfig) -> Result<Arc<dyn Handler>, String> {
        deny_unknown_options(g, &["retain_days"])?;
        let days: u64 = option(g, "retain_days", 400)?;
        if !(1..=36_500).contains(&days) {
            return Err(format!(
                "option `retain_days`: must be between 1 and 36500, got {days}"
            ));
        }
        Ok(Arc::new(MetricsCollection {
            ttl_secs: days as i64 * 86_400,
        }))
    }
}

/// Collects one event's ops: counters first, then the DAU `PFADD`s, then one `EXPIRE`
/// per key written.
struct Plan {
    ttl_secs: i64,
    ops: Vec<Op>,
    expire: Vec<(String, i64)>,
    /// (field, delta) also added to the all-time totals.
    totals: Vec<(String, i64)>,
}

impl Plan {
    fn touch(&mut self, key: String, ttl: i64) {
        if !self.expire.iter().any(|(k, _)| *k == key) {
            self.expire.push((key, ttl));
        }
    }

    fn incr(&mut self, day: &str, field: &str, by: i64) {
        if by == 0 {
            return;
        }
        let key = day_key(day);
        self.ops.push(Op::hincrby(&key, field, by));
        self.touch(key, self.ttl_secs);
        self.totals.push((field.to_string(), by));
    }

    fn active(&mut self, day: &str, users: &[&str]) {
        let mut args: Vec<Vec<u8>> = vec![];
        for u in users {
            if !args.iter().any(|a| a == u.as_bytes()) {
                args.push(u.as_bytes().to_vec());
            }
        }
        let key = dau_key(day);
        self.ops.push(Op::new("PFADD", &key, args));
        self.touch(key, self.ttl_secs);
    }

    fn trade_minute(&mut self, ts_ms: i64) {
        let key = trades_minute_key(unix_minute(ts_ms));
        self.ops.push(Op::incrby(&key, 1));
        self.touch(key, TRADES_MINUTE_TTL_SECS);
    }

    fn finish(mut self) -> Step {
        if self.ops.is_empty() {
            return Step::nothing();
        }
        for (k, ttl) in self.expire {
            self.ops.push(Op::expire(k, ttl));
        }
        for (field, by) in self.totals {
            self.ops.push(Op::hincrby(total_key(), field, by));
        }
        Step::Done {
            ops: self.ops,
            emit: vec![],
        }
    }
}

/// Validates a USD price that must be positive and returns it in cents.
fn positive_cents(field: &str, usd: f64) -> Result<i64, HandlerError> {
    if !usd.is_finite() || usd <= 0.0 {
        return Err(poison(format!(
            "field `{field}`: must be a finite number > 0, got {usd}"
        )));
    }
    usd_to_cents(usd).ok_or_else(|| poison(format!("field `{field}`: {usd} is out of range")))
}

impl TypedHandler for MetricsCollection {
    type Input = MetricsInput;

    fn decide(
        &self,
        input: MetricsInput,
        ev: &Event,
        _: &[Vec<Reply>],
    ) -> Result<Step, HandlerError> {
        let day = ev.utc_day();
        let mut plan = Plan {
            ttl_secs: self.ttl_secs,
            ops: vec![],
            expire: vec![],
            totals: vec![],
        };
        match input {
            MetricsInput::Trade(t) => {
                non_empty("user_id", &t.user_id)?;
                if !t.quantity.is_finite() || t.quantity <= 0.0 {
                    return Err(poison(format!(
                        "field `quantity`: must be a finite number > 0, got {}",
                        t.quantity
                    )));
                }
                positive_cents("price_usd", t.price_usd)?;
                let notional = notional_cents(t.quantity, t.price_usd).ok_or_else(|| {
                    poison(format!(
                        "field `quantity`: notional {} × {} is out of range",
                        t.quantity, t.price_usd
                    ))
                })?;
                plan.incr(&day, field::TRADES, 1);
                plan.incr(&day, field::VOLUME_CENTS, notional);
                plan.active(&day, &[&t.user_id]);
                plan.trade_minute(ev.env.ts);
            }
            MetricsInput::Interaction(i) => {
                non_empty("user_id", &i.user_id)?;
                plan.incr(&day, field::INTERACTIONS, 1);
                plan.active(&day, &[&i.user_id]);
            }
            MetricsInput::Registered(r) => {
                non_empty("user_id", &r.user_id)?;
                plan.incr(&day, field::REGISTRATIONS, 1);
                plan.active(&day, &[&r.user_id]);
            }
            MetricsInput::Xp(x) => {
                non_empty("user_id", &x.user_id)?;
                if x.amount < 0 {
                    return Err(poison(format!(
                        "field `amount`: must be >= 0, got {}",
                        x.amount
                    )));
                }
                plan.incr(&day, field::XP, x.amount);
                plan.active(&day, &[&x.user_id]);
            }
            MetricsInput::LevelUp => plan.incr(&day, field::LEVEL_UPS, 1),
            MetricsInput::Achievement => plan.incr(&day, field::ACHIEVEMENTS, 1),
            MetricsInput::Reward => plan.incr(&day, field::REWARDS, 1),
            MetricsInput::Subscription(s) => {
                non_empty("user_id", &s.user_id)?;
                let f = match s.action {
                    SubscriptionAction::Started => field::SUBSCRIPTIONS_STARTED,
                    SubscriptionAction::Cancelled => field::SUBSCRIPTIONS_CANCELLED,
                    SubscriptionAction::Renewed => return Ok(Step::nothing()),
                };
                plan.incr(&day, f, 1);
                plan.active(&day, &[&s.user_id]);
            }
            MetricsInput::Sale(s) => {
                non_empty("buyer_id", &s.buyer_id)?;
                non_empty("seller_id", &s.seller_id)?;
                let cents = positive_cents("price_usd", s.price_usd)?;
                plan.incr(&day, field::NFT_SALES, 1);
                plan.incr(&day, field::NFT_VOLUME_CENTS, cents);
                plan.active(&day, &[&s.buyer_id, &s.seller_id]);
            }
            MetricsInput::Revenue(r) => {
                let f = REVENUE_FIELDS
                    .iter()
                    .find(|(src, _)| *src == r.source)
                    .map(|(_, f)| *f)
                    .ok_or_else(|| {
                        poison(format!(
                            "field `source`: {:?} is not trade_fee, subscription or nft_fee",
                            r.source
                        ))
                    })?;
                if r.amount_cents < 0 {
                    return Err(poison(format!(
                        "field `amount_cents`: must be >= 0, got {}",
                        r.amount_cents
                    )));
                }
                if !is_day(&r.day) {
                    return Err(poison(format!(
                        "field `day`: {:?} is not YYYY-MM-DD",
                        r.day
                    )));
                }
                plan.incr(&r.day, f, r.amount_cents);
            }
            MetricsInput::Uncounted => {}
        }
        Ok(plan.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{LevelUp, PositionUpdated, Side};
    use crate::handlers::testing::{event, event_at, group, json_event, op_text};

    fn metrics(options: &str) -> Arc<dyn Handler> {
        MetricsCollection::build(&group(
            "analytics.metrics_collection",
            "analytics.metrics_collection",
            &[],
            options,
        ))
        .unwrap()
    }

    type OpView = (&'static str, String, Vec<String>);

    fn ops_of(step: &Step) -> Vec<OpView> {
        let Step::Done { ops, emit } = step else {
            panic!("expected Done, got {step:?}")
        };
        assert!(emit.is_empty());
        // The all-time totals mirror the day hash; `totals_mirror_the_day_counters` checks them.
        ops.iter()
            .filter(|o| o.key() != total_key())
            .map(op_text)
            .collect()
    }

    fn op(cmd: &'static str, key: &str, args: &[&str]) -> OpView {
        (
            cmd,
            key.to_string(),
            args.iter().map(|s| s.to_string()).collect(),
        )
    }

    const TTL: &str = "34560000"; // 400 days
    const DAY: &str = "astra:analytics:day:2026-11-21";
    const DAU: &str = "astra:analytics:dau:2026-11-21";
    // 2026-11-21T12:00:00Z
    const T: i64 = 1_795_262_400_000;

    fn trade(quantity: f64, price: f64) -> TradeExecuted {
        TradeExecuted {
            trade_id: "t1".into(),
            user_id: "u1".into(),
            symbol: "BTC".into(),
            side: Side::Buy,
            quantity,
            price_usd: price,
            fee_usd: None,
        }
    }

    #[test]
    fn totals_mirror_the_day_counters() {
        let h = metrics("");
        let ev = event_at(streams::TRADE_EXECUTED, &trade(0.5, 101.01), T);
        let Step::Done { ops, .. } = h.step(&ev, &[]).unwrap() else {
            panic!()
        };
        let totals: Vec<(String, Vec<String>)> = ops
            .iter()
            .filter(|o| o.key() == total_key())
            .map(|o| {
                (
                    o.cmd().to_string(),
                    o.args()
                        .iter()
                        .map(|a| String::from_utf8(a.clone()).unwrap())
                        .collect(),
                )
            })
            .collect();
        assert_eq!(
            totals,
            vec![
                (
                    "HINCRBY".to_string(),
                    vec!["trades".to_string(), "1".to_string()]
                ),
                (
                    "HINCRBY".to_string(),
                    vec!["volume_cents".to_string(), "5051".to_string()]
                ),
            ]
        );
    }

    #[test]
    fn trades_count_volume_dau_and_the_minute() {
        let h = metrics("");
        let ev = event_at(streams::TRADE_EXECUTED, &trade(0.5, 101.01), T + 59_999);
        let minute = format!("astra:analytics:trades:min:{}", T / 60_000);
        assert_eq!(
            ops_of(&h.step(&ev, &[]).unwrap()),
            vec![
                op("HINCRBY", DAY, &["trades", "1"]),
                op("HINCRBY", DAY, &["volume_cents", "5051"]),
                op("PFADD", DAU, &["u1"]),
                op("INCRBY", &minute, &["1"]),
                op("EXPIRE", DAY, &[TTL]),
                op("EXPIRE", DAU, &[TTL]),
                op("EXPIRE", &minute, &["3600"]),
            ]
        );
        // One ms later is the next minute.
        let ev = event_at(streams::TRADE_EXECUTED, &trade(1.0, 1.0), T + 60_000);
        let ops = ops_of(&h.step(&ev, &[]).unwrap());
        assert_eq!(
            ops[3].1,
            format!("astra:analytics:trades:min:{}", T / 60_000 + 1)
        );
        assert_eq!(unix_minute(-1), -1);
        assert_eq!(unix_minute(59_999), 0);
    }

    #[test]
    fn the_day_is_the_utc_day_of_the_event() {
        let h = metrics("");
        // 2026-11-21T23:59:59.999Z and 2026-11-22T00:00:00Z.
        let midnight = 1_795_305_600_000;
        let ev = event_at(streams::TRADE_EXECUTED, &trade(1.0, 1.0), midnight - 1);
        assert_eq!(ops_of(&h.step(&ev, &[]).unwrap())[0].1, DAY);
        let ev = event_at(streams::TRADE_EXECUTED, &trade(1.0, 1.0), midnight);
        assert_eq!(
            ops_of(&h.step(&ev, &[]).unwrap())[0].1,
            "astra:analytics:day:2026-11-22"
        );
    }

    #[test]
    fn interactions_count_the_actor_only() {
        let h = metrics("");
        let ev = json_event(
            streams::INTERACTION,
            r#"{"user_id":"a","target_user_id":"b","kind":"like"}"#,
        );
        assert_eq!(
            ops_of(&h.step(&ev, &[]).unwrap()),
            vec![
                op("HINCRBY", DAY, &["interactions", "1"]),
                op("PFADD", DAU, &["a"]),
                op("EXPIRE", DAY, &[TTL]),
                op("EXPIRE", DAU, &[TTL]),
            ]
        );
    }

    #[test]
    fn nft_sales_count_buyer_and_seller() {
        let h = metrics("");
        let sale = |buyer: &str, seller: &str| {
            event(
                streams::SALE_COMPLETED,
                &SaleCompleted {
                    sale_id: "s".into(),
                    collection: "c".into(),
                    token_id: "1".into(),
                    seller_id: seller.into(),
                    buyer_id: buyer.into(),
                    price_usd: 19.999,
                },
            )
        };
        assert_eq!(
            ops_of(&h.step(&sale("b", "s"), &[]).unwrap()),
            vec![
                op("HINCRBY", DAY, &["nft_sales", "1"]),
                op("HINCRBY", DAY, &["nft_volume_cents", "2000"]),
                op("PFADD", DAU, &["b", "s"]),
                op("EXPIRE", DAY, &[TTL]),
                op("EXPIRE", DAU, &[TTL]),
            ]
        );
        // Buying from oneself: one element.
        assert_eq!(
            ops_of(&h.step(&sale("x", "x"), &[]).unwrap())[2],
            op("PFADD", DAU, &["x"])
        );
    }

    #[test]
    fn simple_counters() {
        let h = metrics("");
        let cases: Vec<(Event, Vec<OpView>)> = vec![
            (
                json_event(streams::REGISTERED, r#"{"user_id":"n","display_name":"N"}"#),
                vec![
                    op("HINCRBY", DAY, &["registrations", "1"]),
                    op("PFADD", DAU, &["n"]),
                ],
            ),
            (
                json_event(
                    streams::XP_AWARDED,
                    r#"{"user_id":"u","amount":25,"total":100,"level":2,"reason":"trade"}"#,
                ),
                vec![op("HINCRBY", DAY, &["xp", "25"]), op("PFADD", DAU, &["u"])],
            ),
            (
                event(
                    streams::LEVEL_UP,
                    &LevelUp {
                        user_id: "u".into(),
                        from: 1,
                        to: 2,
                        total_xp: 100,
                    },
                ),
                vec![op("HINCRBY", DAY, &["level_ups", "1"])],
            ),
            (
                json_event(
                    streams::ACHIEVEMENT_UNLOCKED,
                    r#"{"user_id":"u","achievement":"first_trade"}"#,
                ),
                vec![op("HINCRBY", DAY, &["achievements", "1"])],
            ),
            (
                json_event(
                    streams::REWARD_ISSUED,
                    r#"{"user_id":"u","reward":"bronze_badge","reason":"level_5"}"#,
                ),
                vec![op("HINCRBY", DAY, &["rewards", "1"])],
            ),
            (
                json_event(
                    streams::SUBSCRIPTION_CHANGED,
                    r#"{"user_id":"s","plan":"pro","action":"started","price_usd":9.99}"#,
                ),
                vec![
                    op("HINCRBY", DAY, &["subscriptions_started", "1"]),
                    op("PFADD", DAU, &["s"]),
                ],
            ),
            (
                json_event(
                    streams::SUBSCRIPTION_CHANGED,
                    r#"{"user_id":"s","plan":"pro","action":"cancelled","price_usd":9.99}"#,
                ),
                vec![
                    op("HINCRBY", DAY, &["subscriptions_cancelled", "1"]),
                    op("PFADD", DAU, &["s"]),
                ],
            ),
        ];
        for (ev, want) in cases {
            let got = ops_of(&h.step(&ev, &[]).unwrap());
            let n = want.len();
            assert_eq!(got[..n], want[..], "{}", ev.stream);
            // Then one EXPIRE per key written, with the retention.
            assert!(
                got[n..]
                    .iter()
                    .all(|(c, _, a)| *c == "EXPIRE" && a[0] == TTL)
            );
            assert_eq!(got.len() - n, if want.len() == 2 { 2 } else { 1 });
        }
        // Zero XP changes no counter but the user is still active.
        let ev = json_event(
            streams::XP_AWARDED,
            r#"{"user_id":"u","amount":0,"total":0,"level":1,"reason":"like"}"#,
        );
        assert_eq!(
            ops_of(&h.step(&ev, &[]).unwrap()),
            vec![op("PFADD", DAU, &["u"]), op("EXPIRE", DAU, &[TTL])]
        );
    }

    #[test]
    fn revenue_is_taken_from_revenue_recorded_on_its_booked_day() {
        let h = metrics("");
        for (source, f) in REVENUE_FIELDS {
            let ev = event(
                streams::REVENUE_RECORDED,
                &RevenueRecorded {
                    source: source.to_string(),
                    amount_usd: 12.34,
                    amount_cents: 1234,
                    user_id: "u".into(),
                    day: "2026-11-20".into(),
                },
            );
            let day = "astra:analytics:day:2026-11-20";
            assert_eq!(
                ops_of(&h.step(&ev, &[]).unwrap()),
                vec![op("HINCRBY", day, &[f, "1234"]), op("EXPIRE", day, &[TTL])]
            );
        }
        assert!(REVENUE_FIELDS.iter().all(|(_, f)| DAY_FIELDS.contains(f)));
        assert_eq!(DAY_FIELDS.len(), 15);
    }

    #[test]
    fn streams_with_nothing_to_count_succeed_without_ops() {
        let h = metrics("");
        let ev = event(
            streams::POSITION_UPDATED,
            &PositionUpdated {
                user_id: "u".into(),
                symbol: "BTC".into(),
                net_quantity: 1.0,
                trade_count: 1,
                volume_cents: 1,
            },
        );
        assert_eq!(h.step(&ev, &[]).unwrap(), Step::nothing());
        // Not even decoded: a payload this handler does not need cannot poison it.
        for s in [
            streams::RISK_ALERT,
            streams::LEADERBOARD_UPDATED,
            streams::FEED_ITEM_POSTED,
            streams::CLAN_SCORE_UPDATED,
            streams::INFLUENCE_UPDATED,
            streams::COMPLIANCE_FLAGGED,
            streams::PROFILE_UPDATED,
            streams::NOTIFICATION_REQUESTED,
        ] {
            assert_eq!(
                h.step(&json_event(s, "{}"), &[]).unwrap(),
                Step::nothing(),
                "{s}"
            );
        }
        let renewed = json_event(
            streams::SUBSCRIPTION_CHANGED,
            r#"{"user_id":"s","plan":"pro","action":"renewed","price_usd":9.99}"#,
        );
        assert_eq!(h.step(&renewed, &[]).unwrap(), Step::nothing());
    }

    #[test]
    fn metrics_poison_names_the_field() {
        let h = metrics("");
        let check = |ev: Event, needle: &str| {
            let err = h.step(&ev, &[]).unwrap_err();
            assert!(
                matches!(&err, HandlerError::Poison(m) if m.contains(needle)),
                "{needle}: {err}"
            );
        };
        check(
            event(streams::TRADE_EXECUTED, &trade(0.0, 1.0)),
            "`quantity`",
        );
        check(
            event(streams::TRADE_EXECUTED, &trade(f64::NAN, 1.0)),
            "`quantity`",
        );
        check(
            event(streams::TRADE_EXECUTED, &trade(1.0, -1.0)),
            "`price_usd`",
        );
        check(
            event(streams::TRADE_EXECUTED, &trade(1.0, 0.0)),
            "`price_usd`",
        );
        check(
            event(streams::TRADE_EXECUTED, &trade(1e7, 1e7)),
            "out of range",
        );
        check(
            json_event(
                streams::TRADE_EXECUTED,
                r#"{"trade_id":"t","symbol":"B","side":"buy","quantity":1,"price_usd":1}"#,
            ),
            "user_id",
        );
        check(
            json_event(
                streams::INTERACTION,
                r#"{"user_id":"","target_user_id":"b","kind":"like"}"#,
            ),
            "`user_id`",
        );
        check(
            json_event(
                streams::XP_AWARDED,
                r#"{"user_id":"u","amount":-3,"total":0,"level":1,"reason":"x"}"#,
            ),
            "`amount`",
        );
        check(
            json_event(
                streams::SALE_COMPLETED,
                r#"{"sale_id":"s","collection":"c","token_id":"t","seller_id":"a","buyer_id":"b","price_usd":0}"#,
            ),
            "`price_usd`",
        );
        check(
            json_event(
                streams::SALE_COMPLETED,
                r#"{"sale_id":"s","collection":"c","token_id":"t","seller_id":"","buyer_id":"b","price_usd":1}"#,
            ),
            "`seller_id`",
        );
        let rev = |source: &str, cents: i64, day: &str| {
            event(
                streams::REVENUE_RECORDED,
                &RevenueRecorded {
                    source: source.into(),
                    amount_usd: 0.0,
                    amount_cents: cents,
                    user_id: "u".into(),
                    day: day.into(),
                },
            )
        };
        check(rev("tips", 1, "2026-11-21"), "`source`");
        check(rev("trade_fee", -1, "2026-11-21"), "`amount_cents`");
        check(rev("trade_fee", 1, "2026-13-01"), "`day`");
        check(rev("trade_fee", 1, "21/11/2026"), "`day`");
        check(json_event("astra.other.thing.v1", "{}"), "not read");
    }

    #[test]
    fn metrics_options() {
        let h = metrics("retain_days = 2");
        let ev = event(streams::TRADE_EXECUTED, &trade(1.0, 1.0));
        let ops = ops_of(&h.step(&ev, &[]).unwrap());
        assert_eq!(ops[4], op("EXPIRE", DAY, &["172800"]));
        let g = |o: &str| {
            MetricsCollection::build(&group("a", "analytics.metrics_collection", &[], o)).err()
        };
        assert!(g("").is_none());
        assert!(g("retain_days = 0").unwrap().contains("retain_days"));
        assert!(g("retain_days = 40000").unwrap().contains("retain_days"));
        assert!(g("retain_days = \"long\"").unwrap().contains("retain_days"));
        assert!(
            g("retention = 3")
                .unwrap()
                .contains("unknown option `retention`")
        );
        assert!(
            AuditTrail::build(&group("a", "analytics.audit_trail", &[], "x = 1"))
                .err()
                .unwrap()
                .contains("unknown option `x`")
        );
    }
}
