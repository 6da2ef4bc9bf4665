//! What a node takes from its environment, and nothing else: the monotonic clock (ticks
//! *and* leases), where blocking work runs, and whether the process is stalled.
//!
//! In production the clock is tokio's (the OS monotonic clock), blocking work runs on
//! tokio's blocking pool and nothing stalls a node but the OS. The simulator swaps only
//! this: it runs the same runtime on a paused, single-threaded tokio runtime whose clock it
//! advances, gives each node a clock that drifts, runs blocking work inline (no threads, so
//! a seed replays bit for bit), and stalls whole nodes the way `SIGSTOP` or a long GC pause
//! does. Everything else — the core task, the log writer, the applier, the handler and the
//! stores — is the code production runs.

use std::cell::Cell;
use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::Ordering;
use tokio::time::Instant;

/// A node's monotonic clock: tokio's, running `ppm` parts per million fast (positive) or
/// slow (negative). Production clocks have `ppm == 0`.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    origin: Instant,
    ppm: i32,
}

impl Default for Clock {
    fn default() -> Self {
        Self::drifting(0)
    }
}

impl Clock {
    /// A clock that runs `ppm` parts per million fast (or slow, if negative); values are
    /// clamped to ±100,000 (10 %).
    pub fn drifting(ppm: i32) -> Self {
        Self {
            origin: Instant::now(),
            ppm: ppm.clamp(-100_000, 100_000),
        }
    }

    /// The clock's reading: time since it was created, as this node measures it.
    pub fn elapsed(&self) -> Duration {
        self.local(self.origin.elapsed())
    }

    /// Converts a real duration into this clock's.
    fn local(&self, real: Duration) -> Duration {
        if self.ppm == 0 {
            return real;
        }
        let n = real.as_nanos() * (1_000_000 + self.ppm as i128) as u128 / 1_000_000;
        Duration::from_nanos(u64::try_from(n).unwrap_or(u64::MAX))
    }

    /// Converts a duration on this clock into real time (how long a timer for `local` waits).
    pub fn real(&self, local: Duration) -> Duration {
        if self.ppm == 0 {
            return local;
        }
        let n = local.as_nanos() * 1_000_000 / (1_000_000 + self.ppm as i128) as u128;
        Duration::from_nanos(u64::try_from(n).unwrap_or(u64::MAX)).max(Duration::from_nanos(1))
    }
}

/// Whether a node is running or stalled (a paused process); only the simulator stalls one.
///
/// Built on a `Notify`, which wakes its waiters in the order they came, rather than on a
/// `watch` channel, whose waiters are spread at random over several lists: the order in
/// which a resumed node's tasks run must come from the seed alone.
#[derive(Clone, Debug)]
pub struct StallGate(Option<Arc<GateState>>);

#[derive(Debug, Default)]
struct GateState {
    stalled: std::sync::atomic::AtomicBool,
    resumed: tokio::sync::Notify,
}

/// The simulator's side of a [`StallGate`].
#[derive(Debug)]
pub struct StallSwitch(Arc<GateState>);

impl StallSwitch {
    /// Stalls (`true`) or resumes (`false`) the node; returns whether that changed anything.
    pub fn send(&self, stalled: bool) -> bool {
        let was = self.0.stalled.swap(stalled, Ordering::AcqRel);
        if was && !stalled {
            self.0.resumed.notify_waiters();
        }
        was != stalled
    }
}

impl StallGate {
    /// A gate that never closes (production).
    pub fn open() -> Self {
        Self(None)
    }

    /// A gate controlled by the returned switch: `true` stalls the node.
    pub fn switch() -> (StallSwitch, Self) {
        let state = Arc::new(GateState::default());
        (StallSwitch(state.clone()), Self(Some(state)))
    }

    /// True while the node is stalled.
    pub fn is_stalled(&self) -> bool {
        self.0
            .as_ref()
            .is_some_and(|g| g.stalled.load(Ordering::Acquire))
    }

    /// Returns once the node is not stalled.
    pub async fn passed(&self) {
        let Some(g) = &self.0 else { return };
        loop {
            let resumed = g.resumed.notified();
            tokio::pin!(resumed);
            // Registered before the check, so a resume between the two is not missed.
            resumed.as_mut().enable();
            if !g.stalled.load(Ordering::Acquire) {
                return;
            }
            resumed.await;
        }
    }
}

/// The environment of one node (see the module docs). `Env::default()` is production.
#[derive(Clone, Default)]
pub struct Env {
    /// The node's monotonic clock, for ticks and leases alike.
    pub clock: Clock,
    /// The simulator's stall switch.
    pub stall: Option<StallGate>,
    /// How long one log `sync` takes, when the log writer is a task of a simulated runtime
    /// (drawn per sync); `None` in production, where the writer is a thread.
    pub sync_latency: Option<Arc<dyn Fn() -> Duration + Send + Sync>>,
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Env")
            .field("clock", &self.clock)
            .field("stall", &self.stall)
            .field("simulated_log_writer", &self.sync_latency.is_some())
            .finish()
    }
}

impl Env {
    /// The gate the node's workers pass before each unit of work.
    pub(crate) fn gate(&self) -> StallGate {
        self.stall.clone().unwrap_or_else(StallGate::open)
    }
}

