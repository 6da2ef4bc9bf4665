//! Membership remembers addresses (thesis §4.1, configuration changes): a node added at run
//! time with its address is found again after every node restarts, although the founders'
//! `[peers]` never name it.

use std::process::Command;

use lockstep::processes::ProcessCluster;

const BIN: &str = env!("CARGO_BIN_EXE_lockstep");

fn cli(config: &std::path::Path, args: &[&str]) -> String {
    let o = Command::new(BIN)
        .args(["client", "--config"])
        .arg(config)
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "lockstep client {args:?}: {o:?}");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_added_at_run_time_is_found_again_after_a_full_restart() {
    let mut cluster = ProcessCluster::prepare(BIN, 4, "file", "", &std::env::temp_dir()).unwrap();
    let addr4 = cluster.addrs()[3].clone();
    // Founders know only each other; node 4 knows the founders and bootstraps nothing.
    for id in 1..=4 {
        let path = cluster.config_path(id);
        let mut text = std::fs::read_to_string(&path).unwrap();
        if id < 4 {
            text = text.replace(&format!("4 = \"{addr4}\"\n"), "");
            text = text.replace("voters = [1, 2, 3, 4]", "voters = [1, 2, 3]");
            assert!(!text.contains(&addr4), "{text}");
        } else {
            text = text.replace("[bootstrap]\nvoters = [1, 2, 3, 4]\n", "");
        }
        std::fs::write(&path, text).unwrap();
    }
    for id in 1..=3 {
        cluster.launch(id).unwrap();
    }
    let c = cluster.client().await.unwrap();
    c.put("before", "1").await.unwrap();

    cluster.launch(4).unwrap();
    let n1 = cluster.config_path(1);
    cli(&n1, &["add-learner", "4", &addr4]);
    cli(&n1, &["set-voters", "1,2,3,4"]);
    c.put("after", "2").await.unwrap();
    let applied = c.status().await.unwrap().commit;
    cluster.wait_applied(4, applied).await.unwrap();

    // Every node down at once, then up again with the same configs.
    for id in 1..=4 {
        cluster.kill(id);
    }
    for id in 1..=4 {
        cluster.launch(id).unwrap();
    }
    // With one founder down, a majority of {1, 2, 3, 4} needs node 4: writes only succeed
    // if the founders reach it (and accept its messages) from the replicated address.
    cluster.kill(1);
    let c = cluster.client().await.unwrap();
    for i in 0..20 {
        c.put(format!("k{i}"), "v").await.unwrap();
    }
    let s = c.status().await.unwrap();
    assert_eq!(s.membership.voters, [1, 2, 3, 4].into());
    assert_eq!(
        s.membership.addrs.get(&4),
        Some(&addr4),
        "{:?}",
        s.membership
    );
    assert_eq!(s.peer_addrs.get(&4), Some(&addr4));
    cluster.wait_applied(4, s.commit).await.unwrap();
    let got = cluster
        .client_for(4)
        .await
        .unwrap()
        .get_at("k19", lockstep::ReadLevel::Eventual)
        .await
        .unwrap();
    assert_eq!(got.as_deref(), Some(&b"v"[..]));

    let n2 = cluster.config_path(2);
    let members = cli(&n2, &["-o", "json", "members"]);
    assert!(members.contains(&addr4), "{members}");
}
