//! The `lockstep` command line as an operator uses it: exit codes, JSON output, the
//! endpoint commands and membership commands against a 3-process cluster.

use std::process::{Command, Output};

use lockstep::processes::ProcessCluster;

const BIN: &str = env!("CARGO_BIN_EXE_lockstep");

fn lockstep(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("lockstep runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn help_and_version_exit_0_and_usage_errors_exit_2() {
    let help = lockstep(&["--help"]);
    assert_eq!(help.status.code(), Some(0));
    assert!(stdout(&help).contains("client"), "{}", stdout(&help));
    let version = lockstep(&["--version"]);
    assert_eq!(version.status.code(), Some(0));
    assert!(stdout(&version).contains(env!("CARGO_PKG_VERSION")));
    assert_eq!(lockstep(&["client", "--help"]).status.code(), Some(0));
    assert_eq!(lockstep(&["no-such-command"]).status.code(), Some(2));
    // A client command without --config or --addrs is a usage error.
    let missing = lockstep(&["client", "status"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("--addrs"));
    assert_eq!(
        lockstep(&["client", "--addrs", "127.0.0.1:1", "-o", "yaml", "status"])
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn a_command_that_fails_exits_1_with_the_reason() {
    let o = lockstep(&["node", "--config", "/nonexistent/n1.toml"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/n1.toml"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_members_and_endpoints_print_json_for_tools() {
    let mut cluster = ProcessCluster::start(BIN, 3, "file", "").unwrap();
    let client = cluster.client().await.unwrap();
    client.put("k", "v").await.unwrap();
    let config = cluster.config_path(1);
    let config = config.to_str().unwrap();
    let run = |args: &[&str]| {
        let mut a = vec!["client", "--config", config];
        a.extend_from_slice(args);
        lockstep(&a)
    };

    let o = run(&["-o", "json", "status"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let s: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("status is JSON");
    assert_eq!(s["role"], "Leader");
    assert!(s["commit"].as_u64().unwrap() >= 2);
    let progress = s["progress"]
        .as_object()
        .expect("the leader reports its peers");
    assert_eq!(progress.len(), 2, "{progress:?}");
    for p in progress.values() {
        assert!(p["matched"].as_u64().unwrap() >= 1);
        assert!(p["last_contact_ms"].as_u64().is_some(), "{p}");
    }

    let o = run(&["members", "-o", "json"]);
    let members: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let members = members.as_array().unwrap();
    assert_eq!(members.len(), 3);
    assert!(members
        .iter()
        .all(|m| m["role"] == "voter" && m["addr"].is_string()));
    assert!(stdout(&run(&["members"])).contains("voter"));

    let o = run(&["-o", "json", "endpoint", "status", "--cluster"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let rows: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 3, "one row per member: {rows:?}");
    let ids: std::collections::BTreeSet<u64> = rows
        .iter()
        .map(|r| r["node_id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [1, 2, 3].into());
    assert_eq!(
        run(&["endpoint", "health", "--cluster"]).status.code(),
        Some(0)
    );

    let o = run(&["snapshot"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert!(
        stdout(&o).starts_with("snapshot at index"),
        "{}",
        stdout(&o)
    );

    // A learner added and removed again (it need not run for the change to commit).
    assert_eq!(
        run(&["add-learner", "4", "127.0.0.1:9"]).status.code(),
        Some(0)
    );
    let o = run(&["remove-learner", "4"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let o = run(&["remove-learner", "4"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not a learner"),
        "{o:?}"
    );

    // A stopped member makes the cluster's health check fail, naming it.
    let victim = if s["node_id"] == 3 { 2 } else { 3 };
    cluster.kill(victim);
    let o = run(&["endpoint", "health", "--cluster"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(stdout(&o).contains("unhealthy"), "{}", stdout(&o));
}
