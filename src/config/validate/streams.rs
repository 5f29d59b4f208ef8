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
        self.versions(file, text, raw, &streams);
        streams
    }

    /// Each `….v<n>` (n >= 2) against the highest lower version declared: a place where
    /// `v<n>`'s schema accepts a payload the older schema refuses is reported at `v<n>`'s
    /// `schema` key (or its name when it has none), unless it says `compatibility = "none"`.
    fn versions(&mut self, file: &str, text: &str, raw: &[RawStream], streams: &[StreamConfig]) {
        const SHOWN: usize = 10;
        for s in raw {
            let name = s.name.get_ref();
            let check = match s.compatibility.as_ref().map(|c| c.get_ref().as_str()) {
                None | Some("forward") => true,
                Some("none") => false,
                Some(other) => {
                    let c = s.compatibility.as_ref().expect("matched Some");
                    self.at(
                        file,
                        text,
                        c.span(),
                        format!(
                            "stream {name}: compatibility {other:?} is not one of \"forward\", \"none\""
                        ),
                    );
                    continue;
                }
            };
            let Some(new) = streams.iter().find(|c| &c.name == name) else {
                continue;
            };
            if !check || new.version < 2 {
                continue;
            }
            let Some(old) = streams
                .iter()
                .filter(|o| {
                    o.domain == new.domain && o.event == new.event && o.version < new.version
                })
                .max_by_key(|o| o.version)
            else {
                continue;
            };
            let (old_schema, old_file) = match &old.schema {
                Some(sc) => {
                    let f = raw
                        .iter()
                        .find(|r| r.name.get_ref() == &old.name)
                        .and_then(|r| r.schema.as_ref())
                        .map_or(String::new(), |f| f.get_ref().clone());
                    (Arc::clone(sc), f)
                }
                None => match crate::events::schema::payload(&old.name)
                    .and_then(|p| CustomSchema::compile(p.json_schema(&[])).ok())
                {
                    Some(sc) => (Arc::new(sc), "its built-in contract".to_string()),
                    None => continue, // v1 accepts any object: nothing to break
                },
            };
            let span = s.schema.as_ref().map_or(s.name.span(), |f| f.span());
            let hint = "set compatibility = \"none\" on the stream to declare the break on purpose";
            let Some(new_schema) = &new.schema else {
                self.at(
                    file,
                    text,
                    span.clone(),
                    format!(
                        "stream {name}: has no schema, so it accepts payloads {} ({old_file}) refuses; give it a schema or {hint}",
                        old.name
                    ),
                );
                continue;
            };
            let breaks = crate::events::compat::forward_breaks(&old_schema, new_schema);
            let new_file = s.schema.as_ref().map_or("", |f| f.get_ref().as_str());
            for b in breaks.iter().take(SHOWN) {
                self.at(
                    file,
                    text,
                    span.clone(),
                    format!(
                        "stream {name}: schema {new_file} breaks readers of {} ({old_file}): {b}; {hint}",
                        old.name
                    ),
                );
            }
            if breaks.len() > SHOWN {
                self.at(
                    file,
                    text,
                    span.clone(),
                    format!(
                        "stream {name}: {} more places where {new_file} breaks readers of {}",
                        breaks.len() - SHOWN,
                        old.name
                    ),
                );
            }
        }
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
