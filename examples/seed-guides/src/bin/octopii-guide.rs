//! The Octopii guide's "Integration with OctopiiNode", on lockstep: first the default
//! key-value machine, then a custom one handed over as the guide's `StateMachine` handle
//! (`Arc<dyn StateMachineTrait>`), each on 3 nodes in this process.
//!
//! | Octopii | lockstep |
//! |---|---|
//! | `Config { node_id, bind_addr, peers, .. }` | `Config` (`node_id`, `listen`, `[peers]`), here from TOML |
//! | `OctopiiRuntime::new(4)` | the Tokio runtime (`#[tokio::main]`) |
//! | `OctopiiNode::new(config, runtime)` | `NodeBuilder::from_config(config)` |
//! | `OctopiiNode::new_with_state_machine(config, runtime, sm)` | `NodeBuilder::from_config(config).state_machine(sm)` |
//! | `node.start()` | `.start()` on the builder, which returns the running node |
//! | `node.propose(cmd)` / `node.query(q)` | the same names on `Node` |

use std::time::Duration;

use lockstep::octopii::StateMachine; // the guide's handle type, `Arc<dyn StateMachineTrait>`
use lockstep::prelude::*;
use seed_guides::octopii::MyStateMachine;
use std::sync::Arc;

fn config(id: u64, cluster: &str) -> Result<Config, Box<dyn std::error::Error>> {
    // `listen` and `[peers]` are the guide's `bind_addr` and `peers`; the in-process network
    // used here ignores them (over gRPC they are the real addresses).
    let text = format!(
        "node_id = {id}\ncluster_id = \"{cluster}\"\nlisten = \"127.0.0.1:{}\"\nstorage = \"memory\"\n\
         [peers]\n1 = \"127.0.0.1:5000\"\n2 = \"127.0.0.1:5001\"\n3 = \"127.0.0.1:5002\"\n\
         [bootstrap]\nvoters = [1, 2, 3]\n",
        4999 + id
    );
    Ok(Config::parse(&text, cluster, |_| None)?)
}

async fn leader(nodes: &[RunningNode]) -> Result<&RunningNode, Box<dyn std::error::Error>> {
    let s = nodes[0]
        .wait_for(Duration::from_secs(10), |s| s.leader.is_some())
        .await?;
    Ok(nodes
        .iter()
        .find(|n| Some(n.id()) == s.leader)
        .ok_or("no leader")?)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // ---- "Using the Default KV Store" ----
    let net = ChannelNetwork::new();
    let mut nodes = Vec::new();
    for id in 1..=3 {
        // Uses default KvStateMachine
        nodes.push(
            NodeBuilder::from_config(config(id, "default-kv")?)
                .in_process(&net)
                .start()
                .await?,
        );
    }
    let node = leader(&nodes).await?;
    // The default machine's commands are encoded `KvCommand`s, not the text `SET key value`.
    let put = KvCommand::Put {
        key: "key".into(),
        value: "value".into(),
    };
    let result = node.propose(put.encode()).await?;
    println!(
        "default KV: previous value {:?}",
        KvResponse::decode(&result)?
    );
    for n in &nodes {
        n.shutdown().await?;
    }

    // ---- "Using a Custom State Machine" ----
    let net = ChannelNetwork::new();
    let mut nodes = Vec::new();
    for id in 1..=3 {
        // Create your custom state machine
        let my_sm = Arc::new(MyStateMachine::new());

        // Cast to trait object
        let state_machine: StateMachine = my_sm;

        nodes.push(
            NodeBuilder::from_config(config(id, "custom")?)
                .state_machine(state_machine)
                .in_process(&net)
                .start()
                .await?,
        );
    }
    let node = leader(&nodes).await?;

    // Use your custom commands
    let result = node.propose(b"SET key value".to_vec()).await?;
    println!("Result: {}", String::from_utf8_lossy(&result));

    // "Read-Only Queries": MyStateMachine has no read-only `query`, so this goes through the
    // log (on the leader) and `apply` answers it.
    let value = node.query(b"GET key").await?;
    println!("GET key: {}", String::from_utf8_lossy(&value));

    // An unknown command is the machine's answer, returned as `NodeError::Rejected`.
    match node.propose(b"MY_CUSTOM_COMMAND data".to_vec()).await {
        Err(NodeError::Rejected(e)) => println!("MY_CUSTOM_COMMAND: rejected: {e}"),
        other => println!("MY_CUSTOM_COMMAND: {other:?}"),
    }
    for n in &nodes {
        n.shutdown().await?;
    }
    Ok(())
}
