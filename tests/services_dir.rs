#![cfg(feature = "node")]
