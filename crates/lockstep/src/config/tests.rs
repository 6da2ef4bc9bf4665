use super::*;

const MINIMAL: &str = r#"
node_id = 2
cluster_id = "demo"
listen = "127.0.0.1:7002"
data_dir = "data/n2"

[peers]
1 = "127.0.0.1:7001"
2 = "127.0.0.1:7002"

[bootstrap]
voters = [1, 2]
"#;

fn no_env(_: &str) -> Option<String> {
    None
}

#[test]
fn a_minimal_file_parses_with_defaults() {
    let c = Config::parse(MINIMAL, "test", no_env).unwrap();
    assert_eq!(c.node_id, 2);
    assert_eq!(c.peers.get(&1).map(String::as_str), Some("127.0.0.1:7001"));
    assert_eq!(c.storage, StorageKind::File);
    assert_eq!(c.raft, RaftSection::default());
    assert_eq!(c.raft_config().id, 2);
    assert_eq!(c.runtime_config().tick, Duration::from_millis(10));
    assert_eq!(c.sessions.limits(), lockstep_core::SessionLimits::default());
    assert_eq!(c.runtime_config().peer_inbox_bytes, 64 << 20);
}

#[test]
fn environment_variables_override_file_values() {
    let env = |k: &str| match k {
        "LOCKSTEP_NODE_ID" => Some("1".to_string()),
        "LOCKSTEP_RAFT_ELECTION_TICKS" => Some("25".to_string()),
        "LOCKSTEP_STORAGE" => Some("memory".to_string()),
        "LOCKSTEP_LISTEN" => Some("127.0.0.1:9000".to_string()),
        "LOCKSTEP_PEERS" => Some("1=127.0.0.1:9000, 3=127.0.0.1:9003".to_string()),
        "LOCKSTEP_CLUSTER_ID" => Some("2024".to_string()),
        "LOCKSTEP_BOOTSTRAP_VOTERS" => Some("[1, 3]".to_string()),
        _ => None,
    };
    let c = Config::parse(MINIMAL, "test", env).unwrap();
    assert_eq!(c.node_id, 1);
    assert_eq!(c.raft.election_ticks, 25);
    assert_eq!(c.storage, StorageKind::Memory);
    assert_eq!(c.listen, "127.0.0.1:9000");
    assert_eq!(c.peers.keys().copied().collect::<Vec<_>>(), vec![1, 3]);
    assert_eq!(c.cluster_id, "2024", "string keys stay strings");
    assert_eq!(c.bootstrap.unwrap().voters, vec![1, 3]);
}

#[test]
fn a_bad_value_names_its_key_and_the_accepted_range() {
    let cases = [
        ("[raft]\nheartbeat_ticks = 20", "raft.election_ticks"),
        ("[runtime]\ntick_ms = 0", "runtime.tick_ms"),
        ("[snapshot]\nkeep = 1", "snapshot.keep"),
        ("[bootstrap]\nvoters = [7, 8]", "bootstrap.voters"),
        ("[sessions]\nmax_clients = 0", "sessions.max_clients"),
        ("[sessions]\nmax_bytes = 1", "sessions.max_bytes"),
        (
            "[sessions]\nmax_bytes = 100000000\n[snapshot]\nmax_header_bytes = 67108864",
            "snapshot.max_header_bytes",
        ),
        (
            "[runtime]\npeer_inbox_bytes = 10",
            "runtime.peer_inbox_bytes",
        ),
        (
            "[grpc]\nmax_inbound_snapshots = 0",
            "grpc.max_inbound_snapshots",
        ),
        ("[grpc]\nmax_watch_streams = 0", "grpc.max_watch_streams"),
    ];
    for (extra, key) in cases {
        let text = format!("node_id = 1\ndata_dir = \"d\"\n{extra}");
        let err = Config::parse(&text, "test", no_env).unwrap_err();
        match &err {
            ConfigError::Invalid {
                key: k, expected, ..
            } => {
                assert_eq!(k, key, "{err}");
                assert!(!expected.is_empty());
            }
            other => panic!("{extra}: {other}"),
        }
    }
    let err = Config::parse(
        "node_id = 1\ndata_dir = \"d\"\n[runtime]\ntick_ms = 0",
        "test",
        no_env,
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("`runtime.tick_ms` = 0: expected between 1 and 10000"),
        "{err}"
    );
    let err = Config::parse("node_id = 0", "test", no_env).unwrap_err();
    assert!(err.to_string().contains("`node_id` = 0"), "{err}");
    let err = Config::parse(
        "node_id = 1\nlisten = \"nowhere\"\ndata_dir = \"d\"",
        "test",
        no_env,
    )
    .unwrap_err();
    assert!(err.to_string().contains("`listen`"), "{err}");
}

