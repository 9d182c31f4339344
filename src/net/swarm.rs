//! Building a node's swarm: identity, transports and the [`Behaviour`].
//!
//! Without a cluster key: TCP with noise and yamux, and QUIC with the
//! `quic` feature. With a key ([`KeyCheck`]): TCP only, every connection
//! starting with the private-network handshake before noise; there is no
//! QUIC transport at all (rust-libp2p has no `pnet` for QUIC), so a keyed
//! node neither listens on nor dials QUIC addresses.

use std::time::Duration;

use libp2p::core::upgrade::Version;
use libp2p::{identity, noise, tcp, yamux, Swarm, Transport};

use super::behaviour::{Behaviour, ClusterNames, NetLimits};
use super::counted::Counted;
use super::private::KeyCheck;

/// How long an idle connection is kept open by libp2p. Gossipsub (0.50)
/// holds a stream open on every connection, which keeps it alive
/// whatever this says, so the driver closes the connections beyond its
/// partial view itself (`node::links`); this only bounds connections
/// that never carried gossipsub (a peer of another cluster, say).
const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a keyed connection may take from TCP connect to a working
/// multiplexer (a peer that says nothing is dropped after it).
const KEYED_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);

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

/// Build the swarm for `key`: with `cluster_key`, a private network over
/// TCP only; without, TCP (and QUIC with the `quic` feature).
pub fn build_swarm(
    key: identity::Keypair,
    names: &ClusterNames,
    mdns: bool,
    limits: &NetLimits,
    sync_timeout: Duration,
    cluster_key: Option<KeyCheck>,
) -> Result<Swarm<Behaviour>, SwarmError> {
    let behaviour = |key: &identity::Keypair| {
        Behaviour::new(key, names, mdns, limits, sync_timeout)
            .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { e.into() })
    };
    let swarm_config = |c: libp2p::swarm::Config| c.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT);
    let wire = limits.wire.clone();
    let swarm = match cluster_key {
        None => {
            let builder = libp2p::SwarmBuilder::with_existing_identity(key).with_tokio();
            #[cfg(feature = "quic")]
            let builder = builder.with_quic();
            builder
                .with_other_transport(|keypair| -> Result<_, Box<dyn std::error::Error + Send + Sync>> {
                    let noise = noise::Config::new(keypair)?;
                    Ok(tcp::tokio::Transport::new(tcp_config())
                        .map(move |socket, _| Counted::new(socket, wire.clone()))
                        .upgrade(Version::V1Lazy)
                        .authenticate(noise)
                        .multiplex(yamux::Config::default()))
                })
                .map_err(|e| SwarmError::Transport(e.to_string()))?
                .with_behaviour(behaviour)
                .map_err(|e| SwarmError::Behaviour(e.to_string()))?
                .with_swarm_config(swarm_config)
                .build()
        }
        Some(check) => libp2p::SwarmBuilder::with_existing_identity(key)
            .with_tokio()
            .with_other_transport(|keypair| -> Result<_, Box<dyn std::error::Error + Send + Sync>> {
                let noise = noise::Config::new(keypair)?;
                Ok(tcp::tokio::Transport::new(tcp_config())
                    .map(move |socket, _| Counted::new(socket, wire.clone()))
                    .and_then(move |socket, endpoint| check.clone().admit(socket, endpoint))
                    .upgrade(Version::V1Lazy)
                    .authenticate(noise)
                    .multiplex(yamux::Config::default())
                    .timeout(KEYED_HANDSHAKE_TIMEOUT))
            })
            .map_err(|e| SwarmError::Transport(e.to_string()))?
            .with_behaviour(behaviour)
            .map_err(|e| SwarmError::Behaviour(e.to_string()))?
            .with_swarm_config(swarm_config)
            .build(),
    };
    Ok(swarm)
}

fn tcp_config() -> tcp::Config {
    tcp::Config::default().nodelay(true)
}
