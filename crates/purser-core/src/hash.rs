//! Deterministic hashing. Replicas must agree byte for byte, so nothing here may depend on a
//! per-process random seed (std's `RandomState` does).

use std::hash::{BuildHasherDefault, Hasher};

/// A fast, seedless hasher for in-memory indexes keyed by integers. Index iteration order is
/// never observable: snapshots and queries read canonical (sorted) structures only.
#[derive(Default, Clone, Copy)]
pub struct FxHasher {
    hash: u64,
}

const FX_SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }
    fn write_u64(&mut self, value: u64) {
        self.hash = (self.hash.rotate_left(5) ^ value).wrapping_mul(FX_SEED);
    }
    fn write_u128(&mut self, value: u128) {
        self.write_u64(value as u64);
        self.write_u64((value >> 64) as u64);
    }
    fn finish(&self) -> u64 {
        // Spread the high bits down: hashbrown takes its control byte from the top bits.
        let h = self.hash;
        h ^ (h >> 29) ^ (h >> 47)
    }
}

pub type FxBuild = BuildHasherDefault<FxHasher>;
pub type FxHashMap<K, V> = std::collections::HashMap<K, V, FxBuild>;

/// SipHash-2-4 with fixed keys: stable across processes and releases of Rust, and not trivially
/// invertible, so a client cannot cheaply craft a request id that collides with another's.
#[allow(deprecated)]
fn sip(key0: u64, key1: u64, bytes: &[u8]) -> u64 {
    let mut hasher = std::hash::SipHasher::new_with_keys(key0, key1);
    hasher.write(bytes);
    hasher.finish()
}

/// 128-bit fingerprint of a byte string (two independent SipHash keys).
pub fn fingerprint128(bytes: &[u8]) -> u128 {
    let lo = sip(0x7075_7273_6572_2d31, 0x0123_4567_89ab_cdef, bytes);
    let hi = sip(0x7075_7273_6572_2d32, 0xfedc_ba98_7654_3210, bytes);
    (u128::from(hi) << 64) | u128::from(lo)
}

/// The key a request id is remembered under: its id within the id space of the token that
/// sent it (`None`: members without authentication and system commands share one), so that
/// one tenant's ids never collide with another's. Used by the state and the leader's fast
/// path alike.
pub fn request_key(actor: Option<u64>, id: &str) -> u128 {
    let mut bytes = Vec::with_capacity(9 + id.len());
    match actor {
        Some(token) => {
            bytes.push(1);
            bytes.extend_from_slice(&token.to_le_bytes());
        }
        None => bytes.push(0),
    }
    bytes.extend_from_slice(id.as_bytes());
    fingerprint128(&bytes)
}

/// 64-bit fingerprint of a byte string.
pub fn fingerprint64(bytes: &[u8]) -> u64 {
    sip(0x7075_7273_6572_2d33, 0x0f1e_2d3c_4b5a_6978, bytes)
}
