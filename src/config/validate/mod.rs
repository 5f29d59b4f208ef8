//! Validation: the raw model in, the validated model out, and *every* problem found on
//! the way as a [`Diagnostic`] at `file:line:col`, so an operator fixes a broken topology
//! in one pass. One file per section; [`Validator::build`] runs them in the order their
//! diagnostics are reported.

use std::collections::BTreeSet;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use super::error::Diagnostic;
use super::model::Config;
use super::raw::{RawGroupsFile, RawStreamsFile};

mod daemon;
mod delivery;
mod groups;
mod redis;
mod services;
mod streams;
pub(in crate::config) mod tracing;

/// Collects diagnostics while the sections are validated.
pub(in crate::config) struct Validator {
    /// Every problem found so far, in the order found.
    pub(in crate::config) diags: Vec<Diagnostic>,
    /// Handler names that exist.
    known: Vec<&'static str>,
    /// The `[services.<name>]` declared (remote handlers must name one).
    services: Vec<String>,
}

impl Validator {
    /// A validator that accepts the handler names `known`.
    pub(in crate::config) fn new(known: Vec<&'static str>) -> Validator {
        Validator {
            diags: vec![],
            known,
            services: vec![],
        }
    }

    /// Validates `streams.toml` (`sfile`, `stext`, parsed as `raw`) and the group files.
    pub(in crate::config) fn build(
        &mut self,
        dir: &Path,
        sfile: &str,
        stext: &str,
        raw: RawStreamsFile,
        raw_groups: Vec<(String, String, RawGroupsFile)>,
    ) -> Config {
        let redis = self.redis(dir, sfile, stext, raw.redis);
        let defaults = self.settings(sfile, stext, "defaults.", &raw.defaults, None);
        let (retention, stream_defaults) = self.retention(sfile, stext, &raw.retention);
        let daemon = self.daemon(sfile, stext, &raw.daemon);
        let metrics = self.metrics(sfile, stext, &raw.metrics);
        let tracing = self.tracing(sfile, stext, &raw.tracing);
        let streams = self.streams(dir, sfile, stext, &raw.stream, &stream_defaults);
        let declared: BTreeSet<&str> = streams.iter().map(|s| s.name.as_str()).collect();
        self.default_dead_letter_declared(sfile, stext, &defaults, &declared);
        let services = self.services(sfile, stext, &raw.services);
        self.services = services.iter().map(|s| s.name.clone()).collect();
        let groups = self.groups(&raw_groups, &defaults, &declared);
        let domains: Vec<String> = streams
            .iter()
            .map(|s| s.domain.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        // Per-route rate limits name a domain or a proxied service.
        let mut limited = domains.clone();
        limited.extend(services.iter().filter(|s| s.proxy).map(|s| s.name.clone()));
        let edge = self.edge(sfile, stext, &raw.edge, &streams, &limited);
        Config {
            dir: dir.to_path_buf(),
            redis,
            retention,
            daemon,
            edge,
            metrics,
            tracing,
            streams,
            groups,
            services,
        }
    }

    /// Records `message` at the start of `span` in `file`.
    pub(in crate::config) fn at(
        &mut self,
        file: &str,
        text: &str,
        span: Range<usize>,
        message: String,
    ) {
        let (line, col) = line_col(text, span.start);
        self.diags.push(Diagnostic {
            file: file.to_string(),
            line,
            col,
            message,
        });
    }

    /// Parses a whole file; a syntax error or unknown field is recorded where TOML says.
    pub(in crate::config) fn parse<T: serde::de::DeserializeOwned>(
        &mut self,
        file: &str,
        text: &str,
    ) -> Option<T> {
        match toml::from_str::<T>(text) {
            Ok(v) => Some(v),
            Err(e) => {
                let span = e.span().unwrap_or(0..0);
                let msg = e.message().trim().replace('\n', " ");
                self.at(file, text, span, msg);
                None
            }
        }
    }

    /// An integer `what` within `range`, if given and valid.
    pub(in crate::config) fn int(
        &mut self,
        file: &str,
        text: &str,
        what: &str,
        v: &Option<Spanned<i64>>,
        range: Range<i64>,
    ) -> Option<i64> {
        let s = v.as_ref()?;
        let n = *s.get_ref();
        if !range.contains(&n) {
            self.at(
                file,
                text,
                s.span(),
                format!(
                    "{what} must be between {} and {}, got {n}",
                    range.start,
                    range.end - 1
                ),
            );
            return None;
        }
        Some(n)
    }

    /// A humantime duration `what` within `min..=max`, if given and valid.
    pub(in crate::config) fn dur(
        &mut self,
        file: &str,
        text: &str,
        what: &str,
        v: &Option<Spanned<String>>,
        min: Duration,
        max: Duration,
    ) -> Option<Duration> {
        let s = v.as_ref()?;
        match humantime::parse_duration(s.get_ref()) {
            Ok(d) if d >= min && d <= max => Some(d),
            Ok(_) => {
                self.at(
                    file,
                    text,
                    s.span(),
                    format!(
                        "{what} must be between {} and {}, got {:?}",
                        humantime::format_duration(min),
                        humantime::format_duration(max),
                        s.get_ref()
                    ),
                );
                None
            }
            Err(e) => {
                self.at(
                    file,
                    text,
                    s.span(),
                    format!(
                        "{what}: {:?} is not a duration ({e}); write e.g. \"500ms\", \"30s\", \"7d\"",
                        s.get_ref()
                    ),
                );
                None
            }
        }
    }
}

/// Converts a byte offset into 1-based (line, column); columns count characters.
pub(in crate::config) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map_or(before, |i| &before[i + 1..])
        .chars()
        .count()
        + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::StartId;

