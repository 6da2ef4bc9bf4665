//! The end of a run: every fault healed, then liveness, convergence and the clients'
//! history.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use super::world::{violation, Step, World};
use super::Workload;
use crate::sim::checker::Violation;
use crate::sim::linearizability::{check_kv_history, KvOp};
use crate::types::NodeId;

impl World {
    /// Heals every fault, then checks liveness, convergence and the history.
    pub(super) async fn finish(&mut self) -> Step {
        self.net
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .links
            .heal();
        {
            let mut net = self.net.lock().unwrap_or_else(|p| p.into_inner());
            net.links.drop_rate = 0.0;
            net.links.duplicate_rate = 0.0;
            net.muted.clear();
            net.hold_own_term = None;
        }
        for i in 0..self.slots.len() {
            self.slots[i].stalled_until = None;
            let _ = self.slots[i].stall.send(false);
            if self.slots[i].node.is_none() {
                self.repair(i);
                self.boot(i).await?;
            }
        }
        let index = self.liveness().await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            self.check().await?;
            self.due().await?;
            let members = self.config.members();
            let behind: Vec<NodeId> = self
                .slots
                .iter()
                .filter(|s| members.contains(&s.id))
                .filter(|s| s.node.as_ref().is_none_or(|n| n.status().applied < index))
                .map(|s| s.id)
                .collect();
            if behind.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                return Err(violation(
                    "convergence",
                    format!(
                        "nodes {behind:?} did not apply index {index} within 30 s after healing"
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.check_equal_states().await?;
        self.report.ops_ok = self.shared.ok.load(Ordering::Relaxed) as u64;
        self.report.ops_unknown = self.shared.unknown.load(Ordering::Relaxed) as u64;
        self.report.ops_failed = self.shared.refused.load(Ordering::Relaxed) as u64;
        if matches!(self.sim.workload, Workload::Custom { .. }) {
            return Ok(());
        }
        let history = self
            .shared
            .history
            .lock()
            .map(|h| h.clone())
            .unwrap_or_default();
        let failed = self
            .shared
            .failed
            .lock()
            .map(|f| f.clone())
            .unwrap_or_default();
        let ops: Vec<_> = history
            .into_iter()
            .enumerate()
            .filter(|(i, h)| {
                !(failed.contains(i) || (h.complete.is_none() && matches!(h.op, KvOp::Get { .. })))
            })
            .map(|(_, h)| h)
            .collect();
        check_kv_history(&ops).map_err(|e| violation("linearizability", e.to_string()))
    }

    /// A write after healing commits within 60 simulated seconds; returns its index.
    pub(super) async fn liveness(&mut self) -> Result<u64, Violation> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let command = match &self.sim.workload {
            Workload::Custom { commands, .. } => commands(&mut self.rng),
            _ => super::machines::encode(&KvOp::Put {
                key: self.sim.cfg.keys + 1,
                value: 1,
            }),
        };
        loop {
            self.check().await?;
            self.due().await?;
            let leader = self
                .slots
                .iter()
                .filter_map(|s| s.node.clone())
                .find(|n| n.is_leader());
            if let Some(n) = leader {
                // Committed and applied: answered, or refused by the machine itself (a
                // deterministic answer to a command it does not understand).
                match n.propose(command.clone()).await {
                    Ok(_) | Err(crate::error::NodeError::Rejected(_)) => {
                        return Ok(n.status().commit)
                    }
                    Err(_) => {}
                }
            }
            if Instant::now() > deadline {
                return Err(violation(
                    "liveness",
                    "no write committed within 60 s after every fault healed".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every replica's machine holds the same state (the same snapshot bytes).
    pub(super) async fn check_equal_states(&self) -> Step {
        let mut first: Option<(NodeId, Vec<u8>)> = None;
        let members = self.config.members();
        for s in self.slots.iter().filter(|s| members.contains(&s.id)) {
            let Some(m) = &s.machine else { continue };
            let mut bytes = Vec::new();
            m.snapshot(&mut bytes)
                .await
                .map_err(|e| violation("convergence", format!("node {}: snapshot: {e}", s.id)))?;
            match &first {
                None => first = Some((s.id, bytes)),
                Some((id, b)) if *b != bytes => {
                    return Err(violation(
                        "convergence",
                        format!(
                            "nodes {id} and {} applied the same log but hold different states",
                            s.id
                        ),
                    ))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}
