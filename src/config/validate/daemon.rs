//! `[daemon]` and `[metrics]`: settings of the whole process.

use std::time::Duration;

use super::Validator;
use crate::config::model::{DaemonConfig, MetricsConfig};
use crate::config::raw::{RawDaemon, RawMetrics};

impl Validator {
    pub(super) fn daemon(&mut self, file: &str, text: &str, raw: &RawDaemon) -> DaemonConfig {
        let d = DaemonConfig::default();
        let day = Duration::from_secs(86_400);
        let instance = match &raw.instance {
            Some(s) => {
                let v = s.get_ref();
                if v.is_empty() || v.contains(char::is_whitespace) {
                    self.at(
                        file,
                        text,
                        s.span(),
                        format!(
                            "daemon.instance must be a non-empty name without spaces, got {v:?}"
                        ),
                    );
                }
                v.clone()
            }
            None => d.instance,
        };
        DaemonConfig {
            instance,
            shutdown_deadline: self
                .dur(
                    file,
                    text,
                    "daemon.shutdown_deadline",
                    &raw.shutdown_deadline,
                    Duration::from_millis(100),
                    Duration::from_secs(3600),
                )
                .unwrap_or(d.shutdown_deadline),
            consumer_idle_limit: self
                .dur(
                    file,
                    text,
                    "daemon.consumer_idle_limit",
                    &raw.consumer_idle_limit,
                    Duration::from_secs(1),
                    day * 365,
                )
                .unwrap_or(d.consumer_idle_limit),
            dedup_ttl: self
                .dur(
                    file,
                    text,
                    "daemon.dedup_ttl",
                    &raw.dedup_ttl,
                    Duration::from_secs(1),
                    day * 365,
                )
                .unwrap_or(d.dedup_ttl),
        }
    }

    pub(super) fn metrics(&mut self, file: &str, text: &str, raw: &RawMetrics) -> MetricsConfig {
        let d = MetricsConfig::default();
        MetricsConfig {
            refresh_interval: self
                .dur(
                    file,
                    text,
                    "metrics.refresh_interval",
                    &raw.refresh_interval,
                    Duration::from_millis(100),
                    Duration::from_secs(3600),
                )
                .unwrap_or(d.refresh_interval),
        }
    }
}
