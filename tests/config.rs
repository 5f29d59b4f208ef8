//! Configuration: the shipped topology parses and validates, and each validation rule
//! rejects a broken config with file:line:col and the field.

mod support;

use astra_bus::config::{Config, ConfigError, StartId};
use support::{repo_root, shipped_config_copy, write_config};

fn no_env(_: &str) -> Option<String> {
    None
}

const STREAMS: &str = r#"[redis]
url = "redis://127.0.0.1:6379"

[[stream]]
name = "astra.social.interaction.v1"
description = "in"

[[stream]]
name = "astra.social.feed_item_posted.v1"
description = "out"

[[stream]]
name = "astra.bus.dead_letter.v1"
description = "dead letters"
"#;

const GROUP: &str = r#"[[group]]
name = "social.feed_generation"
handler = "builtin.forward"
reads = ["astra.social.interaction.v1"]
publishes = ["astra.social.feed_item_posted.v1"]
"#;

/// Loads a config made of `streams` and one `social.toml`, expecting failure; returns the
/// diagnostics as text lines.
fn errors(streams: &str, social: &str) -> Vec<String> {
    let dir = write_config(streams, &[("social", social)]);
    match Config::load_with_env(&dir.path, no_env) {
        Ok(_) => panic!("config was accepted:\n{streams}\n{social}"),
        Err(ConfigError::Invalid(d)) => d.iter().map(ToString::to_string).collect(),
        Err(e) => panic!("unexpected error {e}"),
    }
}

fn assert_one(errs: &[String], expected: &str) {
    assert!(
        errs.iter().any(|e| e == expected),
        "expected {expected:?} among {errs:#?}"
    );
}

#[test]
fn shipped_config_parses_and_validates() {
    let cfg = Config::load_with_env(repo_root(), no_env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.groups.len(), 17);
    assert_eq!(cfg.domains().len(), 7);
    assert_eq!(cfg.streams.len(), 20);
    let external: Vec<_> = cfg
        .streams
        .iter()
        .filter(|s| s.external)
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(
        external,
        [
            "astra.trading.trade_executed.v1",
            "astra.social.interaction.v1",
            "astra.financial.subscription_changed.v1",
            "astra.nft.sale_completed.v1",
            "astra.user.registered.v1"
        ]
    );
    let xp = cfg.group("gamification.xp_processing").unwrap();
    assert_eq!(
        xp.reads,
        [
            "astra.trading.trade_executed.v1",
            "astra.social.interaction.v1"
        ]
    );
    assert_eq!(xp.batch_size, 100);
    assert_eq!(xp.start_id, StartId::Beginning);
    assert_eq!(
        cfg.stream("astra.bus.dead_letter.v1").unwrap().max_age,
        Some(std::time::Duration::from_secs(30 * 86400))
    );
    // Every group's handler builds with its options.
    let reg = astra_bus::handlers::Registry::builtin();
    for g in &cfg.groups {
        reg.build(g).unwrap_or_else(|e| panic!("{}: {e}", g.name));
    }
}

#[test]
fn environment_overrides_url_and_instance() {
    let dir = shipped_config_copy();
    let cfg = Config::load_with_env(&dir.path, |k| match k {
        "ASTRA_REDIS_URL" => Some("redis://10.0.0.5:6380".into()),
        "ASTRA_INSTANCE" => Some("worker-7".into()),
        _ => None,
    })
    .unwrap();
    assert_eq!(cfg.redis.url, "redis://10.0.0.5:6380");
    assert_eq!(cfg.daemon.instance, "worker-7");
}

#[test]
fn rejects_a_stream_name_off_the_naming_scheme() {
    let s = format!(
        "{STREAMS}\n[[stream]]\nname = \"astra.Social.bad-name.v0\"\ndescription = \"x\"\n"
    );
    let errs = errors(&s, GROUP);
    let line = s.lines().position(|l| l.contains("bad-name")).unwrap() + 1;
    assert_one(
        &errs,
        &format!(
            "streams.toml:{line}:8: stream.name \"astra.Social.bad-name.v0\" does not match astra.<domain>.<event>.v<n> (lower-case [a-z0-9_] segments, n >= 1)"
        ),
    );
}

