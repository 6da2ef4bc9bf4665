//! [`SledKvView`]: a point-in-time view of a [`crate::SledKvStateMachine`], for snapshots
//! written while applies go on.
//!
//! sled has no snapshots, and its iterators are not snapshot-isolated. A view therefore
//! keeps an **overlay of pre-images**: while the view lives, every apply first records, for
//! each key it is about to change and the overlay does not hold yet, the key's value
//! before the change (or its absence). The view then iterates the live tree and merges it
//! with the overlay in key order:
//!
//! - a key in the overlay takes the overlay's value (its value when the view was taken; a
//!   key that did not exist then is left out), whatever the tree shows now;
//! - a key not in the overlay was not changed since the view was taken, so the value the
//!   iterator read is the value it had then;
//! - a key deleted since is in the overlay, so it is written even though the iterator no
//!   longer finds it.
//!
//! The pre-image is recorded *before* the batch that changes the key is applied, and the
//! overlay is consulted *after* the tree value was read, so a value the iterator read from
//! a batch applied after the view was taken is always covered by the overlay. The overlay
//! only grows while the view lives (one entry per distinct key written meanwhile), so its
//! memory is bounded by the writes during the snapshot, not by the state's size.

use std::collections::BTreeMap;
use std::io::Write;
use std::ops::Bound;
use std::sync::{Arc, Mutex};

use lockstep_core::state_machine::SnapshotView;
use lockstep_core::{LogId, StateMachineError, StorageError};

use crate::error::SledStoreError;
use crate::kv::{lock, CrcWriter, Current, DATA_PREFIX, SNAPSHOT_MAGIC, SNAPSHOT_VERSION};

/// The pre-images recorded for one view: data-tree key (with its prefix byte) to the
/// value it had when the view was taken (`None`: it did not exist).
pub(crate) type PreImages = BTreeMap<Vec<u8>, Option<sled::IVec>>;

/// The overlay one live view shares with the machine's applies.
#[derive(Debug)]
pub(crate) struct Overlay {
    /// The data generation the view reads; applies to another generation (after a
    /// restore) do not touch the view's tree and record nothing.
    pub(crate) generation: u64,
    pub(crate) pre: Mutex<PreImages>,
}

impl Overlay {
    pub(crate) fn new(generation: u64) -> Self {
        Self {
            generation,
            pre: Mutex::new(BTreeMap::new()),
        }
    }
}

/// A point-in-time view of a [`crate::SledKvStateMachine`], taken by
/// [`crate::SledKvStateMachine::view`] (or [`lockstep_core::StateMachine::snapshot_view`])
/// while no apply runs.
///
/// [`SnapshotView::write_to`] writes exactly the bytes [`lockstep_core::StateMachine::snapshot`]
/// would have written when the view was taken, in the [`lockstep_core::KvStateMachine`]
/// format, while applies go on: each apply records the pre-image of the keys it changes in
/// the view's overlay first (see the module documentation). Costs while the view lives: one
/// extra read per key written (its first write only) and the memory of those pre-images. A
/// restore meanwhile replaces the machine's data tree, but the view's tree is kept until the
/// view is dropped.
#[derive(Debug)]
pub struct SledKvView {
    cur: Current,
    overlay: Arc<Overlay>,
    last_applied: Option<LogId>,
}

impl SledKvView {
    pub(crate) fn new(cur: Current, overlay: Arc<Overlay>, last_applied: Option<LogId>) -> Self {
        Self {
            cur,
            overlay,
            last_applied,
        }
    }

    /// The last entry applied when the view was taken (the entry its state includes).
    pub fn last_applied(&self) -> Option<LogId> {
        self.last_applied
    }

    /// Keys whose pre-image the overlay holds (written since the view was taken).
    pub fn overlay_len(&self) -> usize {
        lock(&self.overlay.pre).len()
    }

