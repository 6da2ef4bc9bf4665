//! A user's own state machine through the production simulation: a deterministic machine
//! passes; a machine whose answers depend on the replica is caught.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use bytes::Bytes;
use lockstep_core::sim::production::Simulation;
use lockstep_core::state_machine::StateMachineTrait;

/// Sums the numbers it is sent (the seed guide's minimal machine shape).
#[derive(Default)]
struct Sum(Mutex<u64>);

impl StateMachineTrait for Sum {
    fn apply(&self, command: &[u8]) -> Result<Bytes, String> {
        let n = command.first().copied().unwrap_or(0) as u64;
        let mut s = self.0.lock().map_err(|e| e.to_string())?;
        *s += n;
        Ok(Bytes::from(s.to_le_bytes().to_vec()))
    }

    fn snapshot(&self) -> Vec<u8> {
        self.0
            .lock()
            .map(|s| s.to_le_bytes().to_vec())
            .unwrap_or_default()
    }

    fn restore(&self, snapshot: &[u8]) -> Result<(), String> {
        let v = match snapshot.try_into() {
            Ok(b) => u64::from_le_bytes(b),
            Err(_) if snapshot.is_empty() => 0,
            Err(_) => return Err(format!("snapshot of {} bytes", snapshot.len())),
        };
        *self.0.lock().map_err(|e| e.to_string())? = v;
        Ok(())
    }
}

/// A machine that stamps every answer with a per-process counter: replicas disagree.
#[derive(Default)]
struct Stamped(Sum);

static STARTS: AtomicU64 = AtomicU64::new(0);

impl StateMachineTrait for Stamped {
    fn apply(&self, command: &[u8]) -> Result<Bytes, String> {
        let mut out = self.0.apply(command)?.to_vec();
        out.push((STARTS.fetch_add(1, Ordering::Relaxed) % 7) as u8);
        Ok(Bytes::from(out))
    }

    fn snapshot(&self) -> Vec<u8> {
        self.0.snapshot()
    }

    fn restore(&self, snapshot: &[u8]) -> Result<(), String> {
        self.0.restore(snapshot)
    }
}

fn small_numbers(rng: &mut lockstep_core::rng::Rng) -> Bytes {
    Bytes::from(vec![rng.range(0, 10) as u8])
}

#[test]
fn a_deterministic_user_machine_passes_the_simulation() {
    for seed in 0..20 {
        let r = Simulation::new(seed)
            .machine(Sum::default)
            .commands(small_numbers)
            .run()
            .unwrap_or_else(|f| panic!("{f}"));
        assert!(r.ops_ok > 0, "{r:?}");
    }
}

#[test]
fn a_machine_whose_answers_differ_between_replicas_is_caught() {
    let caught = (0..20).find_map(|seed| {
        Simulation::new(seed)
            .machine(Stamped::default)
            .commands(small_numbers)
            .run()
            .err()
    });
    let f = caught.expect("a nondeterministic machine is caught");
    assert_eq!(f.check, "state machine safety", "{f}");
}
