//! The demo ends with exactly 1,000 on every node, despite the leader crash.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_counts_exactly_one_thousand_after_the_leader_crash() {
    let mut out = Vec::new();
    let counts = custom_state_machine::demo::run(&mut out).await.unwrap();
    assert_eq!(counts, vec![(1, 1000), (2, 1000), (3, 1000)]);
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("crashing the leader"), "{text}");
}
