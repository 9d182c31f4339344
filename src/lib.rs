//! Starling: a leaderless coordination node.
//!
//! Config distribution, service discovery and membership replicated with
//! CRDTs over libp2p gossip and anti-entropy, with no server cluster. The
//! protocol lives in [`core`], a sans-IO state machine; the `node` feature
//! (on by default) adds the libp2p driver, durable storage, the HTTP API and
//! the embedding API.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod core;
