//! `astra-bus key new|hash`: API keys for the HTTP edge (no config, no Redis).

use std::process::ExitCode;

use anyhow::Context as _;

use super::KeyAction;

/// Runs a `key` action.
pub(super) fn key_command(action: &KeyAction) -> anyhow::Result<ExitCode> {
    use crate::config::{hex, key_sha256};
    match action {
        KeyAction::New { name, scopes, user } => {
            // The form only: a publish scope's streams are checked when the config loads.
            for s in scopes {
                crate::config::scope_syntax(s).map_err(|e| anyhow::anyhow!("{e}"))?;
            }
            let mut raw = [0u8; 32];
            std::fs::File::open("/dev/urandom")
                .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut raw))
                .context("reading /dev/urandom")?;
            let key = format!("astra_{}", hex(&raw));
            let scopes: Vec<String> = scopes.iter().map(|s| format!("{s:?}")).collect();
            println!("# key (give it to the client; it is not stored anywhere):");
            println!("# {key}");
            println!("[[edge.key]]");
            println!("name = {name:?}");
            println!("sha256 = \"{}\"", hex(&key_sha256(&key)));
            println!("scopes = [{}]", scopes.join(", "));
            if let Some(u) = user {
                println!("user = {u:?}");
            }
            Ok(ExitCode::SUCCESS)
        }
        KeyAction::Hash => {
            let mut key = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut key)?;
            let key = key.trim_end_matches(['\n', '\r']);
            anyhow::ensure!(!key.is_empty(), "no key on stdin");
            println!("{}", hex(&key_sha256(key)));
            Ok(ExitCode::SUCCESS)
        }
    }
}
