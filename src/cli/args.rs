//! The argument model: every subcommand, its options and its `--help` text (clap derive).
//! What each one does lives in the file of its family (see [`super`]).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Redis Streams as a dependable event bus.
#[derive(Debug, Parser)]
#[command(name = "astra-bus", version, about, long_about = None)]
pub struct Cli {
    /// Directory holding streams.toml and consumer-groups/.
    #[arg(
        long,
        short = 'c',
        global = true,
        default_value = ".",
        env = "ASTRA_CONFIG_DIR"
    )]
    pub config: PathBuf,

    /// Log format.
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,

    #[command(subcommand)]
    pub command: Command,
}

/// `key` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeyAction {
    /// Generate a random key; prints it once (give it to the client) and the
    /// `[[edge.key]]` entry with its SHA-256 (put that in the config).
    ///
    /// Example: astra-bus key new mobile-app --scope 'publish:astra.trading.*' --scope read
    New {
        /// Who holds the key.
        name: String,
        /// Scopes: `publish:<stream>`, `publish:<prefix>*`, `read`, `ops`, `register:<service>`, `*`.
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// The user the key acts as for per-user rate limits.
        #[arg(long)]
        user: Option<String>,
    },
    /// Print the SHA-256 (hex) of a key read from stdin, as `sha256` in `[[edge.key]]`.
    ///
    /// Example: printf %s "$KEY" | astra-bus key hash
    Hash,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the configuration and print the topology.
    ///
    /// Prints each domain with its streams and each group with what it reads and
    /// publishes, then `ok: N streams, G groups, D domains`. On errors prints every
    /// problem as file:line:col: message and exits 1.
    ///
    /// Example: astra-bus check --config /etc/astra-bus
    Check,

    /// Load this binary's Redis function library, create every stream and consumer group
    /// (idempotent).
    ///
    /// Run it as an admin (a Redis user allowed FUNCTION LOAD, e.g. astra-admin of
    /// setup/redis-users.acl) after installing or upgrading: the daemon's own users may
    /// only call the functions. Reports the library (`loaded` / `present`, other versions
    /// left alone), per group and stream `created` or `exists`, and groups that exist in
    /// Redis on declared streams but are not in the config (they are left alone).
    ///
    /// Example: ASTRA_REDIS_URL=redis://astra-admin@127.0.0.1:6379 astra-bus declare
    Declare,

    /// Print the event catalog: the topology as an AsyncAPI 3.0.0 document (streams as
    /// channels, groups' reads and publishes as operations, every payload's JSON Schema),
    /// or `--format jsonschema`: `{stream: payload schema}`. Reads only the config (no
    /// Redis); `GET /asyncapi.json` serves the same document.
    ///
    /// Example: astra-bus catalog --config /etc/astra-bus > asyncapi.json
    Catalog {
        /// `asyncapi` (AsyncAPI 3.0.0) or `jsonschema` (draft-07 schemas by stream).
        #[arg(long, value_enum, default_value = "asyncapi")]
        format: crate::catalog::Format,
    },

    /// Print this binary's Redis function library (the code `declare` loads), for an admin
    /// who loads it by hand: `astra-bus functions | redis-cli -x FUNCTION LOAD REPLACE`.
    Functions,

    /// Run the daemon: declare, then consume with every configured group until SIGTERM.
    ///
    /// SIGTERM or Ctrl-C: stop reading, finish in-flight work, exit 0 within
    /// daemon.shutdown_deadline (unfinished entries stay pending and are reclaimed later).
    /// SIGHUP: reload the configuration (an invalid one is logged and the old one kept).
    /// `--role edge` runs only the HTTP edge (no consumer groups, no declare, no
    /// retention), e.g. as a Redis user that may only publish and read.
    ///
    /// Example: astra-bus run --config /etc/astra-bus
    Run {
        /// What to run: `all` (groups, retention and the HTTP edge) or `edge` (HTTP only).
        #[arg(long, default_value = "all", value_parser = ["all", "edge"])]
        role: String,
    },

    /// API keys for the HTTP edge.
    ///
    /// Example: astra-bus key new mobile-app --scope 'publish:astra.trading.*' --scope read
    Key {
        #[command(subcommand)]
        action: KeyAction,
    },

    /// Publish one event (JSON payload) to a declared stream; prints event and entry id.
    ///
    /// The payload is checked against the stream's schema and stored as MessagePack.
    ///
    /// Example: astra-bus publish astra.user.registered.v1 '{"user_id":"u1","display_name":"Ada"}'
    Publish {
        /// Stream name (must be declared).
        stream: String,
        /// JSON payload.
        json: String,
        /// Correlation id (default: the new event's id).
        #[arg(long)]
        cid: Option<String>,
        /// Producer name recorded in `src`.
        #[arg(long, default_value = "astra-bus-cli")]
        src: String,
    },

    /// Per group and stream: length, lag, pending, oldest pending age, consumers, dead letters.
    ///
    /// Example: astra-bus status
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },

    /// Print a stream's events decoded, then follow new ones.
    ///
    /// Example: astra-bus tail astra.gamification.xp_awarded.v1 --last 20
    Tail {
        /// Stream name (must be declared).
        stream: String,
        /// How many existing events to print first.
        #[arg(long, default_value_t = 10)]
        last: usize,
        /// Exit after printing the existing events instead of following.
        #[arg(long)]
        no_follow: bool,
    },

    /// Dead letters: list, replay to the group that dead-lettered them, or purge.
    ///
    /// Example: astra-bus dlq list --group gamification.xp_processing
    Dlq {
        #[command(subcommand)]
        action: DlqAction,
    },

    /// The service registry: list services and their instances' health, heartbeat an
    /// instance (a sidecar for a service that cannot call the edge itself), or remove one.
    ///
    /// Example: astra-bus service list
    Service {
        #[command(subcommand)]
        action: ServiceAction,
    },

    /// Verify the tamper-evident audit log.
    ///
    /// Example: astra-bus audit verify
    Audit {
        #[command(subcommand)]
        action: AuditAction,
    },

    /// Print the tree of events that share a correlation id.
    ///
    /// Streams are scanned from a minute before the correlation id's time for --window
    /// (UUIDv7 ids carry their time); for any other id, over the last --since.
    ///
    /// Example: astra-bus trace 0193a6f2-7c1e-7d3a-9a51-0c2b6f1e9d10
    Trace {
        /// Correlation id.
        cid: String,
        /// Scan window length.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        window: std::time::Duration,
        /// Scan start as a duration ago, when the cid carries no time (e.g. "24h").
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        since: std::time::Duration,
    },
}

