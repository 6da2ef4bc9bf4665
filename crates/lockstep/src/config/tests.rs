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
