//! social domain: feeds ([`feed_generation`]), clan battles ([`clan_battles`]),
//! influence ([`influence`]).
//!
//! Key layouts live under `astra:social:` (re-exported from the handler files); the
//! period helpers come from [`crate::calendar`], the payload checks from the
//! gamification domain.

use crate::handler::BuildFn;

pub mod clan_battles;
pub mod feed_generation;
pub mod influence;

pub use clan_battles::{ClanBattles, clan_membership_key, clan_scores_key};
pub use feed_generation::{FeedGeneration, FeedItem, global_feed_key, user_feed_key};
pub use influence::{Influence, InfluenceWeights, influence_key};

/// The handlers of this domain, by name.
pub fn handlers() -> Vec<(&'static str, BuildFn)> {
    vec![
        ("social.feed_generation", FeedGeneration::build),
        ("social.clan_battles", ClanBattles::build),
        ("social.influence", Influence::build),
    ]
}

/// Payloads the tests of this domain's handlers build.
#[cfg(test)]
pub(crate) mod fixtures {
    use crate::events::{Side, TradeExecuted, XpAwarded};

    pub(crate) fn trade(user: &str, side: Side, quantity: f64, price_usd: f64) -> TradeExecuted {
        TradeExecuted {
            trade_id: "t1".into(),
            user_id: user.into(),
            symbol: "BTC".into(),
            side,
            quantity,
            price_usd,
            fee_usd: Some(1.0),
        }
    }

    pub(crate) fn xp(user: &str, amount: i64, total: i64) -> XpAwarded {
        XpAwarded {
            user_id: user.into(),
            amount,
            total,
            level: 1,
            reason: "like".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_names() {
        let names: Vec<&str> = handlers().into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "social.feed_generation",
                "social.clan_battles",
                "social.influence"
            ]
        );
    }
}
