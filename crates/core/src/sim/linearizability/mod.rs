//! Linearizability checking for a key-value register model.
//!
//! The model is a map from [`Key`] to [`Value`] where every key starts absent, with four
//! operations ([`KvOp`]): put, delete, get and compare-and-swap. A put or delete may report
//! the value it replaced ([`KvRet::Value`]); the checker then holds it to that answer, so a
//! command applied twice (its second apply answers the value of its first) is caught. Every operation touches exactly one
//! key, so the model is *P-compositional*: a history is linearizable if and only if, for every
//! key, the sub-history of the operations on that key is linearizable. The checker therefore
//! partitions the history by key and checks each partition on its own, which keeps the search
//! small.
//!
//! Each partition is checked with the Wing & Gong search as improved by Lowe (often called
//! "WGL"): the call and return events of the operations are put in one list ordered by time;
//! a depth-first search walks the list, tentatively linearizing ("lifting") any operation whose
//! call it meets if the model accepts it, and backtracking when it meets the return of an
//! operation it has not linearized yet. Visited configurations (the set of linearized operations
//! as a bitset, together with the model state) are memoized, so no configuration is explored
//! twice. The search is bounded by a step budget per key; running out gives
//! [`LinearizabilityError::Inconclusive`] rather than a verdict.
//!
//! # Timing conventions
//!
//! * An operation with `complete: Some(t)` must take effect at some instant in `[invoke, t]`.
//! * When one operation completes at time `t` and another is invoked at the same time `t`, the
//!   two are treated as **concurrent** (call events sort before return events at equal
//!   timestamps). This is the conservative choice: it never reports a violation that depends on
//!   how two events with the same timestamp were ordered.
//! * An operation with `complete: None` (unknown outcome, e.g. a timeout) may take effect at any
//!   instant after its invocation, or never: it behaves as if its return came at +infinity, and
//!   the search succeeds as soon as every *completed* operation has been linearized. Its return
//!   value, if any, is ignored. A get with an unknown outcome constrains nothing and is dropped.
//!
//! Operations with an unknown outcome would multiply the search space (each could be placed
//! anywhere after its invocation, or nowhere), so the search only places them where they are
//! needed; see the private `search` function for the reductions used and why they are sound.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

/// A key in the model.
pub type Key = u64;
/// A value in the model.
pub type Value = u64;

/// The search budget per key used by [`check_kv_history`].
const DEFAULT_MAX_STEPS_PER_KEY: u64 = 5_000_000;

/// An operation a client invoked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvOp {
    /// Set `key` to `value`.
    Put {
        /// The key written.
        key: Key,
        /// The value written.
        value: Value,
    },
    /// Remove `key`.
    Delete {
        /// The key removed.
        key: Key,
    },
    /// Read `key`.
    Get {
        /// The key read.
        key: Key,
    },
    /// If `key` currently holds `expected` (None = absent), set it to `new`.
    Cas {
        /// The key compared and possibly written.
        key: Key,
        /// The value the key must hold for the swap to happen (`None` = absent).
        expected: Option<Value>,
        /// The value written if the swap happens.
        new: Value,
    },
}

/// What the system answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvRet {
    /// A put or delete succeeded (without saying what it replaced).
    Ok,
    /// A get returned this value, or a put or delete replaced it (None = absent).
    Value(Option<Value>),
    /// A compare-and-swap answered whether it swapped.
    Swapped(bool),
}

/// One operation in a client history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryOp {
    /// Which client issued it (a client has at most one operation outstanding).
    pub client: u64,
    /// Time of invocation.
    pub invoke: u64,
    /// Time of the response; `None` if the outcome is unknown (timed out): the operation may
    /// have taken effect at any point after `invoke`, or never.
    pub complete: Option<u64>,
    /// The operation.
    pub op: KvOp,
    /// The answer; must be `Some` when `complete` is `Some`, ignored otherwise.
    pub ret: Option<KvRet>,
}

