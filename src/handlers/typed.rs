//! The typed adaptor: a handler names the streams it reads and the payload each carries,
//! and gets every event already decoded; an event on any other stream is poison before
//! the handler runs.
//!
//! ```ignore
//! input! {
//!     /// What `gamification.xp_processing` reads.
//!     pub enum XpInput {
//!         streams::TRADE_EXECUTED => Trade(TradeExecuted),
//!         streams::INTERACTION => Interaction(Interaction),
//!     }
//! }
//!
//! impl TypedHandler for XpProcessing {
//!     type Input = XpInput;
//!     fn decide(&self, input: XpInput, ev: &Event, rounds: &[Vec<Reply>]) -> ... {
//!         match input { XpInput::Trade(t) => ..., XpInput::Interaction(i) => ... }
//!     }
//! }
//! ```
//!
//! Every [`TypedHandler`] is a [`Handler`] (blanket implementation): the runtime keeps
//! calling [`Handler::step`], which decodes with [`Input::decode`], rejects a stream
//! outside [`Input::STREAMS`] with the handler's [`Reject`] wording and hands the
//! rest to [`TypedHandler::decide`]. A payload that does not decode is poison naming the
//! field, as [`Event::payload`] words it. A payload type read on its own (`type Input =
//! TradeExecuted`) is read from its own stream (the impls at the end of this file); a
//! variant without a payload type (`streams::LEVEL_UP => LevelUp`) decodes nothing.
//!
//! Handlers that read whatever streams their group is configured with (the builtins, the
//! audit trail) implement [`Handler`] directly.

use crate::events::{
    Interaction, SaleCompleted, SubscriptionChanged, TradeExecuted, XpAwarded, streams,
};
use crate::handler::{Event, Handler, HandlerError, Reply, Step};
use crate::handlers::support::poison;

/// What one handler reads, decoded: usually an enum with one variant per stream, declared
/// with `input!`.
pub trait Input: Sized {
    /// The streams this input is read from, in declaration order.
    const STREAMS: &'static [&'static str];

    /// Decodes an event read from one of [`Input::STREAMS`] (poison if its payload does not
    /// fit); `None` for any other stream.
    fn decode(ev: &Event) -> Option<Result<Self, HandlerError>>;
}

/// A handler that receives its events decoded (see the module docs).
pub trait TypedHandler: Send + Sync + 'static {
    /// What it reads.
    type Input: Input;

    /// Decides the next step for the decoded `input` of `ev`, given the replies of the
    /// rounds already applied: the contract of [`Handler::step`] (pure, re-run on
    /// redelivery).
    fn decide(
        &self,
        input: Self::Input,
        ev: &Event,
        rounds: &[Vec<Reply>],
    ) -> Result<Step, HandlerError>;

    /// How the poison for an event on a stream outside [`Input::STREAMS`] is worded.
    const REJECT: Reject = Reject::NotRead;
}

/// How a handler words the poison for an event on a stream it does not read. Each domain
/// has always worded it its own way, and dead-letter readers and tests match on the words,
/// so the wordings are kept, each declared once here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// ``stream `<stream>` is not read by this handler`` (nft, user, analytics).
    NotRead,
    /// `group <group> does not read stream <stream>` (gamification, social).
    Group(&'static str),
    /// `unexpected stream <stream> (this group reads <the input's streams>)` (trading,
    /// financial).
    Listing,
}

impl Reject {
    /// The poison for `ev`, read by a handler whose input comes from `reads`.
    pub fn poison(self, ev: &Event, reads: &[&str]) -> HandlerError {
        let stream = &ev.stream;
        poison(match self {
            Reject::NotRead => format!("stream `{stream}` is not read by this handler"),
            Reject::Group(group) => format!("group {group} does not read stream {stream}"),
            Reject::Listing => format!(
                "unexpected stream {stream} (this group reads {})",
                reads.join(", ")
            ),
        })
    }
}

impl<T: TypedHandler> Handler for T {
    fn step(&self, ev: &Event, rounds: &[Vec<Reply>]) -> Result<Step, HandlerError> {
        match T::Input::decode(ev) {
            Some(input) => self.decide(input?, ev, rounds),
            None => Err(T::REJECT.poison(ev, T::Input::STREAMS)),
        }
    }
}