#[test]
fn rejects_a_group_reading_an_undeclared_stream() {
    let g = GROUP.replace(
        "reads = [\"astra.social.interaction.v1\"]",
        "reads = [\"astra.social.interaction.v1\", \"astra.social.feed_item.v1\"]",
    );
    let errs = errors(STREAMS, &g);
    assert_one(
        &errs,
        "consumer-groups/social.toml:4:41: group social.feed_generation reads undeclared stream astra.social.feed_item.v1",
    );
}

#[test]
fn rejects_a_group_publishing_an_undeclared_stream() {
    let g = GROUP.replace("astra.social.feed_item_posted.v1", "astra.social.nope.v1");
    let errs = errors(STREAMS, &g);
    assert_one(
        &errs,
        "consumer-groups/social.toml:5:14: group social.feed_generation publishes undeclared stream astra.social.nope.v1",
    );
}

#[test]
fn rejects_an_unknown_handler() {
    let g = GROUP.replace("builtin.forward", "social.feeed");
    let errs = errors(STREAMS, &g);
    let e = errs.iter().find(|e| e.starts_with("consumer-groups/social.toml:3:11: group social.feed_generation: unknown handler \"social.feeed\"")).unwrap_or_else(|| panic!("{errs:#?}"));
    assert!(e.contains("known: "), "lists the known handlers: {e}");
}

#[test]
fn rejects_duplicate_streams() {
    let s = format!(
        "{STREAMS}\n[[stream]]\nname = \"astra.social.interaction.v1\"\ndescription = \"again\"\n"
    );
    let line = s
        .lines()
        .collect::<Vec<_>>()
        .iter()
        .rposition(|l| l.contains("astra.social.interaction.v1"))
        .unwrap()
        + 1;
    let errs = errors(&s, GROUP);
    assert_one(
        &errs,
        &format!(
            "streams.toml:{line}:8: stream.name: duplicate stream astra.social.interaction.v1 (first declared on line 5)"
        ),
    );
}

#[test]
fn rejects_duplicate_groups() {
    let g = format!("{GROUP}\n{GROUP}");
    let errs = errors(STREAMS, &g);
    assert_one(
        &errs,
        "consumer-groups/social.toml:8:8: group.name: duplicate group social.feed_generation (first declared in consumer-groups/social.toml:2:8)",
    );
}

#[test]
fn rejects_zero_and_absurd_numbers() {
    let g = format!(
        "{GROUP}batch_size = 0\nmax_deliveries = 100000\nclaim_idle = \"3years\"\nblock = \"soon\"\n"
    );
    let errs = errors(STREAMS, &g);
    assert_one(
        &errs,
        "consumer-groups/social.toml:6:14: batch_size must be between 1 and 10000, got 0",
    );
    assert_one(
        &errs,
        "consumer-groups/social.toml:7:18: max_deliveries must be between 1 and 1000, got 100000",
    );
    assert_one(
        &errs,
        "consumer-groups/social.toml:8:14: claim_idle must be between 10ms and 1day, got \"3years\"",
    );
    assert!(
        errs.iter()
            .any(|e| e
                .starts_with("consumer-groups/social.toml:9:9: block: \"soon\" is not a duration")),
        "{errs:#?}"
    );
    let s = STREAMS.replace(
        "[[stream]]\nname = \"astra.social.interaction.v1\"",
        "[[stream]]\nmax_len = -5\nname = \"astra.social.interaction.v1\"",
    );
    let errs = errors(&s, GROUP);
    assert_one(
        &errs,
        "streams.toml:5:11: stream astra.social.interaction.v1: max_len must be between 1 and 10000000000, got -5",
    );
}