/// Why a history is not linearizable (or could not be checked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinearizabilityError {
    /// No linearization exists for the operations on this key.
    NotLinearizable {
        /// The key whose sub-history has no linearization.
        key: Key,
        /// The operations on that key, sorted by invocation time, for the report.
        ops: Vec<HistoryOp>,
    },
    /// The search for this key exceeded the step budget, so no verdict.
    Inconclusive {
        /// The key whose search was abandoned.
        key: Key,
        /// How many search steps were taken before giving up.
        steps: u64,
    },
    /// A completed operation has no return value, or its return kind does not fit its op, or
    /// complete < invoke.
    Malformed {
        /// The position of the offending operation in the history.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
}

impl fmt::Display for LinearizabilityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinearizabilityError::NotLinearizable { key, ops } => {
                write!(
                    f,
                    "history is not linearizable: no valid order exists for the {} operation(s) on key {key}:",
                    ops.len()
                )?;
                for op in ops {
                    write!(f, "\n  {}", OpLine(op))?;
                }
                Ok(())
            }
            LinearizabilityError::Inconclusive { key, steps } => write!(
                f,
                "linearizability check inconclusive for key {key}:\n  \
                 the search gave up after {steps} steps without a verdict"
            ),
            LinearizabilityError::Malformed { index, reason } => {
                write!(f, "malformed history:\n  operation #{index}: {reason}")
            }
        }
    }
}

impl std::error::Error for LinearizabilityError {}

/// Formats one history operation on a single line for error reports.
struct OpLine<'a>(&'a HistoryOp);

impl fmt::Display for OpLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = self.0;
        write!(f, "client {} [{}, ", h.client, h.invoke)?;
        match h.complete {
            Some(t) => write!(f, "{t}] ")?,
            None => write!(f, "?] ")?,
        }
        match &h.op {
            KvOp::Put { key, value } => write!(f, "put(key {key}, {value})")?,
            KvOp::Delete { key } => write!(f, "delete(key {key})")?,
            KvOp::Get { key } => write!(f, "get(key {key})")?,
            KvOp::Cas { key, expected, new } => {
                write!(f, "cas(key {key}, expected ")?;
                write_value(f, *expected)?;
                write!(f, ", new {new})")?;
            }
        }
        write!(f, " -> ")?;
        match (h.complete, &h.ret) {
            (None, _) => write!(f, "unknown (timed out)"),
            (Some(_), None) => write!(f, "no answer"),
            (Some(_), Some(KvRet::Ok)) => write!(f, "ok"),
            (Some(_), Some(KvRet::Value(v))) => write_value(f, *v),
            (Some(_), Some(KvRet::Swapped(true))) => write!(f, "swapped"),
            (Some(_), Some(KvRet::Swapped(false))) => write!(f, "not swapped"),
        }
    }
}

/// Writes a possibly-absent value.
fn write_value(f: &mut fmt::Formatter<'_>, value: Option<Value>) -> fmt::Result {
    match value {
        Some(v) => write!(f, "{v}"),
        None => write!(f, "absent"),
    }
}

/// Checks a whole history; every key starts absent.
///
/// Equivalent to [`check_kv_history_with_budget`] with a budget of 5,000,000 search steps per
/// key. Keys are checked in increasing order, and the first failing key is reported.
pub fn check_kv_history(history: &[HistoryOp]) -> Result<(), LinearizabilityError> {
    check_kv_history_with_budget(history, DEFAULT_MAX_STEPS_PER_KEY)
}

/// Same with an explicit search budget per key (number of search steps); the default used by
/// `check_kv_history` is 5_000_000.
///
/// The whole history is first validated (see [`LinearizabilityError::Malformed`]); then each
/// key's sub-history is searched, in increasing key order, and the first key that is not
/// linearizable, or whose search exceeds `max_steps_per_key` steps, is reported.
pub fn check_kv_history_with_budget(
    history: &[HistoryOp],
    max_steps_per_key: u64,
) -> Result<(), LinearizabilityError> {
    validate(history)?;

    let mut by_key: BTreeMap<Key, Vec<usize>> = BTreeMap::new();
    for (index, h) in history.iter().enumerate() {
        by_key.entry(op_key(&h.op)).or_default().push(index);
    }

    for (key, indices) in by_key {
        let ops: Vec<KeyOp> = indices
            .iter()
            .filter_map(|&i| history.get(i).and_then(KeyOp::from_history))
            .collect();
        match search(&ops, max_steps_per_key) {
            Outcome::Linearizable => {}
            Outcome::NotLinearizable => {
                let mut ops: Vec<HistoryOp> = indices
                    .iter()
                    .filter_map(|&i| history.get(i).cloned())
                    .collect();
                ops.sort_by_key(|o| (o.invoke, o.complete.is_none(), o.complete));
                return Err(LinearizabilityError::NotLinearizable { key, ops });
            }
            Outcome::Inconclusive(steps) => {
                return Err(LinearizabilityError::Inconclusive { key, steps });
            }
        }
    }
    Ok(())
}

