//! Node configuration: from a TOML file, with environment-variable overrides, validated on
//! load. A bad value is an error naming the key and the accepted range.
//!
//! ```toml
//! node_id = 1
//! cluster_id = "demo"
//! listen = "127.0.0.1:7001"
//! data_dir = "data/n1"
//! storage = "file"            # file | memory | sled | rocksdb
//!
//! [peers]                     # every voter and learner this node talks to, itself included
//! 1 = "127.0.0.1:7001"
//! 2 = "127.0.0.1:7002"
//! 3 = "127.0.0.1:7003"
//!
//! [bootstrap]                 # founding members only; a restarted node never bootstraps again
//! voters = [1, 2, 3]
//!
//! [raft]                      # optional; defaults shown in docs/configuration.md
//! election_ticks = 10
//!
//! [runtime]
//! tick_ms = 10
//!
//! [snapshot]
//! every_entries = 100000
//!
//! [tls]                       # optional: PEM files; mutual TLS with require_client_cert
//! cert = "certs/n1.pem"
//! key = "certs/n1.key"
//! ca = "certs/ca.pem"
//! require_client_cert = true
//! ```
//!
//! Every key can be overridden by an environment variable named `LOCKSTEP_` followed by
//! the key path in upper case with `_` between parts: `LOCKSTEP_NODE_ID`,
//! `LOCKSTEP_RAFT_ELECTION_TICKS`, `LOCKSTEP_SNAPSHOT_EVERY_ENTRIES`. Peers are overridden
//! as a whole with `LOCKSTEP_PEERS="1=127.0.0.1:7001,2=127.0.0.1:7002"`, founding voters
//! with `LOCKSTEP_BOOTSTRAP_VOTERS="[1, 2, 3]"`. Values of `cluster_id`, `listen`,
//! `data_dir` and `storage` are taken as plain strings; others are read as TOML values
//! (`25`, `true`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lockstep_core::runtime::RuntimeConfig;
use lockstep_core::{NodeId, RaftConfig, SessionLimits};
use serde::Deserialize;

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading config file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The TOML does not parse or has unknown keys or wrong types.
    #[error("config {origin}: {message}")]
    Parse {
        /// File name or "string".
        origin: String,
        /// The parser's message (names the key and line).
        message: String,
    },
    /// A value is out of its accepted range.
    #[error("invalid config: `{key}` = {value}: expected {expected}")]
    Invalid {
        /// The key path, e.g. `raft.election_ticks`.
        key: String,
        /// The value given.
        value: String,
        /// What is accepted.
        expected: String,
    },
}

fn invalid(key: &str, value: impl std::fmt::Display, expected: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        value: value.to_string(),
        expected: expected.into(),
    }
}

/// Which storage backend keeps the log and snapshots.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    /// Segmented write-ahead log and snapshot files under `data_dir` (feature `file`).
    #[default]
    File,
    /// In memory: **not durable**, for tests and demos.
    Memory,
    /// Log and the default KV state machine in sled databases under `data_dir`, snapshots as
    /// files (feature `sled`).
    Sled,
    /// Log and the default KV state machine in RocksDB databases under `data_dir`,
    /// snapshots as files (feature `rocksdb`).
    Rocksdb,
}

impl StorageKind {
    /// The name used in config files and data-directory markers.
    pub fn name(self) -> &'static str {
        match self {
            StorageKind::File => "file",
            StorageKind::Memory => "memory",
            StorageKind::Sled => "sled",
            StorageKind::Rocksdb => "rocksdb",
        }
    }
}

/// Founding members of a new cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootstrapConfig {
    /// The initial voters.
    pub voters: Vec<NodeId>,
}

/// Protocol tunables (see [`RaftConfig`] for what each does).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftSection {
    /// Minimum election timeout in ticks.
    pub election_ticks: u32,
    /// Heartbeat interval in ticks.
    pub heartbeat_ticks: u32,
    /// Pre-vote (thesis §9.6).
    pub pre_vote: bool,
    /// Check-quorum.
    pub check_quorum: bool,
    /// Lease reads.
    pub lease_reads: bool,
    /// Entries per AppendEntries message.
    pub max_entries_per_msg: usize,
    /// Bytes per AppendEntries message.
    pub max_bytes_per_msg: usize,
    /// Entries kept behind a snapshot.
    pub purge_keep_entries: u64,
}

