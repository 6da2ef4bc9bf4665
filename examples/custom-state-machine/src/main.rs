//! Replicates the seed's `CounterStateMachine` on 3 in-process nodes: 1,000 increments from
//! 4 tasks, the leader crashes half-way, and every node ends with the same count.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let counts = custom_state_machine::demo::run(&mut std::io::stdout()).await?;
    let first = counts[0].1;
    anyhow::ensure!(
        counts.iter().all(|(_, c)| *c == first),
        "nodes disagree: {counts:?}"
    );
    println!("final count {first} on all three nodes");
    Ok(())
}