/// The key an operation touches.
fn op_key(op: &KvOp) -> Key {
    match op {
        KvOp::Put { key, .. }
        | KvOp::Delete { key }
        | KvOp::Get { key }
        | KvOp::Cas { key, .. } => *key,
    }
}

/// Rejects histories whose completed operations are inconsistent on their own.
fn validate(history: &[HistoryOp]) -> Result<(), LinearizabilityError> {
    for (index, h) in history.iter().enumerate() {
        let Some(complete) = h.complete else {
            continue;
        };
        let malformed = |reason: String| LinearizabilityError::Malformed { index, reason };
        if complete < h.invoke {
            return Err(malformed(format!(
                "completes at {complete}, before it was invoked at {}",
                h.invoke
            )));
        }
        match (&h.op, &h.ret) {
            (_, None) => {
                return Err(malformed(format!(
                    "completed at {complete} but has no return value"
                )))
            }
            (KvOp::Put { .. } | KvOp::Delete { .. }, Some(KvRet::Ok | KvRet::Value(_)))
            | (KvOp::Get { .. }, Some(KvRet::Value(_)))
            | (KvOp::Cas { .. }, Some(KvRet::Swapped(_))) => {}
            (op, Some(ret)) => {
                return Err(malformed(format!(
                    "return value {ret:?} does not fit operation {op:?}"
                )))
            }
        }
    }
    Ok(())
}

/// The effect of one operation on its key, with its answer folded in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Effect {
    /// A put (`Some`) or delete (`None`) that did not report what it replaced, or whose
    /// outcome is unknown: always applies.
    Write(Option<Value>),
    /// A completed put or delete that replaced `previous` with `new` (`None` = absent).
    Swap {
        previous: Option<Value>,
        new: Option<Value>,
    },
    /// A completed get that returned this value.
    Read(Option<Value>),
    /// A completed compare-and-swap that swapped.
    CasSwapped { expected: Option<Value>, new: Value },
    /// A completed compare-and-swap that did not swap.
    CasUnchanged { expected: Option<Value> },
    /// A compare-and-swap with an unknown outcome.
    CasUnknown { expected: Option<Value>, new: Value },
}

impl Effect {
    /// The state after applying this effect to `state`, or `None` if the answer is not what
    /// the model would give in `state`.
    fn apply(self, state: Option<Value>) -> Option<Option<Value>> {
        match self {
            Effect::Write(value) => Some(value),
            Effect::Swap { previous, new } => (state == previous).then_some(new),
            Effect::Read(value) => (state == value).then_some(state),
            Effect::CasSwapped { expected, new } | Effect::CasUnknown { expected, new } => {
                (state == expected).then_some(Some(new))
            }
            Effect::CasUnchanged { expected } => (state != expected).then_some(state),
        }
    }
}

/// One operation of a single key's sub-history, ready for the search.
#[derive(Debug, Clone, Copy)]
struct KeyOp {
    invoke: u64,
    /// `None`: unknown outcome, optional in the linearization.
    complete: Option<u64>,
    effect: Effect,
}

