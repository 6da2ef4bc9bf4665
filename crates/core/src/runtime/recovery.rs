//! What a node's start finishes before the protocol sees the recovered state.

use crate::error::StorageError;
use crate::storage::{LogStore, StoredLog};
use crate::types::SnapshotMeta;

/// Completes a snapshot installation that a crash interrupted. The log writer records an
/// installed snapshot durably before it fixes the log up (`log_writer::run_batch`); a crash
/// in between leaves a log that does not contain the snapshot's last entry (it ends before
/// it, or holds a conflicting entry there). Such a log is replaced by the snapshot, as the
/// interrupted install would have done. A log that agrees with the snapshot is left as is.
pub(crate) fn complete_install(
    store: &mut dyn LogStore,
    stored: StoredLog,
) -> Result<StoredLog, StorageError> {
    let Some(meta) = stored.snapshot.as_ref() else {
        return Ok(stored);
    };
    let snap = meta.last_log_id;
    if stored.log_offset.index >= snap.index {
        return Ok(stored);
    }
    let at_snapshot = stored
        .entries
        .iter()
        .find(|e| e.log_id.index == snap.index)
        .map(|e| e.log_id);
    if at_snapshot == Some(snap) {
        return Ok(stored);
    }
    tracing::warn!(
        snapshot = %snap,
        log_offset = %stored.log_offset,
        found = ?at_snapshot,
        "completing a snapshot installation interrupted by a crash: the log is replaced by the snapshot"
    );
    store.truncate(stored.log_offset.index + 1)?;
    store.purge(snap)?;
    store.sync()?;
    store.load()
}

/// Records a snapshot the state machine came back from that is newer than the one the log
/// store names, and fixes the log up as the install would have ([`complete_install`]).
/// This happens when an install was committed in the snapshot store but the log store's
/// record of it was lost (its sync failed, or a crash came first): a log left ending
/// before the snapshot would then refuse the appends that follow it.
pub(crate) fn adopt_snapshot(
    store: &mut dyn LogStore,
    stored: StoredLog,
    machine: Option<&SnapshotMeta>,
) -> Result<StoredLog, StorageError> {
    let Some(meta) = machine else {
        return Ok(stored);
    };
    let recorded = stored.snapshot.as_ref().map_or(0, |s| s.last_log_id.index);
    if meta.last_log_id.index <= recorded {
        return Ok(stored);
    }
    tracing::warn!(
        snapshot = %meta.last_log_id,
        recorded,
        "the state machine holds a newer snapshot than the log store records; recording it"
    );
    store.save_snapshot_meta(meta)?;
    store.sync()?;
    let stored = StoredLog {
        snapshot: Some(meta.clone()),
        ..stored
    };
    complete_install(store, stored)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::MembershipConfig;
    use crate::storage::MemLogStore;
    use crate::types::{Entry, EntryPayload, LogId};

    fn e(term: u64, index: u64) -> Entry {
        Entry {
            log_id: LogId::new(term, index),
            payload: EntryPayload::Blank,
        }
    }

    fn meta(term: u64, index: u64) -> SnapshotMeta {
        SnapshotMeta {
            last_log_id: LogId::new(term, index),
            membership: MembershipConfig::default(),
        }
    }

    #[test]
    fn a_log_that_conflicts_with_the_recorded_snapshot_is_replaced_by_it_7() {
        let mut s = MemLogStore::new();
        s.append(&[e(1, 1), e(1, 2), e(1, 3), e(1, 4)]).unwrap();
        s.save_snapshot_meta(&meta(2, 3)).unwrap();
        s.sync().unwrap();
        let stored = s.load().unwrap();
        let fixed = complete_install(&mut s, stored).unwrap();
        assert_eq!(fixed.log_offset, LogId::new(2, 3));
        assert!(fixed.entries.is_empty());
        assert_eq!(s.crash_copy().load().unwrap(), fixed, "made durable");
    }

    #[test]
    fn a_log_that_ends_before_the_recorded_snapshot_is_replaced_by_it_7() {
        let mut s = MemLogStore::new();
        s.append(&[e(1, 1), e(1, 2)]).unwrap();
        s.save_snapshot_meta(&meta(3, 9)).unwrap();
        let stored = s.load().unwrap();
        let fixed = complete_install(&mut s, stored).unwrap();
        assert_eq!(fixed.log_offset, LogId::new(3, 9));
        assert!(fixed.entries.is_empty());
    }

    #[test]
    fn a_newer_snapshot_in_the_machine_is_recorded_and_replaces_a_log_that_ends_before_it() {
        // An install committed in the snapshot store whose log-store record was lost: the
        // store still names snapshot 2-3 and ends at 5; the machine holds 2-9.
        let mut s = MemLogStore::new();
        s.append(&[e(1, 1), e(2, 2), e(2, 3), e(2, 4), e(2, 5)])
            .unwrap();
        s.save_snapshot_meta(&meta(2, 3)).unwrap();
        s.purge(LogId::new(2, 3)).unwrap();
        s.sync().unwrap();
        let stored = s.load().unwrap();
        let fixed = adopt_snapshot(&mut s, stored, Some(&meta(2, 9))).unwrap();
        assert_eq!(fixed.snapshot, Some(meta(2, 9)));
        assert_eq!(fixed.log_offset, LogId::new(2, 9));
        assert!(fixed.entries.is_empty());
        assert_eq!(s.crash_copy().load().unwrap(), fixed, "made durable");
        // The entry after the snapshot now follows the log.
        s.append(&[e(2, 10)]).unwrap();
    }

    #[test]
    fn a_machine_snapshot_no_newer_than_the_recorded_one_changes_nothing() {
        let mut s = MemLogStore::new();
        s.append(&[e(1, 1), e(2, 2), e(2, 3)]).unwrap();
        s.save_snapshot_meta(&meta(2, 3)).unwrap();
        let stored = s.load().unwrap();
        assert_eq!(
            adopt_snapshot(&mut s, stored.clone(), Some(&meta(2, 2))).unwrap(),
            stored
        );
        assert_eq!(
            adopt_snapshot(&mut s, stored.clone(), None).unwrap(),
            stored
        );
    }

    #[test]
    fn a_log_that_holds_the_snapshots_last_entry_is_kept() {
        let mut s = MemLogStore::new();
        s.append(&[e(1, 1), e(2, 2), e(2, 3)]).unwrap();
        s.save_snapshot_meta(&meta(2, 2)).unwrap();
        let stored = s.load().unwrap();
        assert_eq!(complete_install(&mut s, stored.clone()).unwrap(), stored);
    }
}