#[test]
fn rejects_unknown_fields_with_their_location() {
    let g = GROUP.replace("handler =", "handlr = \"x\"\nhandler =");
    let errs = errors(STREAMS, &g);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(
        errs[0].starts_with("consumer-groups/social.toml:3:1: unknown field `handlr`"),
        "{errs:#?}"
    );
}

#[test]
fn rejects_a_group_outside_its_files_domain() {
    let g = GROUP.replace(
        "name = \"social.feed_generation\"",
        "name = \"trading.feed\"",
    );
    let errs = errors(STREAMS, &g);
    assert_one(
        &errs,
        "consumer-groups/social.toml:2:8: group.name \"trading.feed\" must be social.<name> (the file's domain, then lower-case [a-z0-9_])",
    );
}

#[test]
fn reports_every_problem_at_once() {
    let g = GROUP
        .replace("builtin.forward", "nope")
        .replace("astra.social.feed_item_posted.v1", "astra.social.nope.v1");
    let s = STREAMS.replace("redis://", "http://");
    let errs = errors(&s, &g);
    assert_eq!(errs.len(), 3, "{errs:#?}");
}

#[test]
fn redis_url_names_a_single_node_a_cluster_or_sentinels() {
    use astra_bus::config::{RedisMode, parse_redis_url};
    let ok = |url: &str| {
        let dir = write_config(
            &STREAMS.replace("redis://127.0.0.1:6379", url),
            &[("social", GROUP)],
        );
        Config::load_with_env(&dir.path, no_env).unwrap().redis
    };
    assert_eq!(ok("redis://127.0.0.1:6379").mode, RedisMode::Single);
    let c = ok("redis-cluster://10.0.0.1:7000,10.0.0.2:7000,10.0.0.3:7000");
    assert_eq!(c.mode, RedisMode::Cluster);
    assert_eq!(c.min_replicas_ack, 0);
    let s = ok("redis-sentinel://10.0.0.1:26379,10.0.0.2:26379/0?sentinelServiceName=astra");
    assert_eq!(s.mode, RedisMode::Sentinel);
    // The client's form: first node as authority, the others as node= parameters.
    assert_eq!(
        parse_redis_url("redis-cluster://u:p@a:1,b:2,c:3")
            .unwrap()
            .1,
        "redis-cluster://u:p@a:1?node=b:2&node=c:3"
    );
    assert_eq!(
        parse_redis_url("redis-sentinel://a:1,b:2/0?sentinelServiceName=m")
            .unwrap()
            .1,
        "redis-sentinel://a:1/0?node=b:2&sentinelServiceName=m"
    );
    // Errors name the field and say what is expected.
    let bad = |url: &str| errors(&STREAMS.replace("redis://127.0.0.1:6379", url), GROUP);
    assert_one(
        &bad("redis-cluster://10.0.0.1:7000,10.0.0.2"),
        "streams.toml:2:7: redis.url: every node must be host:port (comma-separated), got \"10.0.0.2\" in \"redis-cluster://10.0.0.1:7000,10.0.0.2\"; e.g. redis-cluster://10.0.0.1:7000,10.0.0.2:7000,10.0.0.3:7000",
    );
    assert_one(
        &bad("redis-sentinel://10.0.0.1:26379"),
        "streams.toml:2:7: redis.url: a sentinel URL needs ?sentinelServiceName=<primary name>, got \"redis-sentinel://10.0.0.1:26379\"; e.g. redis-sentinel://10.0.0.1:26379,10.0.0.2:26379/0?sentinelServiceName=astra",
    );
    assert_one(
        &bad("http://10.0.0.1:6379"),
        "streams.toml:2:7: redis.url must start with redis://, rediss://, redis-cluster:// or redis-sentinel://, got \"http://10.0.0.1:6379\"",
    );
    // WAIT-based publish acknowledgement is for a primary with replicas, not a cluster.
    let errs = errors(
        &STREAMS.replace(
            "url = \"redis://127.0.0.1:6379\"",
            "url = \"redis-cluster://a:1,b:2\"\nmin_replicas_ack = 1",
        ),
        GROUP,
    );
    assert_one(
        &errs,
        "streams.toml:3:20: redis.min_replicas_ack is not supported with redis-cluster:// (set it to 0)",
    );
    let errs = errors(
        &STREAMS.replace(
            "url = \"redis://127.0.0.1:6379\"",
            "url = \"redis://a:1\"\nmin_replicas_ack = 99\nreplica_ack_timeout = \"0s\"",
        ),
        GROUP,
    );
    assert_eq!(errs.len(), 2, "{errs:#?}");
    // ASTRA_REDIS_URL is checked the same way.
    let dir = write_config(STREAMS, &[("social", GROUP)]);
    let err = Config::load_with_env(&dir.path, |k| {
        (k == "ASTRA_REDIS_URL").then(|| "redis-cluster://nope".to_string())
    })
    .unwrap_err();
    assert!(
        err.to_string().starts_with(
            "ASTRA_REDIS_URL (environment):1:1: redis.url: every node must be host:port"
        ),
        "{err}"
    );
}

