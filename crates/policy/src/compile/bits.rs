//! Peer sets as bitsets over node indices, and comparing two snapshots' sets a word at a time.

use super::NodeInfo;
use crate::NodeId;
use std::collections::HashMap;

pub(super) fn bit_set(b: &mut [u64], i: usize) {
    b[i / 64] |= 1 << (i % 64);
}
pub(super) fn bit_get(b: &[u64], i: usize) -> bool {
    b[i / 64] >> (i % 64) & 1 == 1
}
pub(super) fn bit_or(a: &mut [u64], b: &[u64]) {
    a.iter_mut().zip(b).for_each(|(x, y)| *x |= *y);
}

/// The 64 bits of `b` from bit `at` on (zeros past its end).
fn bits_at(b: &[u64], at: usize) -> u64 {
    let (word, shift) = (at / 64, at % 64);
    let low = b.get(word).copied().unwrap_or(0) >> shift;
    if shift == 0 {
        low
    } else {
        low | b.get(word + 1).copied().unwrap_or(0) << (64 - shift)
    }
}

/// Whether bits `a_at..a_at + len` of `a` equal bits `b_at..b_at + len` of `b`.
pub(super) fn bits_equal(a: &[u64], a_at: usize, b: &[u64], b_at: usize, len: usize) -> bool {
    (0..len).step_by(64).all(|k| {
        let n = (len - k).min(64);
        let mask = if n == 64 { u64::MAX } else { (1 << n) - 1 };
        (bits_at(a, a_at + k) ^ bits_at(b, b_at + k)) & mask == 0
    })
}

/// A run of nodes at indices `a..a + len` of one snapshot and `b..b + len` of another.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Run {
    pub(super) a: usize,
    pub(super) b: usize,
    pub(super) len: usize,
}

/// The nodes in both lists, as runs of consecutive indices in both; `None` when the common
/// nodes are not in the same relative order in both.
pub(super) fn common_runs(a: &[NodeInfo], in_b: &HashMap<NodeId, usize>) -> Option<Vec<Run>> {
    let mut runs: Vec<Run> = Vec::new();
    for (i, n) in a.iter().enumerate() {
        let Some(&j) = in_b.get(&n.node.id) else {
            continue;
        };
        match runs.last_mut() {
            Some(r) if r.a + r.len == i && r.b + r.len == j => r.len += 1,
            Some(r) if r.b + r.len > j => return None,
            _ => runs.push(Run { a: i, b: j, len: 1 }),
        }
    }
    Some(runs)
}
