//! Leadership transfer (thesis §3.10): stop taking proposals, bring the target up to date,
//! send it TimeoutNow; give up after an election timeout.

use super::Raft;
use crate::event::{ClientError, Reply};
use crate::message::MessageBody;
use crate::types::{NodeId, RequestId};

/// A transfer in progress.
#[derive(Debug)]
pub(crate) struct Transfer {
    pub(crate) to: NodeId,
    pub(crate) id: RequestId,
    elapsed: u64,
    sent: bool,
}

impl Raft {
    pub(crate) fn transfer_leader(&mut self, id: RequestId, to: NodeId) {
        if !self.is_leader() {
            let err = self.not_leader();
            return self.respond(id, Err(err));
        }
        if to == self.id {
            return self.respond(id, Ok(Reply::LeaderTransferred(to)));
        }
        if !self.membership.effective().is_voter(to) {
            return self.respond(id, Err(ClientError::NotAVoter(to)));
        }
        let Some(ls) = self.leader_state.as_mut() else {
            return;
        };
        if ls.transfer.is_some() {
            return self.respond(id, Err(ClientError::TransferInProgress));
        }
        tracing::info!(node = self.id, to, "transferring leadership");
        ls.transfer = Some(Transfer {
            to,
            id,
            elapsed: 0,
            sent: false,
        });
        // The target will campaign ignoring leader stickiness: our lease ends now.
        ls.lease_until = 0;
        self.maybe_send_timeout_now();
        self.send_append(to);
    }

    /// Sends TimeoutNow once the target's log is as up to date as ours.
    pub(crate) fn maybe_send_timeout_now(&mut self) {
        let last = self.log.last_index();
        let Some(ls) = self.leader_state.as_mut() else {
            return;
        };
        let Some(t) = ls.transfer.as_mut() else {
            return;
        };
        if t.sent || ls.progress.get(&t.to).is_none_or(|p| p.matched < last) {
            return;
        }
        t.sent = true;
        let to = t.to;
        self.send(to, MessageBody::TimeoutNow);
    }

    pub(crate) fn tick_transfer(&mut self, n: u64) {
        let limit = u64::from(self.cfg.election_ticks);
        let Some(ls) = self.leader_state.as_mut() else {
            return;
        };
        let Some(t) = ls.transfer.as_mut() else {
            return;
        };
        t.elapsed = t.elapsed.saturating_add(n);
        if t.elapsed >= limit {
            let Some(t) = ls.transfer.take() else { return };
            ls.lease_revoked |= t.sent;
            tracing::info!(node = self.id, to = t.to, "leader transfer timed out");
            self.respond(t.id, Err(ClientError::TransferTimedOut(t.to)));
        }
    }
}
