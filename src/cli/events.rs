//! Events on the command line: `publish` one, `tail` a stream, `trace` a correlation id.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;

use super::{Cli, connect, load};
use crate::bus::Redis;
use crate::bus::publish::publish as publish_event;
use crate::config::Config;
use crate::envelope::{ContentType, Envelope};

/// Publishes one event with a JSON payload (checked against the stream's schema, stored
/// as MessagePack); prints the event id and the entry id.
pub(super) async fn publish(
    cli: &Cli,
    stream: &str,
    json: &str,
    cid: Option<String>,
    src: &str,
) -> anyhow::Result<ExitCode> {
    let cfg = load(cli)?;
    let s = cfg.stream(stream).ok_or_else(|| {
        anyhow::anyhow!(
            "stream {stream} is not declared in {}",
            cli.config.display()
        )
    })?;
    let value: serde_json::Value =
        serde_json::from_str(json).with_context(|| format!("payload is not valid JSON: {json}"))?;
    crate::events::validate_json(stream, &value)
        .and_then(|()| {
            s.schema
                .as_ref()
                .map_or(Ok(()), |c| c.check(&value).map_err(|e| e.to_string()))
        })
        .map_err(|e| anyhow::anyhow!("payload does not match {stream}: {e}"))?;
    let data = rmp_serde::to_vec_named(&value).context("encoding the payload")?;
    let env = Envelope::root(
        &s.event_type(),
        s.version,
        src,
        cid,
        ContentType::MsgPack,
        data,
    );
    let redis = connect(&cfg).await?;
    let entry = publish_event(&redis, stream, &env).await?;
    println!("{} {}", env.id, entry);
    redis.quit().await;
    Ok(ExitCode::SUCCESS)
}

/// Prints the last `last` events of a declared stream, then (with `follow`) new ones
/// until Ctrl-C.
pub(super) async fn tail(
    cli: &Cli,
    stream: &str,
    last: usize,
    follow_new: bool,
) -> anyhow::Result<ExitCode> {
    let cfg = load(cli)?;
    if cfg.stream(stream).is_none() {
        anyhow::bail!(
            "stream {stream} is not declared in {}",
            cli.config.display()
        );
    }
    let redis = connect(&cfg).await?;
    follow(&redis, stream, last, follow_new).await?;
    Ok(ExitCode::SUCCESS)
}

async fn follow(redis: &Redis, stream: &str, last: usize, follow: bool) -> anyhow::Result<()> {
    use crate::bus::query::{stream_read_after, stream_tail};
    let entries = stream_tail(redis, stream, last).await?;
    let mut after = entries
        .last()
        .map(|e| e.id.clone())
        .unwrap_or_else(|| "$".into());
    for e in &entries {
        println!("{}", describe_entry(stream, e));
    }
    if !follow {
        return Ok(());
    }
    let conn = redis.dedicated().await?;
    loop {
        let read = stream_read_after(&conn, stream, &after, 100, 5000);
        let es = tokio::select! {
            es = read => es?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        for e in es {
            println!("{}", describe_entry(stream, &e));
            after = e.id.clone();
        }
    }
}

/// One line per entry: id, type, event id, cid, caus, payload as JSON (or why it is
/// malformed).
pub fn describe_entry(stream: &str, e: &crate::bus::client::RawEntry) -> String {
    let Some(fields) = &e.fields else {
        return format!("{} (deleted)", e.id);
    };
    match crate::bus::consume::decode_entry(stream, fields) {
        Ok(env) => format!(
            "{} {} id={} cid={} caus={} ts={} src={} {}",
            e.id,
            env.event_type,
            env.id,
            env.cid,
            env.caus.as_deref().unwrap_or("-"),
            env.ts,
            env.src,
            env.data_as_json()
                .map(|v| v.to_string())
                .unwrap_or_else(|err| format!("<{err}>"))
        ),
        Err(err) => format!("{} MALFORMED ({err}) fields={}", e.id, fields_text(fields)),
    }
}

fn fields_text(fields: &[(Vec<u8>, Vec<u8>)]) -> String {
    fields
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={:?}",
                String::from_utf8_lossy(k),
                String::from_utf8_lossy(v)
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Prints the tree of events sharing correlation id `cid`: a UUIDv7 id carries its time,
/// so streams are scanned from a minute before it for `window`; any other id, over the
/// last `since`.
pub(super) async fn trace(
    cfg: &Config,
    cid: &str,
    window: Duration,
    since: Duration,
) -> anyhow::Result<ExitCode> {
    let redis = connect(cfg).await?;
    let now = crate::envelope::now_ms();
    let (from, to) = match uuid::Uuid::parse_str(cid)
        .ok()
        .and_then(|u| u.get_timestamp())
    {
        Some(t) => {
            let (secs, nanos) = t.to_unix();
            let at = secs as i64 * 1000 + i64::from(nanos / 1_000_000);
            (at - 60_000, at + window.as_millis() as i64)
        }
        None => (now - since.as_millis() as i64, now + 60_000),
    };
    let nodes = crate::bus::trace::collect(&redis, cfg, cid, from, to).await?;
    redis.quit().await;
    if nodes.is_empty() {
        eprintln!("no events with correlation id {cid} in the scanned window");
        return Ok(ExitCode::FAILURE);
    }
    print!("{}", crate::bus::trace::render(&nodes));
    println!("{} events", nodes.len());
    Ok(ExitCode::SUCCESS)
}