#[test]
fn unknown_keys_and_wrong_types_are_reported_with_the_key() {
    let err = Config::parse(
        "node_id = 1\ndata_dir = \"d\"\nelection_tick = 3",
        "n1.toml",
        no_env,
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("n1.toml") && msg.contains("election_tick"),
        "{msg}"
    );
    let err = Config::parse("node_id = \"one\"", "n1.toml", no_env).unwrap_err();
    assert!(err.to_string().contains("node_id"), "{err}");
}

#[test]
fn file_storage_needs_a_data_directory() {
    let err = Config::parse("node_id = 1", "test", no_env).unwrap_err();
    assert!(err.to_string().contains("data_dir"), "{err}");
    Config::parse("node_id = 1\nstorage = \"memory\"", "test", no_env).unwrap();
}

/// The `export LOCKSTEP_...` lines of docs/configuration.md, as (name, value) with the
/// shell quotes removed and comments cut.
fn documented_exports() -> Vec<(String, String)> {
    let doc = include_str!("../../../../docs/configuration.md");
    doc.lines()
        .filter_map(|l| l.trim().strip_prefix("export "))
        .map(|l| {
            let l = match l.find(" #") {
                Some(i) => &l[..i],
                None => l,
            };
            let (k, v) = l.split_once('=').expect("NAME=VALUE");
            (k.trim().to_string(), v.trim().trim_matches('"').to_string())
        })
        .collect()
}

#[test]
fn the_documented_environment_variables_apply_as_documented() {
    let vars = documented_exports();
    assert!(vars.len() >= 5, "found {vars:?}");
    let c = Config::parse("", "test", |k| {
        vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    })
    .unwrap();
    assert_eq!(c.node_id, 2);
    assert_eq!(c.raft.election_ticks, 20);
    assert_eq!(c.storage, StorageKind::Memory);
    assert_eq!(c.cluster_id, "2024");
    assert_eq!(c.peers.len(), 3);
    assert_eq!(
        c.bootstrap.as_ref().map(|b| b.voters.clone()),
        Some(vec![1, 2, 3])
    );
    for (name, _) in &vars {
        assert!(
            ENV_KEYS.iter().any(|k| env_name(k) == *name) || name == "LOCKSTEP_PEERS",
            "{name} is not a configuration variable"
        );
    }
}

#[cfg(feature = "grpc")]
#[test]
fn the_grpc_limits_default_to_the_transports_and_reach_it() {
    let d = lockstep_transport_grpc::GrpcConfig::new("c", 1, "127.0.0.1:0".parse().unwrap());
    let c = Config::parse(MINIMAL, "test", no_env).unwrap();
    assert_eq!(c.grpc.max_inbound_snapshots, d.max_inbound_snapshots);
    assert_eq!(c.grpc.max_watch_streams, d.max_watch_streams);
    let text = format!("{MINIMAL}\n[grpc]\nmax_inbound_snapshots = 5\nmax_watch_streams = 7\n");
    let g = crate::network::grpc_config(&Config::parse(&text, "test", no_env).unwrap()).unwrap();
    assert_eq!((g.max_inbound_snapshots, g.max_watch_streams), (5, 7));
}
