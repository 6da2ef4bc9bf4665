//! Octopii guide, "Best Practices" 2 and 3 (error handling, command validation): the two
//! `apply` fragments joined into one machine, `ValidatedStateMachine`, with `SET`, `GET`
//! and `DELETE`. The fragments are the seed's; what they leave out (`MAX_COMMAND_SIZE`,
//! the `// ...` parts) is filled in, and snapshots use [`super::codec`].
//!
//! lockstep also bounds commands before they reach the log: a command larger than
//! `runtime.max_command_bytes` (16 MiB by default) fails with `NodeError::TooLarge` and is
//! never proposed. The check here is still useful for a smaller, application-level bound,
//! and it is deterministic (it depends only on the command).

use std::collections::HashMap;
use std::sync::RwLock;

use bytes::Bytes;
use lockstep::prelude::*;

use super::codec;

/// The largest command this machine accepts (an addition: the seed uses the name only).
pub const MAX_COMMAND_SIZE: usize = 64 * 1024;

/// A key-value machine that validates every command before it touches the state.
#[derive(Default)]
pub struct ValidatedStateMachine {
    data: RwLock<HashMap<String, String>>, // ✓ Thread-safe
}

impl StateMachineTrait for ValidatedStateMachine {
    fn apply(&self, command: &[u8]) -> Result<Bytes, String> {
        // Validate size
        if command.len() > MAX_COMMAND_SIZE {
            return Err(format!("Command too large: {} bytes", command.len()));
        }

        let cmd_str = String::from_utf8(command.to_vec())
            .map_err(|e| format!("Invalid UTF-8 in command: {}", e))?; // ✓ Descriptive

        if cmd_str.is_empty() {
            return Err("Empty command not allowed".to_string()); // ✓ Clear error
        }

        // Validate format
        let parts: Vec<&str> = cmd_str.split_whitespace().collect();
        if parts.is_empty() {
            return Err("Empty command".to_string());
        }

        // Validate command type
        match parts[0] {
            "SET" | "GET" | "DELETE" => {} // Valid
            _ => return Err(format!("Unknown command: {}", parts[0])),
        }

        // ... process command
        match parts.as_slice() {
            ["SET", key, value] => {
                self.data
                    .write()
                    .unwrap()
                    .insert(key.to_string(), value.to_string());
                Ok(Bytes::from("OK"))
            }
            ["GET", key] => Ok(Bytes::from(
                self.data
                    .read()
                    .unwrap()
                    .get(*key)
                    .cloned()
                    .unwrap_or_else(|| "NOT_FOUND".into()),
            )),
            ["DELETE", key] => Ok(Bytes::from(
                self.data
                    .write()
                    .unwrap()
                    .remove(*key)
                    .unwrap_or_else(|| "NOT_FOUND".into()),
            )),
            _ => Err(format!("Wrong number of arguments: {}", cmd_str)),
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        codec::to_bytes(&self.data.read().unwrap())
    }

    fn restore(&self, snapshot: &[u8]) -> Result<(), String> {
        let data = if snapshot.is_empty() {
            HashMap::new()
        } else {
            codec::from_bytes(snapshot)?
        };
        *self.data.write().unwrap() = data;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_invalid_command_is_an_error_answer_and_changes_nothing() {
        let sm = ValidatedStateMachine::default();
        assert_eq!(sm.apply(b"SET a 1").unwrap(), Bytes::from("OK"));
        let before = sm.snapshot();
        for bad in [
            &b""[..],
            b"   ",
            b"\xff\xfe",
            b"PUT a 1",
            b"SET a",
            &vec![b'x'; MAX_COMMAND_SIZE + 1][..],
        ] {
            assert!(sm.apply(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(sm.snapshot(), before);
        assert_eq!(sm.apply(b"DELETE a").unwrap(), Bytes::from("1"));
        assert_eq!(sm.apply(b"GET a").unwrap(), Bytes::from("NOT_FOUND"));
    }
}
