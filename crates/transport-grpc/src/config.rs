//! Settings of the gRPC transport and server ([`GrpcConfig`], [`TlsConfig`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use lockstep_core::NodeId;

use crate::error::GrpcError;
use crate::identity::CertIdentity;

/// A configuration value outside its accepted range.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid gRPC config: `{key}` = {value}: expected {expected}")]
pub struct ConfigError {
    /// The offending key (`peers.3` for the address of peer 3).
    pub key: String,
    /// The value given, rendered.
    pub value: String,
    /// What is accepted.
    pub expected: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, value: impl Into<String>, expected: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
            expected: expected.into(),
        }
    }
}

/// TLS for the peer and client APIs: the node's certificate and key, and the CA that peers'
/// (and, with `require_client_cert`, clients') certificates must chain to. The same
/// certificate is presented as a client certificate when this node connects to peers, so it
/// must carry this node's identity (SAN URI `lockstep://CLUSTER/node/ID`, see
/// [`crate::identity`]); every peer call must come with such a certificate and claim to be
/// from the node it names.
#[derive(Clone)]
pub struct TlsConfig {
    /// This node's certificate chain, PEM.
    pub cert_pem: String,
    /// This node's private key, PEM.
    pub key_pem: String,
    /// The CA certificate(s) peers are verified against, PEM.
    pub ca_pem: String,
    /// Mutual TLS for the client API: refuse client connections without a certificate
    /// signed by `ca_pem`. The peer service always requires a node certificate with TLS,
    /// whatever this says.
    pub require_client_cert: bool,
    /// Name to verify in peers' server certificates; by default the host of the peer's
    /// address.
    pub domain_name: Option<String>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field("cert_pem", &format_args!("<{} bytes>", self.cert_pem.len()))
            .field("key_pem", &"<redacted>")
            .field("ca_pem", &format_args!("<{} bytes>", self.ca_pem.len()))
            .field("require_client_cert", &self.require_client_cert)
            .field("domain_name", &self.domain_name)
            .finish()
    }
}

impl TlsConfig {
    /// Reads the certificate, key and CA from PEM files.
    pub fn from_files(
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
        ca: impl AsRef<Path>,
        require_client_cert: bool,
    ) -> Result<Self, GrpcError> {
        let read = |p: &Path| {
            std::fs::read_to_string(p)
                .map_err(|e| GrpcError::Tls(format!("reading {}: {e}", p.display())))
        };
        Ok(Self {
            cert_pem: read(cert.as_ref())?,
            key_pem: read(key.as_ref())?,
            ca_pem: read(ca.as_ref())?,
            require_client_cert,
            domain_name: None,
        })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        for (key, pem) in [
            ("tls.cert_pem", &self.cert_pem),
            ("tls.key_pem", &self.key_pem),
            ("tls.ca_pem", &self.ca_pem),
        ] {
            if !pem.contains("-----BEGIN ") {
                return Err(ConfigError::new(
                    key,
                    format!("<{} bytes>", pem.len()),
                    "a PEM document",
                ));
            }
        }
        Ok(())
    }
}

