//! The operators' endpoints on real processes: `/metrics` lists every metric and follows the
//! commit index, `/health` and `/ready` tell a running node from a stuck one, and the gRPC
//! port answers `grpc.health.v1`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use lockstep::processes::ProcessCluster;
use lockstep_core::runtime::metrics::METRIC_NAMES;

const BIN: &str = env!("CARGO_BIN_EXE_lockstep");

/// `GET path` on `addr`: (status code, body); `None` if nothing answers.
fn get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((code, body))
}

/// The value of the first sample of `name` in a Prometheus text body.
fn sample(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_health_and_readiness_over_http_follow_the_cluster() {
    let base = std::env::temp_dir();
    let mut cluster = ProcessCluster::prepare(BIN, 3, "file", "", &base).unwrap();
    let mut http = Vec::new();
    for id in 1..=3 {
        let addr = format!("127.0.0.1:{}", free_port());
        let path = cluster.config_path(id);
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str(&format!(
            "\n[metrics]\nlisten = \"{addr}\"\nready_max_lag = 100\n"
        ));
        std::fs::write(&path, text).unwrap();
        cluster.launch(id).unwrap();
        http.push(addr);
    }
    let client = cluster.client().await.unwrap();
    for i in 0..50 {
        client.put(format!("k{i}"), "v").await.unwrap();
    }
    client.trigger_snapshot().await.unwrap();
    let leader = client.status().await.unwrap().node_id;
    let leader_http = http[leader as usize - 1].clone();

    let (code, body) = get(&leader_http, "/metrics").expect("the endpoint answers");
    assert_eq!(code, 200);
    // Per-peer gauges are refreshed with the periodic status (every 10 ticks): poll.
    let mut body = body;
    wait_for("every metric name on /metrics", || {
        if let Some((_, b)) = get(&leader_http, "/metrics") {
            body = b;
        }
        METRIC_NAMES.iter().all(|n| body.contains(n))
    });
    for name in METRIC_NAMES {
        assert!(body.contains(name), "{name} missing from /metrics:\n{body}");
    }
    assert_eq!(sample(&body, "lockstep_is_leader"), Some(1.0));
    let commit = sample(&body, "lockstep_commit_index").unwrap();
    assert!(commit >= 50.0, "commit {commit}");
    for i in 0..20 {
        client.put(format!("more{i}"), "v").await.unwrap();
    }
    let (_, body) = get(&leader_http, "/metrics").unwrap();
    let later = sample(&body, "lockstep_commit_index").unwrap();
    assert!(
        later >= commit + 20.0,
        "commit went from {commit} to {later}"
    );
    assert!(sample(&body, "lockstep_proposal_duration_seconds_count").unwrap() >= 70.0);

    for addr in &http {
        assert_eq!(get(addr, "/health").map(|r| r.0), Some(200));
        wait_for("every node ready", || {
            get(addr, "/ready").map(|r| r.0) == Some(200)
        });
    }
    assert_eq!(get(&leader_http, "/nope").map(|r| r.0), Some(404));

    // Kill the leader and one follower: the survivor knows no leader and is not ready,
    // though it still runs (healthy).
    let survivor = (1..=3).find(|&i| i != leader).unwrap();
    let other = (1..=3).find(|&i| i != leader && i != survivor).unwrap();
    cluster.kill(leader);
    cluster.kill(other);
    let s_http = http[survivor as usize - 1].clone();
    wait_for("the survivor to be unready", || {
        get(&s_http, "/ready").is_some_and(|(c, b)| c == 503 && b.contains("no leader"))
    });
    assert_eq!(get(&s_http, "/health").map(|r| r.0), Some(200));
    cluster.restart(other).unwrap();
    wait_for("the survivor to be ready again", || {
        get(&s_http, "/ready").map(|r| r.0) == Some(200)
    });
    let (_, body) = get(&s_http, "/metrics").unwrap();
    assert!(sample(&body, "lockstep_leader_changes_total").unwrap() >= 2.0);
}
