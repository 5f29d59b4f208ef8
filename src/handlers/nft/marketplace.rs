//! `nft.marketplace`: per-collection volume, sale count, last price and 24-hour low.

use std::sync::Arc;

use super::*;
use crate::events::{SaleCompleted, usd_to_cents};
use crate::group::GroupConfig;
use crate::handler::{Event, Handler, HandlerError, Op, Reply, Step};
use crate::handlers::support::{
    deny_unknown_options, non_empty, option, poison, reply_int, too_many_rounds,
};
use crate::handlers::typed::TypedHandler;

/// The window of the "24h low" statistic.
pub const LOW_WINDOW_MS: i64 = 24 * 3_600_000;

/// `nft.marketplace`: per-collection volume, sale count, last price and 24-hour low.
///
/// Rules: a `nft.sale_completed` with `price_usd` ≤ 0, not finite, below one cent after
/// rounding or above 10^13 USD is poison, as is an empty `sale_id` or `collection`.
///
/// Rounds: (1) `ZADD astra:nft:collection:{<c>}:sales NX <ts> <cents>:<sale_id>` and
/// `ZREMRANGEBYSCORE … -inf (<ts − 24h − prune_margin>` (prune); (2) only if the `ZADD`
/// added the member (so a sale published twice is counted once while it is in the
/// window), `HINCRBY astra:nft:collection:{<c>} volume_cents <cents>`,
/// `HINCRBY … sales 1` and `SADD astra:nft:collections <c>`.
///
/// "Last price" and "24h low" are never stored as absolute values (a late or concurrent
/// event would overwrite a newer one); they are computed by [`summarize`] from the sorted
/// set, whose order is the sales' own `ts`, so delivery order cannot corrupt them.
///
/// Keys: [`collection_key`], [`collection_sales_key`], [`collections_key`].
/// Emits: nothing.
/// Options: `prune_margin_secs` (3600): how long past 24 h a sale stays in the sorted set
/// (so out-of-order events and readers' clock skew still see it).
pub struct Marketplace {
    prune_margin_ms: i64,
}

impl Marketplace {
    /// Builds from the group config.
    pub fn build(g: &GroupConfig) -> Result<Arc<dyn Handler>, String> {
        deny_unknown_options(g, &["prune_margin_secs"])?;
        let margin: u64 = option(g, "prune_margin_secs", 3600)?;
        if margin > 30 * 86_400 {
            return Err(format!(
                "option `prune_margin_secs`: at most 2592000 (30 days), got {margin}"
            ));
        }
        Ok(Arc::new(Marketplace {
            prune_margin_ms: margin as i64 * 1000,
        }))
    }
}

/// Validates a sale and returns its price in cents.
fn sale_cents(s: &SaleCompleted) -> Result<i64, HandlerError> {
    non_empty("sale_id", &s.sale_id)?;
    non_empty("collection", &s.collection)?;
    let p = s.price_usd;
    if !p.is_finite() || p <= 0.0 {
        return Err(poison(format!(
            "field `price_usd`: must be a finite number > 0, got {p}"
        )));
    }
    match usd_to_cents(p) {
        Some(c) if c >= 1 => Ok(c),
        Some(_) => Err(poison(format!(
            "field `price_usd`: {p} rounds to 0 cents; must be at least 0.005"
        ))),
        None => Err(poison(format!("field `price_usd`: {p} is out of range"))),
    }
}

impl TypedHandler for Marketplace {
    type Input = SaleCompleted;

    fn decide(
        &self,
        sale: SaleCompleted,
        ev: &Event,
        rounds: &[Vec<Reply>],
    ) -> Result<Step, HandlerError> {
        let cents = sale_cents(&sale)?;
        let sales = collection_sales_key(&sale.collection);
        match rounds.len() {
            0 => {
                let cutoff = ev.env.ts - LOW_WINDOW_MS - self.prune_margin_ms;
                Ok(Step::More(vec![
                    Op::new(
                        "ZADD",
                        sales.clone(),
                        vec![
                            b"NX".to_vec(),
                            ev.env.ts.to_string().into_bytes(),
                            sale_member(&sale.sale_id, cents).into_bytes(),
                        ],
                    ),
                    Op::zremrangebyscore(sales, "-inf", format!("({cutoff}")),
                ]))
            }
            1 => {
                if reply_int(rounds, 0, 0, "ZADD NX sale")? != 1 {
                    // The same sale (id and price) is already recorded: count it once.
                    return Ok(Step::nothing());
                }
                let key = collection_key(&sale.collection);
                Ok(Step::Done {
                    ops: vec![
                        Op::hincrby(&key, FIELD_VOLUME_CENTS, cents),
                        Op::hincrby(&key, FIELD_SALES, 1),
                        Op::sadd(collections_key(), &sale.collection),
                    ],
                    emit: vec![],
                })
            }
            _ => Err(too_many_rounds(rounds)),
        }
    }
}

