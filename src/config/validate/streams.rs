//! `[retention]` and `[[stream]]`: the stream catalog and how long streams keep entries.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::{Validator, line_col};
use crate::config::model::{RetentionConfig, StreamConfig};
use crate::config::raw::{RawRetention, RawStream};
use crate::envelope::parse_stream_name;
use crate::events::custom::CustomSchema;

/// The length and age bounds a stream has unless it sets its own (`[retention]`).
pub(super) struct StreamDefaults {
    max_len: Option<u64>,
    max_age: Option<Duration>,
}

impl Validator {
    pub(super) fn retention(
        &mut self,
        file: &str,
        text: &str,
        raw: &RawRetention,
    ) -> (RetentionConfig, StreamDefaults) {
        let d = RetentionConfig::default();
        let day = Duration::from_secs(86_400);
        let interval = self
            .dur(
                file,
                text,
                "retention.interval",
                &raw.interval,
                Duration::from_millis(100),
                day,
            )
            .unwrap_or(d.interval);
        let max_len = self
            .int(
                file,
                text,
                "retention.max_len",
                &raw.max_len,
                1..10_000_000_001,
            )
            .map(|n| n as u64);
        let max_age = self.dur(
            file,
            text,
            "retention.max_age",
            &raw.max_age,
            Duration::from_secs(1),
            day * 3650,
        );
        (
            RetentionConfig { interval },
            StreamDefaults { max_len, max_age },
        )
    }

    pub(super) fn streams(
        &mut self,
        dir: &Path,
        file: &str,
        text: &str,
        raw: &[RawStream],
        defaults: &StreamDefaults,
    ) -> Vec<StreamConfig> {
        let day = Duration::from_secs(86_400);
        let mut streams: Vec<StreamConfig> = vec![];
        let mut seen: HashMap<String, usize> = HashMap::new();
        for s in raw {
            let name = s.name.get_ref();
            let Some((domain, event, version)) = parse_stream_name(name) else {
                self.at(
                    file,
                    text,
                    s.name.span(),
                    format!(
                        "stream.name {name:?} does not match astra.<domain>.<event>.v<n> (lower-case [a-z0-9_] segments, n >= 1)"
                    ),
                );
                continue;
            };
            if let Some(first) = seen.get(name) {
                let (line, _) = line_col(text, *first);
                self.at(
                    file,
                    text,
                    s.name.span(),
                    format!("stream.name: duplicate stream {name} (first declared on line {line})"),
                );
                continue;
            }
            seen.insert(name.clone(), s.name.span().start);
            if s.description.get_ref().trim().is_empty() {
                self.at(
                    file,
                    text,
                    s.description.span(),
                    format!("stream {name}: description must not be empty"),
                );
            }
            let max_len = self
                .int(
                    file,
                    text,
                    &format!("stream {name}: max_len"),
                    &s.max_len,
                    1..10_000_000_001,
                )
                .map(|n| n as u64)
                .or(defaults.max_len);
            let max_age = self
                .dur(
                    file,
                    text,
                    &format!("stream {name}: max_age"),
                    &s.max_age,
                    Duration::from_secs(1),
                    day * 3650,
                )
                .or(defaults.max_age);
            let schema = s
                .schema
                .as_ref()
                .and_then(|f| self.stream_schema(dir, file, text, name, f));
            streams.push(StreamConfig {
                name: name.clone(),
                domain,
                event,
                version,
                description: s.description.get_ref().clone(),
                external: s.external,
                max_len,
                max_age,
                schema,
            });
        }
        streams
    }

    /// Reads and checks a stream's `schema` file; a problem is reported at the `schema`
    /// key, naming the file and the reason (for a JSON error, its line and column).
    fn stream_schema(
        &mut self,
        dir: &Path,
        file: &str,
        text: &str,
        name: &str,
        f: &toml::Spanned<String>,
    ) -> Option<Arc<CustomSchema>> {
        let fail = |v: &mut Self, why: String| {
            v.at(
                file,
                text,
                f.span(),
                format!("stream {name}: schema {}: {why}", f.get_ref()),
            );
            None
        };
        if crate::events::streams::ALL.contains(&name) {
            return fail(
                self,
                "this binary has the payload's contract built in; a schema file cannot replace it"
                    .into(),
            );
        }
        let path = dir.join(f.get_ref());
        let body = match std::fs::File::open(&path).and_then(|file| {
            let mut s = String::new();
            std::io::Read::read_to_string(
                &mut std::io::Read::take(file, crate::events::custom::MAX_FILE_BYTES as u64 + 1),
                &mut s,
            )
            .map(|_| s)
        }) {
            Ok(s) => s,
            Err(e) => return fail(self, format!("cannot read {}: {e}", path.display())),
        };
        match CustomSchema::parse(&body) {
            Ok(s) => Some(Arc::new(s)),
            Err(e) => fail(self, e),
        }
    }
}
