//! What goes wrong loading a configuration: [`Diagnostic`] (one problem at
//! `file:line:col`) and [`ConfigError`].

use std::fmt;
use std::path::PathBuf;

/// One problem found in the configuration, located precisely.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// File, relative to the config directory (e.g. `consumer-groups/social.toml`).
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
    /// What is wrong, naming the field.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.col, self.message
        )
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file or directory could not be read.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The files were read but are invalid; every problem found is listed.
    #[error("{}", display_all(.0))]
    Invalid(Vec<Diagnostic>),
}

fn display_all(d: &[Diagnostic]) -> String {
    d.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

impl ConfigError {
    /// The diagnostics, if this is a validation error.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            ConfigError::Invalid(d) => d,
            ConfigError::Io { .. } => &[],
        }
    }

    /// One problem that has no position of its own (an environment variable, a whole file):
    /// reported at `file:1:1`.
    pub(super) fn at_start(file: &str, message: String) -> ConfigError {
        ConfigError::Invalid(vec![Diagnostic {
            file: file.to_string(),
            line: 1,
            col: 1,
            message,
        }])
    }
}
