//! Settings of the runtime driver (the protocol's own settings are in [`crate::RaftConfig`]).

use std::time::Duration;

use crate::config::ConfigError;

/// How the runtime drives the protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// Length of one protocol tick. Election timeouts and heartbeats are counted in ticks.
    pub tick: Duration,
    /// How long a client request may wait before it fails with [`crate::NodeError::Timeout`].
    pub request_timeout: Duration,
    /// Requests in flight on one node before new ones are refused with
    /// [`crate::NodeError::Overloaded`] (back-pressure).
    pub max_pending_requests: usize,
    /// Proposals taken into one protocol batch at most.
    pub max_proposal_batch: usize,
    /// Largest command (or query) accepted, in bytes; larger ones are refused with
    /// [`crate::NodeError::TooLarge`] before they reach the log, so one oversized entry
    /// can never stop the nodes that would have to store it.
    pub max_command_bytes: usize,
    /// Bytes of messages one peer may have waiting in this node's inbox; a transport
    /// delivering with [`crate::runtime::NodeInbox::deliver_bounded`] waits (and stops
    /// reading that peer) while they are spent. A larger message goes through alone.
    pub peer_inbox_bytes: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            tick: Duration::from_millis(10),
            request_timeout: Duration::from_secs(10),
            max_pending_requests: 100_000,
            max_proposal_batch: 4096,
            max_command_bytes: 16 << 20,
            peer_inbox_bytes: 64 << 20,
        }
    }
}

impl RuntimeConfig {
    /// Checks every field; the error names the field and the accepted range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |key, value: String, expected: &str| {
            Err(ConfigError {
                key,
                value,
                expected: expected.into(),
            })
        };
        if self.tick < Duration::from_millis(1) || self.tick > Duration::from_secs(10) {
            return err("tick", format!("{:?}", self.tick), "between 1 ms and 10 s");
        }
        if self.request_timeout.is_zero() {
            return err("request_timeout", "0".into(), "a positive duration");
        }
        if self.max_pending_requests == 0 {
            return err("max_pending_requests", "0".into(), "at least 1");
        }
        if self.max_command_bytes == 0 || self.max_command_bytes > 256 << 20 {
            return err(
                "max_command_bytes",
                self.max_command_bytes.to_string(),
                "between 1 and 268435456 (256 MiB)",
            );
        }
        if self.peer_inbox_bytes < 64 << 10 || self.peer_inbox_bytes > 1 << 30 {
            return err(
                "peer_inbox_bytes",
                self.peer_inbox_bytes.to_string(),
                "between 65536 (64 KiB) and 1073741824 (1 GiB)",
            );
        }
        if self.max_proposal_batch == 0 {
            return err("max_proposal_batch", "0".into(), "at least 1");
        }
        Ok(())
    }
}
