//! Liveness probes through real libp2p: a Starling node and a bare libp2p
//! peer on loopback. The peer answers the node's probes, or holds their
//! streams without answering (a hang, as far as probes can tell), or does
//! not speak the probe protocol at all (a node of an older version). Only
//! the silent one loses its connection.

#![cfg(feature = "node")]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::swarm::SwarmEvent;
use libp2p::{noise, tcp, yamux, Multiaddr, StreamProtocol};
use starling::node::testing::{fast_protocol, launch, loopback_config};
use tokio::sync::mpsc;

/// How long each test watches the connection.
const WINDOW: Duration = Duration::from_secs(8);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Peer {
    /// Echoes every probe.
    Answers,
    /// Accepts probe streams and never reads them.
    Silent,
    /// Does not accept the probe protocol.
    Unsupported,
}

#[derive(Debug, PartialEq)]
enum Event {
    Connected,
    Closed,
}

/// Start a bare libp2p peer that dials `addr` and behaves as `mode` on the
/// probe protocol of `cluster`. Connection events arrive on the receiver;
/// the counter holds the probes answered.
fn bare_peer(
    addr: Multiaddr,
    cluster: &str,
    mode: Peer,
) -> (mpsc::UnboundedReceiver<Event>, Arc<AtomicUsize>) {
    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)
        .expect("tcp transport")
        .with_behaviour(|_| libp2p_stream::Behaviour::new())
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    let answered = Arc::new(AtomicUsize::new(0));
    if mode != Peer::Unsupported {
        let protocol = StreamProtocol::try_from_owned(format!("/starling/{cluster}/probe/1")).unwrap();
        let mut incoming = swarm.behaviour().new_control().accept(protocol).unwrap();
        let answered = answered.clone();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Some((_, mut stream)) = incoming.next().await {
                if mode == Peer::Silent {
                    held.push(stream);
                    continue;
                }
                let answered = answered.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 8];
                    while stream.read_exact(&mut buf).await.is_ok() {
                        if stream.write_all(&buf).await.is_err() || stream.flush().await.is_err() {
                            break;
                        }
                        answered.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
        });
    }
    let (tx, rx) = mpsc::unbounded_channel();
    swarm.dial(addr).expect("dial");
    tokio::spawn(async move {
        loop {
            match swarm.select_next_some().await {
                SwarmEvent::ConnectionEstablished { .. } => {
                    let _ = tx.send(Event::Connected);
                }
                SwarmEvent::ConnectionClosed {
                    num_established: 0, ..
                } => {
                    let _ = tx.send(Event::Closed);
                }
                _ => {}
            }
            if tx.is_closed() {
                return;
            }
        }
    });
    (rx, answered)
}

/// Start a node, connect a bare peer behaving as `mode`, and return
/// whether the node closed the connection within `within`, with the
/// probes the peer answered.
async fn closed_within(name: &str, mode: Peer, within: Duration) -> (bool, usize) {
    let dir = tempfile::tempdir().unwrap();
    let (node, addr) = launch(loopback_config(dir.path(), name, fast_protocol(name), vec![]))
        .await
        .expect("node started");
    let (mut events, answered) = bare_peer(addr.parse().unwrap(), name, mode);
    let first = tokio::time::timeout(Duration::from_secs(10), events.recv()).await;
    assert_eq!(
        first.ok().flatten(),
        Some(Event::Connected),
        "the bare peer connects"
    );
    let closed = matches!(
        tokio::time::timeout(within, events.recv()).await,
        Ok(Some(Event::Closed))
    );
    node.stop_without_leave().await.unwrap();
    (closed, answered.load(Ordering::SeqCst))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_answers_probes_keeps_its_connection() {
    // The node probes its only peer about every second. (The window stays
    // under the node's 10 s idle-connection timeout.)
    let (closed, answered) = closed_within("probe-answers", Peer::Answers, WINDOW).await;
    assert!(!closed, "a peer that answers is not cut off");
    assert!(
        answered >= 2,
        "the node probed its peer ({answered} probes answered)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_leaves_probes_unanswered_is_disconnected() {
    // A probe within about a second, 1 s to answer: about 2 s, in a
    // window generous for a loaded machine.
    let (closed, answered) = closed_within("probe-silent", Peer::Silent, WINDOW).await;
    assert!(
        closed,
        "the node closes the connection of a peer that does not answer"
    );
    assert_eq!(answered, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_without_the_probe_protocol_is_not_probed_and_keeps_its_connection() {
    // The window in which the silent peer above is cut off: nothing answers
    // here either, but an older node must not be cut off for it.
    let (closed, answered) = closed_within("probe-unsupported", Peer::Unsupported, WINDOW).await;
    assert!(!closed, "a peer without the probe protocol is not cut off");
    assert_eq!(answered, 0);
}
