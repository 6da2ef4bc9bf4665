//! The simulator's replicated state machine: a u64 → u64 register map with client sessions
//! (a retried command with the same `(client, sequence)` is answered from the recorded
//! result, not applied twice).

use std::collections::BTreeMap;

use bytes::{BufMut, Bytes, BytesMut};

use super::linearizability::{Key, KvRet, Value};
use crate::membership::MembershipConfig;
use crate::session::{SessionCheck, SessionTable};
use crate::types::{Entry, EntryPayload, LogId};

/// A write command of the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvCommand {
    /// Set a key.
    Put {
        /// Key.
        key: Key,
        /// Value.
        value: Value,
    },
    /// Compare-and-swap.
    Cas {
        /// Key.
        key: Key,
        /// Expected current value (None = absent).
        expected: Option<Value>,
        /// New value.
        new: Value,
    },
}

impl KvCommand {
    /// Binary encoding: tag byte, then little-endian u64 fields.
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(26);
        match *self {
            KvCommand::Put { key, value } => {
                b.put_u8(0);
                b.put_u64_le(key);
                b.put_u64_le(value);
            }
            KvCommand::Cas { key, expected, new } => {
                b.put_u8(1);
                b.put_u64_le(key);
                b.put_u8(u8::from(expected.is_some()));
                b.put_u64_le(expected.unwrap_or(0));
                b.put_u64_le(new);
            }
        }
        b.freeze()
    }

    /// Decodes [`KvCommand::encode`]'s output; `None` for anything malformed.
    pub fn decode(data: &[u8]) -> Option<Self> {
        let u64_at = |at: usize| {
            data.get(at..at + 8)
                .and_then(|s| s.try_into().ok())
                .map(u64::from_le_bytes)
        };
        match data.first()? {
            0 if data.len() == 17 => Some(KvCommand::Put {
                key: u64_at(1)?,
                value: u64_at(9)?,
            }),
            1 if data.len() == 26 => {
                let has = *data.get(9)? == 1;
                let exp = u64_at(10)?;
                Some(KvCommand::Cas {
                    key: u64_at(1)?,
                    expected: has.then_some(exp),
                    new: u64_at(18)?,
                })
            }
            _ => None,
        }
    }
}

/// State of one replica: data, sessions, and what has been applied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvState {
    /// The registers.
    pub data: BTreeMap<Key, Value>,
    /// Per client: last sequence applied and its result.
    pub sessions: SessionTable<KvRet>,
    /// Last applied entry.
    pub applied: LogId,
    /// Membership as of `applied`.
    pub membership: MembershipConfig,
}

impl KvState {
    /// Applies one committed entry; returns the command's result (None for non-commands or
    /// undecodable commands).
    pub fn apply(&mut self, entry: &Entry) -> Option<KvRet> {
        self.applied = entry.log_id;
        match &entry.payload {
            EntryPayload::Blank => None,
            EntryPayload::Membership(c) => {
                self.membership = c.clone();
                None
            }
            EntryPayload::Command { session, data } => {
                let cmd = KvCommand::decode(data)?;
                if let Some(s) = session {
                    match self.sessions.check(s) {
                        SessionCheck::Apply => {}
                        SessionCheck::Duplicate(ret) => return Some(ret),
                        SessionCheck::Stale { .. } => return None,
                    }
                }
                let ret = self.execute(cmd);
                if let Some(s) = session {
                    self.sessions.record(s, ret.clone(), entry.log_id.index, 16);
                }
                Some(ret)
            }
        }
    }

    fn execute(&mut self, cmd: KvCommand) -> KvRet {
        match cmd {
            // The previous value is part of the answer, so the linearizability check catches a
            // put applied twice.
            KvCommand::Put { key, value } => KvRet::Value(self.data.insert(key, value)),
            KvCommand::Cas { key, expected, new } => {
                if self.data.get(&key).copied() == expected {
                    self.data.insert(key, new);
                    KvRet::Swapped(true)
                } else {
                    KvRet::Swapped(false)
                }
            }
        }
    }

    /// Reads a key.
    pub fn get(&self, key: Key) -> Option<Value> {
        self.data.get(&key).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::ClientSession;

    fn cmd_entry(index: u64, client: u64, seq: u64, cmd: KvCommand) -> Entry {
        Entry {
            log_id: LogId::new(1, index),
            payload: EntryPayload::Command {
                session: Some(ClientSession {
                    client_id: client,
                    sequence: seq,
                }),
                data: cmd.encode(),
            },
        }
    }

    #[test]
    fn encoding_round_trips_and_rejects_garbage() {
        for c in [
            KvCommand::Put { key: 1, value: 2 },
            KvCommand::Cas {
                key: 3,
                expected: None,
                new: 4,
            },
            KvCommand::Cas {
                key: 3,
                expected: Some(9),
                new: 4,
            },
        ] {
            assert_eq!(KvCommand::decode(&c.encode()), Some(c));
        }
        assert_eq!(KvCommand::decode(&[7, 1, 2]), None);
        assert_eq!(KvCommand::decode(&[]), None);
    }

    #[test]
    fn a_retried_command_is_applied_once_and_answered_from_the_session() {
        let mut s = KvState::default();
        let cas = KvCommand::Cas {
            key: 1,
            expected: None,
            new: 5,
        };
        assert_eq!(
            s.apply(&cmd_entry(1, 7, 1, cas)),
            Some(KvRet::Swapped(true))
        );
        // The same command again (a retry): same answer, no second effect.
        assert_eq!(
            s.apply(&cmd_entry(2, 7, 1, cas)),
            Some(KvRet::Swapped(true))
        );
        assert_eq!(s.get(1), Some(5));
        // A different client's identical command is a new command.
        assert_eq!(
            s.apply(&cmd_entry(3, 8, 1, cas)),
            Some(KvRet::Swapped(false))
        );
    }
}
