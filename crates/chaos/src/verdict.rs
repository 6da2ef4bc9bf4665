//! The checks at the end of a run: linearizability of the recorded history (with the
//! project's WGL checker), no acknowledged write lost, and every replica's own copy equal.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use lockstep::sim::linearizability::{
    check_kv_history_with_budget, HistoryOp, KvOp, KvRet, LinearizabilityError, Value,
};
use lockstep::NodeId;

/// Search steps per key the checker may take before it gives up.
pub const STEPS_PER_KEY: u64 = 50_000_000;

/// What went wrong in a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Which check failed.
    pub check: &'static str,
    /// The key involved, if one.
    pub key: Option<u64>,
    /// A description for the report: which operations, which nodes.
    pub detail: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.key {
            Some(k) => write!(f, "{} (key k{k}): {}", self.check, self.detail),
            None => write!(f, "{}: {}", self.check, self.detail),
        }
    }
}

/// The history as a monitor would have seen it at time `t`: operations invoked by then,
/// those not answered by then with an unknown outcome. Linearizability of these views only
/// gets harder as `t` grows, so the earliest failing one locates the first violation.
fn view_at(history: &[HistoryOp], t: u64) -> Vec<HistoryOp> {
    history
        .iter()
        .filter(|h| h.invoke <= t)
        .map(|h| match h.complete {
            Some(c) if c <= t => h.clone(),
            _ => HistoryOp {
                complete: None,
                ret: None,
                ..h.clone()
            },
        })
        .collect()
}

/// The operations of `history` on `key`.
fn on_key(history: &[HistoryOp], key: u64) -> Vec<HistoryOp> {
    history
        .iter()
        .filter(|h| op_key(&h.op) == key)
        .cloned()
        .collect()
}

fn op_key(op: &KvOp) -> u64 {
    match op {
        KvOp::Put { key, .. }
        | KvOp::Delete { key }
        | KvOp::Get { key }
        | KvOp::Cas { key, .. } => *key,
    }
}

/// Checks the history for linearizability; on a violation, narrows it down to the first
/// operation whose answer no order explains, with the operations around it.
pub fn linearizable(history: &[HistoryOp]) -> Result<(), Violation> {
    match check_kv_history_with_budget(history, STEPS_PER_KEY) {
        Ok(()) => Ok(()),
        Err(LinearizabilityError::NotLinearizable { key, .. }) => {
            let ops = on_key(history, key);
            let mut times: Vec<u64> = ops.iter().filter_map(|h| h.complete).collect();
            times.sort_unstable();
            times.dedup();
            // Binary search for the earliest completion at which the view fails.
            let (mut lo, mut hi) = (0usize, times.len().saturating_sub(1));
            while lo < hi {
                let mid = (lo + hi) / 2;
                let fails = check_kv_history_with_budget(&view_at(&ops, times[mid]), STEPS_PER_KEY)
                    .is_err();
                if fails {
                    hi = mid;
                } else {
                    lo = mid + 1;
                }
            }
            let t = times.get(lo).copied().unwrap_or(0);
            let mut detail = String::new();
            let culprit = ops.iter().find(|h| h.complete == Some(t));
            if let Some(c) = culprit {
                let _ = writeln!(
                    detail,
                    "no order of the operations on this key explains the answer of\n    {}",
                    line(c)
                );
            }
            let _ = writeln!(
                detail,
                "  operations on the key overlapping it or just before it:"
            );
            let start = culprit.map_or(0, |c| c.invoke);
            let mut around: Vec<&HistoryOp> = ops
                .iter()
                .filter(|h| h.invoke <= t && h.complete.is_none_or(|c| c + 2_000_000 >= start))
                .collect();
            around.sort_by_key(|h| h.invoke);
            for h in around.iter().rev().take(40).rev() {
                let _ = writeln!(detail, "    {}", line(h));
            }
            Err(Violation {
                check: "linearizability",
                key: Some(key),
                detail,
            })
        }
        Err(e @ LinearizabilityError::Inconclusive { key, .. }) => Err(Violation {
            check: "linearizability (inconclusive: history too large to check; run shorter)",
            key: Some(key),
            detail: e.to_string(),
        }),
        Err(e) => Err(Violation {
            check: "history",
            key: None,
            detail: e.to_string(),
        }),
    }
}

