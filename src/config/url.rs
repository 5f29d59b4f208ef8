//! `redis.url` (and `ASTRA_REDIS_URL`): the three URL forms and the client's form of each.

use super::model::RedisMode;

/// Splits `[userinfo@]hosts[/path][?query]` into (userinfo, hosts, path).
fn split_hosts(rest: &str) -> (Option<&str>, &str, &str) {
    let before_query = rest.split_once('?').map_or(rest, |(b, _)| b);
    let (userinfo, hosts_path) = match before_query.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, before_query),
    };
    let (hosts, path) = hosts_path.split_once('/').unwrap_or((hosts_path, ""));
    (userinfo, hosts, path)
}

/// Checks `redis.url` and returns its mode plus the URL in the form the client takes.
///
/// Accepted: `redis[s]://[user:pass@]host:port[/db]`;
/// `redis[s]-cluster://[user:pass@]host:port,host:port,…` (seed nodes; any one is enough,
/// the rest of the cluster is discovered); `redis[s]-sentinel://[user:pass@]host:port,
/// host:port,…[/db]?sentinelServiceName=<name>` (Sentinel addresses; the name of the
/// monitored primary is required). `?node=host:port` parameters are accepted as well as
/// the comma list.
pub fn parse_redis_url(url: &str) -> Result<(RedisMode, String), String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("redis.url must look like redis://host:port, got {url:?}"))?;
    let mode = match scheme {
        "redis" | "rediss" => return Ok((RedisMode::Single, url.to_string())),
        "redis-cluster" | "rediss-cluster" => RedisMode::Cluster,
        "redis-sentinel" | "rediss-sentinel" => RedisMode::Sentinel,
        _ => {
            return Err(format!(
                "redis.url must start with redis://, rediss://, redis-cluster:// or redis-sentinel://, got {url:?}"
            ));
        }
    };
    let example = match mode {
        RedisMode::Cluster => "redis-cluster://10.0.0.1:7000,10.0.0.2:7000,10.0.0.3:7000",
        _ => "redis-sentinel://10.0.0.1:26379,10.0.0.2:26379/0?sentinelServiceName=astra",
    };
    let (userinfo, hosts, path) = split_hosts(rest);
    let list: Vec<&str> = hosts.split(',').collect();
    for h in &list {
        let ok = h.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !ok {
            return Err(format!(
                "redis.url: every node must be host:port (comma-separated), got {h:?} in {url:?}; e.g. {example}"
            ));
        }
    }
    let query = rest.split_once('?').map(|(_, q)| q).unwrap_or("");
    if mode == RedisMode::Sentinel
        && !query.split('&').any(|kv| {
            kv.strip_prefix("sentinelServiceName=")
                .is_some_and(|v| !v.is_empty())
        })
    {
        return Err(format!(
            "redis.url: a sentinel URL needs ?sentinelServiceName=<primary name>, got {url:?}; e.g. {example}"
        ));
    }
    if mode == RedisMode::Cluster && !path.is_empty() && path != "0" {
        return Err(format!(
            "redis.url: Redis Cluster has only database 0, got /{path} in {url:?}"
        ));
    }
    // The client's form: first node as the authority, the others as `node=` parameters.
    let mut out = format!("{scheme}://");
    if let Some(u) = userinfo {
        out.push_str(u);
        out.push('@');
    }
    out.push_str(list[0]);
    if !path.is_empty() {
        out.push('/');
        out.push_str(path);
    }
    let mut params: Vec<String> = list[1..].iter().map(|h| format!("node={h}")).collect();
    params.extend(
        query
            .split('&')
            .filter(|q| !q.is_empty())
            .map(str::to_string),
    );
    if !params.is_empty() {
        out.push('?');
        out.push_str(&params.join("&"));
    }
    Ok((mode, out))
}
