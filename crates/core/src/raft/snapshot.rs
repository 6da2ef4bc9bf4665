//! Snapshots (§7): purging the log behind a local snapshot, sending a snapshot to a
//! follower whose next entry is gone, and installing one from the leader.

use super::progress::ReplicationState;
use super::Raft;
use crate::event::{Action, ClientError};
use crate::message::{AppendResult, MessageBody};
use crate::types::{Index, LogId, NodeId, SnapshotMeta};

impl Raft {
    /// A snapshot of the local state machine is durable: remember it and purge the log
    /// behind it, keeping `purge_keep_entries` for slightly lagging followers.
    pub(crate) fn on_snapshot_built(&mut self, meta: SnapshotMeta) {
        let idx = meta.last_log_id.index;
        if idx <= self.snapshot.last_log_id.index
            || idx > self.applied
            || !self.log.matches(meta.last_log_id)
        {
            return;
        }
        self.snapshot = meta;
        let purge_to = idx.saturating_sub(self.cfg.purge_keep_entries);
        self.purge_to(purge_to);
    }

    fn purge_to(&mut self, index: Index) {
        if index <= self.log.offset().index {
            return;
        }
        let Some(term) = self.log.term(index) else {
            return;
        };
        let up_to = LogId::new(term, index);
        self.log.purge(up_to);
        self.membership.fold(index);
        self.actions.push(Action::PurgeLog { up_to });
    }

    /// Leader: the entries `to` needs are purged; send the latest snapshot instead.
    pub(crate) fn send_snapshot(&mut self, to: NodeId) {
        let meta = self.snapshot.clone();
        let idx = meta.last_log_id.index;
        let Some(pr) = self.progress_mut(to) else {
            return;
        };
        pr.become_snapshot(idx);
        tracing::info!(to, snapshot = %meta.last_log_id, "sending snapshot");
        self.send(to, MessageBody::InstallSnapshot { meta });
    }

    pub(crate) fn on_snapshot_send_failed(&mut self, to: NodeId) {
        if let Some(pr) = self.progress_mut(to) {
            if let ReplicationState::Snapshot(_) = pr.state {
                pr.become_probe();
            }
        }
    }

    /// Follower: install a snapshot unless the log already covers it.
    pub(crate) fn handle_install_snapshot(&mut self, from: NodeId, meta: SnapshotMeta) {
        if self.installing.is_some() {
            return;
        }
        let idx = meta.last_log_id.index;
        if idx <= self.commit {
            let durable = self.durable.min(idx);
            self.send(
                from,
                MessageBody::AppendResponse(AppendResult::Success {
                    last_accepted: idx,
                    durable,
                }),
            );
            return;
        }
        let reset_log = !self.log.matches(meta.last_log_id);
        tracing::info!(node = self.id, snapshot = %meta.last_log_id, reset_log, "installing snapshot");
        self.installing = Some(meta.clone());
        self.actions
            .push(Action::InstallSnapshot { meta, reset_log });
    }

    /// Installation failed: keep the old state and accept appends (or a new snapshot) again.
    pub(crate) fn on_snapshot_install_failed(&mut self, meta: SnapshotMeta) {
        if self.installing.as_ref() == Some(&meta) {
            tracing::warn!(node = self.id, snapshot = %meta.last_log_id, "snapshot install failed");
            self.installing = None;
        }
    }

    /// The runtime installed the snapshot: the log now starts after it.
    pub(crate) fn on_snapshot_installed(&mut self, meta: SnapshotMeta) {
        if self.installing.as_ref() != Some(&meta) {
            return;
        }
        self.installing = None;
        let id = meta.last_log_id;
        let keep = self.log.matches(id);
        if keep {
            self.log.purge(id);
        } else {
            self.log.reset(id);
            self.durable = id.index;
        }
        self.durable = self.durable.max(id.index);
        self.membership.reset(&meta, keep);
        self.snapshot = meta;
        self.commit = self.commit.max(id.index);
        self.applying = self.applying.max(id.index);
        self.applied = self.applied.max(id.index);
        let covered: Vec<Index> = self.proposals.range(..=id.index).map(|(i, _)| *i).collect();
        for i in covered {
            if let Some((_, rid)) = self.proposals.remove(&i) {
                self.respond(rid, Err(ClientError::ProposalDropped));
            }
        }
        self.release_ready_reads();
        self.verified_match = self.verified_match.max(id.index);
        self.acked_durable = self.acked_durable.max(id.index);
        if let Some(leader) = self.leader {
            self.send(
                leader,
                MessageBody::AppendResponse(AppendResult::Success {
                    last_accepted: id.index,
                    durable: id.index,
                }),
            );
        }
        self.maybe_apply();
    }
}