impl KeyOp {
    /// Converts a validated history operation; `None` for operations that constrain nothing
    /// (gets with an unknown outcome).
    fn from_history(h: &HistoryOp) -> Option<KeyOp> {
        let effect = match (&h.op, h.complete, &h.ret) {
            (KvOp::Put { value, .. }, Some(_), Some(KvRet::Value(previous))) => Effect::Swap {
                previous: *previous,
                new: Some(*value),
            },
            (KvOp::Delete { .. }, Some(_), Some(KvRet::Value(previous))) => Effect::Swap {
                previous: *previous,
                new: None,
            },
            (KvOp::Put { value, .. }, _, _) => Effect::Write(Some(*value)),
            (KvOp::Delete { .. }, _, _) => Effect::Write(None),
            (KvOp::Get { .. }, None, _) => return None,
            (KvOp::Get { .. }, Some(_), Some(KvRet::Value(v))) => Effect::Read(*v),
            (KvOp::Cas { expected, new, .. }, None, _) => Effect::CasUnknown {
                expected: *expected,
                new: *new,
            },
            (KvOp::Cas { expected, new, .. }, Some(_), Some(KvRet::Swapped(true))) => {
                Effect::CasSwapped {
                    expected: *expected,
                    new: *new,
                }
            }
            (KvOp::Cas { expected, .. }, Some(_), Some(KvRet::Swapped(false))) => {
                Effect::CasUnchanged {
                    expected: *expected,
                }
            }
            // Unreachable after validation; treat as constraining nothing rather than panic.
            _ => return None,
        };
        Some(KeyOp {
            invoke: h.invoke,
            complete: h.complete,
            effect,
        })
    }
}

/// The verdict of the search for one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Linearizable,
    NotLinearizable,
    Inconclusive(u64),
}

/// Removes `node` from the doubly linked list, leaving its own links intact so that
/// [`relink`] can put it back.
fn unlink(next: &mut [usize], prev: &mut [usize], node: usize) {
    let (p, n) = (prev[node], next[node]);
    next[p] = n;
    prev[n] = p;
}

/// Puts back a node removed by [`unlink`]; removals must be undone in reverse order.
fn relink(next: &mut [usize], prev: &mut [usize], node: usize) {
    let (p, n) = (prev[node], next[node]);
    next[p] = node;
    prev[n] = node;
}

/// Whether bit `i` is set in `bits`.
fn bit_is_set(bits: &[u64], i: usize) -> bool {
    bits.get(i / 64)
        .is_some_and(|w| w & (1u64 << (i % 64)) != 0)
}

/// Sets or clears bit `i` of `bits`.
fn set_bit(bits: &mut [u64], i: usize, value: bool) {
    if let Some(w) = bits.get_mut(i / 64) {
        if value {
            *w |= 1u64 << (i % 64);
        } else {
            *w &= !(1u64 << (i % 64));
        }
    }
}

/// The part of a search configuration that concerns operations with an unknown outcome.
///
/// `block_start` is `None` when the last linearized operation was a completed one, and
/// `Some(state)` while a run ("block") of optional operations is pending, holding the state
/// before the block.
#[derive(Debug, Clone, PartialEq, Eq)]
struct OptionalPart {
    linearized: Vec<u64>,
    block_start: Option<Option<Value>>,
}

impl OptionalPart {
    /// Whether every completion of a configuration with this part is also a completion of one
    /// with `other` in place of it (same completed ops and state assumed).
    ///
    /// Fewer linearized optional operations is never worse (the others can still be used later
    /// or never), and no pending block is never worse than a pending one (a block only adds a
    /// constraint on the next completed operation).
    fn dominates(&self, other: &OptionalPart) -> bool {
        (self.block_start.is_none() || self.block_start == other.block_start)
            && self
                .linearized
                .iter()
                .zip(&other.linearized)
                .all(|(mine, theirs)| mine & !theirs == 0)
    }
}

/// Configurations already reached by the search, with dominance on the optional part.
///
/// A configuration is (linearized completed ops, model state, [`OptionalPart`]). It is pruned
/// when a reached configuration has the same completed ops and state and an optional part that
/// dominates its own. With no optional operations this is the plain WGL memoization.
#[derive(Default)]
struct Visited {
    /// (completed-op bitset, state) -> antichain of the optional parts reached with it.
    reached: HashMap<(Vec<u64>, Option<Value>), Vec<OptionalPart>>,
}

