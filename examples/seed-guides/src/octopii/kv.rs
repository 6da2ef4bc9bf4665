//! Octopii guide, "Implementation Guide" steps 1 and 2 with the `apply`, `snapshot` and
//! `restore` examples of "Method Responsibilities": `MyStateMachine`, a `HashMap` with
//! `SET key value` and `GET key`, and the guide's own unit tests (`test_determinism`,
//! `test_snapshot_restore`).
//!
//! Adapted in the imports only (`use lockstep::prelude::*` in place of
//! `use octopii::StateMachineTrait`), except:
//! - `snapshot` and `restore` call [`super::codec`] where the seed calls `rkyv` (not a
//!   dependency here); the rest of their bodies is the seed's;
//! - items are `pub`, with doc comments, so the tests and binaries can use them;
//! - `test_determinism` names its element type (`Vec<&[u8]>`): the seed's
//!   `vec![b"SET a 1", b"SET b 2", b"GET a"]` mixes `&[u8; 7]` and `&[u8; 5]` and does not
//!   compile.
//!
//! The machine has no read-only `query`, as in the seed: on a lockstep node,
//! `node.query(b"GET a")` then goes through the log (leader only) and is answered by
//! `apply`, so a `SET` sent as a query is applied on every replica alike, never on one.

use std::collections::HashMap;
use std::sync::RwLock;

use bytes::Bytes;
use lockstep::prelude::*;

use super::codec;

/// The seed's key-value machine.
pub struct MyStateMachine {
    // Use RwLock for thread-safe access
    data: RwLock<HashMap<String, String>>,
    // Add any other state you need
}

impl MyStateMachine {
    /// An empty map.
    pub fn new() -> Self {
        Self {
            data: RwLock::new(HashMap::new()),
        }
    }
}

impl Default for MyStateMachine {
    fn default() -> Self {
        Self::new()
    }
}

impl StateMachineTrait for MyStateMachine {
    fn apply(&self, command: &[u8]) -> Result<Bytes, String> {
        let cmd_str =
            String::from_utf8(command.to_vec()).map_err(|e| format!("Invalid UTF-8: {}", e))?;

        let parts: Vec<&str> = cmd_str.split_whitespace().collect();

        match parts.as_slice() {
            ["SET", key, value] => {
                let mut data = self.data.write().unwrap();
                data.insert(key.to_string(), value.to_string());
                Ok(Bytes::from("OK"))
            }
            ["GET", key] => {
                let data = self.data.read().unwrap();
                match data.get(*key) {
                    Some(value) => Ok(Bytes::from(value.clone())),
                    None => Ok(Bytes::from("NOT_FOUND")),
                }
            }
            _ => Err(format!("Unknown command: {}", cmd_str)),
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        let data = self.data.read().unwrap();
        // Use your preferred serialization format
        // (the seed: `rkyv::to_bytes::<_, 4096>(&*data).map(..).unwrap_or_else(|_| vec![])`)
        codec::to_bytes(&data)
    }

    fn restore(&self, snapshot: &[u8]) -> Result<(), String> {
        // Never taken on a lockstep node: `snapshot` above never returns empty bytes (an
        // empty map is its 8-byte count). A format whose empty state IS empty bytes must
        // clear the map here instead, or restoring an empty snapshot keeps the old state.
        if snapshot.is_empty() {
            return Ok(());
        }

        // (the seed: `rkyv::from_bytes::<HashMap<String, String>>(snapshot)`)
        let data =
            codec::from_bytes(snapshot).map_err(|e| format!("Failed to deserialize: {:?}", e))?;

        *self.data.write().unwrap() = data;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The seed's code: `clippy::useless_vec` would rather have an array.
    #[allow(clippy::useless_vec)]
    #[test]
    fn test_determinism() {
        let sm1 = MyStateMachine::new();
        let sm2 = MyStateMachine::new();

        let commands: Vec<&[u8]> = vec![b"SET a 1", b"SET b 2", b"GET a"];

        for cmd in commands {
            let result1 = sm1.apply(cmd).unwrap();
            let result2 = sm2.apply(cmd).unwrap();
            assert_eq!(result1, result2, "Non-deterministic behavior!");
        }
    }

    #[test]
    fn test_snapshot_restore() {
        let sm1 = MyStateMachine::new();

        // Apply some commands
        sm1.apply(b"SET key1 value1").unwrap();
        sm1.apply(b"SET key2 value2").unwrap();

        // Take snapshot
        let snapshot = sm1.snapshot();

        // Create new state machine and restore
        let sm2 = MyStateMachine::new();
        sm2.restore(&snapshot).unwrap();

        // Verify state matches
        assert_eq!(
            sm1.apply(b"GET key1").unwrap(),
            sm2.apply(b"GET key1").unwrap()
        );
    }
}
