//! Octopii guide, "Quick Start": the `CounterStateMachine`, verbatim but for its import
//! (`use lockstep::prelude::*` in place of `use octopii::StateMachineTrait`) and `pub`.
//!
//! The seed defines no constructor; [`CounterStateMachine::new`] and
//! [`CounterStateMachine::value`] below are additions, in a separate `impl` block.

use bytes::Bytes;
use lockstep::prelude::*;
use std::sync::RwLock;

/// The seed's counter: `INCREMENT` adds one, `GET` reads it.
pub struct CounterStateMachine {
    counter: RwLock<i64>,
}

impl StateMachineTrait for CounterStateMachine {
    fn apply(&self, command: &[u8]) -> Result<Bytes, String> {
        let cmd = String::from_utf8_lossy(command);
        match cmd.as_ref() {
            "INCREMENT" => {
                let mut counter = self.counter.write().unwrap();
                *counter += 1;
                Ok(Bytes::from(format!("{}", *counter)))
            }
            "GET" => {
                let counter = self.counter.read().unwrap();
                Ok(Bytes::from(format!("{}", *counter)))
            }
            _ => Err(format!("Unknown command: {}", cmd)),
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        let counter = self.counter.read().unwrap();
        counter.to_le_bytes().to_vec()
    }

    fn restore(&self, snapshot: &[u8]) -> Result<(), String> {
        if snapshot.len() != 8 {
            return Err("Invalid snapshot size".to_string());
        }
        let value = i64::from_le_bytes(snapshot.try_into().unwrap());
        *self.counter.write().unwrap() = value;
        Ok(())
    }
}

// ---- additions (not in the seed) ----

impl CounterStateMachine {
    /// A counter at zero.
    pub fn new() -> Self {
        Self {
            counter: RwLock::new(0),
        }
    }

    /// This replica's count, read from the machine itself (for tests: the counter has no
    /// read-only query, so `node.query(b"GET")` goes through the log and the leader).
    pub fn value(&self) -> i64 {
        *self.counter.read().unwrap_or_else(|p| p.into_inner())
    }
}

impl Default for CounterStateMachine {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_the_prelude_apply_means_the_minimal_trait() {
        let sm = CounterStateMachine::new();
        assert_eq!(sm.apply(b"INCREMENT").unwrap(), Bytes::from("1"));
        assert_eq!(sm.apply(b"GET").unwrap(), Bytes::from("1"));
        assert!(sm.apply(b"DECREMENT").is_err());
        let copy = CounterStateMachine::new();
        copy.restore(&sm.snapshot()).unwrap();
        assert_eq!(copy.value(), 1);
        assert!(copy.restore(b"short").is_err());
    }
}