/// Settings of a node's gRPC transport and server.
#[derive(Clone, Debug)]
pub struct GrpcConfig {
    /// Identifies the cluster; peers and clients of another cluster are refused.
    pub cluster_id: String,
    /// This node's id (non-zero).
    pub node_id: NodeId,
    /// Where the server listens; port 0 picks a free port (see
    /// [`crate::ServerHandle::local_addr`]).
    pub listen: SocketAddr,
    /// The address peers and clients reach this node at, used in leader hints; by default
    /// the bound listen address.
    pub advertise_addr: Option<String>,
    /// Addresses of the other nodes (`host:port`, or a full `http://` / `https://` URI).
    /// Messages from nodes missing here are refused. An entry for this node is ignored.
    pub peers: BTreeMap<NodeId, String>,
    /// Largest gRPC message accepted or sent, in bytes.
    pub max_message_bytes: usize,
    /// Deadline for establishing a connection.
    pub connect_timeout: Duration,
    /// Deadline of a unary call.
    pub request_timeout: Duration,
    /// Deadline of one snapshot transfer.
    pub snapshot_timeout: Duration,
    /// Size of the data chunks a snapshot is sent in.
    pub snapshot_chunk_bytes: usize,
    /// Largest snapshot accepted, in bytes.
    pub max_snapshot_bytes: u64,
    /// Messages queued per peer; when the queue is full new messages are dropped (Raft
    /// retransmits).
    pub peer_queue_len: usize,
    /// First delay before reconnecting to a peer; doubled after every failure.
    pub reconnect_backoff_min: Duration,
    /// Longest delay between reconnection attempts.
    pub reconnect_backoff_max: Duration,
    /// `WatchLeader` streams served at once; one more is refused with
    /// `RESOURCE_EXHAUSTED` until one ends.
    pub max_watch_streams: usize,
    /// Snapshot streams received at once, from all peers together (each has a temporary
    /// file); one more is refused with `RESOURCE_EXHAUSTED` until one ends. A peer may have
    /// at most one inbound snapshot stream at a time whatever this says.
    pub max_inbound_snapshots: usize,
    /// TLS (and mutual TLS); plain text if `None`.
    pub tls: Option<TlsConfig>,
    /// A secret every peer presents on every peer call (compared in constant time); calls
    /// without it are refused with `PERMISSION_DENIED`. For clusters without mutual TLS.
    pub peer_secret: Option<PeerSecret>,
}

/// The cluster's shared peer secret (never printed).
#[derive(Clone, PartialEq, Eq)]
pub struct PeerSecret(String);

impl PeerSecret {
    /// The metadata key peers send the secret under.
    pub const HEADER: &'static str = "lockstep-peer-secret";

    /// A secret; at least 16 characters of visible ASCII (it travels in a gRPC header).
    pub fn new(secret: impl Into<String>) -> Result<Self, ConfigError> {
        let s = secret.into();
        if s.len() < 16 || !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ConfigError::new(
                "peer_secret",
                format!("<{} characters>", s.len()),
                "at least 16 visible ASCII characters (no spaces)",
            ));
        }
        Ok(Self(s))
    }

    /// The secret.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `presented` is the secret, in time independent of where they differ.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let mine = self.0.as_bytes();
        let mut diff =
            (mine.len() ^ presented.len()) as u8 | u8::from(mine.len() != presented.len());
        for (i, b) in mine.iter().enumerate() {
            diff |= b ^ presented.get(i).copied().unwrap_or(0);
        }
        diff == 0
    }
}

impl std::fmt::Debug for PeerSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerSecret(<redacted>)")
    }
}

impl GrpcConfig {
    /// Settings with defaults for node `node_id` of cluster `cluster_id` listening on
    /// `listen`, with no peers.
    pub fn new(cluster_id: impl Into<String>, node_id: NodeId, listen: SocketAddr) -> Self {
        Self {
            cluster_id: cluster_id.into(),
            node_id,
            listen,
            advertise_addr: None,
            peers: BTreeMap::new(),
            max_message_bytes: 16 << 20,
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            snapshot_timeout: Duration::from_secs(300),
            snapshot_chunk_bytes: 1 << 20,
            max_snapshot_bytes: 8 << 30,
            peer_queue_len: 4096,
            reconnect_backoff_min: Duration::from_millis(20),
            reconnect_backoff_max: Duration::from_secs(2),
            max_watch_streams: 1024,
            max_inbound_snapshots: 2,
            tls: None,
            peer_secret: None,
        }
    }

    /// Adds a peer (builder style).
    pub fn with_peer(mut self, id: NodeId, addr: impl Into<String>) -> Self {
        self.peers.insert(id, addr.into());
        self
    }