impl Visited {
    /// Records a configuration; returns `false` if it (or a dominating one) was reached before.
    fn insert(&mut self, required: &[u64], state: Option<Value>, optional: &OptionalPart) -> bool {
        let antichain = self.reached.entry((required.to_vec(), state)).or_default();
        if antichain.iter().any(|seen| seen.dominates(optional)) {
            return false;
        }
        antichain.retain(|seen| !optional.dominates(seen));
        antichain.push(optional.clone());
        true
    }
}

/// Maps every written value that no operation can tell apart from another to one
/// representative, so that the search does not tell them apart either.
///
/// Only the values returned by gets and expected by compare-and-swaps are ever compared with
/// the state, so two states outside that set behave identically under every operation.
fn merge_unobserved_values(ops: &mut [KeyOp]) {
    let mut observed: HashSet<Option<Value>> = HashSet::new();
    for op in ops.iter() {
        match op.effect {
            Effect::Write(_) => {}
            Effect::Read(value)
            | Effect::Swap {
                previous: value, ..
            } => {
                observed.insert(value);
            }
            Effect::CasSwapped { expected, .. }
            | Effect::CasUnchanged { expected }
            | Effect::CasUnknown { expected, .. } => {
                observed.insert(expected);
            }
        }
    }
    let Some(unobserved) = (0..=Value::MAX).find(|v| !observed.contains(&Some(*v))) else {
        return;
    };
    let merge = |value: Value| {
        if observed.contains(&Some(value)) {
            value
        } else {
            unobserved
        }
    };
    for op in ops.iter_mut() {
        op.effect = match op.effect {
            Effect::Write(value) => Effect::Write(value.map(merge)),
            Effect::Swap { previous, new } => Effect::Swap {
                previous,
                new: new.map(merge),
            },
            Effect::CasSwapped { expected, new } => Effect::CasSwapped {
                expected,
                new: merge(new),
            },
            Effect::CasUnknown { expected, new } => Effect::CasUnknown {
                expected,
                new: merge(new),
            },
            other => other,
        };
    }
}

/// The nodes of the required calls that may be linearized next: those before the first
/// pending return.
fn window<'a>(
    next: &'a [usize],
    head: usize,
    tail: usize,
    node_is_call: &'a [bool],
) -> impl Iterator<Item = usize> + 'a {
    let mut node = head;
    std::iter::from_fn(move || {
        node = next.get(node).copied().unwrap_or(tail);
        (node != tail && node_is_call.get(node).copied().unwrap_or(false)).then_some(node)
    })
}

/// Whether a block of optional ops that started in state `before_block` and now reaches
/// `state` can still be useful: either a required candidate (`window`) that rejects
/// `before_block` accepts `state`, so the block can end here, or an optional compare-and-swap
/// may continue it from `state` (and some candidate rejects `before_block`, so it can end).
fn block_can_continue(
    window: impl Iterator<Item = Effect>,
    before_block: Option<Value>,
    state: Option<Value>,
    optional_cas_expected: &HashSet<Option<Value>>,
) -> bool {
    let mut some_candidate_needs_a_block = false;
    for effect in window {
        if effect.apply(before_block).is_none() {
            if effect.apply(state).is_some() {
                return true;
            }
            some_candidate_needs_a_block = true;
        }
    }
    some_candidate_needs_a_block && optional_cas_expected.contains(&state)
}

/// Where the search is in the candidates of the current configuration.
#[derive(Debug, Clone, Copy)]
enum Cursor {
    /// Trying the completed op whose call is at this node of the event list.
    Required(usize),
    /// Trying optional op `index` (in invocation order); optional ops invoked no later than
    /// `limit` (the time of the first pending return) are available.
    Optional { index: usize, limit: u64 },
}

/// One linearized operation on the search stack.
#[derive(Debug, Clone, Copy)]
struct Frame {
    /// The candidate that was taken (to resume after it when backtracking).
    cursor: Cursor,
    /// The model state before it.
    state: Option<Value>,
    /// The pending block before it.
    block_start: Option<Option<Value>>,
}

