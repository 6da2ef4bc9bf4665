//! Linearizability checking for a key-value register model.
//!
//! The model is a map from [`Key`] to [`Value`] where every key starts absent, with three
//! operations ([`KvOp`]): put, get and compare-and-swap. Every operation touches exactly one
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
    /// A put succeeded.
    Ok,
    /// A get returned this value (None = absent).
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
        KvOp::Put { key, .. } | KvOp::Get { key } | KvOp::Cas { key, .. } => *key,
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
            (KvOp::Put { .. }, Some(KvRet::Ok))
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
    /// A put (completed or not): always applies.
    Write(Value),
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
            Effect::Write(value) => Some(Some(value)),
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
            (KvOp::Put { value, .. }, _, _) => Effect::Write(*value),
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
            Effect::Read(value) => {
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
            Effect::Write(value) => Effect::Write(merge(value)),
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
mod tests {
    use super::*;
    use std::time::Instant;

    fn put(client: u64, invoke: u64, complete: u64, key: Key, value: Value) -> HistoryOp {
        HistoryOp {
            client,
            invoke,
            complete: Some(complete),
            op: KvOp::Put { key, value },
            ret: Some(KvRet::Ok),
        }
    }

    fn put_unknown(client: u64, invoke: u64, key: Key, value: Value) -> HistoryOp {
        HistoryOp {
            client,
            invoke,
            complete: None,
            op: KvOp::Put { key, value },
            ret: None,
        }
    }

    fn get(client: u64, invoke: u64, complete: u64, key: Key, seen: Option<Value>) -> HistoryOp {
        HistoryOp {
            client,
            invoke,
            complete: Some(complete),
            op: KvOp::Get { key },
            ret: Some(KvRet::Value(seen)),
        }
    }

    fn cas(
        client: u64,
        (invoke, complete): (u64, u64),
        key: Key,
        expected: Option<Value>,
        new: Value,
        swapped: bool,
    ) -> HistoryOp {
        HistoryOp {
            client,
            invoke,
            complete: Some(complete),
            op: KvOp::Cas { key, expected, new },
            ret: Some(KvRet::Swapped(swapped)),
        }
    }

    fn cas_unknown(
        client: u64,
        invoke: u64,
        key: Key,
        expected: Option<Value>,
        new: Value,
    ) -> HistoryOp {
        HistoryOp {
            client,
            invoke,
            complete: None,
            op: KvOp::Cas { key, expected, new },
            ret: None,
        }
    }

    fn assert_not_linearizable(history: &[HistoryOp], expected_key: Key) {
        match check_kv_history(history) {
            Err(LinearizabilityError::NotLinearizable { key, .. }) => assert_eq!(key, expected_key),
            other => panic!("expected NotLinearizable on key {expected_key}, got {other:?}"),
        }
    }

    #[test]
    fn empty_history_is_linearizable() {
        assert_eq!(check_kv_history(&[]), Ok(()));
    }

    #[test]
    fn sequential_put_then_get_is_linearizable() {
        let h = vec![
            get(1, 0, 1, 1, None),
            put(1, 2, 3, 1, 10),
            get(2, 4, 5, 1, Some(10)),
            put(2, 6, 7, 1, 11),
            get(1, 8, 9, 1, Some(11)),
        ];
        assert_eq!(check_kv_history(&h), Ok(()));
    }

    #[test]
    fn get_of_value_never_written_is_not_linearizable() {
        let h = vec![put(1, 0, 1, 1, 10), get(2, 2, 3, 1, Some(99))];
        assert_not_linearizable(&h, 1);
    }

    #[test]
    fn get_of_present_value_before_any_write_is_not_linearizable() {
        let h = vec![get(1, 0, 1, 1, Some(10)), put(2, 2, 3, 1, 10)];
        assert_not_linearizable(&h, 1);
    }

    #[test]
    fn stale_read_after_completed_overwrite_is_not_linearizable() {
        let h = vec![
            put(1, 0, 1, 1, 10),
            put(2, 2, 3, 1, 20),
            get(3, 4, 5, 1, Some(10)),
        ];
        assert_not_linearizable(&h, 1);
    }

    #[test]
    fn concurrent_get_may_observe_old_value() {
        let h = vec![
            put(1, 0, 1, 1, 10),
            put(2, 2, 10, 1, 20),
            get(3, 3, 5, 1, Some(10)),
        ];
        assert_eq!(check_kv_history(&h), Ok(()));
    }

    #[test]
    fn concurrent_get_may_observe_new_value() {
        let h = vec![
            put(1, 0, 1, 1, 10),
            put(2, 2, 10, 1, 20),
            get(3, 3, 5, 1, Some(20)),
        ];
        assert_eq!(check_kv_history(&h), Ok(()));
    }

    #[test]
    fn reads_cannot_flip_back_to_old_value() {
        // Both reads overlap the write, but once one read saw the new value a later read
        // cannot see the old one.
        let h = vec![
            put(1, 0, 1, 1, 10),
            put(2, 2, 20, 1, 20),
            get(3, 3, 5, 1, Some(20)),
            get(4, 6, 8, 1, Some(10)),
        ];
        assert_not_linearizable(&h, 1);
    }

    #[test]
    fn operations_touching_at_the_same_instant_are_concurrent() {
        // The put completes at 5 and the get is invoked at 5: treated as concurrent, so the
        // get may still see the key absent.
        let h = vec![put(1, 0, 5, 1, 10), get(2, 5, 6, 1, None)];
        assert_eq!(check_kv_history(&h), Ok(()));
        // One instant later they are ordered and the stale read is caught.
        let h = vec![put(1, 0, 5, 1, 10), get(2, 6, 7, 1, None)];
        assert_not_linearizable(&h, 1);
    }

    #[test]
    fn timed_out_put_later_observed_is_linearizable() {
        let h = vec![
            put(1, 0, 1, 1, 10),
            put_unknown(2, 2, 1, 20),
            get(3, 50, 51, 1, Some(20)),
            get(3, 52, 53, 1, Some(20)),
        ];
        assert_eq!(check_kv_history(&h), Ok(()));
    }

    #[test]
    fn timed_out_put_never_observed_is_linearizable() {
        let h = vec![
            put(1, 0, 1, 1, 10),
            put_unknown(2, 2, 1, 20),
            get(3, 50, 51, 1, Some(10)),
            put(3, 52, 53, 1, 30),
            get(1, 54, 55, 1, Some(30)),
        ];
        assert_eq!(check_kv_history(&h), Ok(()));
    }

    #[test]
    fn value_observed_before_timed_out_put_was_invoked_is_not_linearizable() {
        let h = vec![get(1, 0, 1, 1, Some(20)), put_unknown(2, 5, 1, 20)];
        assert_not_linearizable(&h, 1);
    }

    #[test]
    fn timed_out_put_takes_effect_at_most_once() {
        let h = vec![
            put_unknown(1, 0, 1, 7),
            put(2, 1, 2, 1, 8),
            get(3, 3, 4, 1, Some(7)),
            get(3, 5, 6, 1, Some(8)),
        ];
        assert_not_linearizable(&h, 1);
        // Without the last read, the timed-out put took effect after the completed one.
        assert_eq!(check_kv_history(&h[..3]), Ok(()));
    }

    #[test]
    fn timed_out_get_is_ignored() {
        let h = vec![
            put(1, 0, 1, 1, 10),
            HistoryOp {
                client: 2,
                invoke: 2,
                complete: None,
                op: KvOp::Get { key: 1 },
                ret: Some(KvRet::Value(Some(12345))),
            },
            get(3, 3, 4, 1, Some(10)),
        ];
        assert_eq!(check_kv_history(&h), Ok(()));
    }

    #[test]
    fn return_value_of_timed_out_op_is_ignored() {
        // The answer of an op with unknown outcome is not checked, even if its kind is wrong.
        let mut p = put_unknown(1, 0, 1, 10);
        p.ret = Some(KvRet::Swapped(true));
        let h = vec![p, get(2, 5, 6, 1, Some(10))];
        assert_eq!(check_kv_history(&h), Ok(()));
    }

    #[test]
    fn cas_swaps_only_when_expected_value_matches() {
        let ok = vec![
            put(1, 0, 1, 1, 1),
            cas(1, (2, 3), 1, Some(1), 2, true),
            get(1, 4, 5, 1, Some(2)),
        ];
        assert_eq!(check_kv_history(&ok), Ok(()));

        let wrong_expected = vec![put(1, 0, 1, 1, 1), cas(1, (2, 3), 1, Some(5), 2, true)];
        assert_not_linearizable(&wrong_expected, 1);
    }

    #[test]
    fn cas_on_absent_key_with_expected_none_swaps() {
        let h = vec![
            cas(1, (0, 1), 1, None, 7, true),
            get(1, 2, 3, 1, Some(7)),
            cas(1, (4, 5), 1, None, 8, false),
            get(1, 6, 7, 1, Some(7)),
        ];
        assert_eq!(check_kv_history(&h), Ok(()));
    }

    #[test]
    fn cas_failure_leaves_value_unchanged() {
        let ok = vec![
            put(1, 0, 1, 1, 1),
            cas(1, (2, 3), 1, Some(5), 2, false),
            get(1, 4, 5, 1, Some(1)),
        ];
        assert_eq!(check_kv_history(&ok), Ok(()));

        let changed = vec![
            put(1, 0, 1, 1, 1),
            cas(1, (2, 3), 1, Some(5), 2, false),
            get(1, 4, 5, 1, Some(2)),
        ];
        assert_not_linearizable(&changed, 1);
    }

    #[test]
    fn cas_failure_when_expected_value_matches_is_not_linearizable() {
        let h = vec![put(1, 0, 1, 1, 1), cas(1, (2, 3), 1, Some(1), 2, false)];
        assert_not_linearizable(&h, 1);
    }

    #[test]
    fn two_concurrent_cas_on_same_expected_value_both_succeeding_is_not_linearizable() {
        let h = vec![
            put(1, 0, 1, 1, 1),
            cas(2, (2, 10), 1, Some(1), 2, true),
            cas(3, (3, 11), 1, Some(1), 3, true),
        ];
        assert_not_linearizable(&h, 1);
    }

    #[test]
    fn two_concurrent_cas_on_same_expected_value_one_succeeding_is_linearizable() {
        let h = vec![
            put(1, 0, 1, 1, 1),
            cas(2, (2, 10), 1, Some(1), 2, true),
            cas(3, (3, 11), 1, Some(1), 3, false),
            get(1, 12, 13, 1, Some(2)),
        ];
        assert_eq!(check_kv_history(&h), Ok(()));
    }

    #[test]
    fn timed_out_cas_may_or_may_not_take_effect() {
        let took_effect = vec![
            put(1, 0, 1, 1, 1),
            cas_unknown(2, 2, 1, Some(1), 2),
            get(1, 5, 6, 1, Some(2)),
        ];
        assert_eq!(check_kv_history(&took_effect), Ok(()));
        let did_not = vec![
            put(1, 0, 1, 1, 1),
            cas_unknown(2, 2, 1, Some(1), 2),
            get(1, 5, 6, 1, Some(1)),
        ];
        assert_eq!(check_kv_history(&did_not), Ok(()));
        let impossible = vec![
            put(1, 0, 1, 1, 1),
            cas_unknown(2, 2, 1, Some(9), 2),
            get(1, 5, 6, 1, Some(2)),
        ];
        assert_not_linearizable(&impossible, 1);
    }

    #[test]
    fn timed_out_cas_chain_is_linearizable() {
        // The unknown put of 3 and the unknown cas 3 -> 4 both took effect.
        let h = vec![
            put(1, 0, 1, 1, 1),
            put_unknown(2, 2, 1, 3),
            cas_unknown(3, 3, 1, Some(3), 4),
            get(1, 10, 11, 1, Some(4)),
        ];
        assert_eq!(check_kv_history(&h), Ok(()));
    }

    #[test]
    fn timed_out_put_can_explain_failed_cas() {
        let ok = vec![
            put(1, 0, 1, 1, 1),
            put_unknown(2, 2, 1, 2),
            cas(1, (5, 6), 1, Some(1), 5, false),
            get(1, 7, 8, 1, Some(2)),
        ];
        assert_eq!(check_kv_history(&ok), Ok(()));
        // The failed cas needs the unknown put before it, so the old value is gone for good.
        let stale = vec![
            put(1, 0, 1, 1, 1),
            put_unknown(2, 2, 1, 2),
            cas(1, (5, 6), 1, Some(1), 5, false),
            get(1, 7, 8, 1, Some(1)),
        ];
        assert_not_linearizable(&stale, 1);
    }

    #[test]
    fn identical_timed_out_puts_each_take_effect_at_most_once() {
        let two = vec![
            put_unknown(1, 0, 1, 5),
            put_unknown(2, 1, 1, 5),
            put(3, 2, 3, 1, 6),
            get(3, 4, 5, 1, Some(5)),
            put(3, 6, 7, 1, 7),
            get(3, 8, 9, 1, Some(5)),
        ];
        assert_eq!(check_kv_history(&two), Ok(()));
        let one: Vec<HistoryOp> = two[1..].to_vec();
        assert_not_linearizable(&one, 1);
    }

    #[test]
    fn violation_on_one_key_is_reported_with_that_key() {
        let h = vec![
            put(1, 0, 1, 1, 10),
            put(1, 2, 3, 2, 20),
            put(1, 4, 5, 3, 30),
            get(2, 6, 7, 1, Some(10)),
            put(3, 10, 11, 2, 21),
            get(2, 12, 13, 2, Some(20)),
            get(2, 8, 9, 3, Some(30)),
        ];
        match check_kv_history(&h) {
            Err(LinearizabilityError::NotLinearizable { key, ops }) => {
                assert_eq!(key, 2);
                let expected = vec![
                    put(1, 2, 3, 2, 20),
                    put(3, 10, 11, 2, 21),
                    get(2, 12, 13, 2, Some(20)),
                ];
                assert_eq!(ops, expected);
            }
            other => panic!("expected NotLinearizable on key 2, got {other:?}"),
        }
    }

    #[test]
    fn keys_are_independent_registers() {
        let h = vec![
            put(1, 0, 1, 1, 10),
            put(2, 2, 3, 2, 20),
            get(3, 4, 5, 1, Some(10)),
            get(3, 6, 7, 2, Some(20)),
            get(3, 8, 9, 3, None),
        ];
        assert_eq!(check_kv_history(&h), Ok(()));
    }

    #[test]
    fn completion_before_invocation_is_malformed() {
        let h = vec![put(1, 0, 1, 1, 10), put(1, 5, 4, 1, 11)];
        match check_kv_history(&h) {
            Err(LinearizabilityError::Malformed { index, .. }) => assert_eq!(index, 1),
            other => panic!("expected Malformed, got {other:?}"),
        }
    }

    #[test]
    fn completed_op_without_return_value_is_malformed() {
        let mut p = put(1, 0, 1, 1, 10);
        p.ret = None;
        match check_kv_history(&[p]) {
            Err(LinearizabilityError::Malformed { index, .. }) => assert_eq!(index, 0),
            other => panic!("expected Malformed, got {other:?}"),
        }
    }

    #[test]
    fn return_kind_not_fitting_op_is_malformed() {
        let mut g = get(1, 0, 1, 1, None);
        g.ret = Some(KvRet::Ok);
        let mut p = put(1, 0, 1, 1, 1);
        p.ret = Some(KvRet::Value(None));
        let mut c = cas(1, (0, 1), 1, None, 1, true);
        c.ret = Some(KvRet::Ok);
        for bad in [g, p, c] {
            let h = vec![put(2, 0, 1, 5, 5), bad];
            match check_kv_history(&h) {
                Err(LinearizabilityError::Malformed { index, reason }) => {
                    assert_eq!(index, 1);
                    assert!(!reason.is_empty());
                }
                other => panic!("expected Malformed, got {other:?}"),
            }
        }
    }

    #[test]
    fn display_lists_operations_one_per_line() {
        let h = vec![
            put(1, 0, 1, 1, 10),
            put_unknown(4, 1, 1, 11),
            put(2, 2, 3, 1, 20),
            get(3, 4, 5, 1, Some(10)),
        ];
        let err = check_kv_history(&h).unwrap_err();
        let text = err.to_string();
        assert_eq!(text.lines().count(), 1 + h.len(), "{text}");
        assert!(text.contains("key 1"), "{text}");
        assert!(text.contains("[1, ?]"), "{text}");
        assert!(text.contains("unknown"), "{text}");
        let malformed = LinearizabilityError::Malformed {
            index: 3,
            reason: "bad".into(),
        };
        assert!(malformed.to_string().contains("#3"));
        let inconclusive = LinearizabilityError::Inconclusive { key: 9, steps: 42 };
        assert!(inconclusive.to_string().contains("42"));
    }

    #[test]
    fn exhausted_budget_is_inconclusive() {
        let h = vec![
            put(1, 0, 10, 1, 10),
            put(2, 0, 10, 1, 20),
            get(3, 11, 12, 1, Some(10)),
        ];
        assert_eq!(
            check_kv_history_with_budget(&h, 1),
            Err(LinearizabilityError::Inconclusive { key: 1, steps: 1 })
        );
        assert_eq!(check_kv_history_with_budget(&h, 1_000), Ok(()));
        // A key with nothing to linearize needs no search at all.
        assert_eq!(
            check_kv_history_with_budget(&[put_unknown(1, 0, 1, 1)], 0),
            Ok(())
        );
    }

    #[test]
    fn extreme_timestamps_do_not_panic() {
        let h = vec![
            put(1, u64::MAX, u64::MAX, 1, 1),
            put_unknown(2, u64::MAX, 1, 2),
            get(3, u64::MAX, u64::MAX, 1, Some(2)),
            get(4, 0, u64::MAX, 1, Some(1)),
        ];
        assert_eq!(check_kv_history(&h), Ok(()));
    }

    /// A small xorshift64 generator, so the tests need no crates.
    struct XorShift(u64);

    impl XorShift {
        fn new(seed: u64) -> Self {
            XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
        }

        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        fn below(&mut self, n: u64) -> u64 {
            if n == 0 {
                0
            } else {
                self.next() % n
            }
        }

        fn percent(&mut self, p: u64) -> bool {
            self.below(100) < p
        }
    }

    /// Shape of a generated history.
    struct Shape {
        ops: usize,
        keys: u64,
        clients: u64,
        /// Percentage of puts and cas whose outcome is unknown.
        timeout_percent: u64,
        /// Values written are drawn from `1..=values` (small = many equal values).
        values: u64,
    }

    /// Time between consecutive linearization points.
    const SPACING: u64 = 10;

    /// Generates a linearizable history: operations run one by one against an in-memory
    /// model at linearization points `SPACING` apart, then each operation's window is widened
    /// randomly around its point. Client `i % clients` issues operation `i`; windows are
    /// narrower than `SPACING * clients / 2` so a client never has two operations outstanding.
    /// A timed-out operation retires its client (it gets a fresh id).
    fn generate(rng: &mut XorShift, shape: &Shape) -> Vec<HistoryOp> {
        let mut model: BTreeMap<Key, Value> = BTreeMap::new();
        let max_window = (SPACING * shape.clients / 2).saturating_sub(1);
        let mut client_ids: Vec<u64> = (0..shape.clients).collect();
        let mut next_client = shape.clients;
        let mut history = Vec::with_capacity(shape.ops);
        for i in 0..shape.ops {
            let point = SPACING * (i as u64 + 1) + max_window;
            let invoke = point - rng.below(max_window + 1);
            let complete = point + rng.below(max_window + 1);
            let slot = i % client_ids.len();
            let client = client_ids[slot];
            let key = rng.below(shape.keys);
            let current = model.get(&key).copied();
            let value = rng.below(shape.values) + 1;
            let roll = rng.below(10);
            let (op, ret, may_time_out) = if roll < 4 {
                (KvOp::Get { key }, KvRet::Value(current), false)
            } else if roll < 7 {
                (KvOp::Put { key, value }, KvRet::Ok, true)
            } else {
                let expected = if rng.percent(50) {
                    current
                } else if rng.percent(20) {
                    None
                } else {
                    Some(rng.below(shape.values) + 1)
                };
                let swapped = expected == current;
                let op = KvOp::Cas {
                    key,
                    expected,
                    new: value,
                };
                (op, KvRet::Swapped(swapped), true)
            };
            let timed_out = may_time_out && rng.percent(shape.timeout_percent);
            // A timed-out operation takes effect or not, at random.
            let takes_effect = !timed_out || rng.percent(50);
            if takes_effect {
                match (&op, &ret) {
                    (KvOp::Put { .. }, _) | (KvOp::Cas { .. }, KvRet::Swapped(true)) => {
                        model.insert(key, value);
                    }
                    _ => {}
                }
            }
            if timed_out {
                client_ids[slot] = next_client;
                next_client += 1;
                history.push(HistoryOp {
                    client,
                    invoke,
                    complete: None,
                    op,
                    ret: None,
                });
            } else {
                history.push(HistoryOp {
                    client,
                    invoke,
                    complete: Some(complete),
                    op,
                    ret: Some(ret),
                });
            }
        }
        history
    }

    /// A value the generator never writes.
    const NEVER_WRITTEN: Value = 1_000_000;

    #[test]
    fn randomized_linearizable_histories_pass() {
        for seed in 0..300 {
            let mut rng = XorShift::new(seed);
            let shape = Shape {
                ops: 20 + rng.below(80) as usize,
                keys: 1 + rng.below(3),
                clients: 1 + rng.below(6),
                timeout_percent: rng.below(10),
                values: 1 + rng.below(10),
            };
            let history = generate(&mut rng, &shape);
            assert_eq!(
                check_kv_history(&history),
                Ok(()),
                "seed {seed} produced a linearizable history that was rejected"
            );
        }
    }

    #[test]
    fn randomized_histories_with_mutated_read_fail() {
        let mut mutated = 0;
        for seed in 0..300 {
            let mut rng = XorShift::new(seed + 10_000);
            let shape = Shape {
                ops: 20 + rng.below(60) as usize,
                keys: 1 + rng.below(3),
                clients: 1 + rng.below(6),
                timeout_percent: rng.below(8),
                values: 1 + rng.below(10),
            };
            let mut history = generate(&mut rng, &shape);
            let gets: Vec<usize> = history
                .iter()
                .enumerate()
                .filter(|(_, h)| matches!(h.op, KvOp::Get { .. }) && h.complete.is_some())
                .map(|(i, _)| i)
                .collect();
            if gets.is_empty() {
                continue;
            }
            let victim = gets[rng.below(gets.len() as u64) as usize];
            history[victim].ret = Some(KvRet::Value(Some(NEVER_WRITTEN)));
            let key = op_key(&history[victim].op);
            match check_kv_history(&history) {
                Err(LinearizabilityError::NotLinearizable { key: k, .. }) => assert_eq!(k, key),
                other => panic!("seed {seed}: mutated history gave {other:?}"),
            }
            mutated += 1;
        }
        assert!(mutated > 250, "only {mutated} histories were mutated");
    }

    /// Whether `history` is linearizable, by trying every order of every subset of its
    /// operations with unknown outcome together with all completed ones (tiny histories only).
    fn brute_force_linearizable(history: &[HistoryOp]) -> bool {
        fn extend(
            history: &[HistoryOp],
            used: &mut Vec<bool>,
            model: &mut BTreeMap<Key, Value>,
        ) -> bool {
            let all_completed_used = history
                .iter()
                .zip(used.iter())
                .all(|(h, &u)| u || h.complete.is_none());
            if all_completed_used {
                return true;
            }
            for (i, h) in history.iter().enumerate() {
                if used[i] {
                    continue;
                }
                // Every unused completed op that returned before this one was invoked must
                // come first.
                let blocked = history
                    .iter()
                    .zip(used.iter())
                    .any(|(other, &u)| !u && other.complete.is_some_and(|c| c < h.invoke));
                if blocked {
                    continue;
                }
                let key = op_key(&h.op);
                let current = model.get(&key).copied();
                let (accepted, next) = match (&h.op, h.complete.map(|_| h.ret.clone())) {
                    (KvOp::Put { value, .. }, _) => (true, Some(*value)),
                    (KvOp::Get { .. }, None) => (true, current),
                    (KvOp::Get { .. }, Some(ret)) => (ret == Some(KvRet::Value(current)), current),
                    (KvOp::Cas { expected, new, .. }, ret) => {
                        let swaps = current == *expected;
                        let next = if swaps { Some(*new) } else { current };
                        match ret {
                            None => (true, next),
                            Some(ret) => (ret == Some(KvRet::Swapped(swaps)), next),
                        }
                    }
                };
                if !accepted {
                    continue;
                }
                used[i] = true;
                match next {
                    Some(v) => model.insert(key, v),
                    None => model.remove(&key),
                };
                let found = extend(history, used, model);
                match current {
                    Some(v) => model.insert(key, v),
                    None => model.remove(&key),
                };
                used[i] = false;
                if found {
                    return true;
                }
            }
            false
        }
        extend(
            history,
            &mut vec![false; history.len()],
            &mut BTreeMap::new(),
        )
    }

    /// A random tiny history with arbitrary answers (mostly not linearizable).
    fn random_tiny_history(rng: &mut XorShift) -> Vec<HistoryOp> {
        let n = 2 + rng.below(6) as usize;
        let keys = 1 + rng.below(2);
        let value = |rng: &mut XorShift| rng.below(3) + 1;
        (0..n)
            .map(|i| {
                let key = rng.below(keys);
                let invoke = rng.below(20);
                let complete = (!rng.percent(30)).then(|| invoke + rng.below(10));
                let (op, ret) = match rng.below(3) {
                    0 => (
                        KvOp::Put {
                            key,
                            value: value(rng),
                        },
                        KvRet::Ok,
                    ),
                    1 => {
                        let seen = (!rng.percent(25)).then(|| value(rng));
                        (KvOp::Get { key }, KvRet::Value(seen))
                    }
                    _ => {
                        let expected = (!rng.percent(25)).then(|| value(rng));
                        let op = KvOp::Cas {
                            key,
                            expected,
                            new: value(rng),
                        };
                        (op, KvRet::Swapped(rng.percent(50)))
                    }
                };
                HistoryOp {
                    client: i as u64,
                    invoke,
                    complete,
                    op,
                    ret: complete.map(|_| ret),
                }
            })
            .collect()
    }

    #[test]
    fn agrees_with_brute_force_on_tiny_random_histories() {
        let (mut linearizable, mut not) = (0, 0);
        for seed in 0..4_000 {
            let mut rng = XorShift::new(seed + 20_000);
            let history = random_tiny_history(&mut rng);
            let expected = brute_force_linearizable(&history);
            let got = check_kv_history(&history);
            match (&got, expected) {
                (Ok(()), true) => linearizable += 1,
                (Err(LinearizabilityError::NotLinearizable { .. }), false) => not += 1,
                _ => panic!(
                    "seed {seed}: checker says {got:?}, brute force says {expected}\n{history:#?}"
                ),
            }
        }
        assert!(
            linearizable > 400,
            "only {linearizable} linearizable histories"
        );
        assert!(not > 400, "only {not} non-linearizable histories");
    }

    #[test]
    fn eight_clients_hundred_ops_each_on_three_keys_is_conclusive() {
        let mut rng = XorShift::new(42);
        let shape = Shape {
            ops: 800,
            keys: 3,
            clients: 8,
            timeout_percent: 2,
            values: 8,
        };
        let history = generate(&mut rng, &shape);
        let start = Instant::now();
        assert_eq!(check_kv_history(&history), Ok(()));
        // The same load on a single key, which is the harder case.
        let mut rng = XorShift::new(43);
        let single_key = generate(
            &mut rng,
            &Shape {
                ops: 800,
                keys: 1,
                clients: 8,
                timeout_percent: 2,
                values: 8,
            },
        );
        assert_eq!(check_kv_history(&single_key), Ok(()));
        let elapsed = start.elapsed();
        assert!(
            elapsed.as_secs() < 10,
            "checking took {elapsed:?}, far longer than expected"
        );
    }
}
