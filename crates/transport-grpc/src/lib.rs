//! # lockstep-transport-grpc
//!
//! lockstep over gRPC ([tonic]): the peer protocol between nodes ([`GrpcTransport`], the
//! peer half of [`GrpcServer`]), the client API of a node (the client half of
//! [`GrpcServer`]) and a Rust [`Client`] for users.
//!
//! The protocol is defined in `proto/lockstep/peer.proto` and `proto/lockstep/client.proto`
//! at the root of the repository; the generated types are in [`proto`].
//!
//! ## Starting a node
//!
//! `Node::start` needs the transport, and the server needs the node, so a node starts in
//! three steps:
//!
//! 1. build the transport: [`GrpcTransport::new`] with a [`GrpcConfig`];
//! 2. start the node with it: `Node::start(NodeParts { transport: transport.clone(), .. })`;
//! 3. serve the peer and client APIs: [`GrpcServer::serve`] with the node and the transport,
//!    which returns a [`ServerHandle`] holding the bound address (port 0 is supported).
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//!
//! use lockstep_core::handler::{DefaultStateMachineHandler, EntriesSince};
//! use lockstep_core::runtime::{Node, NodeParts, RuntimeConfig};
//! use lockstep_core::state_machine::SharedStateMachine;
//! use lockstep_core::{KvStateMachine, MemLogStore, MemSnapshotStore, MembershipConfig, RaftConfig};
//! use lockstep_transport_grpc::{Client, ClientConfig, GrpcConfig, GrpcServer, GrpcTransport};
//!
//! let config = GrpcConfig::new("my-cluster", 1, "127.0.0.1:7001".parse()?)
//!     .with_peer(2, "127.0.0.1:7002")
//!     .with_peer(3, "127.0.0.1:7003");
//! let transport = GrpcTransport::new(config.clone())?;
//! let node = Node::start(NodeParts {
//!     raft: RaftConfig { id: 1, ..RaftConfig::default() },
//!     runtime: RuntimeConfig::default(),
//!     log_store: Box::new(MemLogStore::new()),
//!     handler: Arc::new(DefaultStateMachineHandler::new(
//!         Arc::new(SharedStateMachine(Arc::new(KvStateMachine::new()))),
//!         Arc::new(MemSnapshotStore::new()),
//!         EntriesSince(10_000),
//!     )),
//!     transport: transport.clone(),
//!     bootstrap: Some(MembershipConfig::new_voters([1, 2, 3])),
//!     seed: 1,
//! })
//! .await?;
//! let server = GrpcServer::serve(config, node.clone(), transport, std::future::pending()).await?;
//!
//! // Users talk to the cluster through any node's address.
//! let addrs = vec![server.local_addr().to_string()];
//! let client = Client::connect(addrs, ClientConfig::new("my-cluster")).await?;
//! client.put("greeting", "hello").await?;
//! assert_eq!(client.get("greeting").await?.as_deref(), Some(&b"hello"[..]));
//! # Ok(())
//! # }
//! ```
//!
//! ## Adding a node to a running cluster
//!
//! Start the new node without a bootstrap configuration, with the existing members in
//! [`GrpcConfig::peers`], then call [`Client::add_learner`] with its id and address. The
//! node that handles the request (the leader) adds the address to its address book and
//! tells every peer in its book about the new node with the peer RPC `RegisterPeer`
//! ([`GrpcTransport::announce_peer`]), so every member accepts the new node's messages and
//! can reach it once [`Client::set_voters`] promotes it or another node leads. A node that
//! learned an address this way passes it on with the next `AddLearner` it handles, since it
//! announces to its whole address book.
//!
//! An id already in the address book under a different address is refused by
//! `AddLearner` (`ERROR_KIND_ADDRESS_CONFLICT`); only `RegisterPeer` from a known member of
//! the same cluster moves an id to a new address.
//!
//! ## What the server refuses
//!
//! Every peer message carries the cluster id, the sender and receiver ids and the protocol
//! version. A wrong cluster id, a message for another node or a version mismatch is refused
//! with `FAILED_PRECONDITION`, a sender missing from the address book with
//! `PERMISSION_DENIED`, a malformed frame with `INVALID_ARGUMENT`, and a frame above
//! [`GrpcConfig::max_message_bytes`] with `RESOURCE_EXHAUSTED`; each status message says what
//! was wrong, and none of these reach the protocol.
//!
//! With TLS, every peer call must also come with a client certificate whose identity
//! (SAN URI `lockstep://CLUSTER/node/ID`, see [`identity`]) names this cluster and the
//! sender every envelope claims; a call without one, with a client's certificate
//! (`lockstep://CLUSTER/client/NAME`) or claiming another sender is refused with
//! `PERMISSION_DENIED`. The `certs` feature (module `certs`) makes such certificates.

#[cfg(feature = "certs")]
pub mod certs;
pub mod client;
pub mod config;
pub mod convert;
pub mod error;
pub mod identity;
pub mod server;
pub mod transport;

mod limit;

/// Code generated from `proto/lockstep/*.proto`.
pub mod proto {
    /// The `lockstep` protobuf packages, as generated (the module tree mirrors the package
    /// names, which the generated code relies on).
    pub mod lockstep {
        /// `lockstep.peer`.
        pub mod peer {
            /// The peer protocol, `lockstep.peer.v1`.
            pub mod v1 {
                #![allow(missing_docs, clippy::all, clippy::pedantic)]
                tonic::include_proto!("lockstep.peer.v1");
            }
        }
        /// `lockstep.client`.
        pub mod client {
            /// The client API, `lockstep.client.v1`.
            pub mod v1 {
                #![allow(missing_docs, clippy::all, clippy::pedantic)]
                tonic::include_proto!("lockstep.client.v1");
            }
        }
    }
    pub use self::lockstep::client::v1 as client;
    pub use self::lockstep::peer::v1 as peer;
}

pub use client::{CasOutcome, Client, ClientConfig, ClientError, ClientTls, RemoteStatus};
pub use config::{ConfigError, GrpcConfig, PeerSecret, TlsConfig};
pub use error::GrpcError;
pub use identity::{CertIdentity, IdentityError};
pub use server::{GrpcServer, ServerHandle};
pub use transport::{GrpcTransport, PeerUpdate};

/// Version of the peer protocol and the client API; a request with another version is
/// refused.
pub const PROTOCOL_VERSION: u32 = 1;
