//! Simulated clients: operations with sessions, retries under new attempt numbers, and
//! the history the linearizability checker reads.

use super::*;

impl World {
    // ---- clients -------------------------------------------------------------------------

    pub(super) fn client_next(&mut self, c: usize) {
        if self.phase != Phase::Running || self.clients[c].active.is_some() {
            return;
        }
        if self.invoked >= self.cfg.ops {
            self.maybe_start_healing();
            return;
        }
        self.invoked += 1;
        let key = self.rng.range(0, self.cfg.keys);
        let value = (c as u64 + 1) * 1_000_000 + self.invoked as u64;
        let op = match self.rng.range(0, 10) {
            0..=3 => KvOp::Put { key, value },
            4..=7 => KvOp::Get { key },
            _ => {
                let expected = match self.rng.range(0, 3) {
                    0 => None,
                    _ => self.latest_value_seen(key),
                };
                KvOp::Cas {
                    key,
                    expected,
                    new: value,
                }
            }
        };
        let client = &mut self.clients[c];
        client.sequence += 1;
        client.attempts += 1;
        let attempt = client.attempts;
        let session = ClientSession {
            client_id: c as u64 + 1,
            sequence: client.sequence,
        };
        self.history.push(HistoryOp {
            client: c as u64,
            invoke: self.now,
            complete: None,
            op: op.clone(),
            ret: None,
        });
        let lease = self.rng.chance(self.cfg.lease_read_fraction);
        self.clients[c].active = Some(ActiveOp {
            op,
            history: self.history.len() - 1,
            session,
            attempt,
            attempts: 0,
            maybe_applied: false,
            lease,
        });
        self.client_attempt(c);
    }

    /// A recent value of `key` from the history, so compare-and-swaps sometimes succeed.
    pub(super) fn latest_value_seen(&self, key: u64) -> Option<u64> {
        self.history
            .iter()
            .rev()
            .find_map(|h| match (&h.op, &h.ret) {
                (KvOp::Put { key: k, value }, Some(_)) if *k == key => Some(*value),
                (KvOp::Get { key: k }, Some(KvRet::Value(v))) if *k == key => *v,
                _ => None,
            })
    }

    pub(super) fn client_attempt(&mut self, c: usize) {
        let n = self.nodes.len() as u64;
        let random = self.rng.range(1, n + 1);
        let client = &mut self.clients[c];
        let Some(op) = client.active.as_mut() else {
            return;
        };
        op.attempts += 1;
        let attempt = op.attempt;
        let target = client.leader_hint.take().unwrap_or(random);
        let d = Network::delay(&mut self.rng);
        self.at(
            d,
            SimEvent::Request {
                node: (target - 1) as usize,
                client: c,
                attempt,
            },
        );
        self.at(
            CLIENT_TIMEOUT,
            SimEvent::ClientTimeout { client: c, attempt },
        );
    }

    /// A client request reaches node `i`.
    pub(super) fn request(&mut self, i: usize, c: usize, attempt: u64) -> Step {
        let Some(op) = self.clients[c]
            .active
            .as_ref()
            .filter(|o| o.attempt == attempt)
        else {
            return Ok(());
        };
        if !self.nodes[i].is_up() {
            return Ok(());
        }
        let (kv_op, session, lease) = (op.op.clone(), op.session, op.lease);
        let read_key = match kv_op {
            KvOp::Get { key } => Some(key),
            _ => None,
        };
        let rid = self.nodes[i].register(Waiter::Client {
            client: c,
            attempt,
            read_key,
        });
        let event = match kv_op {
            KvOp::Get { .. } => {
                let consistency = if lease {
                    ReadConsistency::Lease
                } else {
                    ReadConsistency::Linearizable
                };
                Event::Read {
                    id: rid,
                    consistency,
                }
            }
            KvOp::Put { key, value } => Event::Propose(vec![Proposal {
                id: rid,
                session: Some(session),
                data: KvCommand::Put { key, value }.encode(),
            }]),
            KvOp::Cas { key, expected, new } => Event::Propose(vec![Proposal {
                id: rid,
                session: Some(session),
                data: KvCommand::Cas { key, expected, new }.encode(),
            }]),
            // The simulated clients never delete (the sim's machine has no delete command).
            KvOp::Delete { .. } => return Ok(()),
        };
        self.step_node(i, event)
    }

    pub(super) fn client_reply(&mut self, c: usize, attempt: u64, outcome: Outcome) {
        let client = &mut self.clients[c];
        let Some(op) = client.active.as_mut().filter(|o| o.attempt == attempt) else {
            return;
        };
        let is_read = matches!(op.op, KvOp::Get { .. });
        let finished = match outcome {
            Outcome::Done(ret) => {
                self.history[op.history].complete = Some(self.now);
                self.history[op.history].ret = Some(ret);
                true
            }
            Outcome::Refused(hint) => {
                client.leader_hint = hint;
                op.attempts >= MAX_ATTEMPTS
            }
            Outcome::Unknown => {
                op.maybe_applied |= !is_read;
                op.attempts >= MAX_ATTEMPTS
            }
        };
        if finished {
            let Some(op) = client.active.take() else {
                return;
            };
            if self.history[op.history].complete.is_none() {
                if op.maybe_applied {
                    self.report.ops_unknown += 1;
                } else {
                    self.report.ops_failed += 1;
                    self.failed_ops.insert(op.history);
                }
            } else {
                self.report.ops_ok += 1;
            }
            let d = self.rng.range(0, 5 * MS);
            self.at(d, SimEvent::ClientNext { client: c });
        } else {
            // Retry under a new attempt number (same session, so a write applies at most
            // once); answers to the old attempt are ignored from now on.
            client.attempts += 1;
            op.attempt = client.attempts;
            let attempt = op.attempt;
            let d = self.rng.range(5 * MS, 30 * MS);
            self.at(d, SimEvent::ClientRetry { client: c, attempt });
        }
    }
}
