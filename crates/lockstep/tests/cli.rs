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
fn with_check_args_a_command_line_is_parsed_but_not_run() {
    let check = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .env(lockstep::cli::CHECK_ARGS, "1")
            .output()
            .unwrap()
    };
    // Valid, though the config file does not exist: nothing is run.
    let ok = check(&[
        "client",
        "--config",
        "/nonexistent/n1.toml",
        "put",
        "k",
        "v",
    ]);
    assert_eq!(ok.status.code(), Some(0), "{ok:?}");
    let bad = check(&["client", "--config", "n1.toml", "put", "k"]);
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    let unknown = check(&["client", "--confg", "n1.toml", "status"]);
    assert_eq!(unknown.status.code(), Some(2), "{unknown:?}");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_lockstep_node_on_a_held_data_directory_fails_naming_the_holder() {
    let cluster = ProcessCluster::start(BIN, 1, "file", "").unwrap();
    // Once the first node answers, it holds its data directory's lock.
    cluster.client().await.unwrap();
    let pid = cluster.pid(1).unwrap();
    let mut second = Command::new(BIN)
        .args(["node", "--config"])
        .arg(cluster.config_path(1))
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(s) = second.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            second.kill().unwrap();
            panic!("a second node started on a data directory in use");
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("in use by another node"), "{err}");
    assert!(err.contains(&format!("process {pid}")), "{err}");
}

#[test]
fn certs_makes_the_certificates_of_a_mutual_tls_cluster_and_its_clients() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("certs");
    let out_s = out.to_str().unwrap();
    let make = |extra: &[&str]| {
        let mut a = vec![
            "certs",
            "--cluster-id",
            "process-cluster",
            "--out",
            out_s,
            "--nodes",
            "1,2,3",
            "--clients",
            "ops",
        ];
        a.extend_from_slice(extra);
        lockstep(&a)
    };
    let o = make(&[]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let listed: Vec<String> = stdout(&o).lines().map(str::to_string).collect();
    for name in [
        "ca.pem",
        "ca.key",
        "node-1.pem",
        "node-1.key",
        "node-3.pem",
        "client-ops.pem",
        "client-ops.key",
    ] {
        let p = out.join(name);
        assert!(
            listed.contains(&p.display().to_string()),
            "{name} not in {listed:?}"
        );
        let mode =
            std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&p).unwrap().permissions());
        let expected = if name.ends_with(".key") { 0o600 } else { 0o644 };
        assert_eq!(mode & 0o777, expected, "{name}");
    }
    assert_eq!(listed.len(), 10, "{listed:?}");
    // Files are never replaced silently; --force replaces them.
    let o = make(&[]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("ca.pem"),
        "{o:?}"
    );
    assert_eq!(make(&["--force"]).status.code(), Some(0));
    // Usage errors exit 2; a bad request exits 1 naming what is wrong.
    assert_eq!(
        lockstep(&["certs", "--cluster-id", "c", "--out", out_s])
            .status
            .code(),
        Some(2)
    );
    let o = lockstep(&["certs", "--cluster-id", "c", "--out", out_s, "--nodes", "0"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("node id 0"),
        "{o:?}"
    );

    // The walkthrough of docs/security.md: each node its own certificate, mutual TLS.
    let file = |name: &str| out.join(name).display().to_string();
    let tls = format!(
        "[tls]\ncert = \"{out_s}/node-{{id}}.pem\"\nkey = \"{out_s}/node-{{id}}.key\"\nca = \"{}\"\nrequire_client_cert = true\n",
        file("ca.pem")
    );
    let cluster = ProcessCluster::start(BIN, 3, "file", &tls).unwrap();
    assert_eq!(cluster.cluster_id(), "process-cluster");
    let config = cluster.config_path(1);
    // [tls] of the node's config: the CA, and the node's certificate as the client's.
    let o = lockstep(&[
        "client",
        "--config",
        config.to_str().unwrap(),
        "put",
        "k",
        "over tls",
    ]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let addrs = cluster.addrs().join(",");
    let flags = [
        "client",
        "--addrs",
        &addrs,
        "--cluster-id",
        cluster.cluster_id(),
        "--timeout-ms",
        "3000",
    ];
    let with = |extra: &[&str]| {
        let mut a: Vec<&str> = flags.to_vec();
        a.extend_from_slice(extra);
        lockstep(&a)
    };
    let (ca, cert, key) = (
        file("ca.pem"),
        file("client-ops.pem"),
        file("client-ops.key"),
    );
    let o = with(&["--ca", &ca, "--cert", &cert, "--key", &key, "get", "k"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert_eq!(stdout(&o).trim(), "over tls");
    // Mutual TLS: without a client certificate, or without trusting the CA, no answer.
    assert_eq!(with(&["--ca", &ca, "get", "k"]).status.code(), Some(1));
    assert_eq!(with(&["get", "k"]).status.code(), Some(1));
    // --cert without --key is a usage error.
    assert_eq!(
        with(&["--ca", &ca, "--cert", &cert, "get", "k"])
            .status
            .code(),
        Some(2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_with_a_peer_secret_file_works_and_one_without_warns_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("peer.secret");
    std::fs::write(&secret, "a-long-enough-shared-secret\n").unwrap();
    let extra = format!("peer_secret_file = \"{}\"\n", secret.display());
    let cluster = ProcessCluster::start(BIN, 3, "file", &extra).unwrap();
    let c = cluster.client().await.unwrap();
    c.put("k", "v").await.unwrap();
    assert_eq!(c.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
    let log = std::fs::read_to_string(cluster.log_path(1)).unwrap();
    assert!(!log.contains("UNAUTHENTICATED"), "{log}");

    let plain = ProcessCluster::start(BIN, 1, "file", "").unwrap();
    plain.client().await.unwrap();
    let log = std::fs::read_to_string(plain.log_path(1)).unwrap();
    assert!(log.contains("peer traffic is UNAUTHENTICATED"), "{log}");

    // A secret file that is too short is a config error naming the key.
    std::fs::write(&secret, "short").unwrap();
    let o = lockstep(&["node", "--config", cluster.config_path(1).to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("peer_secret_file"),
        "{o:?}"
    );
}