    /// Checks every field; the error names the key, the value and what is accepted.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.cluster_id.trim().is_empty() {
            return Err(ConfigError::new(
                "cluster_id",
                format!("{:?}", self.cluster_id),
                "a non-empty string",
            ));
        }
        if self.cluster_id.len() > 256 {
            return Err(ConfigError::new(
                "cluster_id",
                format!("<{} bytes>", self.cluster_id.len()),
                "at most 256 bytes",
            ));
        }
        if self.node_id == 0 {
            return Err(ConfigError::new("node_id", "0", "a non-zero node id"));
        }
        if self.max_watch_streams == 0 {
            return Err(ConfigError::new("max_watch_streams", "0", "at least 1"));
        }
        if self.max_inbound_snapshots == 0 {
            return Err(ConfigError::new("max_inbound_snapshots", "0", "at least 1"));
        }
        let tls = self.tls.is_some();
        for (id, addr) in &self.peers {
            if *id == 0 {
                return Err(ConfigError::new(
                    "peers",
                    format!("0 = {addr:?}"),
                    "non-zero node ids",
                ));
            }
            if let Err(detail) = endpoint_uri(addr, tls) {
                return Err(ConfigError::new(
                    format!("peers.{id}"),
                    format!("{addr:?}"),
                    detail,
                ));
            }
        }
        if let Some(a) = &self.advertise_addr {
            if let Err(detail) = endpoint_uri(a, tls) {
                return Err(ConfigError::new("advertise_addr", format!("{a:?}"), detail));
            }
        }
        const MIN_MSG: usize = 64 << 10;
        const MAX_MSG: usize = 1 << 30;
        if !(MIN_MSG..=MAX_MSG).contains(&self.max_message_bytes) {
            return Err(ConfigError::new(
                "max_message_bytes",
                self.max_message_bytes.to_string(),
                format!("between {MIN_MSG} and {MAX_MSG}"),
            ));
        }
        for (key, d) in [
            ("connect_timeout", self.connect_timeout),
            ("request_timeout", self.request_timeout),
            ("snapshot_timeout", self.snapshot_timeout),
            ("reconnect_backoff_min", self.reconnect_backoff_min),
        ] {
            if d.is_zero() {
                return Err(ConfigError::new(key, "0", "a positive duration"));
            }
        }
        if self.reconnect_backoff_max < self.reconnect_backoff_min {
            return Err(ConfigError::new(
                "reconnect_backoff_max",
                format!("{:?}", self.reconnect_backoff_max),
                format!(
                    "at least reconnect_backoff_min ({:?})",
                    self.reconnect_backoff_min
                ),
            ));
        }
        let max_chunk = self.max_message_bytes.saturating_sub(CHUNK_OVERHEAD);
        if self.snapshot_chunk_bytes == 0 || self.snapshot_chunk_bytes > max_chunk {
            return Err(ConfigError::new(
                "snapshot_chunk_bytes",
                self.snapshot_chunk_bytes.to_string(),
                format!("between 1 and max_message_bytes - {CHUNK_OVERHEAD} ({max_chunk})"),
            ));
        }
        if self.max_snapshot_bytes == 0 {
            return Err(ConfigError::new("max_snapshot_bytes", "0", "at least 1"));
        }
        if self.peer_queue_len == 0 {
            return Err(ConfigError::new("peer_queue_len", "0", "at least 1"));
        }
        if let Some(t) = &self.tls {
            t.validate()?;
            self.check_own_certificate(t)?;
        }
        Ok(())
    }

    /// This node's certificate must identify it: peers refuse its calls otherwise.
    fn check_own_certificate(&self, t: &TlsConfig) -> Result<(), ConfigError> {
        let mine = CertIdentity::Node {
            cluster_id: self.cluster_id.clone(),
            id: self.node_id,
        };
        let expected = format!(
            "the certificate of {mine} (SAN URI {}; `lockstep certs` makes one)",
            mine.uri()
        );
        match CertIdentity::from_pem(&t.cert_pem) {
            Ok(id) if id == mine => Ok(()),
            Ok(other) => Err(ConfigError::new(
                "tls.cert_pem",
                format!("<the certificate of {other}>"),
                expected,
            )),
            Err(e) => Err(ConfigError::new("tls.cert_pem", format!("<{e}>"), expected)),
        }
    }
}

