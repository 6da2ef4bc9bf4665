//! lockstep in one minute: three nodes on 127.0.0.1 talking gRPC, each with its own file
//! storage under a temporary directory. We write 1,000 keys, kill the leader, watch a new
//! one take over, write more, bring the old leader back and see it catch up.
//!
//! Run it with `cargo run -p quickstart`.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use lockstep::prelude::*;
use lockstep::{BootstrapConfig, Client, ClientConfig, RunningNode};

const CLUSTER: &str = "quickstart";

fn node_config(id: u64, ports: &[u16], dir: &std::path::Path) -> Config {
    let mut c = Config::new(id);
    c.cluster_id = CLUSTER.into();
    c.listen = format!("127.0.0.1:{}", ports[id as usize - 1]);
    c.data_dir = dir.join(format!("node{id}"));
    c.peers = (1..=3)
        .map(|i| (i, format!("127.0.0.1:{}", ports[i as usize - 1])))
        .collect();
    c.bootstrap = Some(BootstrapConfig {
        voters: vec![1, 2, 3],
    });
    c
}

fn free_ports() -> Result<Vec<u16>> {
    let ls = (0..3)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    ls.iter().map(|l| Ok(l.local_addr()?.port())).collect()
}

/// Waits for a leader other than `old` (node ids start at 1, so `old = 0` accepts any).
async fn wait_for_new_leader(client: &Client, old: u64) -> Result<(u64, u64)> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(s) = client.status().await {
            if let Some(l) = s.leader.filter(|l| *l != old) {
                return Ok((l, s.term));
            }
        }
        if Instant::now() > deadline {
            bail!("no new leader within 15 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn write_keys(client: &Client, range: std::ops::Range<u32>) -> Result<()> {
    for i in range {
        client
            .put(format!("key-{i:04}"), format!("value-{i}"))
            .await
            .with_context(|| format!("writing key-{i:04}"))?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ports = free_ports()?;
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    println!(
        "1. Starting 3 nodes on {}, data under {}",
        addrs.join(", "),
        dir.path().display()
    );
    let mut nodes: Vec<Option<RunningNode>> = Vec::new();
    for id in 1..=3 {
        nodes.push(Some(
            NodeBuilder::from_config(node_config(id, &ports, dir.path()))
                .start()
                .await?,
        ));
    }

    let mut cfg = ClientConfig::new(CLUSTER);
    cfg.timeout = Duration::from_secs(15);
    let client = Client::connect(addrs.clone(), cfg.clone()).await?;
    let (leader, term) = wait_for_new_leader(&client, 0).await?;
    println!("2. Node {leader} was elected leader in term {term}.");

    let t = Instant::now();
    write_keys(&client, 0..1000).await?;
    println!(
        "3. Wrote 1,000 keys in {:.2} s; each was fsynced on a majority before it was acknowledged.",
        t.elapsed().as_secs_f64()
    );

    println!("4. Killing the leader, node {leader} (no clean shutdown).");
    if let Some(n) = nodes[leader as usize - 1].take() {
        n.crash().await;
    }
    let (new_leader, term) = wait_for_new_leader(&client, leader).await?;
    println!("5. The other two nodes elected node {new_leader} leader in term {term}.");

    write_keys(&client, 1000..1500).await?;
    let v = client.get("key-1499").await?;
    println!(
        "6. Wrote 500 more keys with node {leader} down; a linearizable read of key-1499 returns {:?}.",
        v.map(|b| String::from_utf8_lossy(&b).into_owned())
    );
    let old = client.get("key-0000").await?;
    anyhow::ensure!(
        old.as_deref() == Some(&b"value-0"[..]),
        "key-0000 lost: {old:?}"
    );

    println!("7. Restarting node {leader} from its data directory.");
    nodes[leader as usize - 1] = Some(
        NodeBuilder::from_config(node_config(leader, &ports, dir.path()))
            .start()
            .await?,
    );
    let commit = client.status().await?.commit;
    let restarted = Client::connect(vec![addrs[leader as usize - 1].clone()], cfg).await?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let s = restarted.status().await?;
        if s.applied >= commit {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "node {leader} did not catch up: applied {} of {commit}",
                s.applied
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let local = restarted.get_at("key-1499", ReadLevel::Eventual).await?;
    anyhow::ensure!(
        local.as_deref() == Some(&b"value-1499"[..]),
        "node {leader} lacks key-1499"
    );
    println!("8. Node {leader} caught up: its own copy has key-1499, written while it was down.");

    for n in nodes.iter().flatten() {
        n.shutdown().await?;
    }
    println!("Done: 1,500 keys, one leader crash, nothing lost.");
    Ok(())
}