    /// Calls `f` with every key (without its prefix byte) and value of the state at the
    /// view's moment, in ascending key order.
    fn for_each(
        &self,
        mut f: impl FnMut(&[u8], &[u8]) -> Result<(), StateMachineError>,
    ) -> Result<(), StateMachineError> {
        let name = &self.cur.name;
        let sled_err = |e| -> StateMachineError {
            SledStoreError::sled(format!("iteration of `{name}`"), e).into()
        };
        let mut tree = self.cur.tree.scan_prefix([DATA_PREFIX]);
        let mut next_tree = tree.next().transpose().map_err(sled_err)?;
        // The last key handled (emitted or found absent at the view's moment).
        let mut cursor: Option<Vec<u8>> = None;
        loop {
            // Read after `next_tree` was: see the module documentation.
            let next_pre: Option<(Vec<u8>, Option<sled::IVec>)> = {
                let pre = lock(&self.overlay.pre);
                let lower = match &cursor {
                    None => Bound::Unbounded,
                    Some(c) => Bound::Excluded(c.as_slice()),
                };
                pre.range::<[u8], _>((lower, Bound::Unbounded))
                    .next()
                    .map(|(k, v)| (k.clone(), v.clone()))
            };
            let tree_first = match (&next_tree, &next_pre) {
                (None, None) => return Ok(()),
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some((tk, _)), Some((pk, _))) => tk.as_ref() < pk.as_slice(),
            };
            if tree_first {
                let Some((k, v)) = next_tree.take() else {
                    return Ok(());
                };
                // The key is not in the overlay: unchanged since the view was taken.
                f(&k[1..], &v)?;
                cursor = Some(k.to_vec());
            } else {
                let Some((k, v)) = next_pre else {
                    return Ok(());
                };
                if let Some(v) = v {
                    f(&k[1..], &v)?;
                }
                if next_tree
                    .as_ref()
                    .is_some_and(|(tk, _)| tk.as_ref() == k.as_slice())
                {
                    next_tree = None;
                }
                cursor = Some(k);
            }
            if next_tree.is_none() {
                // Advance past everything handled (sled yields keys in ascending order;
                // the check only guards the merge's order).
                loop {
                    next_tree = tree.next().transpose().map_err(sled_err)?;
                    match (&next_tree, &cursor) {
                        (Some((tk, _)), Some(c)) if tk.as_ref() <= c.as_slice() => continue,
                        _ => break,
                    }
                }
            }
        }
    }
}

impl SnapshotView for SledKvView {
    fn write_to(self: Box<Self>, out: &mut (dyn Write + Send)) -> Result<(), StateMachineError> {
        // Two passes, both over the state at the view's moment: the format puts the count
        // first.
        let mut count: u64 = 0;
        self.for_each(|_, _| {
            count += 1;
            Ok(())
        })?;
        let io = |e| StorageError::io("writing the sled kv snapshot", e);
        let mut w = CrcWriter::new(out);
        w.write(SNAPSHOT_MAGIC).map_err(io)?;
        w.write(&SNAPSHOT_VERSION.to_le_bytes()).map_err(io)?;
        w.write(&count.to_le_bytes()).map_err(io)?;
        let field_len = |n: usize| {
            u32::try_from(n).map_err(|_| {
                StateMachineError::Other(format!(
                    "a key or value of {n} bytes does not fit the snapshot format"
                ))
            })
        };
        let mut written: u64 = 0;
        self.for_each(|key, value| {
            w.write(&field_len(key.len())?.to_le_bytes()).map_err(io)?;
            w.write(key).map_err(io)?;
            w.write(&field_len(value.len())?.to_le_bytes())
                .map_err(io)?;
            w.write(value).map_err(io)?;
            written += 1;
            Ok(())
        })?;
        if written != count {
            return Err(StateMachineError::Other(format!(
                "the view of `{}` changed between its passes ({count} keys counted, {written} \
                 written)",
                self.cur.name
            )));
        }
        w.finish().map_err(io)?;
        Ok(())
    }
}