/// Statistics of one collection computed from its sales sorted set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CollectionStats {
    /// Price of the latest sale (highest `ts`; ties broken by the larger sale id), cents.
    pub last_price_cents: Option<i64>,
    /// Id of that sale.
    pub last_sale_id: Option<String>,
    /// `ts` of that sale, Unix ms.
    pub last_sale_ts: Option<i64>,
    /// Lowest price among sales with `ts > now − 24h` (later ones included), cents.
    pub low_24h_cents: Option<i64>,
    /// Number of sales in that window.
    pub sales_24h: u64,
    /// Volume of the sales in that window, cents.
    pub volume_24h_cents: i64,
    /// Entries whose member or score did not parse (skipped).
    pub malformed: u64,
}

/// Computes [`CollectionStats`] from `ZRANGE astra:nft:collection:{<c>}:sales 0 -1
/// WITHSCORES` output, as `(member, score)` pairs in any order, at `now_ms` (the reader's
/// clock, Unix ms). Pure: the HTTP edge and the metrics call it on what they read.
pub fn summarize<I, M>(entries: I, now_ms: i64) -> CollectionStats
where
    I: IntoIterator<Item = (M, f64)>,
    M: AsRef<str>,
{
    let mut st = CollectionStats::default();
    let mut last: Option<(i64, String, i64)> = None; // (ts, sale id, cents)
    for (member, score) in entries {
        let Some((cents, sale_id)) = parse_sale_member(member.as_ref()) else {
            st.malformed += 1;
            continue;
        };
        // Timestamps in ms are exact in an f64 (below 2^53).
        if !score.is_finite() || score.fract() != 0.0 || score.abs() > 9.0e15 {
            st.malformed += 1;
            continue;
        }
        let ts = score as i64;
        let newer = match &last {
            None => true,
            Some((lts, lid, _)) => (ts, sale_id) > (*lts, lid.as_str()),
        };
        if newer {
            last = Some((ts, sale_id.to_string(), cents));
        }
        if ts > now_ms - LOW_WINDOW_MS {
            st.sales_24h += 1;
            st.volume_24h_cents += cents;
            st.low_24h_cents = Some(st.low_24h_cents.map_or(cents, |l| l.min(cents)));
        }
    }
    if let Some((ts, id, cents)) = last {
        st.last_price_cents = Some(cents);
        st.last_sale_id = Some(id);
        st.last_sale_ts = Some(ts);
    }
    st
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::streams;
    use crate::handlers::nft::fixtures::*;
    use crate::handlers::testing::{event_at, group, int, json_event};

    fn market(options: &str) -> Arc<dyn Handler> {
        Marketplace::build(&group("nft.marketplace", "nft.marketplace", &[], options)).unwrap()
    }

    fn sale(id: &str, price: f64, ts: i64) -> Event {
        event_at(
            streams::SALE_COMPLETED,
            &SaleCompleted {
                sale_id: id.into(),
                collection: "punks".into(),
                token_id: "7".into(),
                seller_id: "s".into(),
                buyer_id: "b".into(),
                price_usd: price,
            },
            ts,
        )
    }

    const T: i64 = 1_795_262_400_000;

    #[test]
    fn marketplace_records_the_sale_and_prunes_in_one_round() {
        let h = market("");
        let Step::More(ops) = h.step(&sale("s1", 12.345, T), &[]).unwrap() else {
            panic!("expected More")
        };
        assert_eq!(ops.len(), 2);
        assert_eq!(ops[0].cmd(), "ZADD");
        assert_eq!(ops[0].key(), "astra:nft:collection:{punks}:sales");
        assert_eq!(
            ops[0].args(),
            [
                b"NX".to_vec(),
                T.to_string().into_bytes(),
                b"1235:s1".to_vec()
            ]
        );
        assert_eq!(ops[1].cmd(), "ZREMRANGEBYSCORE");
        assert_eq!(ops[1].key(), "astra:nft:collection:{punks}:sales");
        let cutoff = T - 86_400_000 - 3_600_000;
        assert_eq!(
            ops[1].args(),
            [b"-inf".to_vec(), format!("({cutoff}").into_bytes()]
        );
    }

    #[test]
    fn marketplace_counts_a_new_sale_once() {
        let h = market("");
        let ev = sale("s1", 12.345, T);
        let Step::Done { ops, emit } = h.step(&ev, &[vec![int(1), int(0)]]).unwrap() else {
            panic!("expected Done")
        };
        assert!(emit.is_empty());
        let got: Vec<_> = ops
            .iter()
            .map(|o| (o.cmd(), o.key().to_string(), o.args().to_vec()))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "HINCRBY",
                    "astra:nft:collection:{punks}".to_string(),
                    vec![b"volume_cents".to_vec(), b"1235".to_vec()]
                ),
                (
                    "HINCRBY",
                    "astra:nft:collection:{punks}".to_string(),
                    vec![b"sales".to_vec(), b"1".to_vec()]
                ),
                (
                    "SADD",
                    "astra:nft:collections".to_string(),
                    vec![b"punks".to_vec()]
                ),
            ]
        );
        // The same sale already in the set (ZADD NX replied 0): not counted again.
        assert_eq!(
            h.step(&ev, &[vec![int(0), int(3)]]).unwrap(),
            Step::nothing()
        );
    }

    #[test]
    fn marketplace_poison() {
        let h = market("");
        for (price, needle) in [
            (0.0, "price_usd"),
            (-1.0, "price_usd"),
            (f64::NAN, "price_usd"),
            (f64::INFINITY, "price_usd"),
            (0.004, "0 cents"),
            (1e14, "out of range"),
        ] {
            let err = h.step(&sale("s", price, T), &[]).unwrap_err();
            assert!(
                matches!(&err, HandlerError::Poison(m) if m.contains(needle)),
                "{price}: {err}"
            );
        }
        // Smallest valid price: one cent.
        assert!(matches!(
            h.step(&sale("s", 0.005, T), &[]),
            Ok(Step::More(_))
        ));
        let err = h.step(&sale("", 1.0, T), &[]).unwrap_err();
        assert!(
            matches!(&err, HandlerError::Poison(m) if m.contains("`sale_id`")),
            "{err}"
        );
        let ev = json_event(
            streams::SALE_COMPLETED,
            r#"{"sale_id":"s","collection":"c","token_id":"t","seller_id":"a","buyer_id":"b"}"#,
        );
        let err = h.step(&ev, &[]).unwrap_err();
        assert!(
            matches!(&err, HandlerError::Poison(m) if m.contains("price_usd")),
            "{err}"
        );
        let err = h.step(&level_up(1, 2), &[]).unwrap_err();
        assert!(
            matches!(&err, HandlerError::Poison(m) if m.contains("not read")),
            "{err}"
        );
    }

    #[test]
    fn marketplace_options() {
        let h = market("prune_margin_secs = 60");
        let Step::More(ops) = h.step(&sale("s1", 1.0, T), &[]).unwrap() else {
            panic!("expected More")
        };
        assert_eq!(
            ops[1].args()[1],
            format!("({}", T - 86_400_000 - 60_000).into_bytes()
        );
        let g = |o: &str| Marketplace::build(&group("n", "nft.marketplace", &[], o)).err();
        assert!(g("").is_none());
        assert!(
            g("prune_margin_secs = -1")
                .unwrap()
                .contains("prune_margin_secs")
        );
        assert!(
            g("prune_margin_secs = 99999999")
                .unwrap()
                .contains("at most")
        );
        assert!(g("window = 1").unwrap().contains("unknown option `window`"));
    }

    #[test]
    fn summarize_uses_sale_time_not_arrival_order() {
        let now = T;
        let h = 3_600_000i64;
        // Arrival order (as listed) differs from ts order; ZRANGE would sort, but any
        // order must give the same answer.
        let entries = vec![
            ("900:late".to_string(), (now - h) as f64),
            ("500:old".to_string(), (now - 25 * h) as f64), // outside 24h: not in the low
            ("700:mid".to_string(), (now - 2 * h) as f64),
            ("800:edge".to_string(), (now - 24 * h) as f64), // exactly 24h old: outside
            ("1000:newest".to_string(), (now - 1000) as f64),
            ("garbage".to_string(), now as f64),
        ];
        let st = summarize(entries.clone(), now);
        assert_eq!(st.last_price_cents, Some(1000));
        assert_eq!(st.last_sale_id.as_deref(), Some("newest"));
        assert_eq!(st.last_sale_ts, Some(now - 1000));
        assert_eq!(st.low_24h_cents, Some(700));
        assert_eq!(st.sales_24h, 3);
        assert_eq!(st.volume_24h_cents, 900 + 700 + 1000);
        assert_eq!(st.malformed, 1);
        let mut rev = entries;
        rev.reverse();
        assert_eq!(summarize(rev, now), st);
        // One ms later the 24h-edge sale is still out; one ms earlier it is in.
        assert_eq!(
            summarize(vec![("800:edge", (now - 24 * h) as f64)], now - 1).low_24h_cents,
            Some(800)
        );
        // Equal timestamps: the larger sale id is "last", whatever the order.
        let tie = summarize(vec![("5:b", 10.0), ("7:a", 10.0)], 10);
        assert_eq!(
            (tie.last_price_cents, tie.last_sale_id.as_deref()),
            (Some(5), Some("b"))
        );
        let tie = summarize(vec![("7:a", 10.0), ("5:b", 10.0)], 10);
        assert_eq!(tie.last_price_cents, Some(5));
        // Nothing at all.
        assert_eq!(
            summarize(Vec::<(&str, f64)>::new(), now),
            CollectionStats::default()
        );
        // A fractional score is not a ts this handler wrote.
        assert_eq!(summarize(vec![("5:a", 1.5)], 10).malformed, 1);
    }
}
