//! gamification domain: XP and levels ([`xp_processing`]), leaderboards
//! ([`leaderboards`]), achievements ([`achievements`]).
//!
//! Also home of the level helpers the social and user domains and the HTTP edge share
//! ([`level_for_xp`], [`xp_for_level`]), of the payload checks the social handlers reuse,
//! and of every gamification key layout (`astra:gamification:…`, re-exported from the
//! handler files). The period helpers ([`iso_week`], [`week_end_ms`], [`day_end_ms`]) come
//! from [`crate::calendar`], [`expire_secs`] from [`crate::handlers::support`].

use crate::events::{LevelUp, TradeExecuted, XpAwarded, notional_cents};
use crate::handler::BuildFn;
use crate::handler::HandlerError;
use crate::handlers::support::require_non_empty;

pub mod achievements;
pub mod leaderboards;
pub mod xp_processing;

pub use crate::calendar::{day_end_ms, iso_week, iso_year_week, week_end_ms};
pub use crate::handlers::support::expire_secs;
pub use achievements::{
    ACHIEVEMENTS, Achievements, VOLUME_100K_CENTS, XP_10K, achievements_key, trade_stats_key,
};
pub use leaderboards::{Board, Leaderboards, board_key, current_board_key, current_period};
pub use xp_processing::{XpProcessing, interaction_xp, xp_key};

/// The handlers of this domain, by name.
pub fn handlers() -> Vec<(&'static str, BuildFn)> {
    vec![
        ("gamification.xp_processing", XpProcessing::build),
        ("gamification.leaderboards", Leaderboards::build),
        ("gamification.achievements", Achievements::build),
    ]
}

// ---------------------------------------------------------------------------------------
// Levels
// ---------------------------------------------------------------------------------------

/// The level of a user with `xp` total XP. Level `L` needs `100·(L−1)²` XP: level 1 at
/// 0 XP, level 2 at 100, level 3 at 400, level 4 at 900, … Negative totals are level 1.
///
/// Integer math only (`1 + isqrt(xp / 100)`): exact at every threshold. This works
/// because `(L−1)²` is an integer, so `100·(L−1)² ≤ xp ⇔ (L−1)² ≤ ⌊xp/100⌋`.
pub fn level_for_xp(xp: i64) -> u32 {
    if xp < 100 {
        return 1;
    }
    // isqrt(i64::MAX / 100) < 2^32, so the cast cannot truncate.
    1 + (xp / 100).isqrt() as u32
}

/// Total XP needed to reach `level` (`100·(level−1)²`, saturating; level 0 and 1 need 0).
pub fn xp_for_level(level: u32) -> i64 {
    let k = i64::from(level.saturating_sub(1));
    k.saturating_mul(k).saturating_mul(100)
}

// ---------------------------------------------------------------------------------------
// Payload checks (also used by `social`)
// ---------------------------------------------------------------------------------------

/// A trade's notional in cents after checking the fields every trade consumer relies on
/// (`user_id` non-empty, `quantity` > 0, `price_usd` ≥ 0, both finite, notional in range).
pub(crate) fn trade_notional_cents(t: &TradeExecuted) -> Result<i64, HandlerError> {
    require_non_empty("user_id", &t.user_id)?;
    if !t.quantity.is_finite() || t.quantity <= 0.0 {
        return Err(HandlerError::Poison(format!(
            "field `quantity`: must be a finite number > 0, got {}",
            t.quantity
        )));
    }
    if !t.price_usd.is_finite() || t.price_usd < 0.0 {
        return Err(HandlerError::Poison(format!(
            "field `price_usd`: must be a finite number >= 0, got {}",
            t.price_usd
        )));
    }
    notional_cents(t.quantity, t.price_usd).ok_or_else(|| {
        HandlerError::Poison(format!(
            "fields `quantity` × `price_usd`: notional {} × {} is out of range",
            t.quantity, t.price_usd
        ))
    })
}

/// Checks an `xp_awarded` payload: `user_id` non-empty, `amount` ≥ 0.
pub(crate) fn check_xp_awarded(x: &XpAwarded) -> Result<(), HandlerError> {
    require_non_empty("user_id", &x.user_id)?;
    if x.amount < 0 {
        return Err(HandlerError::Poison(format!(
            "field `amount`: must be >= 0, got {}",
            x.amount
        )));
    }
    Ok(())
}

/// Checks a `level_up` payload: `user_id` non-empty, `1 <= from < to`.
pub(crate) fn check_level_up(l: &LevelUp) -> Result<(), HandlerError> {
    require_non_empty("user_id", &l.user_id)?;
    if l.from < 1 {
        return Err(HandlerError::Poison(format!(
            "field `from`: must be >= 1, got {}",
            l.from
        )));
    }
    if l.to <= l.from {
        return Err(HandlerError::Poison(format!(
            "field `to`: must be > `from` ({}), got {}",
            l.from, l.to
        )));
    }
    Ok(())
}

/// Payloads the tests of this domain's handlers build.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::level_for_xp;
    use crate::events::{Interaction, InteractionKind, Side, TradeExecuted, XpAwarded};

    pub(crate) fn trade(user: &str, quantity: f64, price_usd: f64) -> TradeExecuted {
        TradeExecuted {
            trade_id: "t1".into(),
            user_id: user.into(),
            symbol: "BTC".into(),
            side: Side::Buy,
            quantity,
            price_usd,
            fee_usd: None,
        }
    }

    pub(crate) fn interaction(user: &str, target: &str, kind: InteractionKind) -> Interaction {
        Interaction {
            user_id: user.into(),
            target_user_id: target.into(),
            kind,
        }
    }

    pub(crate) fn xp(user: &str, amount: i64, total: i64) -> XpAwarded {
        XpAwarded {
            user_id: user.into(),
            amount,
            total,
            level: level_for_xp(total),
            reason: "trade".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_exact_at_every_threshold() {
        assert_eq!(level_for_xp(-5), 1);
        assert_eq!(level_for_xp(0), 1);
        assert_eq!(level_for_xp(99), 1);
        assert_eq!(level_for_xp(100), 2);
        assert_eq!(level_for_xp(399), 2);
        assert_eq!(level_for_xp(400), 3);
        assert_eq!(level_for_xp(899), 3);
        assert_eq!(level_for_xp(900), 4);
        assert_eq!(level_for_xp(1_600), 5);
        assert_eq!(level_for_xp(8_100), 10);
        assert_eq!(level_for_xp(i64::MAX), 303_700_050);
        for l in 1..=20_000u32 {
            let t = xp_for_level(l);
            assert_eq!(t, 100 * i64::from(l - 1).pow(2));
            assert_eq!(level_for_xp(t), l, "at {t}");
            if l > 1 {
                assert_eq!(level_for_xp(t - 1), l - 1, "just below {t}");
            }
        }
        // Large exact squares, where an f64 sqrt would be off by one.
        let k: i64 = 303_700_049;
        assert_eq!(level_for_xp(100 * k * k), (k + 1) as u32);
        assert_eq!(level_for_xp(100 * k * k - 1), k as u32);
    }

    #[test]
    fn registered_names() {
        let names: Vec<&str> = handlers().into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "gamification.xp_processing",
                "gamification.leaderboards",
                "gamification.achievements"
            ]
        );
    }
}
