//! Sessions for a client with many proposals in flight: a session's commands must apply in
//! order (the state machine keeps only its last sequence, thesis §6.3), so each proposal
//! in flight borrows a session of its own from a [`SessionPool`] and gives it back with
//! its sequence used up, whatever the outcome.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use tokio::sync::{Semaphore, SemaphorePermit};

use crate::types::ClientSession;

/// A random, non-zero client id (time, process id and a counter, hashed with a random
/// key): ids of different clients must not collide.
pub fn random_client_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    h.write_u128(now);
    h.write_u32(std::process::id());
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.finish().max(1)
}

/// A bounded pool of client sessions (see the module docs).
#[derive(Debug)]
pub struct SessionPool {
    idle: Mutex<Vec<ClientSession>>,
    created: AtomicU64,
    slots: Semaphore,
    new_id: fn() -> u64,
}

impl SessionPool {
    /// A pool of at most `max` sessions; the first has client id `first`, later ones an id
    /// from `new_id` (which should be random: ids of different clients must not collide).
    pub fn new(first: u64, max: usize, new_id: fn() -> u64) -> Self {
        Self {
            idle: Mutex::new(vec![ClientSession {
                client_id: first,
                sequence: 0,
            }]),
            created: AtomicU64::new(1),
            slots: Semaphore::new(max.clamp(1, Semaphore::MAX_PERMITS)),
            new_id,
        }
    }

    fn idle(&self) -> MutexGuard<'_, Vec<ClientSession>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for a free session and returns it with its next sequence number. `None` if
    /// the pool was closed.
    pub async fn take(&self) -> Option<PooledSession<'_>> {
        let permit = self.slots.acquire().await.ok()?;
        let mut session = self.idle().pop().unwrap_or_else(|| {
            self.created.fetch_add(1, Ordering::Relaxed);
            ClientSession {
                client_id: (self.new_id)(),
                sequence: 0,
            }
        });
        session.sequence += 1;
        Some(PooledSession {
            pool: self,
            session,
            _permit: permit,
        })
    }

    /// Sessions created so far: one per proposal ever in flight at the same time.
    pub fn created(&self) -> usize {
        self.created.load(Ordering::Relaxed) as usize
    }

    /// Refuses every later [`SessionPool::take`].
    pub fn close(&self) {
        self.slots.close();
    }
}

/// A session borrowed from a [`SessionPool`]; returned (its sequence used up) when dropped.
#[derive(Debug)]
pub struct PooledSession<'a> {
    pool: &'a SessionPool,
    session: ClientSession,
    _permit: SemaphorePermit<'a>,
}

impl PooledSession<'_> {
    /// The session and the sequence number of this proposal: use it for every retry of it.
    pub fn session(&self) -> ClientSession {
        self.session
    }
}

impl Drop for PooledSession<'_> {
    fn drop(&mut self) {
        // The sequence is used up whatever the outcome: a retry of it after a give-up
        // would be a new command.
        self.pool.idle().push(self.session);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> u64 {
        static N: AtomicU64 = AtomicU64::new(100);
        N.fetch_add(1, Ordering::Relaxed)
    }

    #[tokio::test]
    async fn concurrent_proposals_get_distinct_sessions_and_sequences_advance_thesis_6_3() {
        let pool = SessionPool::new(7, 2, ids);
        let a = pool.take().await.unwrap();
        let b = pool.take().await.unwrap();
        assert_eq!(
            a.session(),
            ClientSession {
                client_id: 7,
                sequence: 1
            }
        );
        assert_ne!(a.session().client_id, b.session().client_id);
        assert_eq!(pool.created(), 2);
        drop(a);
        let again = pool.take().await.unwrap();
        assert_eq!(
            again.session(),
            ClientSession {
                client_id: 7,
                sequence: 2
            }
        );
        drop((b, again));
        pool.close();
        assert!(pool.take().await.is_none());
    }

    #[tokio::test]
    async fn a_third_proposal_waits_for_a_session_when_the_pool_is_full() {
        let pool = std::sync::Arc::new(SessionPool::new(1, 1, ids));
        let held = pool.take().await.unwrap();
        let p = pool.clone();
        let waiting = tokio::spawn(async move { p.take().await.map(|s| s.session()) });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(held);
        assert_eq!(
            waiting.await.unwrap(),
            Some(ClientSession {
                client_id: 1,
                sequence: 2
            })
        );
    }
}
