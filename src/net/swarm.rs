//! Building a node's swarm: identity, transports and the [`Behaviour`].
//!
//! Without a cluster key: TCP with noise and yamux, and QUIC with the
//! `quic` feature. With a key ([`KeyCheck`]): TCP only, every connection
//! starting with the private-network handshake before noise; there is no
//! QUIC transport at all (rust-libp2p has no `pnet` for QUIC), so a keyed
//! node neither listens on nor dials QUIC addresses.
//!
//! Every TCP connection counts its bytes twice: the socket's
//! ([`Counted`], noise and yamux included) and each substream's by
//! protocol ([`ProtocolCounting`], plaintext only). QUIC connections are
//! counted by neither.

use std::time::Duration;

use libp2p::core::upgrade::Version;
use libp2p::{identity, noise, tcp, yamux, Swarm, Transport};

use super::behaviour::{Behaviour, ClusterNames, NetLimits};
use super::counted::Counted;
use super::private::KeyCheck;
use super::protocols::{ProtocolCount, ProtocolCounting};

/// How long an idle connection is kept open by libp2p. Gossipsub (0.50)
/// holds a stream open on every connection, which keeps it alive
/// whatever this says, so the driver closes the connections beyond its
/// partial view itself (`node::links`); this only bounds connections
/// that never carried gossipsub (a peer of another cluster, say).
const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a connection may take from TCP connect to a working
/// multiplexer (a peer that says nothing is dropped after it): libp2p's
/// default, set here so the key check's own bound
/// (`private::CHECK_TIMEOUT`) can be kept below it.
pub(crate) const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
const _: () = assert!(super::private::CHECK_TIMEOUT.as_secs() * 2 <= CONNECTION_TIMEOUT.as_secs());

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
    let protocols = ProtocolCount::new(names, limits.protocols.clone());
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
                        .multiplex(yamux::Config::default())
                        .map(move |(peer, muxer), _| {
                            (peer, ProtocolCounting::wrap(muxer, protocols.clone()))
                        }))
                })
                .map_err(|e| SwarmError::Transport(e.to_string()))?
                .with_behaviour(behaviour)
                .map_err(|e| SwarmError::Behaviour(e.to_string()))?
                .with_swarm_config(swarm_config)
                .with_connection_timeout(CONNECTION_TIMEOUT)
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
                    .map(move |(peer, muxer), _| (peer, ProtocolCounting::wrap(muxer, protocols.clone()))))
            })
            .map_err(|e| SwarmError::Transport(e.to_string()))?
            .with_behaviour(behaviour)
            .map_err(|e| SwarmError::Behaviour(e.to_string()))?
            .with_swarm_config(swarm_config)
            .with_connection_timeout(CONNECTION_TIMEOUT)
            .build(),
    };
    Ok(swarm)
}

fn tcp_config() -> tcp::Config {
    tcp::Config::default().nodelay(true)
}

#[cfg(test)]
mod tests {
    use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
    use libp2p::swarm::SwarmEvent;
    use prometheus_client::metrics::counter::Counter;

    use super::*;
    use crate::net::{ClusterKey, ProtocolCounters, ProtocolLabel};

    /// A swarm of the `test` cluster listening on loopback, and its
    /// counters.
    async fn node(cluster_key: Option<ClusterKey>) -> (Swarm<Behaviour>, NetLimits, libp2p::Multiaddr) {
        let names = ClusterNames::new("test");
        let limits = NetLimits::new(1 << 20, 16, 16, 2, Counter::default());
        let check = cluster_key.map(|k| KeyCheck::new(k, Counter::default()));
        let mut swarm = build_swarm(
            identity::Keypair::generate_ed25519(),
            &names,
            false,
            &limits,
            Duration::from_secs(5),
            check,
        )
        .unwrap();
        swarm.listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap()).unwrap();
        let addr = loop {
            if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                break address;
            }
        };
        (swarm, limits, addr)
    }

    fn both(c: &ProtocolCounters, label: ProtocolLabel) -> (u64, u64) {
        (c.received(label).get(), c.sent(label).get())
    }

    /// `a` and `b` connect; `b` sends `a` one probe, which `a` echoes.
    /// Identify runs by itself on a new connection. Both ends then count
    /// bytes both ways under `probe` and `identify`, and no more than
    /// their sockets carried.
    async fn probe_and_identify_are_counted_on_both_ends(cluster_key: Option<ClusterKey>) {
        let (mut a, la, addr) = node(cluster_key).await;
        let (mut b, lb, _) = node(cluster_key).await;
        let probe = ClusterNames::new("test").probe_protocol;
        let mut incoming = a.behaviour().probe.new_control().accept(probe.clone()).unwrap();
        let mut control = b.behaviour().probe.new_control();
        let a_peer = *a.local_peer_id();
        b.dial(addr).unwrap();
        let echo = async move {
            let (_, mut s) = incoming.next().await.unwrap();
            let mut buf = [0u8; 8];
            s.read_exact(&mut buf).await.unwrap();
            s.write_all(&buf).await.unwrap();
            s.close().await.unwrap();
        };
        let ask = async move {
            let mut s = loop {
                match control.open_stream(a_peer, probe.clone()).await {
                    Ok(s) => break s,
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            };
            s.write_all(b"12345678").await.unwrap();
            let mut buf = [0u8; 8];
            s.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"12345678");
        };
        let identified = |c: &ProtocolCounters| {
            let (r, s) = both(c, ProtocolLabel::Identify);
            r > 0 && s > 0
        };
        let drive = async {
            let probed = futures::future::join(echo, ask);
            futures::pin_mut!(probed);
            let mut probed_done = false;
            loop {
                tokio::select! {
                    _ = a.select_next_some() => {}
                    _ = b.select_next_some() => {}
                    _ = &mut probed, if !probed_done => probed_done = true,
                }
                if probed_done && identified(&la.protocols) && identified(&lb.protocols) {
                    break;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(20), drive)
            .await
            .expect("the probe is answered and identify runs within 20 s");
        for (end, l) in [("a", &la), ("b", &lb)] {
            let (r, s) = both(&l.protocols, ProtocolLabel::Probe);
            // 8 bytes of nonce each way, plus the negotiation.
            assert!(r > 8 && s > 8, "{end}: probe bytes {r} in, {s} out");
            let mut total = (0, 0);
            for label in ProtocolLabel::ALL {
                let (r, s) = both(&l.protocols, label);
                total = (total.0 + r, total.1 + s);
            }
            let wire = (l.wire.received.get(), l.wire.sent.get());
            assert!(
                total.0 < wire.0 && total.1 < wire.1,
                "{end}: protocol bytes {total:?} within wire bytes {wire:?}"
            );
            assert_eq!(
                both(&l.protocols, ProtocolLabel::Other),
                (0, 0),
                "{end}: nothing unnamed"
            );
        }
    }

    #[tokio::test]
    async fn substreams_are_counted_by_protocol() {
        probe_and_identify_are_counted_on_both_ends(None).await;
    }

    #[tokio::test]
    async fn substreams_are_counted_by_protocol_on_a_private_network() {
        probe_and_identify_are_counted_on_both_ends(Some(ClusterKey::generate().unwrap())).await;
    }
}
