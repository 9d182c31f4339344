//! Building a node's swarm: identity, transports (TCP with noise and
//! yamux; QUIC with the `quic` feature) and the [`Behaviour`].

use std::time::Duration;

use libp2p::{identity, Swarm};

use super::behaviour::{Behaviour, ClusterNames};

/// How long an idle connection is kept open.
const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(300);

/// Why a swarm could not be built. Nothing is listening or connected yet:
/// the caller releases what it opened (the data directory) and reports it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SwarmError {
    /// The TCP transport (with its noise and yamux upgrades) could not be
    /// set up.
    #[error("tcp transport: {0}")]
    Transport(String),
    /// A behaviour could not be built (gossipsub config or subscription,
    /// mDNS socket).
    #[error("behaviour: {0}")]
    Behaviour(String),
}

/// Build the swarm for `key` with TCP (and QUIC with the `quic` feature).
pub fn build_swarm(
    key: identity::Keypair,
    names: &ClusterNames,
    mdns: bool,
    max_message_bytes: usize,
    sync_timeout: Duration,
) -> Result<Swarm<Behaviour>, SwarmError> {
    let builder = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            libp2p::tcp::Config::default().nodelay(true),
            libp2p::noise::Config::new,
            libp2p::yamux::Config::default,
        )
        .map_err(|e| SwarmError::Transport(e.to_string()))?;
    #[cfg(feature = "quic")]
    let builder = builder.with_quic();
    let swarm = builder
        .with_behaviour(|key| {
            Behaviour::new(key, names, mdns, max_message_bytes, sync_timeout)
                .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { e.into() })
        })
        .map_err(|e| SwarmError::Behaviour(e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT))
        .build();
    Ok(swarm)
}
