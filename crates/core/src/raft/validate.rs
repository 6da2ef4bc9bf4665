//! Rejects malformed messages before they can touch protocol state. Nothing from the
//! network may panic the node or corrupt its log.

use super::Raft;
use crate::message::{AppendResult, Message, MessageBody};
use crate::types::{Index, Term};

impl Raft {
    pub(crate) fn validate_message(&self, m: &Message) -> Result<(), String> {
        if m.to != self.id {
            return Err(format!(
                "addressed to node {}, this is node {}",
                m.to, self.id
            ));
        }
        if m.from == 0 || m.from == self.id {
            return Err(format!("invalid sender id {}", m.from));
        }
        if m.term >= Term::MAX / 2 {
            return Err(format!("term {} is out of range", m.term));
        }
        match &m.body {
            MessageBody::VoteRequest { last_log_id, .. } if last_log_id.term > m.term => {
                Err(format!(
                    "candidate's last log term {} is above its term {}",
                    last_log_id.term, m.term
                ))
            }
            MessageBody::AppendEntries {
                prev_log_id,
                entries,
                ..
            } => {
                if prev_log_id.term > m.term || prev_log_id.index >= Index::MAX / 2 {
                    return Err(format!(
                        "prev_log_id {prev_log_id} is from a term above {}",
                        m.term
                    ));
                }
                let mut prev = *prev_log_id;
                for e in entries {
                    if Some(e.log_id.index) != prev.index.checked_add(1)
                        || e.log_id.index >= Index::MAX / 2
                        || e.log_id.term < prev.term
                        || e.log_id.term > m.term
                    {
                        return Err(format!(
                            "entry {} does not follow {prev} in term {}",
                            e.log_id, m.term
                        ));
                    }
                    prev = e.log_id;
                }
                Ok(())
            }
            MessageBody::InstallSnapshot { meta } => {
                if meta.last_log_id.term > m.term || meta.last_log_id.index >= Index::MAX / 2 {
                    return Err(format!(
                        "snapshot {} is from a term above {}",
                        meta.last_log_id, m.term
                    ));
                }
                if meta.membership.voters.is_empty() {
                    return Err("snapshot has no voters".into());
                }
                Ok(())
            }
            MessageBody::AppendResponse(AppendResult::Conflict { rejected, hint })
                if *rejected >= Index::MAX / 2 || hint.index > *rejected =>
            {
                Err(format!(
                    "conflict hint {hint} does not fit rejected index {rejected}"
                ))
            }
            _ => Ok(()),
        }
    }
}
