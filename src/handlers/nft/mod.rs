//! nft domain handlers: badge rewards ([`RewardDistribution`]) and marketplace statistics
//! ([`Marketplace`]).
use crate::handler::BuildFn;

pub mod marketplace;
pub mod reward_distribution;

pub use marketplace::{CollectionStats, LOW_WINDOW_MS, Marketplace, summarize};
pub use reward_distribution::RewardDistribution;

/// The handlers of this domain, by name.
pub fn handlers() -> Vec<(&'static str, BuildFn)> {
    vec![
        ("nft.reward_distribution", RewardDistribution::build),
        ("nft.marketplace", Marketplace::build),
    ]
}

// ---------------------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------------------

/// `astra:nft:rewards:<user>`: set of the reward names a user holds (`bronze_badge`,
/// `first_trade_badge`, …). A reward is issued only when `SADD` adds it.
pub fn rewards_key(user: &str) -> String {
    format!("astra:nft:rewards:{user}")
}

/// `astra:nft:rewards_issued`: hash `<user>` → number of rewards issued to that user.
pub fn rewards_issued_key() -> String {
    "astra:nft:rewards_issued".to_string()
}

/// `astra:nft:collection:{<collection>}`: hash with the collection's all-time counters,
/// fields [`FIELD_VOLUME_CENTS`] and [`FIELD_SALES`]. The braces are a Redis Cluster hash
/// tag, so this key and [`collection_sales_key`] live in the same slot.
pub fn collection_key(collection: &str) -> String {
    format!("astra:nft:collection:{{{collection}}}")
}

/// `astra:nft:collection:{<collection>}:sales`: sorted set of the collection's recent
/// sales, score = sale `ts` (Unix ms), member = [`sale_member`] (`<cents>:<sale_id>`).
/// Entries older than 24 h plus `prune_margin_secs` (relative to the newest event that
/// pruned) are removed. Read it with `ZRANGE key 0 -1 WITHSCORES` and feed [`summarize`].
pub fn collection_sales_key(collection: &str) -> String {
    format!("astra:nft:collection:{{{collection}}}:sales")
}

/// `astra:nft:collections`: set of every collection that has had a sale.
pub fn collections_key() -> String {
    "astra:nft:collections".to_string()
}

/// Field of [`collection_key`]: total sale volume, integer cents.
pub const FIELD_VOLUME_CENTS: &str = "volume_cents";
/// Field of [`collection_key`]: number of sales.
pub const FIELD_SALES: &str = "sales";

/// Member of [`collection_sales_key`] for one sale: `<price_cents>:<sale_id>` (the price
/// first, so a sale id containing `:` still parses).
pub fn sale_member(sale_id: &str, price_cents: i64) -> String {
    format!("{price_cents}:{sale_id}")
}

/// Parses a [`sale_member`] back into `(price_cents, sale_id)`; `None` if malformed.
pub fn parse_sale_member(member: &str) -> Option<(i64, &str)> {
    let (cents, sale_id) = member.split_once(':')?;
    let cents: i64 = cents.parse().ok()?;
    (cents > 0 && !sale_id.is_empty()).then_some((cents, sale_id))
}

/// Events the tests of this domain's handlers build.
#[cfg(test)]
pub(crate) mod fixtures {
    use crate::events::{AchievementUnlocked, LevelUp, streams};
    use crate::handler::Event;
    use crate::handlers::testing::event;

    pub(crate) fn level_up(from: u32, to: u32) -> Event {
        event(
            streams::LEVEL_UP,
            &LevelUp {
                user_id: "u1".into(),
                from,
                to,
                total_xp: 0,
            },
        )
    }

    pub(crate) fn achievement(a: &str) -> Event {
        event(
            streams::ACHIEVEMENT_UNLOCKED,
            &AchievementUnlocked {
                user_id: "u1".into(),
                achievement: a.into(),
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_roundtrip() {
        assert_eq!(sale_member("a:b", 42), "42:a:b");
        assert_eq!(parse_sale_member("42:a:b"), Some((42, "a:b")));
        assert_eq!(parse_sale_member("x:a"), None);
        assert_eq!(parse_sale_member("0:a"), None);
        assert_eq!(parse_sale_member("5:"), None);
        assert_eq!(parse_sale_member("5"), None);
    }
}