impl Default for RaftSection {
    fn default() -> Self {
        let d = RaftConfig::default();
        Self {
            election_ticks: d.election_ticks,
            heartbeat_ticks: d.heartbeat_ticks,
            pre_vote: d.pre_vote,
            check_quorum: d.check_quorum,
            lease_reads: d.lease_reads,
            max_entries_per_msg: d.max_entries_per_msg,
            max_bytes_per_msg: d.max_bytes_per_msg,
            purge_keep_entries: d.purge_keep_entries,
        }
    }
}

/// Runtime tunables.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeSection {
    /// Tick length in milliseconds.
    pub tick_ms: u64,
    /// Client request deadline in milliseconds.
    pub request_timeout_ms: u64,
    /// Requests in flight before new ones are refused.
    pub max_pending_requests: usize,
    /// Largest command or query in bytes.
    pub max_command_bytes: usize,
    /// Bytes of messages one peer may have waiting in this node's inbox (back-pressure).
    pub peer_inbox_bytes: usize,
}

impl Default for RuntimeSection {
    fn default() -> Self {
        let d = RuntimeConfig::default();
        Self {
            tick_ms: d.tick.as_millis() as u64,
            request_timeout_ms: d.request_timeout.as_millis() as u64,
            max_pending_requests: d.max_pending_requests,
            max_command_bytes: d.max_command_bytes,
            peer_inbox_bytes: d.peer_inbox_bytes,
        }
    }
}

/// Bounds of the client-session table (exactly-once retries). Replicated state: every node
/// of a cluster must use the same values.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionsSection {
    /// Clients with a record; more evict the least recently used.
    pub max_clients: usize,
    /// Bytes of all records; more evict the least recently used.
    pub max_bytes: u64,
    /// Results larger than this are not kept (a retry is answered "result no longer
    /// available", never applied twice).
    pub max_result_bytes: usize,
}

impl Default for SessionsSection {
    fn default() -> Self {
        let d = SessionLimits::default();
        Self {
            max_clients: d.max_clients,
            max_bytes: d.max_bytes,
            max_result_bytes: d.max_result_bytes,
        }
    }
}

impl SessionsSection {
    /// The limits this describes.
    pub fn limits(&self) -> SessionLimits {
        SessionLimits {
            max_clients: self.max_clients,
            max_bytes: self.max_bytes,
            max_result_bytes: self.max_result_bytes,
        }
    }
}

/// When snapshots are taken (any condition that is met triggers one; 0 switches it off).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SnapshotSection {
    /// After this many entries.
    pub every_entries: u64,
    /// After this many bytes of commands.
    pub every_bytes: u64,
    /// After this many seconds (with at least one new entry).
    pub every_seconds: u64,
    /// Snapshots kept on disk.
    pub keep: usize,
    /// Largest snapshot header (metadata and session table) read or received, checked
    /// before it is buffered; must exceed `sessions.max_bytes`.
    pub max_header_bytes: usize,
}

impl Default for SnapshotSection {
    fn default() -> Self {
        Self {
            every_entries: 100_000,
            every_bytes: 64 << 20,
            every_seconds: 0,
            keep: 2,
            max_header_bytes: 64 << 20,
        }
    }
}

/// Limits of the gRPC server (feature `grpc`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrpcSection {
    /// Inbound snapshot streams received at once (besides one per peer); more are refused
    /// with `RESOURCE_EXHAUSTED`.
    pub max_inbound_snapshots: usize,
    /// `WatchLeader` streams served at once; more are refused with `RESOURCE_EXHAUSTED`.
    pub max_watch_streams: usize,
}

impl Default for GrpcSection {
    fn default() -> Self {
        Self {
            max_inbound_snapshots: 2,
            max_watch_streams: 1024,
        }
    }
}

/// TLS for peer and client connections (PEM files). With `require_client_cert`, peers and
/// clients must present a certificate signed by `ca` (mutual TLS).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// This node's certificate chain.
    pub cert: PathBuf,
    /// This node's private key.
    pub key: PathBuf,
    /// The CA that signs every node's (and client's) certificate.
    pub ca: PathBuf,
    /// Require client certificates (mutual TLS).
    #[serde(default)]
    pub require_client_cert: bool,
}