/// Room left in a message for the framing of a snapshot chunk.
pub(crate) const CHUNK_OVERHEAD: usize = 1024;

/// The URI to connect to for `addr`: `host:port` gets the scheme that fits the TLS setting;
/// a full URI must use `http` or `https` and have a host and a port.
pub(crate) fn endpoint_uri(addr: &str, tls: bool) -> Result<String, String> {
    let addr = addr.trim();
    if addr.is_empty() {
        return Err("a non-empty address (host:port or a URI)".into());
    }
    let uri = if addr.contains("://") {
        addr.to_string()
    } else if tls {
        format!("https://{addr}")
    } else {
        format!("http://{addr}")
    };
    let parsed: tonic::codegen::http::Uri = uri
        .parse()
        .map_err(|e| format!("host:port or an http(s) URI ({e})"))?;
    match parsed.scheme_str() {
        Some("http") | Some("https") => {}
        other => {
            return Err(format!(
                "an http or https URI (scheme {:?} is not supported)",
                other.unwrap_or("")
            ))
        }
    }
    if parsed.host().unwrap_or("").is_empty() {
        return Err("an address with a host".into());
    }
    if parsed.port_u16().is_none() {
        return Err("an address with a port".into());
    }
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> GrpcConfig {
        GrpcConfig::new("c", 1, "127.0.0.1:0".parse().unwrap()).with_peer(2, "127.0.0.1:5000")
    }

    #[test]
    fn defaults_are_valid() {
        cfg().validate().unwrap();
    }

    #[test]
    fn errors_name_the_bad_key() {
        let mut c = cfg();
        c.cluster_id = String::new();
        assert_eq!(c.validate().unwrap_err().key, "cluster_id");
        let mut c = cfg();
        c.node_id = 0;
        assert_eq!(c.validate().unwrap_err().key, "node_id");
        let c = cfg().with_peer(3, "no port here");
        let e = c.validate().unwrap_err();
        assert_eq!(e.key, "peers.3", "{e}");
        let c = cfg().with_peer(4, "ftp://x:1");
        assert_eq!(c.validate().unwrap_err().key, "peers.4");
        let mut c = cfg();
        c.max_message_bytes = 10;
        assert_eq!(c.validate().unwrap_err().key, "max_message_bytes");
        let mut c = cfg();
        c.snapshot_chunk_bytes = c.max_message_bytes;
        assert_eq!(c.validate().unwrap_err().key, "snapshot_chunk_bytes");
        let mut c = cfg();
        c.max_inbound_snapshots = 0;
        assert_eq!(c.validate().unwrap_err().key, "max_inbound_snapshots");
        let mut c = cfg();
        c.request_timeout = Duration::ZERO;
        assert_eq!(c.validate().unwrap_err().key, "request_timeout");
        let mut c = cfg();
        c.reconnect_backoff_max = Duration::from_millis(1);
        assert_eq!(c.validate().unwrap_err().key, "reconnect_backoff_max");
        let mut c = cfg();
        c.tls = Some(TlsConfig {
            cert_pem: "x".into(),
            key_pem: "SECRETKEY".into(),
            ca_pem: "z".into(),
            require_client_cert: false,
            domain_name: None,
        });
        let e = c.validate().unwrap_err();
        assert_eq!(e.key, "tls.cert_pem");
        assert!(
            !format!("{:?}", c.tls).contains("SECRETKEY"),
            "the key is never printed"
        );
    }

    #[test]
    fn addresses_get_the_scheme_of_the_tls_setting() {
        assert_eq!(endpoint_uri("h:1", false).unwrap(), "http://h:1");
        assert_eq!(endpoint_uri("h:1", true).unwrap(), "https://h:1");
        assert_eq!(endpoint_uri("https://h:1", false).unwrap(), "https://h:1");
        assert!(endpoint_uri("", false).is_err());
    }
}