#[test]
fn services_are_validated_with_their_breakers() {
    let ok = format!(
        "{STREAMS}\n[services.pricing]\nproxy = true\ntimeout = \"3s\"\n[services.pricing.breaker]\nfailures = 7\nopen_for = \"45s\"\n[services.quiet]\n"
    );
    let dir = write_config(&ok, &[("social", GROUP)]);
    let cfg = Config::load_with_env(&dir.path, no_env).unwrap();
    let p = cfg.service("pricing").unwrap();
    assert!(p.proxy);
    assert_eq!(p.timeout, std::time::Duration::from_secs(3));
    assert_eq!(p.breaker.failures, 7);
    assert_eq!(p.breaker.open_for, std::time::Duration::from_secs(45));
    // The defaults: not proxied, the seeds' breaker (5 failures, 30 s).
    let q = cfg.service("quiet").unwrap();
    assert!(!q.proxy);
    assert_eq!(q.breaker, astra_bus::config::BreakerConfig::default());
    assert_eq!(q.breaker.failures, 5);

    let bad = format!("{STREAMS}\n[services.Bad]\nproxy = true\n");
    let errs = errors(&bad, GROUP);
    let line = |needle: &str| bad.lines().position(|l| l.contains(needle)).unwrap() + 1;
    assert_one(
        &errs,
        &format!(
            "streams.toml:{}:11: services.Bad: a service name is 1-64 characters of a-z, 0-9, _ and - (it is the /api/v1/<service>/ path segment)",
            line("[services.Bad]")
        ),
    );
    let typo = errors(&format!("{STREAMS}\n[services.typo]\nprox = true\n"), GROUP);
    assert!(
        typo.iter().any(|e| e.contains("unknown field `prox`")),
        "{typo:#?}"
    );
}

#[test]
fn service_values_out_of_range_name_their_key() {
    let bad = format!(
        "{STREAMS}\n[services.slow]\ntimeout = \"forever\"\n[services.slow.breaker]\nfailures = 0\nopen_for = \"2d\"\n"
    );
    let errs = errors(&bad, GROUP);
    let line = |needle: &str| bad.lines().position(|l| l.contains(needle)).unwrap() + 1;
    assert_one(
        &errs,
        &format!(
            "streams.toml:{}:11: services.slow.timeout: \"forever\" is not a duration (expected number at 0); write e.g. \"500ms\", \"30s\", \"7d\"",
            line("timeout")
        ),
    );
    assert_one(
        &errs,
        &format!(
            "streams.toml:{}:12: services.slow.breaker.failures must be between 1 and 1000, got 0",
            line("failures")
        ),
    );
    assert_one(
        &errs,
        &format!(
            "streams.toml:{}:12: services.slow.breaker.open_for must be between 10ms and 1day, got \"2d\"",
            line("open_for")
        ),
    );
}
