//! Reading the audit hash chain back and verifying it (`astra-bus audit verify`).

use super::client::{BusError, Redis, arg, as_array, as_bytes, as_int, as_string};
use super::script::Script;
use crate::handlers::analytics::{
    ChainBreak, ChainField, audit_head_key, audit_log_key, chain_hash, decode_log_entry,
};

/// Reads the head and the log length in one atomic step, so records appended while we
/// verify do not make a consistent chain look broken.
pub(crate) static SNAPSHOT: Script = Script::new(
    "audit_snapshot",
    r#"#!lua
-- KEYS[1] head, KEYS[2] log (same hash slot). Returns {head or "", length}.
return { redis.call('GET', KEYS[1]) or '', redis.call('LLEN', KEYS[2]) }
"#,
);

/// Why verification could not complete or failed.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// Redis trouble.
    #[error(transparent)]
    Redis(#[from] BusError),
    /// A log entry is not a `[prev, hash, record]` MessagePack array.
    #[error("audit record {index} is unreadable: {reason}")]
    Unreadable { index: u64, reason: String },
    /// The chain is broken.
    #[error(transparent)]
    Broken(#[from] ChainBreak),
}

/// Verifies every record present when verification starts; returns (records, head).
pub async fn verify(redis: &Redis) -> Result<(u64, String), AuditError> {
    let head_key = audit_head_key();
    let log_key = audit_log_key();
    let snap = SNAPSHOT
        .call(
            redis,
            vec![arg(head_key.as_str()), arg(log_key.as_str())],
            vec![],
        )
        .await?;
    let snap = as_array(snap).unwrap_or_default();
    let head = snap.first().and_then(as_string).unwrap_or_default();
    let len = snap.get(1).and_then(as_int).unwrap_or(0).max(0) as u64;
    let mut prev = String::new();
    let mut index = 0u64;
    const PAGE: u64 = 1000;
    while index < len {
        let stop = (index + PAGE).min(len) - 1;
        let page = redis
            .cmd(
                "LRANGE",
                vec![arg(log_key.as_str()), arg(index as i64), arg(stop as i64)],
            )
            .await?;
        for raw in as_array(page).unwrap_or_default() {
            let bytes = as_bytes(&raw).unwrap_or_default();
            let (p, h, record) = decode_log_entry(&bytes)
                .map_err(|reason| AuditError::Unreadable { index, reason })?;
            if p != prev {
                return Err(ChainBreak {
                    index,
                    field: ChainField::Prev,
                    expected: prev,
                    found: p,
                }
                .into());
            }
            let expected = chain_hash(&p, &record);
            if h != expected {
                return Err(ChainBreak {
                    index,
                    field: ChainField::Hash,
                    expected,
                    found: h,
                }
                .into());
            }
            prev = h;
            index += 1;
        }
    }
    if prev != head {
        return Err(ChainBreak {
            index: len,
            field: ChainField::Head,
            expected: head,
            found: prev,
        }
        .into());
    }
    Ok((len, head))
}
