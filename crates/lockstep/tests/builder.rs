//! The facade end to end: nodes built from configs with `NodeBuilder` on file storage.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use lockstep::prelude::*;
use lockstep::{octopii, BuildError};

const T: Duration = Duration::from_secs(10);

fn config(id: u64, dir: &std::path::Path) -> Config {
    let text = format!(
        r#"
node_id = {id}
cluster_id = "facade-test"
data_dir = "{}"
[bootstrap]
voters = [1, 2, 3]
[runtime]
tick_ms = 5
[raft]
election_ticks = 20
heartbeat_ticks = 3
"#,
        dir.join(format!("n{id}")).display()
    );
    Config::parse(&text, "test", |_| None).unwrap()
}

async fn leader_of(nodes: &[RunningNode]) -> &Node {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        if let Some(n) = nodes.iter().find(|n| n.is_leader()) {
            return n.node();
        }
        assert!(tokio::time::Instant::now() < deadline, "no leader");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_kv_nodes_from_configs_replicate_and_survive_a_full_restart_5_3() {
    let dir = tempfile::tempdir().unwrap();
    let net = ChannelNetwork::new();
    let (tx, rx) = tokio::sync::watch::channel(());
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(
            NodeBuilder::new(config(id, dir.path()), rx.clone())
                .in_process(&net)
                .start()
                .await
                .unwrap(),
        );
    }
    let leader = leader_of(&nodes).await;
    for i in 0..100u32 {
        let cmd = KvCommand::Put {
            key: Bytes::from(format!("k{i}")),
            value: Bytes::from(format!("v{i}")),
        };
        leader.propose(cmd.encode()).await.unwrap();
    }
    // The d-engine style shutdown signal stops every node gracefully.
    tx.send(()).unwrap();
    for n in &nodes {
        n.wait_for(T, |s| s.stopped.is_some()).await.ok();
    }
    drop(nodes);

    let net = ChannelNetwork::new();
    let mut nodes = Vec::new();
    for id in 1..=3 {
        let b = NodeBuilder::from_config(config(id, dir.path())).in_process(&net);
        nodes.push(b.start().await.unwrap());
    }
    let leader = leader_of(&nodes).await;
    let get = KvQuery::Get { key: "k99".into() }.encode();
    let r = leader.read(get, ReadLevel::Linearizable).await.unwrap();
    assert_eq!(
        KvResponse::decode(&r).unwrap(),
        KvResponse::Value(Some("v99".into()))
    );
    for n in &nodes {
        n.shutdown().await.unwrap();
    }
}

/// The seed's minimal state machine, passed as the Octopii-style `Arc<dyn StateMachineTrait>`.
struct Counter(RwLock<i64>);

