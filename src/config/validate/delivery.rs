//! `[defaults]` and the same keys on a `[[group]]`: how a group reads, retries and
//! dead-letters. A group's value wins over `[defaults]`, which wins over the defaults
//! declared on [`GroupConfig`]'s `Default`.

use std::collections::BTreeSet;
use std::ops::Range;
use std::time::Duration;

use super::Validator;
use crate::config::raw::RawGroupSettings;
use crate::group::{GroupConfig, StartId};

/// The delivery settings resolved for `[defaults]` or for one group.
pub(super) struct Settings {
    /// A group holding the resolved delivery settings (its other fields are not used).
    pub(super) group: GroupConfig,
    /// Where the dead-letter stream was set, if it was.
    dead_letter_span: Option<Range<usize>>,
}

impl Validator {
    /// Resolves `raw` (keys named `<prefix><key>` in messages) over `base`, or over the
    /// built-in defaults when there is none.
    pub(super) fn settings(
        &mut self,
        file: &str,
        text: &str,
        prefix: &str,
        raw: &RawGroupSettings,
        base: Option<&Settings>,
    ) -> Settings {
        let d = Settings {
            group: GroupConfig::default(),
            dead_letter_span: None,
        };
        let base = base.unwrap_or(&d);
        let b = &base.group;
        let ms = Duration::from_millis;
        let batch_size = self
            .int(
                file,
                text,
                &format!("{prefix}batch_size"),
                &raw.batch_size,
                1..10_001,
            )
            .map_or(b.batch_size, |n| n as usize);
        let block = self
            .dur(
                file,
                text,
                &format!("{prefix}block"),
                &raw.block,
                ms(1),
                ms(300_000),
            )
            .unwrap_or(b.block);
        let concurrency = self
            .int(
                file,
                text,
                &format!("{prefix}concurrency"),
                &raw.concurrency,
                1..100_001,
            )
            .map_or(b.concurrency, |n| n as usize);
        let claim_idle = self
            .dur(
                file,
                text,
                &format!("{prefix}claim_idle"),
                &raw.claim_idle,
                ms(10),
                Duration::from_secs(86_400),
            )
            .unwrap_or(b.claim_idle);
        let max_deliveries = self
            .int(
                file,
                text,
                &format!("{prefix}max_deliveries"),
                &raw.max_deliveries,
                1..1001,
            )
            .map_or(b.max_deliveries, |n| n as u32);
        let (dead_letter_stream, dead_letter_span) = match &raw.dead_letter_stream {
            Some(s) => (s.get_ref().clone(), Some(s.span())),
            None => (b.dead_letter_stream.clone(), base.dead_letter_span.clone()),
        };
        let start_id = match &raw.start_id {
            None => b.start_id,
            Some(s) => match s.get_ref().as_str() {
                "0" => StartId::Beginning,
                "$" => StartId::End,
                other => {
                    self.at(
                        file,
                        text,
                        s.span(),
                        format!("{prefix}start_id must be \"0\" (whole history) or \"$\" (new entries only), got {other:?}"),
                    );
                    b.start_id
                }
            },
        };
        Settings {
            group: GroupConfig {
                batch_size,
                block,
                concurrency,
                claim_idle,
                max_deliveries,
                dead_letter_stream,
                start_id,
                ..b.clone()
            },
            dead_letter_span,
        }
    }

    /// `defaults.dead_letter_stream`, when set, must be a declared stream.
    pub(super) fn default_dead_letter_declared(
        &mut self,
        file: &str,
        text: &str,
        defaults: &Settings,
        declared: &BTreeSet<&str>,
    ) {
        let stream = &defaults.group.dead_letter_stream;
        if let Some(span) = &defaults.dead_letter_span
            && !declared.contains(stream.as_str())
        {
            self.at(
                file,
                text,
                span.clone(),
                format!("defaults.dead_letter_stream: undeclared stream {stream}"),
            );
        }
    }
}
