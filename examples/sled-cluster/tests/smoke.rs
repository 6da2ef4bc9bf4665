//! CI smoke test: 3 processes on sled; 1,000 keys; SIGKILL the leader; 1,000 more;
//! restart it; all 2,000 keys readable through every node (linearizable) and in every
//! node's own copy.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_sled_processes_survive_a_leader_sigkill_with_every_key_readable_everywhere() {
    lockstep::processes::smoke(env!("CARGO_BIN_EXE_sled-cluster"), "sled")
        .await
        .unwrap();
}