    #[test]
    fn absent_keys_get_the_documented_defaults() {
        let streams = r#"[redis]
url = "redis://127.0.0.1:6379"

[[stream]]
name = "astra.a.b.v1"
description = "in"

[[stream]]
name = "astra.bus.dead_letter.v1"
description = "dead letters"
"#;
        let group = r#"[[group]]
name = "a.g"
handler = "builtin.count_by_user"
reads = ["astra.a.b.v1"]
"#;
        let sources = [
            ("streams.toml".to_string(), streams.to_string()),
            ("consumer-groups/a.toml".to_string(), group.to_string()),
        ];
        let cfg = Config::from_sources(Path::new("."), &sources).unwrap();
        let secs = Duration::from_secs;
        let g = &cfg.groups[0];
        let delivery = |g: &crate::group::GroupConfig| {
            (
                g.batch_size,
                g.block,
                g.concurrency,
                g.claim_idle,
                g.max_deliveries,
                g.dead_letter_stream.clone(),
                g.start_id,
            )
        };
        // The values the README documents.
        let documented = (
            100,
            secs(2),
            256,
            secs(30),
            5,
            "astra.bus.dead_letter.v1".to_string(),
            StartId::Beginning,
        );
        assert_eq!(delivery(g), documented);
        // Handler unit tests build their groups with the same defaults.
        let t = crate::handlers::testing::group("a.g", "builtin.count_by_user", &[], "");
        assert_eq!(delivery(&t), documented);
        let r = &cfg.redis;
        assert_eq!(
            (r.command_timeout, r.min_replicas_ack, r.replica_ack_timeout),
            (secs(10), 0, secs(1))
        );
        assert_eq!(
            (r.password_file.clone(), r.tls_ca_file.clone()),
            (None, None)
        );
        assert_eq!(cfg.retention.interval, secs(30));
        assert_eq!(cfg.streams[0].max_len, None);
        assert_eq!(cfg.streams[0].max_age, None);
        let d = &cfg.daemon;
        assert_eq!(
            (d.shutdown_deadline, d.consumer_idle_limit, d.dedup_ttl),
            (secs(10), secs(3600), secs(3600))
        );
        assert_eq!(cfg.metrics.refresh_interval, secs(5));
    }

    #[test]
    fn line_col_counts_from_one() {
        let t = "a = 1\nbb = 2\n";
        assert_eq!(line_col(t, 0), (1, 1));
        assert_eq!(line_col(t, 6), (2, 1));
        assert_eq!(line_col(t, 9), (2, 4));
    }
}