/// The WGL search over one key's operations.
///
/// Completed ("required") operations are handled as in WGL: their call and return events are
/// in a doubly linked list ordered by time, and only calls before the first pending return may
/// be linearized next. Operations with an unknown outcome ("optional") are kept apart, ordered
/// by invocation; one is available when it was invoked no later than the first pending return.
/// Required candidates are tried before optional ones.
///
/// Optional operations are only linearized in a canonical way, which keeps the search from
/// trying every subset of them at every point. If a history has a linearization, it has one
/// where:
/// * no optional operation leaves the state unchanged (such an operation can be omitted);
/// * every run ("block") of consecutive optional operations is immediately followed by a
///   completed operation that would *not* accept the state before the block (otherwise the
///   block can be dropped, or moved after that operation when it is a failed compare-and-swap;
///   optional operations can always be moved later since they have no deadline), so no block
///   ends the linearization either;
/// * an optional put only starts a block (whatever precedes it in the block is overwritten and
///   can be dropped);
/// * optional operations with the same effect, being interchangeable once invoked, are used in
///   invocation order (the i-th use can take the i-th earliest-invoked one).
///
/// Only such linearizations are searched, and the memoization uses dominance (see
/// [`Visited`]).
fn search(ops: &[KeyOp], max_steps: u64) -> Outcome {
    let mut ops = ops.to_vec();
    merge_unobserved_values(&mut ops);
    let required: Vec<KeyOp> = ops
        .iter()
        .filter(|o| o.complete.is_some())
        .copied()
        .collect();
    let required_total = required.len();
    if required_total == 0 {
        return Outcome::Linearizable;
    }
    let mut optional: Vec<KeyOp> = ops
        .iter()
        .filter(|o| o.complete.is_none())
        .copied()
        .collect();
    optional.sort_by_key(|o| o.invoke);

    // For each optional op, the previous optional op (in invocation order) with the same effect.
    let mut previous_same: Vec<Option<usize>> = vec![None; optional.len()];
    let mut last_with_effect: HashMap<Effect, usize> = HashMap::new();
    for (j, op) in optional.iter().enumerate() {
        previous_same[j] = last_with_effect.insert(op.effect, j);
    }

    // Events of the required ops as (time, rank, op): rank 0 = call, 1 = return. Calls sort
    // before returns at equal times, so operations that merely touch in time are concurrent.
    let mut events: Vec<(u64, u8, usize)> = Vec::with_capacity(2 * required_total);
    for (i, o) in required.iter().enumerate() {
        events.push((o.invoke, 0, i));
        events.push((o.complete.unwrap_or(u64::MAX), 1, i));
    }
    events.sort_unstable();

    // Doubly linked list over nodes: 0 = head sentinel, 1..=2r = events, 2r+1 = tail sentinel.
    let len = events.len() + 2;
    let head = 0;
    let tail = len - 1;
    let mut next: Vec<usize> = (1..=len).collect();
    next[tail] = tail;
    let mut prev: Vec<usize> = (0..len).map(|i| i.saturating_sub(1)).collect();
    let mut node_op = vec![0usize; len];
    let mut node_time = vec![u64::MAX; len];
    let mut node_is_call = vec![false; len];
    let mut return_node = vec![tail; required_total];
    for (pos, &(time, rank, op)) in events.iter().enumerate() {
        let node = pos + 1;
        node_op[node] = op;
        node_time[node] = time;
        node_is_call[node] = rank == 0;
        if rank != 0 {
            return_node[op] = node;
        }
    }

    // Every value an optional compare-and-swap expects (a block may pass through it).
    let optional_cas_expected: HashSet<Option<Value>> = optional
        .iter()
        .filter_map(|op| match op.effect {
            Effect::CasUnknown { expected, .. } => Some(expected),
            _ => None,
        })
        .collect();

    let mut required_bits = vec![0u64; required_total.div_ceil(64)];
    let mut optional_part = OptionalPart {
        linearized: vec![0u64; optional.len().div_ceil(64)],
        block_start: None,
    };
    let mut state: Option<Value> = None;
    let mut stack: Vec<Frame> = Vec::new();
    let mut visited = Visited::default();
    let mut required_done = 0usize;
    let mut steps = 0u64;
    let mut cursor = Cursor::Required(next[head]);

    loop {
        if required_done == required_total {
            return Outcome::Linearizable;
        }
        if steps >= max_steps {
            return Outcome::Inconclusive(steps);
        }
        steps += 1;

        match cursor {
            Cursor::Required(node) if node != tail && node_is_call[node] => {
                let i = node_op[node];
                let effect = required[i].effect;
                // A completed op ending a block must need the block.
                let needs_block = match optional_part.block_start {
                    Some(before_block) => effect.apply(before_block).is_none(),
                    None => true,
                };
                if let Some(new_state) = effect.apply(state).filter(|_| needs_block) {
                    let block_start = optional_part.block_start;
                    set_bit(&mut required_bits, i, true);
                    optional_part.block_start = None;
                    if visited.insert(&required_bits, new_state, &optional_part) {
                        stack.push(Frame {
                            cursor,
                            state,
                            block_start,
                        });
                        state = new_state;
                        unlink(&mut next, &mut prev, node);
                        unlink(&mut next, &mut prev, return_node[i]);
                        required_done += 1;
                        cursor = Cursor::Required(next[head]);
                        continue;
                    }
                    set_bit(&mut required_bits, i, false);
                    optional_part.block_start = block_start;
                }
                cursor = Cursor::Required(next[node]);
            }
            Cursor::Required(node) => {
                // No more required candidates: `node` is the first pending return.
                cursor = Cursor::Optional {
                    index: 0,
                    limit: node_time[node],
                };
            }
            Cursor::Optional { index, limit } => {
                // Skip optional ops already used or not in turn.
                let mut j = index;
                while j < optional.len()
                    && (bit_is_set(&optional_part.linearized, j)
                        || previous_same[j]
                            .is_some_and(|p| !bit_is_set(&optional_part.linearized, p)))
                {
                    j += 1;
                }
                let available = optional.get(j).filter(|op| op.invoke <= limit);
                if let Some(op) = available {
                    let starts_only = matches!(op.effect, Effect::Write(_));
                    let allowed = !starts_only || optional_part.block_start.is_none();
                    let before_block = optional_part.block_start.unwrap_or(state);
                    let candidate = op.effect.apply(state).filter(|&new_state| {
                        allowed
                            && new_state != state
                            && block_can_continue(
                                window(&next, head, tail, &node_is_call)
                                    .map(|node| required[node_op[node]].effect),
                                before_block,
                                new_state,
                                &optional_cas_expected,
                            )
                    });
                    if let Some(new_state) = candidate {
                        let block_start = optional_part.block_start;
                        set_bit(&mut optional_part.linearized, j, true);
                        optional_part.block_start = Some(block_start.unwrap_or(state));
                        if visited.insert(&required_bits, new_state, &optional_part) {
                            stack.push(Frame {
                                cursor: Cursor::Optional { index: j, limit },
                                state,
                                block_start,
                            });
                            state = new_state;
                            cursor = Cursor::Required(next[head]);
                            continue;
                        }
                        set_bit(&mut optional_part.linearized, j, false);
                        optional_part.block_start = block_start;
                    }
                    cursor = Cursor::Optional {
                        index: j + 1,
                        limit,
                    };
                    continue;
                }
                // No candidate left in this configuration: undo the last choice.
                let Some(frame) = stack.pop() else {
                    return Outcome::NotLinearizable;
                };
                state = frame.state;
                optional_part.block_start = frame.block_start;
                cursor = match frame.cursor {
                    Cursor::Required(node) => {
                        let i = node_op[node];
                        set_bit(&mut required_bits, i, false);
                        required_done -= 1;
                        relink(&mut next, &mut prev, return_node[i]);
                        relink(&mut next, &mut prev, node);
                        Cursor::Required(next[node])
                    }
                    Cursor::Optional { index, limit } => {
                        set_bit(&mut optional_part.linearized, index, false);
                        Cursor::Optional {
                            index: index + 1,
                            limit,
                        }
                    }
                };
            }
        }
    }
}

#[cfg(test)]
mod tests;
