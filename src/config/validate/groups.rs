//! `consumer-groups/<domain>.toml`: the `[[group]]` entries, checked against the stream
//! catalog, the known handlers and `[defaults]`.

use std::collections::{BTreeSet, HashMap};

use super::delivery::Settings;
use super::{Validator, line_col};
use crate::config::raw::{RawGroup, RawGroupSettings, RawGroupsFile};
use crate::group::GroupConfig;

impl Validator {
    /// Every group of every file (`(file, text, parsed)`), in file order.
    pub(super) fn groups(
        &mut self,
        files: &[(String, String, RawGroupsFile)],
        defaults: &Settings,
        declared: &BTreeSet<&str>,
    ) -> Vec<GroupConfig> {
        let mut groups = vec![];
        // Group name → where it was first declared.
        let mut seen: HashMap<String, String> = HashMap::new();
        for (file, text, gf) in files {
            let domain = file
                .rsplit('/')
                .next()
                .unwrap_or(file)
                .trim_end_matches(".toml")
                .to_string();
            for g in &gf.group {
                let at = Place {
                    file,
                    text,
                    domain: &domain,
                };
                if let Some(group) = self.group(at, g, defaults, declared, &mut seen) {
                    groups.push(group);
                }
            }
        }
        groups
    }

    /// One group; `None` for a duplicate name (reported, then skipped).
    fn group(
        &mut self,
        Place { file, text, domain }: Place,
        g: &RawGroup,
        defaults: &Settings,
        declared: &BTreeSet<&str>,
        seen: &mut HashMap<String, String>,
    ) -> Option<GroupConfig> {
        let name = g.name.get_ref().clone();
        let gspan = g.name.span();
        match name.split_once('.') {
            Some((d, rest))
                if d == domain
                    && !rest.is_empty()
                    && rest
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') => {}
            _ => self.at(
                file,
                text,
                gspan.clone(),
                format!(
                    "group.name {name:?} must be {domain}.<name> (the file's domain, then lower-case [a-z0-9_])"
                ),
            ),
        }
        if let Some(first) = seen.get(&name) {
            self.at(
                file,
                text,
                gspan.clone(),
                format!("group.name: duplicate group {name} (first declared in {first})"),
            );
            return None;
        }
        let (l, c) = line_col(text, gspan.start);
        seen.insert(name.clone(), format!("{file}:{l}:{c}"));
        let handler = g.handler.get_ref().clone();
        if !self.known.contains(&handler.as_str()) {
            self.at(
                file,
                text,
                g.handler.span(),
                format!(
                    "group {name}: unknown handler {handler:?} (known: {})",
                    self.known.join(", ")
                ),
            );
        }
        if g.reads.get_ref().is_empty() {
            self.at(
                file,
                text,
                g.reads.span(),
                format!("group {name}: reads must name at least one stream"),
            );
        }
        let mut reads = vec![];
        for s in g.reads.get_ref() {
            if !declared.contains(s.get_ref().as_str()) {
                self.at(
                    file,
                    text,
                    s.span(),
                    format!("group {name} reads undeclared stream {}", s.get_ref()),
                );
            } else if reads.contains(s.get_ref()) {
                self.at(
                    file,
                    text,
                    s.span(),
                    format!("group {name} reads stream {} twice", s.get_ref()),
                );
            } else {
                reads.push(s.get_ref().clone());
            }
        }
        let mut publishes = vec![];
        for s in &g.publishes {
            if !declared.contains(s.get_ref().as_str()) {
                self.at(
                    file,
                    text,
                    s.span(),
                    format!("group {name} publishes undeclared stream {}", s.get_ref()),
                );
            } else if !publishes.contains(s.get_ref()) {
                publishes.push(s.get_ref().clone());
            }
        }
        // Spans do not survive serde(flatten), so the overrides are listed in RawGroup
        // and gathered here.
        let overrides = RawGroupSettings {
            batch_size: g.batch_size.clone(),
            block: g.block.clone(),
            concurrency: g.concurrency.clone(),
            claim_idle: g.claim_idle.clone(),
            max_deliveries: g.max_deliveries.clone(),
            dead_letter_stream: g.dead_letter_stream.clone(),
            start_id: g.start_id.clone(),
        };
        let st = self
            .settings(file, text, "", &overrides, Some(defaults))
            .group;
        if let Some(span) = &g.dead_letter_stream.as_ref().map(|s| s.span())
            && !declared.contains(st.dead_letter_stream.as_str())
        {
            self.at(
                file,
                text,
                span.clone(),
                format!(
                    "group {name} dead_letter_stream: undeclared stream {}",
                    st.dead_letter_stream
                ),
            );
        }
        if reads.contains(&st.dead_letter_stream) {
            self.at(
                file,
                text,
                g.reads.span(),
                format!(
                    "group {name} reads its own dead-letter stream {}",
                    st.dead_letter_stream
                ),
            );
        }
        let (options, options_origin) = match &g.options {
            Some(o) => {
                let (l, c) = line_col(text, o.span().start);
                (o.get_ref().clone(), format!("{file}:{l}:{c}"))
            }
            None => (
                toml::Table::new(),
                format!("{file}:{}:{}", line_col(text, gspan.start).0, 1),
            ),
        };
        if handler == crate::handler::REMOTE_HANDLER
            && let Some(service) = options.get("service").and_then(|v| v.as_str())
            && !self.services.iter().any(|s| s == service)
        {
            let span = g.options.as_ref().map_or(g.handler.span(), |o| o.span());
            self.at(
                file,
                text,
                span,
                format!(
                    "group {name}: remote handler's service {service:?} is not declared; add [services.{service}] to streams.toml (declared: {})",
                    if self.services.is_empty() { "none".to_string() } else { self.services.join(", ") }
                ),
            );
        }
        Some(GroupConfig {
            name,
            domain: domain.to_string(),
            handler,
            description: g.description.clone().unwrap_or_default(),
            reads,
            publishes,
            concurrency: st.concurrency.max(st.batch_size),
            options,
            options_origin,
            ..st
        })
    }
}

/// Where a group is declared: its file, that file's text and the file's domain.
#[derive(Clone, Copy)]
struct Place<'a> {
    file: &'a str,
    text: &'a str,
    domain: &'a str,
}
