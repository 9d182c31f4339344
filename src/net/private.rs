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

/// How long the key check may take on a fresh connection. A peer without
/// the key (an open node reads our nonce as a protocol negotiation and
/// waits for more) may never answer: past this the check has failed, and
/// is counted like any other refusal. It must end well before the
/// transport's own timeout (`swarm::CONNECTION_TIMEOUT`, from TCP connect
/// to a working multiplexer), which drops the check uncounted: at 10 s
/// each, that one won the race, and a keyed node dialing an open one
/// counted nothing (`tests/admission.rs`, in CI).
pub(crate) const CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

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
        let checked = match tokio::time::timeout(CHECK_TIMEOUT, self.handshake(socket)).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the peer did not complete the key check in time",
            )),
        };
        match checked {
            Ok(out) => Ok(out),
            Err(e) => {
                let _ = self.refused(&endpoint, &e);
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

    /// Count and log a refused connection; true if it was logged at
    /// `warn` (the first time for its remote IP).
    fn refused(&self, endpoint: &ConnectedPoint, error: &io::Error) -> bool {
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
        first
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

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::tcp::tokio::TcpStream;

    /// Two ends of a loopback TCP connection.
    async fn pair() -> (TcpStream, TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (c, s) = tokio::join!(tokio::net::TcpStream::connect(addr), l.accept());
        (TcpStream(c.unwrap()), TcpStream(s.unwrap().0))
    }

    fn endpoint(ip: &str) -> ConnectedPoint {
        ConnectedPoint::Listener {
            local_addr: "/ip4/127.0.0.1/tcp/1".parse().unwrap(),
            send_back_addr: format!("/ip4/{ip}/tcp/2").parse().unwrap(),
        }
    }

    /// `f`, failing the test if it takes over 10 s.
    async fn bounded<F: std::future::Future>(f: F) -> F::Output {
        tokio::time::timeout(std::time::Duration::from_secs(10), f)
            .await
            .expect("the handshake finishes within 10 s")
    }

    fn check(key: ClusterKey) -> KeyCheck {
        KeyCheck::new(key, Counter::default())
    }

    #[tokio::test]
    async fn ends_with_the_same_key_talk_through_the_private_network() {
        let key = ClusterKey::generate().unwrap();
        let (a, b) = (check(key), check(key));
        let (sa, sb) = pair().await;
        let (ra, rb) = bounded(async {
            tokio::join!(
                a.clone().admit(sa, endpoint("127.0.0.1")),
                b.clone().admit(sb, endpoint("127.0.0.1"))
            )
        })
        .await;
        let (Ok(mut ra), Ok(mut rb)) = (ra, rb) else {
            panic!("the handshake failed with the same key on both ends");
        };
        ra.write_all(b"hello").await.unwrap();
        ra.flush().await.unwrap();
        let mut got = [0u8; 5];
        rb.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello");
        assert_eq!((a.mismatches.get(), b.mismatches.get()), (0, 0));
    }

    #[tokio::test]
    async fn ends_with_different_keys_both_refuse_and_count_it() {
        let (a, b) = (
            check(ClusterKey::generate().unwrap()),
            check(ClusterKey::generate().unwrap()),
        );
        let (sa, sb) = pair().await;
        let (ra, rb) = bounded(async {
            tokio::join!(
                a.clone().admit(sa, endpoint("127.0.0.1")),
                b.clone().admit(sb, endpoint("127.0.0.1"))
            )
        })
        .await;
        let err = ra.err().expect("a refuses b").to_string();
        assert!(err.contains("cluster key mismatch or no key"), "{err}");
        assert!(rb.is_err());
        assert_eq!((a.mismatches.get(), b.mismatches.get()), (1, 1));
    }

    #[tokio::test]
    async fn a_peer_without_a_key_is_refused() {
        let a = check(ClusterKey::generate().unwrap());
        let (sa, mut plain) = pair().await;
        let peer = async move {
            // What an open node's dialler sends first: multistream-select.
            plain
                .write_all(b"\x13/multistream/1.0.0\n\x07/noise\n")
                .await
                .unwrap();
            let mut buf = [0u8; 24];
            let _ = plain.read_exact(&mut buf).await;
            drop(plain); // it cannot parse that, and hangs up
        };
        let (r, ()) = bounded(async { tokio::join!(a.clone().admit(sa, endpoint("127.0.0.1")), peer) }).await;
        assert!(r.is_err());
        assert_eq!(a.mismatches.get(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_never_answers_the_check_is_refused_and_counted_in_time() {
        let a = check(ClusterKey::generate().unwrap());
        // An open listener reads our nonce as a negotiation and waits for
        // the rest of it: it never answers.
        let (sa, _silent) = pair().await;
        let start = tokio::time::Instant::now();
        let r = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            a.clone().admit(sa, endpoint("127.0.0.1")),
        )
        .await
        .expect("the check gives up by itself");
        assert!(r.is_err());
        assert_eq!(a.mismatches.get(), 1);
        assert_eq!(start.elapsed(), CHECK_TIMEOUT);
    }

    #[test]
    fn a_mismatch_is_logged_at_warn_once_per_address() {
        let a = check(ClusterKey::generate().unwrap());
        let e = io::Error::other("x");
        assert!(a.refused(&endpoint("10.0.0.1"), &e), "first from 10.0.0.1");
        assert!(!a.refused(&endpoint("10.0.0.1"), &e), "again from 10.0.0.1");
        assert!(a.refused(&endpoint("10.0.0.2"), &e), "first from 10.0.0.2");
        assert_eq!(a.mismatches.get(), 3, "every refusal is counted");
    }
}
