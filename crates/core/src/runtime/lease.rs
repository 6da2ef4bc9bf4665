//! Lease reads without a trip through the core task (thesis §6.4.1).
//!
//! The core publishes, before it executes the protocol's actions (so before any message
//! that could let another node lead leaves), whether the protocol would serve a lease read
//! at once: until when, on the node's monotonic clock, and at which commit index. A lease read then
//! runs on the caller's task if the lease still holds and the state machine has applied
//! that index; otherwise it takes the ordinary path through the protocol.
//!
//! The end is conservative and on the monotonic clock the protocol's ticks are counted on:
//! it counts the lease's remaining ticks from the instant the protocol's clock reads, which
//! is never ahead of the real one. The core catches the protocol's clock up with the real
//! one before it handles any input (a stalled node's whole gap at once), so a node that was
//! paused past its lease neither publishes nor serves one from ticks it never counted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use super::env::Clock;
use crate::types::Index;

/// A lease read may be served locally until the node's clock reads `until`, once `index`
/// is applied.
#[derive(Clone, Copy, Debug)]
struct Grant {
    until: Duration,
    index: Index,
}

/// Shared between the core (publishes), the applier (applied index) and [`super::Node`].
#[derive(Debug)]
pub(crate) struct LeaseCell {
    grant: Mutex<Option<Grant>>,
    applied: AtomicU64,
    /// The node's clock: the one the core counts the protocol's ticks on.
    clock: Clock,
}

impl LeaseCell {
    /// A cell on the node's clock.
    pub(crate) fn new(clock: Clock) -> Self {
        Self {
            grant: Mutex::new(None),
            applied: AtomicU64::new(0),
            clock,
        }
    }

    /// The core's view: `Some((until, index))` while lease reads are served at once, `until`
    /// a reading of the node's clock.
    pub(crate) fn publish(&self, grant: Option<(Duration, Index)>) {
        let g = grant.map(|(until, index)| Grant { until, index });
        *self.grant.lock().unwrap_or_else(|p| p.into_inner()) = g;
    }

    /// The applier reached `index`.
    pub(crate) fn set_applied(&self, index: Index) {
        self.applied.fetch_max(index, Ordering::AcqRel);
    }

    /// True if a lease read may be served from the local state machine now.
    pub(crate) fn holds(&self) -> bool {
        let grant = *self.grant.lock().unwrap_or_else(|p| p.into_inner());
        let applied = super::env::planted().lease_read_before_apply
            || self.applied.load(Ordering::Acquire) >= grant.map_or(0, |g| g.index);
        grant.is_some_and(|g| applied && self.clock.elapsed() < g.until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn lease_holds_only_while_granted_unexpired_and_applied_thesis_6_4_1() {
        let c = LeaseCell::new(Clock::default());
        assert!(!c.holds(), "no grant");
        tokio::time::advance(Duration::from_secs(1)).await;
        let later = Duration::from_secs(60);
        c.publish(Some((later, 5)));
        c.set_applied(4);
        assert!(!c.holds(), "commit index 5 not applied yet");
        c.set_applied(5);
        assert!(c.holds());
        c.publish(Some((Duration::from_millis(999), 5)));
        assert!(!c.holds(), "expired");
        c.publish(Some((later, 5)));
        c.publish(None);
        assert!(!c.holds(), "revoked");
        c.set_applied(3);
        c.publish(Some((later, 5)));
        assert!(c.holds(), "applied index never goes back");
    }
}
