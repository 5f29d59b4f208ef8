//! Loading: reads `streams.toml` and `consumer-groups/*.toml`, validates them, applies
//! the environment, then the checks that need the final edge settings (the keys file,
//! exposure).

use std::path::Path;

use super::edge::AuthMode;
use super::env;
use super::error::{ConfigError, Diagnostic};
use super::model::Config;
use super::raw::{RawGroupsFile, RawStreamsFile};
use super::validate::Validator;
use super::{GROUPS_DIR, STREAMS_FILE};
use crate::handlers::Registry;

impl Config {
    /// Loads and validates `dir/streams.toml` and `dir/consumer-groups/*.toml`, then applies
    /// environment overrides (`ASTRA_REDIS_URL`, `ASTRA_INSTANCE`, … see `config/env.rs`).
    pub fn load(dir: impl AsRef<Path>) -> Result<Config, ConfigError> {
        Self::load_with_env(dir, |k| std::env::var(k).ok())
    }

    /// [`Config::load`] with an explicit environment (tests use this).
    pub fn load_with_env(
        dir: impl AsRef<Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        Self::load_for(dir, env, &Registry::builtin())
    }

    /// [`Config::load_with_env`] validating handler names against `registry` (embedders
    /// and tests that register their own handlers).
    pub fn load_for(
        dir: impl AsRef<Path>,
        env: impl Fn(&str) -> Option<String>,
        registry: &Registry,
    ) -> Result<Config, ConfigError> {
        let dir = dir.as_ref();
        let mut sources = vec![];
        let streams_path = dir.join(STREAMS_FILE);
        let text = read(&streams_path)?;
        sources.push((STREAMS_FILE.to_string(), text));
        let groups_dir = dir.join(GROUPS_DIR);
        let mut names = vec![];
        let rd = std::fs::read_dir(&groups_dir).map_err(|source| ConfigError::Io {
            path: groups_dir.clone(),
            source,
        })?;
        for entry in rd {
            let entry = entry.map_err(|source| ConfigError::Io {
                path: groups_dir.clone(),
                source,
            })?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".toml") {
                names.push(name);
            }
        }
        names.sort();
        for name in names {
            let text = read(&groups_dir.join(&name))?;
            sources.push((format!("{GROUPS_DIR}/{name}"), text));
        }
        let mut cfg = Self::from_sources_for(dir, &sources, registry)?;
        env::apply(&mut cfg, dir, env)?;
        add_keys_file(&mut cfg, dir)?;
        if let Some(d) = cfg.edge.exposure_problem() {
            return Err(ConfigError::Invalid(vec![d]));
        }
        if cfg.edge.auth == AuthMode::Keys && cfg.edge.keys.is_empty() {
            let (file, line, col) = cfg.edge.auth_origin.clone();
            return Err(ConfigError::Invalid(vec![Diagnostic {
                file,
                line,
                col,
                message: "edge.auth = \"keys\" but no keys are configured: add [[edge.key]] \
                          entries or an edge.keys_file (`astra-bus key new` prints one)"
                    .into(),
            }]));
        }
        Ok(cfg)
    }

    /// Validates already-read sources: the first is `streams.toml`, the rest are group
    /// files named `consumer-groups/<domain>.toml`.
    pub fn from_sources(dir: &Path, sources: &[(String, String)]) -> Result<Config, ConfigError> {
        Self::from_sources_for(dir, sources, &Registry::builtin())
    }

    fn from_sources_for(
        dir: &Path,
        sources: &[(String, String)],
        registry: &Registry,
    ) -> Result<Config, ConfigError> {
        let mut v = Validator::new(registry.names());
        let (sfile, stext) = &sources[0];
        let raw_streams: Option<RawStreamsFile> = v.parse(sfile, stext);
        let mut raw_groups = vec![];
        for (file, text) in &sources[1..] {
            if let Some(g) = v.parse::<RawGroupsFile>(file, text) {
                raw_groups.push((file.clone(), text.clone(), g));
            }
        }
        let Some(raw_streams) = raw_streams else {
            return Err(ConfigError::Invalid(v.diags));
        };
        let cfg = v.build(dir, sfile, stext, raw_streams, raw_groups);
        if v.diags.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigError::Invalid(v.diags))
        }
    }
}

/// Merges the keys of `edge.keys_file` (or `ASTRA_EDGE_KEYS_FILE`) into the inline ones.
fn add_keys_file(cfg: &mut Config, dir: &Path) -> Result<(), ConfigError> {
    let Some(f) = cfg.edge.keys_file.clone() else {
        return Ok(());
    };
    let path = dir.join(&f);
    let file = path.display().to_string();
    let text = read(&path)?;
    let mut v = Validator::new(vec![]);
    let keys = v.keys_file(&file, &text, &cfg.streams);
    if !v.diags.is_empty() {
        return Err(ConfigError::Invalid(v.diags));
    }
    for k in keys {
        if cfg
            .edge
            .keys
            .iter()
            .any(|o| o.name == k.name || o.sha256 == k.sha256)
        {
            return Err(ConfigError::at_start(
                &file,
                format!(
                    "edge key {:?} is also configured inline (same name or sha256)",
                    k.name
                ),
            ));
        }
        cfg.edge.keys.push(k);
    }
    Ok(())
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })
}
