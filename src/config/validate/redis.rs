//! `[redis]`: the connection.

use std::path::Path;
use std::time::Duration;

use super::Validator;
use crate::config::model::{RedisConfig, RedisMode};
use crate::config::raw::RawRedis;
use crate::config::url::parse_redis_url;

impl Validator {
    pub(super) fn redis(
        &mut self,
        dir: &Path,
        file: &str,
        text: &str,
        raw: RawRedis,
    ) -> RedisConfig {
        let ms = Duration::from_millis;
        let url = raw.url.get_ref().clone();
        let mode = match parse_redis_url(&url) {
            Ok((mode, _)) => mode,
            Err(message) => {
                self.at(file, text, raw.url.span(), message);
                RedisMode::Single
            }
        };
        let d = RedisConfig::new(url, mode);
        let min_replicas_ack = self
            .int(
                file,
                text,
                "redis.min_replicas_ack",
                &raw.min_replicas_ack,
                0..17,
            )
            .map_or(d.min_replicas_ack, |n| n as u32);
        if min_replicas_ack > 0
            && mode == RedisMode::Cluster
            && let Some(v) = &raw.min_replicas_ack
        {
            self.at(
                file,
                text,
                v.span(),
                "redis.min_replicas_ack is not supported with redis-cluster:// (set it to 0)"
                    .into(),
            );
        }
        let replica_ack_timeout = self
            .dur(
                file,
                text,
                "redis.replica_ack_timeout",
                &raw.replica_ack_timeout,
                ms(1),
                ms(60_000),
            )
            .unwrap_or(d.replica_ack_timeout);
        let command_timeout = self
            .dur(
                file,
                text,
                "redis.command_timeout",
                &raw.command_timeout,
                ms(10),
                ms(600_000),
            )
            .unwrap_or(d.command_timeout);
        RedisConfig {
            command_timeout,
            // `dir.join` keeps an absolute path as it is.
            password_file: raw.password_file.map(|f| dir.join(f)),
            tls_ca_file: raw.tls_ca_file.map(|f| dir.join(f)),
            min_replicas_ack,
            replica_ack_timeout,
            ..d
        }
    }
}
