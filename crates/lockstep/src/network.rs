//! The gRPC side of a node built from a [`Config`] (feature `grpc`).

use std::sync::Arc;

use lockstep_transport_grpc::{GrpcConfig, GrpcTransport, PeerSecret, TlsConfig};

use crate::builder::BuildError;
use crate::config::Config;

/// The gRPC settings a config describes. The message size limit leaves room for the
/// largest command plus the framing of an AppendEntries message.
pub fn grpc_config(c: &Config) -> Result<GrpcConfig, BuildError> {
    let listen = c
        .listen
        .parse()
        .map_err(|_| crate::config::ConfigError::Invalid {
            key: "listen".into(),
            value: c.listen.clone(),
            expected: "an IP address and port".into(),
        })?;
    let mut g = GrpcConfig::new(c.cluster_id.clone(), c.node_id, listen);
    for (id, addr) in &c.peers {
        if *id != c.node_id {
            g = g.with_peer(*id, addr.clone());
        }
    }
    g.advertise_addr = c.peers.get(&c.node_id).cloned();
    g.max_inbound_snapshots = c.grpc.max_inbound_snapshots;
    g.max_watch_streams = c.grpc.max_watch_streams;
    let largest = c.runtime.max_command_bytes.max(c.raft.max_bytes_per_msg);
    g.max_message_bytes = g.max_message_bytes.max(largest + (1 << 20));
    if let Some(t) = &c.tls {
        let tls = TlsConfig::from_files(&t.cert, &t.key, &t.ca, t.require_client_cert)
            .map_err(|e| BuildError::Transport(format!("loading TLS files: {e}")))?;
        g.tls = Some(tls);
    }
    if let Some(path) = &c.peer_secret_file {
        let text = std::fs::read_to_string(path).map_err(|e| {
            BuildError::Transport(format!("reading peer_secret_file {}: {e}", path.display()))
        })?;
        let secret =
            PeerSecret::new(text.trim()).map_err(|e| crate::config::ConfigError::Invalid {
                key: "peer_secret_file".into(),
                value: path.display().to_string(),
                expected: format!("a file holding {}", e.expected),
            })?;
        g.peer_secret = Some(secret);
    }
    g.validate()
        .map_err(|e| crate::config::ConfigError::Invalid {
            key: e.key.to_string(),
            value: e.value.clone(),
            expected: e.expected.clone(),
        })?;
    Ok(g)
}

/// Creates the transport for a config.
pub fn transport(g: &GrpcConfig) -> Result<Arc<GrpcTransport>, BuildError> {
    GrpcTransport::new(g.clone()).map_err(|e| BuildError::Transport(e.to_string()))
}
