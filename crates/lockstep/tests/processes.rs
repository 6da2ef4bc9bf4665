//! Three nodes as separate OS processes over gRPC on 127.0.0.1: writes under load, the
//! leader is killed with SIGKILL and restarted, and every acknowledged write is then on
//! every node (§5.4 leader completeness, §8 client interaction, durability before ack).

#![cfg(all(feature = "grpc", feature = "file"))]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lockstep::{Client, ClientConfig, ReadLevel};

const CLUSTER: &str = "process-test";

fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

fn write_configs(dir: &Path, ports: &[u16]) -> Vec<PathBuf> {
    let peers: String = ports
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{} = \"127.0.0.1:{p}\"\n", i + 1))
        .collect();
    (1..=ports.len())
        .map(|id| {
            let path = dir.join(format!("n{id}.toml"));
            let text = format!(
                "node_id = {id}\ncluster_id = \"{CLUSTER}\"\nlisten = \"127.0.0.1:{}\"\ndata_dir = \"{}\"\n\
                 [peers]\n{peers}\n[bootstrap]\nvoters = [1, 2, 3]\n\
                 [runtime]\ntick_ms = 10\n[snapshot]\nevery_entries = 300\n",
                ports[id - 1],
                dir.join(format!("data{id}")).display()
            );
            std::fs::write(&path, text).unwrap();
            path
        })
        .collect()
}

struct Proc {
    child: Child,
}

impl Proc {
    fn start(config: &Path, log: &Path) -> Self {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_lockstep"))
            .args(["node", "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start node process");
        Self { child }
    }

    /// SIGKILL: no shutdown path runs.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn client(addrs: Vec<String>) -> Client {
    let mut cfg = ClientConfig::new(CLUSTER);
    cfg.timeout = Duration::from_secs(20);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match Client::connect(addrs.clone(), cfg.clone()).await {
            Ok(c) => return c,
            Err(e) if Instant::now() < deadline => {
                eprintln!("waiting for the cluster: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("cluster unreachable: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_leader_loses_no_acknowledged_write_across_three_processes() {
    let dir = tempfile::tempdir().unwrap();
    let ports = free_ports(3);
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let configs = write_configs(dir.path(), &ports);
    let logs: Vec<PathBuf> = (1..=3)
        .map(|i| dir.path().join(format!("n{i}.log")))
        .collect();
    let mut procs: Vec<Proc> = (0..3).map(|i| Proc::start(&configs[i], &logs[i])).collect();

    // Load: 3 clients writing distinct keys until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..3u32 {
        let c = client(addrs.clone()).await;
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let mut acked = BTreeMap::new();
            let mut i = 0u32;
            while !stop.load(Ordering::Acquire) && i < 20_000 {
                let (k, v) = (format!("w{w}-{i}"), format!("value-{w}-{i}"));
                c.put(k.clone(), v.clone())
                    .await
                    .unwrap_or_else(|e| panic!("{k}: {e}"));
                acked.insert(k, v);
                i += 1;
            }
            acked
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let probe = client(addrs.clone()).await;
    let leader = probe.status().await.unwrap().leader.expect("a leader");
    eprintln!("killing leader {leader}");
    procs[leader as usize - 1].kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    eprintln!("restarting node {leader}");
    procs[leader as usize - 1] =
        Proc::start(&configs[leader as usize - 1], &logs[leader as usize - 1]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Release);
    let mut acked = BTreeMap::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    assert!(
        acked.len() > 100,
        "only {} writes acknowledged",
        acked.len()
    );
    eprintln!("{} writes acknowledged", acked.len());

    // Every node, the restarted one included, reaches the leader's commit index and holds
    // every acknowledged write.
    let commit = probe.status().await.unwrap().commit;
    for (i, addr) in addrs.iter().enumerate() {
        let one = client(vec![addr.clone()]).await;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let s = one.status().await.unwrap();
            if s.applied >= commit {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {} stuck at {} < {commit}",
                i + 1,
                s.applied
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for (k, v) in &acked {
            let got = one.get_at(k.clone(), ReadLevel::Eventual).await.unwrap();
            assert_eq!(got.as_deref(), Some(v.as_bytes()), "node {} key {k}", i + 1);
        }
    }
    drop(procs);
}