/// A hasher without per-process randomness, for maps whose iteration order reaches the
/// outside (a simulated run must replay bit for bit).
pub(crate) type FixedHasher =
    std::hash::BuildHasherDefault<std::collections::hash_map::DefaultHasher>;

thread_local! {
    static SIMULATED: Cell<bool> = const { Cell::new(false) };
    static PLANTED: Cell<RuntimeBugs> = const { Cell::new(RuntimeBugs::NONE) };
}

/// Marks the current thread as running a simulation (or not): blocking work then runs
/// inline instead of on tokio's blocking pool, so a run does not depend on thread
/// scheduling. Set by the simulator on its own thread; production never calls it.
pub fn set_simulated(on: bool) {
    SIMULATED.with(|s| s.set(on));
}

/// True on a thread that runs a simulation.
pub fn is_simulated() -> bool {
    SIMULATED.with(|s| s.get())
}

/// Runs blocking work (file I/O, a snapshot written out): on tokio's blocking pool, or
/// inline on a simulated thread.
pub async fn blocking<R: Send + 'static>(
    f: impl FnOnce() -> R + Send + 'static,
) -> Result<R, BlockingFailed> {
    if is_simulated() {
        return Ok(f());
    }
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| BlockingFailed(e.to_string()))
}

/// Blocking work panicked or was cancelled.
#[derive(Debug, thiserror::Error)]
#[error("blocking task failed: {0}")]
pub struct BlockingFailed(pub String);

/// Deliberately broken runtime, handler and storage behaviours, planted only to prove the
/// simulator's checkers find them (`cargo xtask sim --bug NAME`). They are per thread and
/// off unless a simulation switches them on ([`plant`]); release code reads them as
/// constants `false` unless the `testing` feature is on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuntimeBugs {
    /// Recovery skips the session bookkeeping of entries a self-persisting machine already
    /// holds: a retried command is applied again after a restart.
    pub sessions_lost_on_restart: bool,
    /// The lease counts processed ticks: missed ticks are dropped after a stall, and a
    /// lease is anchored at the time it is published rather than the time its
    /// confirming round was sent.
    pub lease_from_processed_ticks: bool,
    /// A snapshot install purges the log before the snapshot record is durable.
    pub purge_before_snapshot_meta: bool,
    /// The file store's recovery takes what it finds in the page cache as durable, without
    /// an fsync.
    pub recovery_trusts_unsynced: bool,
    /// The log writer reports a batch durable before its sync.
    pub durable_before_sync: bool,
    /// The lease fast path serves reads before the lease's commit index is applied.
    pub lease_read_before_apply: bool,
}

impl RuntimeBugs {
    /// No bug planted.
    pub const NONE: RuntimeBugs = RuntimeBugs {
        sessions_lost_on_restart: false,
        lease_from_processed_ticks: false,
        purge_before_snapshot_meta: false,
        recovery_trusts_unsynced: false,
        durable_before_sync: false,
        lease_read_before_apply: false,
    };
}

/// Plants `bugs` on this thread (simulator only; see [`RuntimeBugs`]).
#[cfg(any(test, feature = "testing"))]
pub fn plant(bugs: RuntimeBugs) {
    PLANTED.with(|p| p.set(bugs));
}

/// The bugs planted on this thread; always none without the `testing` feature.
#[inline]
pub fn planted() -> RuntimeBugs {
    #[cfg(any(test, feature = "testing"))]
    {
        PLANTED.with(|p| p.get())
    }
    #[cfg(not(any(test, feature = "testing")))]
    {
        let _ = &PLANTED;
        RuntimeBugs::NONE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_drifting_clock_runs_fast_or_slow_by_its_rate() {
        let fast = Clock::drifting(50_000);
        let slow = Clock::drifting(-50_000);
        let exact = Clock::default();
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(exact.elapsed(), Duration::from_secs(10));
        assert_eq!(fast.elapsed(), Duration::from_millis(10_500));
        assert_eq!(slow.elapsed(), Duration::from_millis(9_500));
        let wait = fast.real(Duration::from_millis(105));
        assert_eq!(wait, Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_gate_holds_work_until_it_is_released() {
        let (switch, gate) = StallGate::switch();
        assert!(switch.send(true));
        assert!(!switch.send(true), "already stalled");
        assert!(gate.is_stalled());
        let g = gate.clone();
        let waiter = tokio::spawn(async move { g.passed().await });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!waiter.is_finished());
        assert!(switch.send(false));
        waiter.await.unwrap();
        StallGate::open().passed().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_released_gate_resumes_its_waiters_in_the_order_they_came() {
        let (switch, gate) = StallGate::switch();
        switch.send(true);
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let waiters: Vec<_> = (0..20)
            .map(|i| {
                let (g, order) = (gate.clone(), order.clone());
                tokio::spawn(async move {
                    g.passed().await;
                    order.lock().unwrap().push(i);
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(1)).await;
        switch.send(false);
        for w in waiters {
            w.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), (0..20).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn blocking_work_runs_inline_on_a_simulated_thread() {
        set_simulated(true);
        let here = std::thread::current().id();
        let there = blocking(move || std::thread::current().id()).await.unwrap();
        assert_eq!(here, there);
        set_simulated(false);
        assert!(!is_simulated());
    }
}
