//! The private-network handshake every TCP connection of a keyed node
//! starts with, before noise: libp2p `pnet` (nonce exchange, then XSalsa20
//! under the cluster key), then a short check block that both sides write
//! and read through the encrypted stream.
//!
//! Without the check a peer with another key (or none) would fail later,
//! inside the noise negotiation, indistinguishable from any other broken
//! connection. With it, the failure is seen here: counted, and logged as
//! "cluster key mismatch or no key" — at `warn` the first time for a
//! remote IP address, at `debug` after that (a misconfigured peer redials
//! every second).

use std::collections::BTreeSet;
use std::io;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::core::ConnectedPoint;
use libp2p::multiaddr::Protocol;
use libp2p::pnet::{PnetConfig, PnetOutput};
use libp2p::Multiaddr;
use prometheus_client::metrics::counter::Counter;

use super::key::ClusterKey;

/// What both sides send first through the encrypted stream. A peer with
/// another key decrypts it to noise; a peer with no key never sends it.
const CHECK_BLOCK: &[u8; 16] = b"/starling/psk/1\n";

/// Remote addresses remembered for "warn once"; past it every mismatch is
/// logged at debug (the counter still counts every one).
const MAX_WARNED_ADDRS: usize = 1024;

/// The key check of a keyed node's connections, shared by every connection
/// of its transport.
#[derive(Clone, Debug)]
pub struct KeyCheck {
    key: ClusterKey,
    mismatches: Counter,
    warned: Arc<Mutex<BTreeSet<IpAddr>>>,
}

/// A connection failed the cluster key check: the peer has another key,
/// no key, or is not a Starling node. The connection is closed.
#[derive(Debug, thiserror::Error)]
#[error("cluster key mismatch or no key: {0}")]
pub struct KeyMismatch(io::Error);

impl KeyCheck {
    /// Check connections against `key`, counting failures in `mismatches`.
    pub fn new(key: ClusterKey, mismatches: Counter) -> Self {
        KeyCheck {
            key,
            mismatches,
            warned: Arc::new(Mutex::new(BTreeSet::new())),
        }
    }

    /// Run the handshake and the check on a fresh connection; on failure
    /// count and log it.
    pub async fn admit<S>(self, socket: S, endpoint: ConnectedPoint) -> Result<PnetOutput<S>, KeyMismatch>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        match self.handshake(socket).await {
            Ok(out) => Ok(out),
            Err(e) => {
                self.refused(&endpoint, &e);
                Err(KeyMismatch(e))
            }
        }
    }

    async fn handshake<S>(&self, socket: S) -> io::Result<PnetOutput<S>>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let mut out = PnetConfig::new(self.key.psk())
            .handshake(socket)
            .await
            .map_err(io::Error::other)?;
        out.write_all(CHECK_BLOCK).await?;
        out.flush().await?;
        let mut got = [0u8; CHECK_BLOCK.len()];
        out.read_exact(&mut got).await?;
        if &got != CHECK_BLOCK {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the peer's check block did not decrypt under our key",
            ));
        }
        Ok(out)
    }

    fn refused(&self, endpoint: &ConnectedPoint, error: &io::Error) {
        self.mismatches.inc();
        let (direction, addr) = match endpoint {
            ConnectedPoint::Dialer { address, .. } => ("outbound", address),
            ConnectedPoint::Listener { send_back_addr, .. } => ("inbound", send_back_addr),
        };
        let first = ip_of(addr).is_some_and(|ip| {
            let mut warned = self.warned.lock().unwrap_or_else(|p| p.into_inner());
            warned.len() < MAX_WARNED_ADDRS && warned.insert(ip)
        });
        if first {
            tracing::warn!(
                %addr, direction, %error,
                "connection refused: cluster key mismatch or no key (the peer must be started \
                 with the same --cluster-key file; further refusals from this address are logged \
                 at debug and counted in starling_cluster_key_mismatches_total)"
            );
        } else {
            tracing::debug!(%addr, direction, %error, "connection refused: cluster key mismatch or no key");
        }
    }
}

/// The IP address of a multiaddr, if it starts with one.
fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
    match addr.iter().next()? {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    }
}
