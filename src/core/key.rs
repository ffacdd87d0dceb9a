//! A row's dedup key as one 128-bit number, and the memory of recent keys.
//!
//! Rows are sorted and compared by this number: within a batch (the first
//! row of a key wins), across a group of batches (`CopyPayload::merge`),
//! and against recent batches (`RecentKeys`). For a one-column key of a
//! type that fits (uuid, int, bool, date, timestamp) the number *is* the
//! key, in the key's order; otherwise it is a hash of the key's normalised
//! bytes, and equal numbers are told apart by those bytes.

use std::hash::{BuildHasher, Hasher, RandomState};

use crate::core::schema::{KeyMode, Schema};
use crate::core::value::{Decimal, Value};

/// The key number of a valid row, and (for `KeyMode::Hashed`) its
/// normalised bytes appended to `bytes`: values equal in PostgreSQL give
/// equal bytes (`1.50` = `1.5`, timestamps at microsecond precision).
pub fn key_of(schema: &Schema, values: &[Value<'_>], bytes: &mut Vec<u8>) -> u128 {
    match schema.key_mode {
        KeyMode::None => 0,
        KeyMode::Exact => exact(&values[schema.key[0]]),
        KeyMode::Hashed => {
            let start = bytes.len();
            for &c in &schema.key {
                normalised(&values[c], bytes);
            }
            hash128(&bytes[start..])
        }
    }
}

/// Order-preserving: signed numbers are offset so they sort as unsigned.
fn exact(v: &Value<'_>) -> u128 {
    const SIGN: u64 = 1 << 63;
    match v {
        Value::Uuid(u) => u.as_u128(),
        Value::Int(n) => u128::from(*n as u64 ^ SIGN),
        Value::Bool(b) => u128::from(*b),
        Value::Date(d) => u128::from(i64::from(chrono::Datelike::num_days_from_ce(d)) as u64 ^ SIGN),
        Value::Timestamp(t) => u128::from(t.timestamp_micros() as u64 ^ SIGN),
        // Key columns are required, and exact keys are of the types above.
        _ => 0,
    }
}

/// Length-prefixed bytes that are equal exactly when PostgreSQL finds the
/// values equal.
fn normalised(v: &Value<'_>, out: &mut Vec<u8>) {
    let mut put = |tag: u8, data: &[u8]| {
        out.push(tag);
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(data);
    };
    match v {
        Value::Null => put(0, b""),
        Value::Text(s) => put(1, s.as_bytes()),
        Value::Uuid(u) => put(2, u.as_bytes()),
        Value::Int(n) => put(3, &n.to_le_bytes()),
        Value::Decimal(d) => put(4, &canonical_decimal(d)),
        Value::Bool(b) => put(5, &[u8::from(*b)]),
        Value::Timestamp(t) => put(6, &t.timestamp_micros().to_le_bytes()),
        Value::Date(d) => put(7, &chrono::Datelike::num_days_from_ce(d).to_le_bytes()),
    }
}

/// A decimal's digits with the scale it was written with removed: `-0.0`
/// → `0`, `1.50` → `1.5`.
fn canonical_decimal(d: &Decimal<'_>) -> Vec<u8> {
    let end = d.frac.iter().rposition(|&b| b != b'0').map_or(0, |i| i + 1);
    let frac = &d.frac[..end];
    let mut out = Vec::with_capacity(d.int.len() + frac.len() + 2);
    if d.negative && !d.is_zero() {
        out.push(b'-');
    }
    out.extend_from_slice(d.int);
    out.push(b'.');
    out.extend_from_slice(frac);
    out
}

/// Two SipHash passes with different keys: fixed, so every lane (and a
/// restarted daemon) orders the same keys the same way.
fn hash128(data: &[u8]) -> u128 {
    let mut a = std::hash::DefaultHasher::new();
    a.write(data);
    let mut b = std::hash::DefaultHasher::new();
    b.write_u8(0x5a);
    b.write(data);
    (u128::from(a.finish()) << 64) | u128::from(b.finish())
}

/// Slots of one generation's table (a power of two): 512 KiB of 32-bit tags.
const SLOTS: usize = 1 << 17;
/// Keys one generation of `RecentKeys` holds: 3/4 of its slots, so a probe
/// for an absent key stays short.
pub const GENERATION: usize = SLOTS / 4 * 3;

/// The keys of the latest valid rows: the last one or two generations of
/// 98 304, about 1 MB in all. A row whose key is here is very likely a
/// duplicate, but not surely: its first occurrence may still be
/// uncommitted, refused by the database, or another key's 32-bit tag met on
/// its probe run (about one lookup in 10^9). So it is only *presumed* one,
/// and the Writer checks it against the table; guessing wrong costs time,
/// never correctness. A key missed here that is already stored costs more:
/// the batch's direct COPY meets it and the batch is redone through
/// staging. So the memory is as long as 1 MB allows: with two generations
/// of 57 344 hashes (1.2 MB), duplicates of rows further back made 15 of
/// 120 transactions of the benchmark's dirty data waste a COPY.
pub struct RecentKeys {
    /// Keys the hash per process, so no input can aim at collisions.
    seed: u64,
    current: Generation,
    previous: Generation,
}

/// An open-addressing table of keys: a key's hash picks its home slot (17
/// bits) and is stored as a nonzero 32-bit tag (other bits); 0 is empty.
struct Generation {
    slots: Box<[u32]>,
    len: usize,
}

impl Generation {
    fn new() -> Self {
        Generation { slots: vec![0; SLOTS].into_boxed_slice(), len: 0 }
    }

    /// Home slot and tag of a hash.
    fn place(key: u64) -> (usize, u32) {
        (key as usize & (SLOTS - 1), ((key >> 32) as u32).max(1))
    }

    fn contains(&self, key: u64) -> bool {
        let (mut i, tag) = Self::place(key);
        loop {
            match self.slots[i] {
                0 => return false,
                t if t == tag => return true,
                _ => i = (i + 1) & (SLOTS - 1),
            }
        }
    }

    fn insert(&mut self, key: u64) {
        let (mut i, tag) = Self::place(key);
        loop {
            match self.slots[i] {
                0 => {
                    self.slots[i] = tag;
                    self.len += 1;
                    return;
                }
                t if t == tag => return,
                _ => i = (i + 1) & (SLOTS - 1),
            }
        }
    }
}

impl Default for RecentKeys {
    fn default() -> Self {
        RecentKeys { seed: RandomState::new().hash_one(0u8), current: Generation::new(), previous: Generation::new() }
    }
}

impl RecentKeys {
    /// Both halves of the key through a 64-bit finalizer (splitmix64's):
    /// every input bit moves every output bit, so sequential keys spread
    /// over the table as well as random ones.
    fn hash(&self, key: u128) -> u64 {
        fn mix(mut z: u64) -> u64 {
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        let (hi, lo) = ((key >> 64) as u64, key as u64);
        mix(hi ^ mix(lo ^ self.seed))
    }

    pub fn contains(&self, key: u128) -> bool {
        let k = self.hash(key);
        self.current.contains(k) || self.previous.contains(k)
    }

    pub fn insert(&mut self, key: u128) {
        if self.current.len >= GENERATION {
            // The oldest generation's table, emptied, takes the new one.
            std::mem::swap(&mut self.previous, &mut self.current);
            self.current.slots.fill(0);
            self.current.len = 0;
        }
        let k = self.hash(key);
        self.current.insert(k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two generations are remembered; the third start forgets the first.
    #[test]
    fn recent_keys_keep_two_generations() {
        let g = GENERATION as u128;
        let mut r = RecentKeys::default();
        assert!(!r.contains(0));
        for n in 0..2 * g {
            r.insert(n);
        }
        assert!((0..2 * g).all(|n| r.contains(n)));
        assert!(!r.contains(2 * g));
        r.insert(2 * g);
        assert_eq!((0..g).filter(|&n| r.contains(n)).count(), 0, "the first generation is forgotten");
        assert!((g..=2 * g).all(|n| r.contains(n)));
        assert_eq!((r.current.len, r.previous.len), (1, GENERATION));
    }

    /// A key inserted again takes no second slot; keys whose hashes share a
    /// home slot probe on and are all found.
    #[test]
    fn a_generation_probes_past_taken_slots() {
        let mut g = Generation::new();
        let home = 5u64;
        let keys: Vec<u64> = (1..=40u64).map(|t| (t << 32) | home).chain([(7 << 32) | (SLOTS as u64 - 1)]).collect();
        for &k in &keys {
            g.insert(k);
            g.insert(k);
        }
        assert_eq!(g.len, keys.len());
        assert!(keys.iter().all(|&k| g.contains(k)));
        assert!(!g.contains((41 << 32) | home));
    }

    #[test]
    fn exact_keys_keep_their_order_and_hashed_keys_normalise() {
        let ints = [-5i64, -1, 0, 3, i64::MAX];
        let keys: Vec<u128> = ints.iter().map(|n| exact(&Value::Int(*n))).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        let d = |s: &'static str| Value::Decimal(Decimal::parse(s).unwrap());
        let norm = |v: Value<'_>| {
            let mut b = Vec::new();
            normalised(&v, &mut b);
            b
        };
        assert_eq!(norm(d("1.50")), norm(d("1.5")));
        assert_eq!(norm(d("-0.00")), norm(d("0")));
        assert_ne!(norm(d("1.5")), norm(d("15")));
        assert_ne!(norm(Value::Text("a")), norm(Value::Text("A")));
    }
}
