//! Business KPIs, computed from the counters the `analytics.metrics_collection` handler
//! keeps in Redis, so every daemon instance reports the same values.
//!
//! | kpi | formula | target |
//! |---|---|---|
//! | `trades_per_second` | trades in the last complete UTC minute / 60 | 10 |
//! | `daily_active_users` | HyperLogLog count of today's active users (UTC day) | 1,000 |
//! | `daily_revenue_usd` | today's revenue, all sources | 10,000 |
//! | `revenue_per_user_usd` | today's revenue / daily active users | 100 |
//! | `social_interaction_rate` | today's interactions / daily active users | 5 |
//! | `engagement_score` | 10 × (0.5·min(1, interactions per active user / 5) + 0.3·min(1, trades per active user / 10) + 0.2·min(1, (achievements + level-ups) per active user)) | 8 |
//!
//! Ratios are 0 while there are no active users.

use std::collections::BTreeMap;

use crate::handlers::analytics::field;

/// KPI names (the `kpi` label) with their targets.
pub const TARGETS: [(&str, f64); 6] = [
    ("trades_per_second", 10.0),
    ("daily_active_users", 1_000.0),
    ("daily_revenue_usd", 10_000.0),
    ("engagement_score", 8.0),
    ("revenue_per_user_usd", 100.0),
    ("social_interaction_rate", 5.0),
];

/// Revenue sources (the `source` label).
pub const SOURCES: [&str; 3] = ["trade_fee", "subscription", "nft_fee"];

/// What the KPIs are computed from.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Inputs {
    /// Today's day-hash counters (`astra:analytics:day:<today>`).
    pub day: BTreeMap<String, i64>,
    /// Today's active users (PFCOUNT).
    pub dau: i64,
    /// Trades in the last complete minute.
    pub trades_last_minute: i64,
}

/// Computed KPI values.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Kpis {
    /// (kpi, value) in [`TARGETS`] order.
    pub values: Vec<(&'static str, f64)>,
    /// Today's revenue by source, USD.
    pub revenue_by_source_usd: Vec<(&'static str, f64)>,
}

fn get(day: &BTreeMap<String, i64>, f: &str) -> i64 {
    day.get(f).copied().unwrap_or(0)
}

/// Computes every KPI from `inputs`.
pub fn compute(inputs: &Inputs) -> Kpis {
    let d = &inputs.day;
    let revenue_by_source_usd: Vec<(&'static str, f64)> = SOURCES
        .iter()
        .map(|s| (*s, get(d, &format!("revenue_cents:{s}")) as f64 / 100.0))
        .collect();
    let revenue_cents: i64 = SOURCES
        .iter()
        .map(|s| get(d, &format!("revenue_cents:{s}")))
        .sum();
    let dau = inputs.dau.max(0) as f64;
    let per_user = |x: f64| if dau > 0.0 { x / dau } else { 0.0 };
    let interactions = per_user(get(d, field::INTERACTIONS) as f64);
    let trades = per_user(get(d, field::TRADES) as f64);
    let progress = per_user((get(d, field::ACHIEVEMENTS) + get(d, field::LEVEL_UPS)) as f64);
    let engagement = if dau > 0.0 {
        10.0 * (0.5 * (interactions / 5.0).min(1.0)
            + 0.3 * (trades / 10.0).min(1.0)
            + 0.2 * progress.min(1.0))
    } else {
        0.0
    };
    let revenue_usd = revenue_cents as f64 / 100.0;
    Kpis {
        values: vec![
            ("trades_per_second", inputs.trades_last_minute as f64 / 60.0),
            ("daily_active_users", dau),
            ("daily_revenue_usd", revenue_usd),
            ("engagement_score", engagement),
            ("revenue_per_user_usd", per_user(revenue_usd)),
            ("social_interaction_rate", interactions),
        ],
        revenue_by_source_usd,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(k: &Kpis, name: &str) -> f64 {
        k.values.iter().find(|(n, _)| *n == name).unwrap().1
    }

    #[test]
    fn kpis_from_counters() {
        let day: BTreeMap<String, i64> = [
            ("trades", 60),
            ("interactions", 30),
            ("achievements", 4),
            ("level_ups", 2),
            ("revenue_cents:trade_fee", 132_200),
            ("revenue_cents:subscription", 4_999),
            ("revenue_cents:nft_fee", 2_500),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let k = compute(&Inputs {
            day,
            dau: 3,
            trades_last_minute: 120,
        });
        assert_eq!(value(&k, "trades_per_second"), 2.0);
        assert_eq!(value(&k, "daily_active_users"), 3.0);
        assert_eq!(value(&k, "daily_revenue_usd"), 1396.99);
        assert!((value(&k, "revenue_per_user_usd") - 465.663_333).abs() < 1e-3);
        assert_eq!(value(&k, "social_interaction_rate"), 10.0);
        // interactions/user 10 (capped 1), trades/user 20 (capped 1), progress 2 (capped 1).
        assert_eq!(value(&k, "engagement_score"), 10.0);
        assert_eq!(
            k.revenue_by_source_usd,
            vec![
                ("trade_fee", 1322.0),
                ("subscription", 49.99),
                ("nft_fee", 25.0)
            ]
        );
    }

    #[test]
    fn ratios_are_zero_without_active_users() {
        let k = compute(&Inputs::default());
        assert!(k.values.iter().all(|(_, v)| *v == 0.0), "{k:?}");
    }

    #[test]
    fn engagement_weights() {
        let day: BTreeMap<String, i64> = [("interactions", 5), ("trades", 10)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        // 2 users: 2.5 interactions/user → 0.5·0.5; 5 trades/user → 0.3·0.5; no progress.
        let k = compute(&Inputs {
            day,
            dau: 2,
            trades_last_minute: 0,
        });
        assert!((value(&k, "engagement_score") - 4.0).abs() < 1e-9);
    }
}
