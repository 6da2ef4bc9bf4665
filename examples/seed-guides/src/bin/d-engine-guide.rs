//! The d-engine guide's "Register with NodeBuilder", on lockstep: three nodes running the
//! guide's `CustomStateMachine`, started with `NodeBuilder::new(config, shutdown_rx)` and
//! stopped by sending on the shutdown channel.

use std::time::Duration;

use lockstep::prelude::*;
use seed_guides::d_engine::{register, AppCommand};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let net = ChannelNetwork::new();
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(());
    let mut nodes = Vec::new();
    for id in 1..=3 {
        let (node, _machine) =
            register::start_node(register::config(id), shutdown_rx.clone(), &net).await?;
        nodes.push(node);
    }
    let t = Duration::from_secs(10);
    let s = nodes[0].wait_for(t, |s| s.leader.is_some()).await?;
    let leader = nodes
        .iter()
        .find(|n| Some(n.id()) == s.leader)
        .ok_or("no leader")?;
    println!("node {} leads term {}", leader.id(), s.term);

    let put = AppCommand::Put {
        key: b"greeting".to_vec(),
        value: b"hello".to_vec(),
    };
    leader.propose(put.encode()).await?;
    let value = leader
        .read(&b"greeting"[..], ReadLevel::Linearizable)
        .await?;
    println!("greeting = {}", String::from_utf8_lossy(&value));

    // Wait until every node has applied the write, then read each one locally.
    let commit = leader.status().commit;
    for n in &nodes {
        n.wait_for(t, |s| s.applied >= commit).await?;
        let local = n.query(b"greeting").await?;
        println!("node {}: {}", n.id(), String::from_utf8_lossy(&local));
    }

    // Graceful shutdown: send (dropping the sender would not stop the nodes).
    shutdown_tx.send(())?;
    for n in &nodes {
        n.wait_for(t, |s| s.stopped.is_some()).await.ok();
    }
    println!("all nodes stopped");
    Ok(())
}
