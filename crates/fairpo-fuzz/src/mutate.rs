//! Byte-level mutations of a seed input, drawn from a seeded generator (so a failing input
//! can be regenerated from its target, seed and index).

use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Tokens that tend to reach parser edge cases in JSON, TOML, CSV and binary headers.
const TOKENS: &[&[u8]] = &[
    b"0",
    b"-1",
    b"1e309",
    b"-0",
    b"NaN",
    b"inf",
    b"18446744073709551616",
    b"4294967295",
    b"9999999999999999999999",
    b"\"",
    b"\\",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"=",
    b"\n",
    b"\r\n",
    b"\t",
    b" ",
    b"\0",
    b"null",
    b"true",
    b"\"\"",
    b"[]",
    b"{}",
    b"\xff\xfe",
    b"\xc3\x28",
    b"#",
    b"'",
    b"..",
    b"/",
    b"-",
    b"+",
];

/// One mutated input: 1-4 mutations of `seed` (or of a splice of `seed` and `other`).
/// `focus` > 0 confines the positions to the first `focus` bytes (binary headers).
pub fn mutate(seed: &[u8], other: &[u8], rng: &mut ChaCha8Rng, focus: usize) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..rng.random_range(1..=4) {
        let span = if focus > 0 {
            v.len().min(focus)
        } else {
            v.len()
        };
        let pos = if span == 0 {
            0
        } else {
            rng.random_range(0..span)
        };
        let last = v.len().saturating_sub(1);
        match rng.random_range(0..9) {
            0 if !v.is_empty() => v[pos.min(last)] ^= 1 << rng.random_range(0..8),
            1 if !v.is_empty() => v[pos.min(last)] = rng.random(),
            2 => {
                let t = TOKENS[rng.random_range(0..TOKENS.len())];
                v.splice(pos..pos, t.iter().copied());
            }
            3 if !v.is_empty() => {
                let end = (pos + rng.random_range(1..=16)).min(v.len());
                v.drain(pos..end);
            }
            4 if !v.is_empty() => {
                // Duplicate a chunk (repeated keys, lines, records).
                let end = (pos + rng.random_range(1..=64)).min(v.len());
                let chunk = v[pos..end].to_vec();
                v.splice(end..end, chunk);
            }
            5 => v.truncate(pos),
            6 if !other.is_empty() => {
                let a = rng.random_range(0..other.len());
                let b = (a + rng.random_range(1..=256)).min(other.len());
                v.splice(pos..pos, other[a..b].iter().copied());
            }
            7 if !v.is_empty() => {
                // Replace a digit run with a token (numbers out of range, negative, huge).
                if let Some(s) = (pos..v.len()).find(|&i| v[i].is_ascii_digit()) {
                    let e = (s..v.len())
                        .find(|&i| !v[i].is_ascii_digit())
                        .unwrap_or(v.len());
                    let t = TOKENS[rng.random_range(0..9)]; // the numeric tokens
                    v.splice(s..e, t.iter().copied());
                }
            }
            _ => {
                let t = TOKENS[rng.random_range(0..TOKENS.len())];
                if !v.is_empty() {
                    let end = (pos + t.len()).min(v.len());
                    v.splice(pos..end, t.iter().copied());
                }
            }
        }
    }
    v
}