/// Everything a node needs to start.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This node's id (non-zero, unique in the cluster).
    pub node_id: NodeId,
    /// Name of the cluster; messages from another cluster are refused.
    #[serde(default = "default_cluster_id")]
    pub cluster_id: String,
    /// Address to listen on for peers and clients.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Directory of the node's data.
    #[serde(default)]
    pub data_dir: PathBuf,
    /// Storage backend.
    #[serde(default)]
    pub storage: StorageKind,
    /// Addresses of the other members (may include this node).
    #[serde(default, deserialize_with = "peers_de")]
    pub peers: BTreeMap<NodeId, String>,
    /// Founding members; absent for a node that joins a running cluster.
    #[serde(default)]
    pub bootstrap: Option<BootstrapConfig>,
    /// Protocol tunables.
    #[serde(default)]
    pub raft: RaftSection,
    /// Runtime tunables.
    #[serde(default)]
    pub runtime: RuntimeSection,
    /// Snapshot policy.
    #[serde(default)]
    pub snapshot: SnapshotSection,
    /// Bounds of the client-session table.
    #[serde(default)]
    pub sessions: SessionsSection,
    /// TLS; absent means plain-text connections.
    #[serde(default)]
    pub tls: Option<TlsSection>,
    /// The HTTP endpoint of metrics and health checks; absent means none.
    #[serde(default)]
    pub metrics: Option<MetricsSection>,
    /// Limits of the gRPC server.
    #[serde(default)]
    pub grpc: GrpcSection,
    /// A file holding the cluster's shared peer secret (the same on every node, at least
    /// 16 visible ASCII characters): peer calls without it are refused. For clusters
    /// without mutual TLS; see docs/security.md.
    #[serde(default)]
    pub peer_secret_file: Option<PathBuf>,
}

/// The HTTP endpoint for operators (feature `grpc`): `GET /metrics` (Prometheus text),
/// `/health` (200 while the node runs, 503 with the reason once it stopped) and `/ready`
/// (200 when a leader is known and applied is within `ready_max_lag` of commit).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// Address to serve on, e.g. `127.0.0.1:9100`.
    pub listen: String,
    /// Entries the state machine may trail the commit index by and still be ready.
    #[serde(default = "default_ready_max_lag")]
    pub ready_max_lag: u64,
}

fn default_ready_max_lag() -> u64 {
    1000
}

/// The values a TOML file with only `node_id = 1` gives, except `data_dir`, which is
/// `lockstep-data` (the default file storage needs one): a single node that joins no
/// cluster. Override fields with struct update syntax:
/// `Config { node_id: 2, data_dir: "data/n2".into(), ..Config::default() }`.
impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("lockstep-data"),
            ..Self::new(1)
        }
    }
}

/// Peers are a TOML table keyed by node id; TOML keys are strings, so parse them.
fn peers_de<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BTreeMap<NodeId, String>, D::Error> {
    let raw: BTreeMap<String, String> = BTreeMap::deserialize(d)?;
    raw.into_iter()
        .map(|(k, v)| {
            k.trim().parse::<NodeId>().map(|id| (id, v)).map_err(|_| {
                serde::de::Error::custom(format!(
                    "peer key `{k}` is not a node id (a positive integer)"
                ))
            })
        })
        .collect()
}

fn default_cluster_id() -> String {
    "lockstep".into()
}

fn default_listen() -> String {
    "127.0.0.1:7001".into()
}

/// Keys that environment variables can override (peers are handled separately).
const ENV_KEYS: &[&str] = &[
    "bootstrap.voters",
    "node_id",
    "cluster_id",
    "listen",
    "data_dir",
    "storage",
    "raft.election_ticks",
    "raft.heartbeat_ticks",
    "raft.pre_vote",
    "raft.check_quorum",
    "raft.lease_reads",
    "raft.max_entries_per_msg",
    "raft.max_bytes_per_msg",
    "raft.purge_keep_entries",
    "runtime.tick_ms",
    "runtime.request_timeout_ms",
    "runtime.max_pending_requests",
    "runtime.max_command_bytes",
    "runtime.peer_inbox_bytes",
    "sessions.max_clients",
    "sessions.max_bytes",
    "sessions.max_result_bytes",
    "tls.cert",
    "tls.key",
    "tls.ca",
    "tls.require_client_cert",
    "snapshot.every_entries",
    "snapshot.every_bytes",
    "snapshot.every_seconds",
    "snapshot.keep",
    "snapshot.max_header_bytes",
    "metrics.listen",
    "metrics.ready_max_lag",
    "grpc.max_inbound_snapshots",
    "grpc.max_watch_streams",
    "peer_secret_file",
];

