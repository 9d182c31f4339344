//! Network input to an Engine: any bytes, delivered in every role the
//! network can hand them over in — as gossip, as a request, as the response
//! to a sync the engine has just started (where a `SyncResponse` is
//! expected) and as the response to the push of a sync in its second half
//! (where a `SyncAck` is expected) — must never panic, and every delivery
//! must show in the engine's counters (bad input is counted and dropped).
//! A local write and a tick afterwards check that whatever was accepted
//! left the engine usable.
//!
//! The roles and the accounting check are `starling::core::testing::Feeder`,
//! shared with `tests/wire_fuzz_smoke.rs`.
//!
//! Run: `cargo +nightly fuzz run engine_input` (see docs/FUZZING.md).
#![no_main]

use libfuzzer_sys::fuzz_target;
use starling::core::testing::Feeder;

/// Local time of the run; remote stamps near it pass the drift check.
const NOW_MS: u64 = 1_700_000_000_000;

fuzz_target!(|data: &[u8]| {
    let mut feeder = Feeder::new(NOW_MS);
    // The bytes as they came: mostly the header checks.
    feeder.feed(data);
    // The bytes as a body behind a valid header (first byte picks the
    // kind), so the fuzzer spends its time in the message handlers.
    if let Some((&kind, body)) = data.split_first() {
        let framed = feeder.framed(kind % 8, body);
        feeder.feed(&framed);
    }
    feeder.check_usable();
});
