//! Starling: a leaderless coordination node.
//!
//! Config distribution, service discovery and membership replicated with
//! CRDTs over libp2p gossip and anti-entropy, with no server cluster. The
//! protocol lives in [`core`], a sans-IO state machine; the `node` feature
//! (on by default) adds the libp2p driver ([`net`]), durable storage
//! ([`store`]), and the embedding API ([`node`]).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

#[cfg(feature = "node")]
pub mod cli;
pub mod core;
#[cfg(feature = "node")]
pub mod dns;
#[cfg(feature = "node")]
pub mod http;
#[cfg(feature = "node")]
mod key_file;
#[cfg(feature = "node")]
pub mod net;
#[cfg(feature = "node")]
pub mod node;
#[cfg(feature = "node")]
pub mod store;
