//! When to take a snapshot: [`SnapshotPolicy`] and the standard policies, combinable with
//! [`SnapshotPolicyExt::or`] / [`AnyOf`].

use std::time::Duration;

/// What a policy sees when it decides.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapshotStats {
    /// Entries applied since the latest snapshot.
    pub entries_since: u64,
    /// Bytes of commands applied since the latest snapshot.
    pub bytes_since: u64,
    /// Time since the latest snapshot (or since start).
    pub elapsed: Duration,
}

/// Decides whether the handler takes a snapshot now.
pub trait SnapshotPolicy: Send + Sync + 'static {
    /// True if a snapshot should be taken now.
    fn should_snapshot(&self, stats: &SnapshotStats) -> bool;
}

/// Snapshot after this many entries.
#[derive(Clone, Copy, Debug)]
pub struct EntriesSince(pub u64);

/// Snapshot after this many bytes of commands.
#[derive(Clone, Copy, Debug)]
pub struct BytesSince(pub u64);

/// Snapshot when this much time passed and at least one entry was applied.
#[derive(Clone, Copy, Debug)]
pub struct TimeSince(pub Duration);

/// Never snapshot on its own (only on request).
#[derive(Clone, Copy, Debug)]
pub struct Never;

/// Snapshot when any of the policies says so.
pub struct AnyOf(pub Vec<Box<dyn SnapshotPolicy>>);

impl SnapshotPolicy for EntriesSince {
    fn should_snapshot(&self, s: &SnapshotStats) -> bool {
        s.entries_since >= self.0.max(1)
    }
}

impl SnapshotPolicy for BytesSince {
    fn should_snapshot(&self, s: &SnapshotStats) -> bool {
        s.entries_since > 0 && s.bytes_since >= self.0
    }
}

impl SnapshotPolicy for TimeSince {
    fn should_snapshot(&self, s: &SnapshotStats) -> bool {
        s.entries_since > 0 && s.elapsed >= self.0
    }
}

impl SnapshotPolicy for Never {
    fn should_snapshot(&self, _: &SnapshotStats) -> bool {
        false
    }
}

impl SnapshotPolicy for AnyOf {
    fn should_snapshot(&self, s: &SnapshotStats) -> bool {
        self.0.iter().any(|p| p.should_snapshot(s))
    }
}

impl<P: SnapshotPolicy + ?Sized> SnapshotPolicy for Box<P> {
    fn should_snapshot(&self, s: &SnapshotStats) -> bool {
        (**self).should_snapshot(s)
    }
}

/// Combinators for policies.
pub trait SnapshotPolicyExt: SnapshotPolicy + Sized {
    /// Snapshot when either policy says so.
    fn or(self, other: impl SnapshotPolicy) -> AnyOf {
        AnyOf(vec![Box::new(self), Box::new(other)])
    }
}

impl<P: SnapshotPolicy> SnapshotPolicyExt for P {}

/// The default: every 10,000 entries or 64 MiB of commands, whichever comes first.
pub fn default_policy() -> AnyOf {
    EntriesSince(10_000).or(BytesSince(64 << 20))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(entries: u64, bytes: u64, secs: u64) -> SnapshotStats {
        SnapshotStats {
            entries_since: entries,
            bytes_since: bytes,
            elapsed: Duration::from_secs(secs),
        }
    }

    #[test]
    fn each_policy_fires_on_its_own_measure() {
        assert!(!EntriesSince(10).should_snapshot(&stats(9, 1 << 30, 999)));
        assert!(EntriesSince(10).should_snapshot(&stats(10, 0, 0)));
        assert!(BytesSince(100).should_snapshot(&stats(1, 100, 0)));
        assert!(!TimeSince(Duration::from_secs(5)).should_snapshot(&stats(0, 0, 60)));
        assert!(TimeSince(Duration::from_secs(5)).should_snapshot(&stats(1, 0, 5)));
        assert!(!Never.should_snapshot(&stats(u64::MAX, u64::MAX, 1 << 40)));
    }

    #[test]
    fn combined_policies_fire_when_any_part_does() {
        let p = EntriesSince(1000).or(TimeSince(Duration::from_secs(1)));
        assert!(!p.should_snapshot(&stats(10, 0, 0)));
        assert!(p.should_snapshot(&stats(10, 0, 2)));
        assert!(p.should_snapshot(&stats(1000, 0, 0)));
    }
}
