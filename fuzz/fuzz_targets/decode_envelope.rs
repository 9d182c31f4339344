//! Envelope decoding: any bytes either decode or return a typed error (a
//! panic or an abort is a bug), and whatever decodes survives an
//! encode/decode round trip unchanged.
//!
//! Run: `cargo +nightly fuzz run decode_envelope` (see docs/FUZZING.md).
#![no_main]

use libfuzzer_sys::fuzz_target;
use starling::core::wire::{self, HEADER_LEN, MAGIC, PROTOCOL_VERSION};

/// The cluster every input is decoded for: the default one, as in the seed
/// corpus that `tests/wire_fuzz_smoke.rs` writes.
const CLUSTER: &str = "default";
/// Decoder size limit (the node's default is 32 MiB; smaller keeps runs fast).
const LIMIT: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let cluster = wire::cluster_id(CLUSTER);
    // The bytes as they came: mostly exercises the header checks.
    round_trip(data, cluster);
    // The bytes as a body behind a valid header (first byte picks the kind),
    // so the fuzzer spends its time in the bincode bodies.
    if let Some((&kind, body)) = data.split_first() {
        let mut framed = Vec::with_capacity(HEADER_LEN + body.len());
        framed.extend_from_slice(&MAGIC);
        framed.push(PROTOCOL_VERSION);
        framed.push(kind % 8);
        framed.extend_from_slice(&cluster.to_le_bytes());
        framed.extend_from_slice(body);
        round_trip(&framed, cluster);
    }
});

fn round_trip(bytes: &[u8], cluster: u64) {
    let Ok(msg) = wire::decode(bytes, cluster, LIMIT) else {
        return;
    };
    let again = wire::encode(&msg, cluster);
    let back = wire::decode(&again, cluster, usize::MAX).expect("a re-encoded message decodes");
    assert_eq!(back, msg, "decode(encode(m)) == m");
    assert_eq!(wire::encode(&back, cluster), again, "encoding is deterministic");
}