/// A value as `C.N`: the N-th operation of client C-1 wrote it (see the workload).
fn show(v: Value) -> String {
    format!("{}.{}", v >> 40, v & ((1 << 40) - 1))
}

/// One operation as a report line: client, [invoke, complete] in ms, op, answer.
pub fn line(h: &HistoryOp) -> String {
    let ms = |t: u64| format!("{:.3}", t as f64 / 1000.0);
    let v = |v: Option<Value>| v.map_or("absent".to_string(), show);
    let op = match &h.op {
        KvOp::Put { key, value } => format!("put(k{key}, {})", show(*value)),
        KvOp::Delete { key } => format!("delete(k{key})"),
        KvOp::Get { key } => format!("get(k{key})"),
        KvOp::Cas { key, expected, new } => {
            format!("cas(k{key}, {} -> {})", v(*expected), show(*new))
        }
    };
    let ret = match (&h.complete, &h.ret) {
        (None, _) => "unknown".to_string(),
        (Some(_), Some(KvRet::Value(x))) if matches!(h.op, KvOp::Get { .. }) => v(*x),
        (Some(_), Some(KvRet::Value(x))) => format!("replaced {}", v(*x)),
        (Some(_), Some(KvRet::Ok)) => "ok".into(),
        (Some(_), Some(KvRet::Swapped(s))) => if *s { "swapped" } else { "not swapped" }.into(),
        (Some(_), None) => "no answer".into(),
    };
    let end = h.complete.map_or("?".to_string(), ms);
    format!(
        "client {} [{} ms, {} ms] {op} -> {ret}",
        h.client,
        ms(h.invoke),
        end
    )
}

/// The write to `key` that every other write definitely precedes, with the value it left
/// (`None` = absent), if the history has one: then the final value must be it.
pub fn definitely_last_write(
    history: &[HistoryOp],
    key: u64,
) -> Option<(HistoryOp, Option<Value>)> {
    let writes: Vec<&HistoryOp> = history
        .iter()
        .filter(|h| op_key(&h.op) == key)
        .filter(|h| {
            !matches!(
                (&h.op, &h.ret),
                (KvOp::Get { .. }, _) | (KvOp::Cas { .. }, Some(KvRet::Swapped(false)))
            )
        })
        .collect();
    let last = writes
        .iter()
        .filter(|h| h.complete.is_some())
        .max_by_key(|h| h.invoke)?;
    let precedes_it =
        |w: &&&HistoryOp| std::ptr::eq(**w, *last) || w.complete.is_some_and(|c| c < last.invoke);
    if !writes.iter().all(|w| precedes_it(&w)) {
        return None;
    }
    let value = match &last.op {
        KvOp::Put { value, .. } => Some(*value),
        KvOp::Delete { .. } => None,
        KvOp::Cas { new, .. } => Some(*new),
        KvOp::Get { .. } => return None,
    };
    Some(((*last).clone(), value))
}