/// Keys whose environment value is always taken as a plain string.
const STRING_KEYS: &[&str] = &[
    "cluster_id",
    "listen",
    "data_dir",
    "storage",
    "tls.cert",
    "tls.key",
    "tls.ca",
    "metrics.listen",
    "peer_secret_file",
];

/// The environment variable that overrides `key`.
pub fn env_name(key: &str) -> String {
    format!("LOCKSTEP_{}", key.replace('.', "_").to_uppercase())
}

impl Config {
    /// A minimal configuration for node `node_id` (everything else default); useful in code.
    pub fn new(node_id: NodeId) -> Self {
        Self {
            node_id,
            cluster_id: default_cluster_id(),
            listen: default_listen(),
            data_dir: PathBuf::new(),
            storage: StorageKind::default(),
            peers: BTreeMap::new(),
            bootstrap: None,
            raft: RaftSection::default(),
            runtime: RuntimeSection::default(),
            snapshot: SnapshotSection::default(),
            sessions: SessionsSection::default(),
            tls: None,
            metrics: None,
            grpc: GrpcSection::default(),
            peer_secret_file: None,
        }
    }

    /// Reads a TOML file, applies environment overrides, validates.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string(), |k| {
            std::env::var(k).ok()
        })
    }

    /// Parses TOML text, applies environment overrides, validates.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Self::parse(text, "string", |k| std::env::var(k).ok())
    }

    /// Parses TOML text with overrides from `env` (a lookup by variable name), validates.
    pub fn parse(
        text: &str,
        origin: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let parse_err = |message: String| ConfigError::Parse {
            origin: origin.to_string(),
            message,
        };
        let mut doc: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| parse_err(e.to_string()))?;
        for key in ENV_KEYS {
            if let Some(raw) = env(&env_name(key)) {
                let value = if STRING_KEYS.contains(key) {
                    toml::Value::String(raw)
                } else {
                    env_value(&raw)
                };
                set_path(&mut doc, key, value);
            }
        }
        if let Some(raw) = env("LOCKSTEP_PEERS") {
            let mut peers = toml::Table::new();
            for part in raw.split(',').filter(|p| !p.trim().is_empty()) {
                let (id, addr) = part.split_once('=').ok_or_else(|| {
                    invalid(
                        "peers",
                        &raw,
                        "id=address pairs separated by commas (LOCKSTEP_PEERS)",
                    )
                })?;
                peers.insert(
                    id.trim().to_string(),
                    toml::Value::String(addr.trim().to_string()),
                );
            }
            doc.insert("peers".into(), toml::Value::Table(peers));
        }
        let config: Config = toml::Value::Table(doc)
            .try_into()
            .map_err(|e: toml::de::Error| parse_err(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every value; the error names the key and the accepted range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.node_id == 0 {
            return Err(invalid("node_id", 0, "a non-zero node id"));
        }
        if self.cluster_id.is_empty() || self.cluster_id.len() > 128 {
            return Err(invalid(
                "cluster_id",
                format!("{:?}", self.cluster_id),
                "1 to 128 characters",
            ));
        }
        if let Some(m) = &self.metrics {
            if m.listen.parse::<SocketAddr>().is_err() {
                return Err(invalid(
                    "metrics.listen",
                    &m.listen,
                    "an IP address and port, e.g. 127.0.0.1:9100",
                ));
            }
        }
        if self.listen.parse::<SocketAddr>().is_err() {
            return Err(invalid(
                "listen",
                &self.listen,
                "an IP address and port, e.g. 127.0.0.1:7001",
            ));
        }
        for (id, addr) in &self.peers {
            if *id == 0 {
                return Err(invalid("peers", 0, "non-zero node ids"));
            }
            if addr.trim().is_empty() {
                return Err(invalid(
                    &format!("peers.{id}"),
                    "\"\"",
                    "a host:port address",
                ));
            }
        }
        if self.storage != StorageKind::Memory && self.data_dir.as_os_str().is_empty() {
            return Err(invalid(
                "data_dir",
                "\"\"",
                format!(
                    "a directory for the node's data (storage = \"{}\")",
                    self.storage.name()
                ),
            ));
        }
        if let Some(b) = &self.bootstrap {
            if b.voters.is_empty() || b.voters.contains(&0) {
                return Err(invalid(
                    "bootstrap.voters",
                    format!("{:?}", b.voters),
                    "a non-empty list of non-zero node ids",
                ));
            }
            if !b.voters.contains(&self.node_id) {
                return Err(invalid(
                    "bootstrap.voters",
                    format!("{:?}", b.voters),
                    format!(
                        "a list that includes this node ({}); only founding members bootstrap",
                        self.node_id
                    ),
                ));
            }
        }
        if self.snapshot.keep < 2 {
            return Err(invalid(
                "snapshot.keep",
                self.snapshot.keep,
                "at least 2 (the snapshot the log store names is kept until a newer one is recorded)",
            ));
        }
        if self.grpc.max_inbound_snapshots == 0 {
            return Err(invalid("grpc.max_inbound_snapshots", 0, "at least 1"));
        }
        if self.grpc.max_watch_streams == 0 {
            return Err(invalid("grpc.max_watch_streams", 0, "at least 1"));
        }
        if self.sessions.max_clients == 0 {
            return Err(invalid("sessions.max_clients", 0, "at least 1"));
        }
        if self.sessions.max_bytes < SessionLimits::RECORD_OVERHEAD {
            return Err(invalid(
                "sessions.max_bytes",
                self.sessions.max_bytes,
                format!("at least {}", SessionLimits::RECORD_OVERHEAD),
            ));
        }
        let header_floor = self
            .sessions
            .max_bytes
            .saturating_add(self.sessions.max_result_bytes as u64)
            .saturating_add(1 << 20);
        if (self.snapshot.max_header_bytes as u64) < header_floor
            || self.snapshot.max_header_bytes > u32::MAX as usize
        {
            return Err(invalid(
                "snapshot.max_header_bytes",
                self.snapshot.max_header_bytes,
                format!(
                    "between {header_floor} (sessions.max_bytes + sessions.max_result_bytes + 1 MiB, \
                     so a full session table fits) and {}",
                    u32::MAX
                ),
            ));
        }
        self.raft_config()
            .validate()
            .map_err(|e| ConfigError::Invalid {
                key: format!("raft.{}", e.key),
                value: e.value,
                expected: e.expected,
            })?;
        self.runtime_config().validate().map_err(|e| match e.key {
            "tick" => invalid(
                "runtime.tick_ms",
                self.runtime.tick_ms,
                "between 1 and 10000",
            ),
            "request_timeout" => invalid(
                "runtime.request_timeout_ms",
                self.runtime.request_timeout_ms,
                "at least 1",
            ),
            k => invalid(&format!("runtime.{k}"), e.value, e.expected),
        })?;
        Ok(())
    }

    /// The protocol configuration this describes.
    pub fn raft_config(&self) -> RaftConfig {
        let r = &self.raft;
        RaftConfig {
            id: self.node_id,
            election_ticks: r.election_ticks,
            heartbeat_ticks: r.heartbeat_ticks,
            pre_vote: r.pre_vote,
            check_quorum: r.check_quorum,
            lease_reads: r.lease_reads,
            max_entries_per_msg: r.max_entries_per_msg,
            max_bytes_per_msg: r.max_bytes_per_msg,
            purge_keep_entries: r.purge_keep_entries,
            ..RaftConfig::default()
        }
    }

    /// The runtime configuration this describes.
    pub fn runtime_config(&self) -> RuntimeConfig {
        RuntimeConfig {
            tick: Duration::from_millis(self.runtime.tick_ms),
            request_timeout: Duration::from_millis(self.runtime.request_timeout_ms),
            max_pending_requests: self.runtime.max_pending_requests,
            max_command_bytes: self.runtime.max_command_bytes,
            peer_inbox_bytes: self.runtime.peer_inbox_bytes,
            ..RuntimeConfig::default()
        }
    }
}

/// Reads an environment value as a TOML literal (number, boolean, quoted string), else as a
/// plain string.
fn env_value(raw: &str) -> toml::Value {
    let probe = format!("v = {raw}");
    match probe.parse::<toml::Table>() {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.to_string())),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

fn set_path(doc: &mut toml::Table, key: &str, value: toml::Value) {
    match key.split_once('.') {
        None => {
            doc.insert(key.to_string(), value);
        }
        Some((section, rest)) => {
            let entry = doc
                .entry(section.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if !entry.is_table() {
                *entry = toml::Value::Table(toml::Table::new());
            }
            if let toml::Value::Table(t) = entry {
                set_path(t, rest, value);
            }
        }
    }
}

#[cfg(test)]
mod tests;
