//! A leader whose process stalls (SIGSTOP, a long pause of its host) past its lease must not
//! serve lease reads when it resumes (thesis §6.4.1): its protocol clock is the monotonic
//! clock, not a count of the ticks it happened to process.
//!
//! Node 1 runs on a runtime of its own, on its own thread, so blocking that thread stalls
//! node 1 alone, every task of it, as a paused process would be.

use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use lockstep_core::handler::{DefaultStateMachineHandler, Never};
use lockstep_core::runtime::{Node, NodeParts, ReadLevel, RuntimeConfig};
use lockstep_core::state_machine::MinimalStateMachine;
use lockstep_core::transport::ChannelNetwork;
use lockstep_core::{
    MemLogStore, MemSnapshotStore, MembershipConfig, RaftConfig, StateMachineTrait,
};

/// One register: any command but `GET` replaces the value; every command answers it.
#[derive(Default)]
struct Register(Mutex<Bytes>);

impl StateMachineTrait for Register {
    fn apply(&self, c: &[u8]) -> Result<Bytes, String> {
        let mut v = self.0.lock().unwrap();
        if c != b"GET" {
            *v = Bytes::copy_from_slice(c);
        }
        Ok(v.clone())
    }
    fn snapshot(&self) -> Vec<u8> {
        self.0.lock().unwrap().to_vec()
    }
    fn restore(&self, s: &[u8]) -> Result<(), String> {
        *self.0.lock().unwrap() = Bytes::copy_from_slice(s);
        Ok(())
    }
    fn query(&self, _: &[u8]) -> Option<Result<Bytes, String>> {
        Some(Ok(self.0.lock().unwrap().clone()))
    }
}

fn parts(id: u64, net: &ChannelNetwork) -> NodeParts {
    NodeParts {
        raft: RaftConfig {
            id,
            ..RaftConfig::default()
        },
        runtime: RuntimeConfig {
            tick: Duration::from_millis(20),
            request_timeout: Duration::from_secs(5),
            ..RuntimeConfig::default()
        },
        log_store: Box::new(MemLogStore::new()),
        handler: Arc::new(DefaultStateMachineHandler::new(
            Arc::new(MinimalStateMachine::new(Arc::new(Register::default()))),
            Arc::new(MemSnapshotStore::new()),
            Never,
        )),
        transport: net.transport(id),
        bootstrap: Some(MembershipConfig::new_voters([1, 2, 3])),
        seed: id,
    }
}

async fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn stale(r: &Result<Bytes, lockstep_core::NodeError>) -> bool {
    matches!(r, Ok(v) if v.as_ref() == b"old")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_stalled_past_its_lease_serves_no_stale_lease_read_when_it_resumes_thesis_6_4_1() {
    let net = ChannelNetwork::new();
    // Node 1's own runtime and thread.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let n1_rt = rt.handle().clone();
    let (end_tx, end_rx) = tokio::sync::oneshot::channel::<()>();
    let n1_thread = std::thread::spawn(move || {
        rt.block_on(async move {
            let _ = end_rx.await;
        })
    });
    let p1 = parts(1, &net);
    let n1 = n1_rt.spawn(Node::start(p1)).await.unwrap().unwrap();
    let n2 = Node::start(parts(2, &net)).await.unwrap();
    let n3 = Node::start(parts(3, &net)).await.unwrap();
    for n in [&n1, &n2, &n3] {
        net.register(n.inbox());
    }
    let nodes = [n1.clone(), n2.clone(), n3.clone()];
    wait_until("a leader", || nodes.iter().any(Node::is_leader)).await;
    if !n1.is_leader() {
        let leader = nodes.iter().find(|n| n.is_leader()).unwrap();
        leader.transfer_leader(1).await.unwrap();
        wait_until("node 1 to lead", || n1.is_leader()).await;
    }
    n1.propose(&b"old"[..]).await.unwrap();
    // A confirmed round right before the stall: node 1's lease is as long as it gets.
    assert_eq!(
        n1.read(&b"GET"[..], ReadLevel::Linearizable).await.unwrap(),
        "old"
    );

    net.isolate(1);
    let (stalled_tx, stalled_rx) = std_mpsc::channel::<()>();
    let (release_tx, release_rx) = std_mpsc::channel::<()>();
    n1_rt.spawn(async move {
        let _ = stalled_tx.send(());
        // Blocks node 1's only thread: none of its tasks runs until released.
        let _ = release_rx.recv();
    });
    tokio::task::spawn_blocking(move || stalled_rx.recv())
        .await
        .unwrap()
        .unwrap();

    // The others elect a leader (so node 1's lease is over in real time) and overwrite.
    wait_until("a new leader", || n2.is_leader() || n3.is_leader()).await;
    let new_leader = if n2.is_leader() {
        n2.clone()
    } else {
        n3.clone()
    };
    new_leader.propose(&b"new"[..]).await.unwrap();
    // A lease read queued at node 1 during the stall.
    let queued = {
        let n1 = n1.clone();
        tokio::spawn(async move { n1.read(&b"GET"[..], ReadLevel::Lease).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    release_tx.send(()).unwrap();

    let r = queued.await.unwrap();
    assert!(
        !stale(&r),
        "a read queued during the stall was served stale: {r:?}"
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    let r = n1.read(&b"GET"[..], ReadLevel::Lease).await;
    assert!(
        !stale(&r),
        "a read 50 ms after the stall was served stale: {r:?}"
    );

    net.heal();
    for n in [&n2, &n3] {
        n.shutdown().await.unwrap();
    }
    n1_rt
        .spawn(async move { n1.shutdown().await })
        .await
        .unwrap()
        .unwrap();
    let _ = end_tx.send(());
    n1_thread.join().unwrap();
}
