//! Errors of the gRPC transport and server.

use lockstep_core::NodeId;

use crate::config::ConfigError;

/// The transport or the server could not be set up or changed.
#[derive(Debug, thiserror::Error)]
pub enum GrpcError {
    /// A configuration value is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The listen address could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The TLS settings could not be applied (bad PEM, unreadable file, ...).
    #[error("TLS setup: {0}")]
    Tls(String),
    /// A peer's address is invalid.
    #[error("invalid address {addr:?} for node {id}: {detail}")]
    InvalidAddress {
        /// The peer.
        id: NodeId,
        /// The address given.
        addr: String,
        /// What was wrong.
        detail: String,
    },
    /// A node id is already in the address book under a different address, and the caller
    /// asked not to move it (see [`crate::GrpcTransport::add_new_peer`]).
    #[error("node {id} is already in the address book at {existing:?}, not at {requested:?}")]
    AddressConflict {
        /// The node.
        id: NodeId,
        /// The address in the book.
        existing: String,
        /// The address asked for.
        requested: String,
    },
    /// A peer refused a request of this node or could not be reached in time.
    #[error("peer {peer} answered {code:?}: {message}")]
    PeerRequest {
        /// The peer.
        peer: NodeId,
        /// The gRPC status code (`DEADLINE_EXCEEDED` when no answer came in time).
        code: tonic::Code,
        /// The status message.
        message: String,
    },
    /// The transport was closed ([`crate::GrpcTransport::close`]).
    #[error("the transport is closed")]
    Closed,
    /// The transport was created outside a tokio runtime.
    #[error("the gRPC transport must be created inside a tokio runtime: {0}")]
    NoRuntime(String),
    /// The server failed while serving.
    #[error("gRPC server: {0}")]
    Server(String),
    /// The server's settings do not fit the node or the transport it serves.
    #[error("server setup: {0}")]
    Mismatch(String),
}