/// Declares an [`Input`] enum: one `stream => Variant(Payload)` line per stream read
/// (`stream | stream => Variant` for variants without a payload).
macro_rules! input {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vmeta:meta])* $($stream:path)|+ => $variant:ident $(($payload:ty))? ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis enum $name {
            $( $(#[$vmeta])* $variant $(($payload))? ),+
        }

        impl $crate::handlers::typed::Input for $name {
            const STREAMS: &'static [&'static str] = &[$($($stream),+),+];

            fn decode(
                ev: &$crate::handler::Event,
            ) -> Option<Result<Self, $crate::handler::HandlerError>> {
                match ev.stream.as_str() {
                    $( $($stream)|+ => Some($crate::handlers::typed::input!(
                        @decode ev, $name::$variant $(, $payload)?
                    )), )+
                    _ => None,
                }
            }
        }
    };
    (@decode $ev:ident, $name:ident :: $variant:ident, $payload:ty) => {
        $ev.payload::<$payload>().map($name::$variant)
    };
    (@decode $ev:ident, $name:ident :: $variant:ident) => {
        Ok($name::$variant)
    };
}
pub(crate) use input;

/// A payload type read on its own comes from its own stream.
macro_rules! read_alone {
    ($($stream:path => $payload:ty),+ $(,)?) => {$(
        impl Input for $payload {
            const STREAMS: &'static [&'static str] = &[$stream];

            fn decode(ev: &Event) -> Option<Result<Self, HandlerError>> {
                (ev.stream == $stream).then(|| ev.payload())
            }
        }
    )+};
}

read_alone! {
    streams::TRADE_EXECUTED => TradeExecuted,
    streams::INTERACTION => Interaction,
    streams::XP_AWARDED => XpAwarded,
    streams::SUBSCRIPTION_CHANGED => SubscriptionChanged,
    streams::SALE_COMPLETED => SaleCompleted,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{LevelUp, RewardIssued};
    use crate::handlers::testing::{done, event, json_event, poison_of};

    input! {
        /// Two streams with payloads, two without.
        enum Sample {
            streams::LEVEL_UP => Level(LevelUp),
            streams::XP_AWARDED => Xp(XpAwarded),
            streams::REWARD_ISSUED | streams::FEED_ITEM_POSTED => Ignored,
        }
    }

    struct Echo;

    impl TypedHandler for Echo {
        type Input = Sample;
        fn decide(&self, input: Sample, _: &Event, _: &[Vec<Reply>]) -> Result<Step, HandlerError> {
            Ok(match input {
                Sample::Level(l) if l.to > l.from => Step::nothing(),
                Sample::Xp(x) if x.amount > 0 => Step::nothing(),
                Sample::Level(_) | Sample::Xp(_) => Step::More(vec![]),
                Sample::Ignored => Step::nothing(),
            })
        }
    }

    #[test]
    fn streams_are_listed_in_declaration_order() {
        assert_eq!(
            Sample::STREAMS,
            [
                streams::LEVEL_UP,
                streams::XP_AWARDED,
                streams::REWARD_ISSUED,
                streams::FEED_ITEM_POSTED
            ]
        );
        assert_eq!(TradeExecuted::STREAMS, [streams::TRADE_EXECUTED]);
    }

    #[test]
    fn payloads_are_decoded_per_stream_and_other_streams_rejected() {
        let up = LevelUp {
            user_id: "u".into(),
            from: 1,
            to: 2,
            total_xp: 100,
        };
        done(Echo.step(&event(streams::LEVEL_UP, &up), &[]).unwrap());
        // A variant without a payload type never looks at the payload.
        let reward = json_event(streams::REWARD_ISSUED, "not even JSON");
        done(Echo.step(&reward, &[]).unwrap());
        let bad = json_event(streams::LEVEL_UP, r#"{"user_id":"u","from":1}"#);
        let m = poison_of(Echo.step(&bad, &[]));
        assert!(m.contains("missing field `to`"), "{m}");
        let other = event(
            streams::NOTIFICATION_REQUESTED,
            &RewardIssued {
                user_id: "u".into(),
                reward: "r".into(),
                reason: "x".into(),
            },
        );
        assert_eq!(
            poison_of(Echo.step(&other, &[])),
            "stream `astra.user.notification_requested.v1` is not read by this handler"
        );
    }
}
