//! The fuzz targets and the random values their seeds are made of.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use lockstep_core::{
    ClientSession, Entry, EntryPayload, HardState, Index, LogId, MembershipConfig, Rng,
    SnapshotMeta, Term,
};

use crate::Target;

pub mod codec;
pub mod convert;
pub mod envelope;
pub mod record;
pub mod recovery;

/// Every target, in the order `cargo xtask fuzz` runs them.
pub fn all() -> Vec<Target> {
    vec![
        record::TARGET,
        recovery::TARGET,
        codec::TARGET,
        envelope::TARGET,
        convert::TARGET,
    ]
}

/// Mostly small numbers, sometimes a boundary.
pub fn number(rng: &mut Rng) -> u64 {
    match rng.range(0, 10) {
        0 => rng.next_u64(),
        1 => *rng
            .pick(&[
                0,
                u64::MAX,
                u64::MAX - 1,
                1 << 63,
                (1 << 63) - 1,
                0xffff_ffff,
            ])
            .unwrap_or(&0),
        _ => rng.range(0, 1000),
    }
}

/// Random bytes of a length up to `max`, mostly short.
pub fn bytes(rng: &mut Rng, max: usize) -> Vec<u8> {
    let n = if rng.chance(0.8) {
        rng.range(0, 40.min(max as u64 + 1))
    } else {
        rng.range(0, max as u64 + 1)
    } as usize;
    (0..n).map(|_| rng.next_u64() as u8).collect()
}

fn ids(rng: &mut Rng, max: u64) -> BTreeSet<u64> {
    let n = rng.range(0, max + 1);
    (0..n).map(|_| rng.range(1, 12)).collect()
}

/// A membership configuration with at least one voter, sometimes joint, with learners and
/// addresses.
pub fn membership(rng: &mut Rng) -> MembershipConfig {
    let mut voters = ids(rng, 5);
    voters.insert(rng.range(1, 12));
    let outgoing = if rng.chance(0.3) {
        ids(rng, 5)
    } else {
        BTreeSet::new()
    };
    let learners: BTreeSet<u64> = ids(rng, 2)
        .into_iter()
        .filter(|l| !voters.contains(l) && !outgoing.contains(l))
        .collect();
    let mut addrs = BTreeMap::new();
    if rng.chance(0.4) {
        for id in voters.iter().chain(&learners) {
            if rng.chance(0.05) {
                // Longer than any real address: around the decoders' limit.
                let n = rng.range(900, 1200) as usize;
                addrs.insert(*id, "a".repeat(n));
            } else if rng.chance(0.5) {
                addrs.insert(*id, format!("10.0.0.{id}:{}", 7000 + rng.range(0, 100)));
            }
        }
    }
    MembershipConfig {
        voters,
        outgoing,
        learners,
        addrs,
    }
}

/// An entry of any payload kind at `index`.
pub fn entry(rng: &mut Rng, term: Term, index: Index) -> Entry {
    let payload = match rng.range(0, 6) {
        0 => EntryPayload::Blank,
        1 => EntryPayload::Membership(membership(rng)),
        _ => EntryPayload::Command {
            session: rng.chance(0.5).then(|| ClientSession {
                client_id: number(rng),
                sequence: number(rng),
            }),
            data: Bytes::from(bytes(rng, 600)),
        },
    };
    Entry {
        log_id: LogId::new(term, index),
        payload,
    }
}

/// A hard state.
pub fn hard_state(rng: &mut Rng) -> HardState {
    HardState {
        term: number(rng),
        vote: rng.chance(0.7).then(|| rng.range(1, 12)),
        commit: number(rng),
    }
}

/// Snapshot metadata.
pub fn snapshot_meta(rng: &mut Rng) -> SnapshotMeta {
    SnapshotMeta {
        last_log_id: LogId::new(number(rng), rng.range(1, 1 << 20)),
        membership: membership(rng),
    }
}