/// Checks the final state: each key's value read linearizably after convergence (`finals`)
/// against the definitely last write, and every member's own copy (`replicas`) against it.
pub fn final_state(
    history: &[HistoryOp],
    finals: &BTreeMap<u64, Option<Value>>,
    replicas: &BTreeMap<NodeId, BTreeMap<u64, Option<Value>>>,
) -> Result<(), Violation> {
    for (&key, &value) in finals {
        if let Some((w, expected)) = definitely_last_write(history, key) {
            if value != expected {
                return Err(Violation {
                    check: "acknowledged write lost",
                    key: Some(key),
                    detail: format!(
                        "the last acknowledged write was\n    {}\n  but the final value is {}",
                        line(&w),
                        value.map_or("absent".into(), show)
                    ),
                });
            }
        }
        for (node, copy) in replicas {
            let theirs = copy.get(&key).copied();
            if theirs != Some(value) {
                return Err(Violation {
                    check: "replicas differ",
                    key: Some(key),
                    detail: format!(
                        "node {node} holds {:?} where the cluster answers {value:?}",
                        theirs.flatten()
                    ),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(client: u64, t: (u64, Option<u64>), op: KvOp, ret: Option<KvRet>) -> HistoryOp {
        HistoryOp {
            client,
            invoke: t.0,
            complete: t.1,
            op,
            ret,
        }
    }

    #[test]
    fn a_stale_read_is_located_at_the_read_that_returned_it() {
        let h = vec![
            op(
                1,
                (0, Some(10)),
                KvOp::Put { key: 0, value: 1 },
                Some(KvRet::Value(None)),
            ),
            op(
                1,
                (20, Some(30)),
                KvOp::Put { key: 0, value: 2 },
                Some(KvRet::Value(Some(1))),
            ),
            op(
                2,
                (40, Some(50)),
                KvOp::Get { key: 0 },
                Some(KvRet::Value(Some(2))),
            ),
            op(
                2,
                (60, Some(70)),
                KvOp::Get { key: 0 },
                Some(KvRet::Value(Some(1))),
            ),
            op(
                2,
                (80, Some(90)),
                KvOp::Get { key: 0 },
                Some(KvRet::Value(Some(2))),
            ),
        ];
        let v = linearizable(&h).unwrap_err();
        assert_eq!(v.key, Some(0));
        assert!(
            v.detail.contains("[0.060 ms, 0.070 ms] get(k0) -> 0.1"),
            "{}",
            v.detail
        );
    }

    #[test]
    fn the_final_value_must_be_the_definitely_last_write() {
        let h = vec![
            op(
                1,
                (0, Some(10)),
                KvOp::Put { key: 3, value: 1 },
                Some(KvRet::Value(None)),
            ),
            op(
                2,
                (20, Some(30)),
                KvOp::Put { key: 3, value: 2 },
                Some(KvRet::Value(Some(1))),
            ),
        ];
        let mut finals = BTreeMap::new();
        finals.insert(3, Some(1));
        let v = final_state(&h, &finals, &BTreeMap::new()).unwrap_err();
        assert_eq!(v.check, "acknowledged write lost");
        finals.insert(3, Some(2));
        let mut replicas = BTreeMap::new();
        replicas.insert(2, BTreeMap::from([(3, Some(1))]));
        let v = final_state(&h, &finals, &replicas).unwrap_err();
        assert_eq!(v.check, "replicas differ");
        replicas.insert(2, BTreeMap::from([(3, Some(2))]));
        assert_eq!(final_state(&h, &finals, &replicas), Ok(()));
    }

    #[test]
    fn no_write_is_definitely_last_when_two_overlap_or_one_is_unknown() {
        let overlapping = vec![
            op(
                1,
                (0, Some(30)),
                KvOp::Put { key: 0, value: 1 },
                Some(KvRet::Ok),
            ),
            op(
                2,
                (10, Some(20)),
                KvOp::Put { key: 0, value: 2 },
                Some(KvRet::Ok),
            ),
        ];
        assert!(definitely_last_write(&overlapping, 0).is_none());
        let unknown = vec![
            op(1, (0, None), KvOp::Delete { key: 0 }, None),
            op(
                2,
                (10, Some(20)),
                KvOp::Put { key: 0, value: 2 },
                Some(KvRet::Ok),
            ),
        ];
        assert!(definitely_last_write(&unknown, 0).is_none());
    }
}
