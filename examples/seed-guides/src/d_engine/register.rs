//! The guide's section 5, "Register with NodeBuilder":
//!
//! ```text
//! NodeBuilder::new(config, shutdown_rx)
//!     .state_machine(custom_sm)  // Required component
//!     .start()
//!     .await?;
//! ```
//!
//! is the same call in lockstep, with two differences: the state machine is optional (the
//! default is the built-in `KvStateMachine`), and without the `grpc` feature (as in this
//! crate) the node needs a transport: here the in-process network, `.in_process(&net)`.
//! With `grpc` (a default feature), the node serves and reaches its peers over gRPC at
//! the config's `listen` and `[peers]` addresses.
//!
//! The node stops gracefully when a value is **sent** on the shutdown channel. Dropping the
//! sender does not stop it: keep the sender, or call `RunningNode::shutdown`.

use std::sync::Arc;

use lockstep::prelude::*;
use lockstep::BuildError;
use tokio::sync::watch;

use super::CustomStateMachine;

/// The config of node `id` of a 3-node in-memory cluster. `Config::parse` with `|_| None`
/// ignores `LOCKSTEP_*` environment variables (`Config::from_file` and
/// `Config::from_toml` apply them).
pub fn config(id: u64) -> Config {
    let text = format!(
        "node_id = {id}\ncluster_id = \"d-engine-guide\"\nstorage = \"memory\"\n\
         [bootstrap]\nvoters = [1, 2, 3]\n"
    );
    Config::parse(&text, "d-engine guide", |_| None).expect("a valid config")
}

/// Starts one node running the guide's machine; returns it with the machine, so the
/// caller can look at it.
pub async fn start_node(
    config: Config,
    shutdown_rx: watch::Receiver<()>,
    net: &ChannelNetwork,
) -> Result<(RunningNode, Arc<CustomStateMachine>), BuildError> {
    let custom_sm = Arc::new(CustomStateMachine::new());

    let node = NodeBuilder::new(config, shutdown_rx)
        .state_machine(custom_sm.clone()) // optional in lockstep (default: KvStateMachine)
        .in_process(net) // the transport (no `grpc` feature here)
        .start()
        .await?;
    Ok((node, custom_sm))
}
