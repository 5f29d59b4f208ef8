//! user domain handlers: the profile projection ([`ProfileUpdates`]) and notification
//! requests ([`Notifications`]).
use crate::handler::BuildFn;

pub mod notifications;
pub mod profile_updates;

pub use notifications::Notifications;
pub use profile_updates::ProfileUpdates;

/// The handlers of this domain, by name.
pub fn handlers() -> Vec<(&'static str, BuildFn)> {
    vec![
        ("user.profile_updates", ProfileUpdates::build),
        ("user.notifications", Notifications::build),
    ]
}

// ---------------------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------------------

/// `astra:user:profile:<user>`: the user's profile hash, fields [`FIELD_DISPLAY_NAME`],
/// [`FIELD_CLAN`], [`FIELD_XP`], [`FIELD_LEVEL`], [`FIELD_ACHIEVEMENTS`], [`FIELD_TRADES`]
/// (all listed in [`PROFILE_FIELDS`]). Absent counters read as 0, an absent level as 1.
pub fn profile_key(user: &str) -> String {
    format!("astra:user:profile:{user}")
}

/// Profile field: display name (from `user.registered`).
pub const FIELD_DISPLAY_NAME: &str = "display_name";
/// Profile field: clan (from `user.registered`, when given).
pub const FIELD_CLAN: &str = "clan";
/// Profile field: XP total (sum of every `xp_awarded.amount`).
pub const FIELD_XP: &str = "xp";
/// Profile field: level (level `L` needs `100·(L−1)²` XP); converges to the level of
/// `xp` once in-flight events are committed (see [`ProfileUpdates`]).
pub const FIELD_LEVEL: &str = "level";
/// Profile field: number of achievements unlocked.
pub const FIELD_ACHIEVEMENTS: &str = "achievements";
/// Profile field: number of trades (XP awards with reason `trade`).
pub const FIELD_TRADES: &str = "trades";
/// Every field of [`profile_key`].
pub const PROFILE_FIELDS: &[&str] = &[
    FIELD_DISPLAY_NAME,
    FIELD_CLAN,
    FIELD_XP,
    FIELD_LEVEL,
    FIELD_ACHIEVEMENTS,
    FIELD_TRADES,
];

/// Helpers the tests of this domain's handlers share.
#[cfg(test)]
pub(crate) mod fixtures {
    pub(crate) fn s(v: &str) -> String {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handlers::testing::group;

    #[test]
    fn options_are_rejected() {
        let p = ProfileUpdates::build(&group("u", "user.profile_updates", &[], "x = 1"));
        assert!(p.err().unwrap().contains("unknown option `x`"));
        let n = Notifications::build(&group("u", "user.notifications", &[], "x = 1"));
        assert!(n.err().unwrap().contains("unknown option `x`"));
        assert!(ProfileUpdates::build(&group("u", "user.profile_updates", &[], "")).is_ok());
    }
}
