//! Seeded random streams: one seed per run, one independent stream per use.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// The stream `(kind, index)` of run `seed`. Streams never overlap, so
/// adding a draw to one (say, the workload) leaves the others unchanged.
pub fn stream(seed: u64, kind: u64, index: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(splitmix(seed ^ splitmix(kind)));
    rng.set_stream(index);
    rng
}

/// A 64-bit mix (SplitMix64 finaliser).
pub fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}