/// `service` actions.
#[derive(Debug, Subcommand)]
pub enum ServiceAction {
    /// Every registered service: healthy instances of the total, then each instance.
    ///
    /// Example: astra-bus service list --json
    List {
        /// Print JSON (what `GET /v1/services` answers) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Register an instance and keep it healthy: a heartbeat every third of --ttl until
    /// SIGTERM or Ctrl-C (then it is removed), or one heartbeat with --once.
    ///
    /// Example: astra-bus service heartbeat trading t-1 --url http://10.0.0.7:8001
    Heartbeat {
        /// Service name (1-64 of a-z, 0-9, _ and -).
        service: String,
        /// Instance id within the service.
        instance: String,
        /// Where the instance answers (http:// or https://).
        #[arg(long)]
        url: String,
        /// Healthy this long after each heartbeat (1s to 1h).
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
        /// Send one heartbeat and exit.
        #[arg(long)]
        once: bool,
    },
    /// Remove an instance from the registry.
    ///
    /// Example: astra-bus service remove trading t-1
    Remove {
        /// Service name.
        service: String,
        /// Instance id.
        instance: String,
    },
}

/// `audit` actions.
#[derive(Debug, Subcommand)]
pub enum AuditAction {
    /// Walk the hash chain and report the first broken link (exit 1 if broken).
    ///
    /// Example: astra-bus audit verify
    Verify,
}

/// `dlq` actions.
#[derive(Debug, Subcommand)]
pub enum DlqAction {
    /// List dead letters (oldest first).
    ///
    /// Example: astra-bus dlq list --count 20
    List {
        /// Only those of this group.
        #[arg(long)]
        group: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        count: usize,
    },
    /// Hand dead letters back to the group that dead-lettered them (same event id; no
    /// other group sees them again; a partly applied event resumes) and mark them
    /// resolved: no longer listed, never replayed twice (the dead-letter stream itself is
    /// append-only, trimmed by its retention).
    ///
    /// Example: astra-bus dlq replay 1732190000000-0   (or --all [--group G])
    Replay {
        /// Dead-letter entry ids to replay.
        ids: Vec<String>,
        /// Replay every dead letter (of --group, if given).
        #[arg(long)]
        all: bool,
        /// Only those of this group.
        #[arg(long)]
        group: Option<String>,
    },
    /// Mark dead letters resolved without replaying them (of --group, or all): no longer
    /// listed or replayable.
    ///
    /// Example: astra-bus dlq purge --group nft.marketplace
    Purge {
        /// Only those of this group.
        #[arg(long)]
        group: Option<String>,
    },
}
