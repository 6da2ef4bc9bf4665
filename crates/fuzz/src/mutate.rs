//! The mutations: small, structure-blind edits of an input, several stacked per mutant.

use lockstep_core::Rng;

/// `u32` values that break length checks: zero, one, sign and width boundaries, the maximum.
const U32S: &[u32] = &[
    0,
    1,
    2,
    7,
    8,
    16,
    0x7f,
    0x80,
    0xff,
    0x100,
    0xffff,
    0x1_0000,
    0x10_0000,
    0x400_0000,
    0x4000_0000,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_fffe,
    0xffff_ffff,
];

/// `u64` values for indexes, terms and counts.
const U64S: &[u64] = &[
    0,
    1,
    2,
    0xffff_ffff,
    0x1_0000_0000,
    (1 << 63) - 1,
    1 << 63,
    u64::MAX - 1,
    u64::MAX,
];

fn below(rng: &mut Rng, n: usize) -> usize {
    rng.range(0, n.max(1) as u64) as usize
}

fn pos(rng: &mut Rng, v: &[u8], width: usize) -> Option<usize> {
    if v.len() < width {
        return None;
    }
    let slots = v.len() - width + 1;
    // Half the time aligned to the width, where length fields usually sit.
    let p = below(rng, slots);
    Some(if rng.chance(0.5) { p - p % width } else { p })
}

fn interesting_u32(rng: &mut Rng, len: usize) -> u32 {
    match below(rng, 4) {
        0 => rng.next_u64() as u32,
        1 => (len as u32)
            .wrapping_add(below(rng, 5) as u32)
            .wrapping_sub(2),
        _ => U32S[below(rng, U32S.len())],
    }
}

fn interesting_u64(rng: &mut Rng) -> u64 {
    match below(rng, 3) {
        0 => rng.next_u64(),
        _ => U64S[below(rng, U64S.len())],
    }
}

/// Applies one to four random mutations to `base` (with `pool` as the source of splices)
/// and cuts the result to `max_len` bytes.
pub fn mutate(rng: &mut Rng, base: &[u8], pool: &[Vec<u8>], max_len: usize) -> Vec<u8> {
    let mut v = base.to_vec();
    let rounds = match below(rng, 8) {
        0..=3 => 1,
        4 | 5 => 2,
        6 => 3,
        _ => 4,
    };
    for _ in 0..rounds {
        mutate_once(rng, &mut v, pool, max_len);
    }
    v.truncate(max_len);
    v
}

fn mutate_once(rng: &mut Rng, v: &mut Vec<u8>, pool: &[Vec<u8>], max_len: usize) {
    match below(rng, 14) {
        // Flip one bit.
        0 | 1 => {
            if let Some(p) = pos(rng, v, 1) {
                v[p] ^= 1 << below(rng, 8);
            }
        }
        // Set a byte.
        2 => {
            if let Some(p) = pos(rng, v, 1) {
                v[p] = match below(rng, 4) {
                    0 => 0,
                    1 => 0xff,
                    2 => 0x80,
                    _ => rng.next_u64() as u8,
                };
            }
        }
        // Add or subtract a little.
        3 => {
            if let Some(p) = pos(rng, v, 1) {
                let d = 1 + below(rng, 16) as u8;
                v[p] = if rng.chance(0.5) {
                    v[p].wrapping_add(d)
                } else {
                    v[p].wrapping_sub(d)
                };
            }
        }
        // Overwrite a u32 (a length or count field) with a boundary value.
        4 | 5 => {
            if let Some(p) = pos(rng, v, 4) {
                let x = interesting_u32(rng, v.len());
                v[p..p + 4].copy_from_slice(&x.to_le_bytes());
            }
        }
        // Overwrite a u64 (an index, term or id).
        6 => {
            if let Some(p) = pos(rng, v, 8) {
                let x = interesting_u64(rng);
                v[p..p + 8].copy_from_slice(&x.to_le_bytes());
            }
        }
        // Truncate.
        7 => {
            let n = below(rng, v.len() + 1);
            v.truncate(n);
        }
        // Extend with zeros, 0xff or random bytes.
        8 => {
            let n = 1 + below(rng, 64);
            let kind = below(rng, 3);
            for _ in 0..n {
                v.push(match kind {
                    0 => 0,
                    1 => 0xff,
                    _ => rng.next_u64() as u8,
                });
            }
        }
        // Delete a range.
        9 => {
            if !v.is_empty() {
                let a = below(rng, v.len());
                let n = 1 + below(rng, (v.len() - a).min(64));
                v.drain(a..a + n);
            }
        }
        // Duplicate a range in place.
        10 => {
            if !v.is_empty() && v.len() < max_len {
                let a = below(rng, v.len());
                let n = 1 + below(rng, (v.len() - a).min(256));
                let chunk = v[a..a + n].to_vec();
                let at = below(rng, v.len() + 1);
                v.splice(at..at, chunk);
            }
        }
        // Splice: this input's head with another's tail.
        11 | 12 => {
            if let Some(other) = pool.get(below(rng, pool.len())) {
                let a = below(rng, v.len() + 1);
                let b = below(rng, other.len() + 1);
                v.truncate(a);
                v.extend_from_slice(&other[b..other.len().min(b + max_len)]);
            }
        }
        // Insert a range of another input.
        _ => {
            if let Some(other) = pool.get(below(rng, pool.len())) {
                if !other.is_empty() {
                    let b = below(rng, other.len());
                    let n = 1 + below(rng, (other.len() - b).min(256));
                    let at = below(rng, v.len() + 1);
                    v.splice(at..at, other[b..b + n].iter().copied());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutation_is_deterministic_and_bounded() {
        let pool = vec![vec![1u8; 100], vec![2u8; 300]];
        let run = |seed| {
            let mut rng = Rng::new(seed);
            (0..1000)
                .map(|i| mutate(&mut rng, &pool[i % 2], &pool, 128))
                .collect::<Vec<_>>()
        };
        let a = run(7);
        assert_eq!(a, run(7));
        assert!(a.iter().all(|m| m.len() <= 128));
        assert!(a.iter().any(|m| m != &pool[0] && m != &pool[1]));
    }
}