impl StateMachineTrait for Counter {
    fn apply(&self, command: &[u8]) -> Result<Bytes, String> {
        match command {
            b"INCREMENT" => {
                let mut c = self.0.write().unwrap();
                *c += 1;
                Ok(Bytes::from(c.to_string()))
            }
            b"GET" => Ok(Bytes::from(self.0.read().unwrap().to_string())),
            _ => Err("Unknown command".into()),
        }
    }
    fn snapshot(&self) -> Vec<u8> {
        self.0.read().unwrap().to_le_bytes().to_vec()
    }
    fn restore(&self, s: &[u8]) -> Result<(), String> {
        let b: [u8; 8] = s
            .try_into()
            .map_err(|_| "Invalid snapshot size".to_string())?;
        *self.0.write().unwrap() = i64::from_le_bytes(b);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_octopii_style_state_machine_handle_proposes_and_queries() {
    let dir = tempfile::tempdir().unwrap();
    let net = ChannelNetwork::new();
    let mut nodes = Vec::new();
    for id in 1..=3 {
        let sm: octopii::StateMachine = Arc::new(Counter(RwLock::new(0)));
        nodes.push(
            NodeBuilder::from_config(config(id, dir.path()))
                .state_machine(sm)
                .in_process(&net)
                .start()
                .await
                .unwrap(),
        );
    }
    let leader = leader_of(&nodes).await;
    for _ in 0..5 {
        leader.propose(b"INCREMENT".to_vec()).await.unwrap();
    }
    assert_eq!(leader.query(b"GET").await.unwrap(), Bytes::from("5"));
    for n in &nodes {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn a_data_directory_of_another_cluster_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let net = ChannelNetwork::new();
    let n = NodeBuilder::from_config(config(1, dir.path()))
        .in_process(&net)
        .start()
        .await
        .unwrap();
    n.shutdown().await.unwrap();
    drop(n);
    let mut other = config(1, dir.path());
    other.cluster_id = "another".into();
    let err = NodeBuilder::from_config(other)
        .in_process(&net)
        .start()
        .await
        .err()
        .expect("refused");
    assert!(matches!(err, BuildError::DataDir(_)), "{err}");
    assert!(err.to_string().contains("cluster `facade-test`"), "{err}");
}

#[cfg(not(feature = "grpc"))]
#[tokio::test]
async fn starting_without_a_transport_names_the_missing_piece() {
    let dir = tempfile::tempdir().unwrap();
    let err = NodeBuilder::from_config(config(1, dir.path()))
        .start()
        .await
        .err()
        .expect("refused");
    assert!(matches!(err, BuildError::NoTransport), "{err}");
}

#[cfg(feature = "grpc")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_from_a_config_serves_clients_over_grpc() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Config::new(1);
    c.cluster_id = "grpc-facade".into();
    c.listen = "127.0.0.1:0".into();
    c.data_dir = dir.path().join("n1");
    c.bootstrap = Some(lockstep::BootstrapConfig { voters: vec![1] });
    let node = NodeBuilder::from_config(c).start().await.unwrap();
    let addr = node.local_addr().await.expect("listening");
    node.wait_for(T, |s| s.is_leader()).await.unwrap();
    let client = lockstep::Client::connect(
        vec![addr.to_string()],
        lockstep::ClientConfig::new("grpc-facade"),
    )
    .await
    .unwrap();
    client.put("k", "v").await.unwrap();
    assert_eq!(client.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
    let wrong =
        lockstep::Client::connect(vec![addr.to_string()], lockstep::ClientConfig::new("other"))
            .await;
    let refused = match wrong {
        Err(e) => e.to_string(),
        Ok(c) => c.get("k").await.unwrap_err().to_string(),
    };
    assert!(refused.contains("cluster"), "{refused}");
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_embedded_node_starts_in_one_call_binds_no_port_and_keeps_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("single");
    let node = NodeBuilder::single_node(&data).start().await.unwrap();
    #[cfg(feature = "grpc")]
    assert_eq!(node.local_addr().await, None, "no network port");
    node.wait_for(T, |s| s.is_leader()).await.unwrap();
    let put = KvCommand::Put {
        key: "k".into(),
        value: "v".into(),
    };
    node.propose(put.encode()).await.unwrap();
    node.shutdown().await.unwrap();
    drop(node);

    let node = NodeBuilder::single_node(&data).start().await.unwrap();
    node.wait_for(T, |s| s.is_leader()).await.unwrap();
    let get = KvQuery::Get { key: "k".into() }.encode();
    let r = node.read(get, ReadLevel::Linearizable).await.unwrap();
    assert_eq!(
        KvResponse::decode(&r).unwrap(),
        KvResponse::Value(Some("v".into()))
    );
    node.shutdown().await.unwrap();
}

#[test]
fn the_default_config_is_a_valid_single_durable_node() {
    let c = Config::default();
    c.validate().unwrap();
    assert_eq!(c.node_id, 1);
    assert_eq!(c.storage, lockstep::StorageKind::File);
    let custom = Config {
        node_id: 2,
        data_dir: "data/n2".into(),
        ..Default::default()
    };
    assert_eq!(custom.node_id, 2);
    custom.validate().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_node_on_a_data_directory_in_use_is_refused_naming_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let net = ChannelNetwork::new();
    let first = NodeBuilder::from_config(config(1, dir.path()))
        .in_process(&net)
        .start()
        .await
        .unwrap();
    let err = NodeBuilder::from_config(config(1, dir.path()))
        .in_process(&ChannelNetwork::new())
        .start()
        .await
        .err()
        .expect("refused while the first node runs");
    let text = err.to_string();
    assert!(matches!(err, BuildError::DataDir(_)), "{text}");
    assert!(
        text.contains("in use") && text.contains(&format!("process {}", std::process::id())),
        "{text}"
    );
    first.shutdown().await.unwrap();
    drop(first);
    // Released with the node.
    let again = NodeBuilder::from_config(config(1, dir.path()))
        .in_process(&net)
        .start()
        .await
        .unwrap();
    again.shutdown().await.unwrap();
}
