//! The demo: 1,000 increments from several tasks on a 3-node in-process cluster, with the
//! leader crashing half-way.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use lockstep::{ClientSession, ClusterOptions, InProcessCluster, ReadLevel};

use crate::CounterStateMachine;

/// Increments proposed in total.
pub const INCREMENTS: u64 = 1_000;
/// Tasks proposing concurrently.
pub const TASKS: u64 = 4;

/// Runs the demo, printing each step; returns the final count on every node.
pub async fn run(out: &mut impl std::io::Write) -> anyhow::Result<Vec<(u64, i64)>> {
    let cluster = InProcessCluster::start(
        [1, 2, 3],
        |_| CounterStateMachine::new(),
        ClusterOptions {
            snapshot_every: 250,
            ..ClusterOptions::default()
        },
    )
    .await?;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await?;
    writeln!(
        out,
        "3 nodes started; node {} leads term {}",
        leader.id(),
        leader.status().term
    )?;

    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let cluster = cluster.clone();
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            for seq in 1..=INCREMENTS / TASKS {
                // A session per task: a retry after the crash is applied at most once.
                let session = ClientSession {
                    client_id: t + 1,
                    sequence: seq,
                };
                cluster
                    .propose(session, &b"INCREMENT"[..], Duration::from_secs(30))
                    .await
                    .with_context(|| format!("task {t}: increment {seq}"))?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }

    while done.load(Ordering::Relaxed) < INCREMENTS / 2 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let old = cluster.wait_for_leader(Duration::from_secs(10)).await?;
    writeln!(
        out,
        "{} increments acknowledged; crashing the leader, node {}",
        done.load(Ordering::Relaxed),
        old.id()
    )?;
    cluster.crash(old.id()).await;
    let new = cluster.wait_for_leader(Duration::from_secs(10)).await?;
    writeln!(
        out,
        "node {} was elected leader in term {}; the tasks carry on",
        new.id(),
        new.status().term
    )?;

    for t in tasks {
        t.await??;
    }
    writeln!(
        out,
        "all {INCREMENTS} increments acknowledged; restarting node {}",
        old.id()
    )?;
    cluster.restart(old.id()).await?;

    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await?;
    let total = leader.read(&b"GET"[..], ReadLevel::Linearizable).await?;
    writeln!(
        out,
        "linearizable read on the leader: {}",
        String::from_utf8_lossy(&total)
    )?;
    // Each replica's own state, read from the machine itself: the seed's counter has no
    // read-only query, so `node.query` would go through the log (and agree by construction).
    let mut counts = Vec::new();
    for id in [1, 2, 3] {
        let machine = cluster.machine(id).context("node running")?;
        let count = wait_for_count(id, &machine, INCREMENTS as i64).await?;
        writeln!(out, "node {id}: count = {count}")?;
        counts.push((id, count));
    }
    cluster.shutdown().await;
    Ok(counts)
}

async fn wait_for_count(id: u64, machine: &CounterStateMachine, want: i64) -> anyhow::Result<i64> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = *machine
            .counter
            .read()
            .map_err(|_| anyhow::anyhow!("counter lock poisoned"))?;
        if got == want {
            return Ok(got);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("node {id} stopped at {got}, expected {want}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
