//! The seed document's `CounterStateMachine`, unchanged but for its imports.

use bytes::Bytes;
use lockstep::StateMachineTrait;
use std::sync::RwLock;

/// A replicated counter: `INCREMENT` adds one, `GET` reads it.
pub struct CounterStateMachine {
    /// The count.
    pub counter: RwLock<i64>,
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

impl CounterStateMachine {
    /// A counter at zero.
    pub fn new() -> Self {
        Self {
            counter: RwLock::new(0),
        }
    }
}

impl Default for CounterStateMachine {
    fn default() -> Self {
        Self::new()
    }
}
