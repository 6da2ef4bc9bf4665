//! Tests of the linearizability checker.

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
    // A put answers Ok or the value it replaced, never a swap verdict.
    let mut p = put(1, 0, 1, 1, 1);
    p.ret = Some(KvRet::Swapped(true));
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
                (KvOp::Put { value, .. }, Some(Some(KvRet::Value(previous)))) => {
                    (previous == current, Some(*value))
                }
                (KvOp::Delete { .. }, Some(Some(KvRet::Value(previous)))) => {
                    (previous == current, None)
                }
                (KvOp::Put { value, .. }, _) => (true, Some(*value)),
                (KvOp::Delete { .. }, _) => (true, None),
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

/// A put or delete that reports the value it replaced.
fn replace(
    client: u64,
    (invoke, complete): (u64, u64),
    key: Key,
    new: Option<Value>,
    previous: Option<Value>,
) -> HistoryOp {
    HistoryOp {
        client,
        invoke,
        complete: Some(complete),
        op: match new {
            Some(value) => KvOp::Put { key, value },
            None => KvOp::Delete { key },
        },
        ret: Some(KvRet::Value(previous)),
    }
}

#[test]
fn puts_and_deletes_reporting_the_replaced_value_are_linearizable_in_order() {
    let h = [
        replace(1, (0, 1), 0, Some(1), None),
        replace(2, (2, 3), 0, Some(2), Some(1)),
        replace(1, (4, 5), 0, None, Some(2)),
        get(2, 6, 7, 0, None),
        replace(1, (8, 9), 0, Some(3), None),
    ];
    assert_eq!(check_kv_history(&h), Ok(()));
}

#[test]
fn a_put_applied_twice_is_caught_by_the_value_it_reports_replacing() {
    // put(1) then put(2); a duplicate apply of put(1) after put(2) would make a later put
    // report 1 as the value it replaced, which no single apply of each can explain.
    let h = [
        replace(1, (0, 1), 0, Some(1), None),
        replace(2, (2, 3), 0, Some(2), Some(1)),
        replace(3, (10, 11), 0, Some(3), Some(1)),
    ];
    assert_not_linearizable(&h, 0);
}

#[test]
fn a_delete_reporting_a_value_never_written_is_not_linearizable() {
    let h = [
        replace(1, (0, 1), 4, Some(7), None),
        replace(2, (2, 3), 4, None, Some(8)),
    ];
    assert_not_linearizable(&h, 4);
}

#[test]
fn a_delete_with_an_unknown_outcome_may_explain_a_later_absent_read() {
    let h = [
        replace(1, (0, 1), 2, Some(5), None),
        HistoryOp {
            client: 2,
            invoke: 2,
            complete: None,
            op: KvOp::Delete { key: 2 },
            ret: None,
        },
        get(3, 10, 11, 2, None),
    ];
    assert_eq!(check_kv_history(&h), Ok(()));
    // Without the delete, the absent read is impossible.
    assert_not_linearizable(&[h[0].clone(), h[2].clone()], 2);
}
