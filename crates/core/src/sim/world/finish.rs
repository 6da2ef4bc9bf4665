//! The end of a run: heal every fault, wait for convergence, require a new write to
//! commit, and check the history for linearizability.

use super::*;

impl World {
    // ---- end of run ----------------------------------------------------------------------

    pub(super) fn maybe_start_healing(&mut self) {
        if self.phase != Phase::Running || self.clients.iter().any(|c| c.active.is_some()) {
            return;
        }
        self.phase = Phase::Healing { since: self.now };
        self.net.heal();
        self.net.drop_rate = 0.0;
        self.net.duplicate_rate = 0.0;
        for i in 0..self.nodes.len() {
            let n = &mut self.nodes[i];
            n.fail_next_sync = false;
            if !n.is_up() {
                self.at(0, SimEvent::Restart { node: i });
            } else if n.paused_until > self.now {
                n.paused_until = self.now;
                self.at(0, SimEvent::Unpause { node: i });
            }
        }
        self.at(50 * MS, SimEvent::Converge);
    }

    /// One leader, and every member has the leader's log, commit, applied state and data.
    pub(super) fn converged(&self) -> bool {
        let Some(l) = self.leader() else { return false };
        let Some(leader) = self.nodes[l].raft.as_ref() else {
            return false;
        };
        let config = leader.membership();
        if config.is_joint() || leader.commit_index() != leader.last_log_id().index {
            return false;
        }
        config.members().into_iter().all(|id| {
            let n = &self.nodes[(id - 1) as usize];
            n.raft.as_ref().is_some_and(|r| {
                r.last_log_id() == leader.last_log_id()
                    && r.commit_index() == leader.commit_index()
                    && r.applied_index() == leader.commit_index()
                    && (r.role() == Role::Follower || r.id() == leader.id())
            }) && n.kv.data == self.nodes[l].kv.data
                && n.kv.sessions == self.nodes[l].kv.sessions
        })
    }

    pub(super) fn converge(&mut self) -> Step {
        match self.phase {
            Phase::Healing { since } => {
                if self.converged() {
                    self.phase = Phase::Liveness { since: self.now };
                    self.liveness_write()?;
                } else if self.now - since > 60_000 * MS {
                    return Err(Violation {
                        check: "convergence",
                        detail: format!("no convergence 60 s after healing:\n{}", self.dump()),
                    });
                }
            }
            Phase::Liveness { since } => {
                if self.liveness_done {
                    if !self.converged() {
                        // Let followers apply the liveness write too.
                        if self.now - since > 30_000 * MS {
                            return Err(Violation {
                                check: "convergence",
                                detail: format!(
                                    "diverged after the liveness write:\n{}",
                                    self.dump()
                                ),
                            });
                        }
                    } else {
                        self.phase = Phase::Done;
                        return Ok(());
                    }
                } else if self.now - since > 30_000 * MS {
                    return Err(Violation {
                        check: "liveness",
                        detail: format!(
                            "a new write did not commit within 30 s after healing:\n{}",
                            self.dump()
                        ),
                    });
                } else if !self
                    .nodes
                    .iter()
                    .any(|n| n.waiters.values().any(|w| matches!(w, Waiter::Liveness)))
                {
                    self.liveness_write()?;
                }
            }
            _ => return Ok(()),
        }
        self.at(50 * MS, SimEvent::Converge);
        Ok(())
    }

    pub(super) fn liveness_write(&mut self) -> Step {
        let Some(l) = self.leader() else {
            return Ok(());
        };
        let id = self.nodes[l].register(Waiter::Liveness);
        let data = KvCommand::Put {
            key: self.cfg.keys + 1,
            value: 1,
        }
        .encode();
        self.step_node(
            l,
            Event::Propose(vec![Proposal {
                id,
                session: None,
                data,
            }]),
        )
    }

    pub(super) fn dump(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            match &n.raft {
                Some(r) => {
                    let s = r.status();
                    out.push_str(&format!(
                        "  node {}: {:?} term {} leader {:?} last {} commit {} applied {} snapshot {} purged {} config {}\n",
                        s.id, s.role, s.term, s.leader, s.last_log_id, s.commit, s.applied, s.snapshot, s.purged, s.membership
                    ));
                    out.push_str(&format!("          configs: {}\n", r.membership.describe()));
                }
                None => out.push_str(&format!("  node {}: down\n", n.id)),
            }
            let snap = n.disk.snapshot.as_ref().map(|(m, _)| m.last_log_id);
            out.push_str(&format!(
                "          disk: hard state {:?}, log ({}, {}], snapshot {:?}\n",
                n.disk.hard_state,
                n.disk.log.offset,
                n.disk.log.last(),
                snap
            ));
        }
        out
    }

    pub(super) fn check_history(&self) -> Step {
        let ops: Vec<HistoryOp> = self
            .history
            .iter()
            .enumerate()
            .filter(|(i, h)| {
                !(self.failed_ops.contains(i)
                    || (h.complete.is_none() && matches!(h.op, KvOp::Get { .. })))
            })
            .map(|(_, h)| h.clone())
            .collect();
        check_kv_history(&ops).map_err(|e| Violation {
            check: "linearizability",
            detail: e.to_string(),
        })
    }
}
