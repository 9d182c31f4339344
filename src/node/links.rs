//! Which connections a node keeps: its partial view.
//!
//! A node *chooses* `limits.neighbours` peers and keeps a connection to
//! each; those links carry gossip, pings and the periodic syncs, and their
//! holders are the ones that notice first-hand when a peer fails. Every
//! other connection is temporary and closed by the side that opened it:
//!
//! - a connection this node dialed without choosing the peer (a sync with a
//!   member outside the view, a bootstrap dial, a Kademlia lookup, a probe
//!   of a lost peer) closes once it has carried no request for
//!   [`LINGER`]; nothing re-dials it;
//! - a connection a peer dialed to this node is that peer's to close (its
//!   neighbour link, or its own temporary connection): this node accepts
//!   it and keeps it, unless it holds more than `max_peers` peers, when it
//!   closes the youngest idle inbound links of peers it did not choose.
//!
//! Gossipsub holds a stream open on every connection, so libp2p's idle
//! timeout never closes one: without these rules every sync, lookup and
//! bootstrap dial stayed for good and the connections became a full mesh,
//! with pings and gossip on each. Closing by a bound alone (whichever side
//! opened the connection) made the peers that relied on those links dial
//! again, and the handshakes cost more than the pings saved.
//!
//! When a link breaks without this node closing it, the driver re-dials
//! the peer once to learn whether it is gone (a crashed process refuses
//! the dial). It does so only for a *neighbour link* ([`Closed::neighbour`]):
//! one it chose, or an inbound one whose owner chose this node — it says
//! so in its probes (`probe::CHOSE_YOU`), or the link stayed open for
//! [`KEPT_AGE`] (a node of an older version). A temporary connection
//! closed by the peer that opened it is never re-dialed, so closing one
//! costs nothing more. Before the probes said it, a node that crashed
//! within `KEPT_AGE` of its links coming up, all of them its own
//! choices, went unnoticed by its neighbours: each took the close for a
//! temporary connection's.
//!
//! Pure bookkeeping, with time passed in, so the rules are unit-tested.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use libp2p::swarm::ConnectionId;
use libp2p::PeerId;
use tokio::time::Instant;

/// A connection this node opened without choosing its peer closes after
/// this long without a request (either way) to or from the peer.
pub(crate) const LINGER: Duration = Duration::from_secs(5);

/// An inbound connection open this long was kept by the peer that opened
/// it: a neighbour link of that peer (its temporary ones close after
/// [`LINGER`] of quiet).
pub(crate) const KEPT_AGE: Duration = Duration::from_secs(15);

/// A chosen peer with no connection this long after it was chosen (its dial
/// failed or hangs) is given up, and another member is chosen instead.
pub(crate) const DIAL_GRACE: Duration = Duration::from_secs(10);

/// The connections of one node, and the peers it chose to keep.
#[derive(Debug)]
pub(crate) struct Links {
    /// How many peers this node chooses.
    neighbours: usize,
    /// Above this many connected peers, inbound links are trimmed.
    max_peers: usize,
    /// The peers this node chose, with when it (last) chose or dialed them.
    chosen: BTreeMap<PeerId, Instant>,
    /// Every established connection.
    conns: BTreeMap<ConnectionId, Conn>,
    /// When each peer last sent or was sent a request.
    used: BTreeMap<PeerId, Instant>,
    /// Connected peers whose probes say they chose this node.
    chose_us: BTreeSet<PeerId>,
}

#[derive(Debug, Clone, Copy)]
struct Conn {
    peer: PeerId,
    /// This node dialed it.
    outbound: bool,
    opened: Instant,
}

/// What a closed connection was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Closed {
    /// A link someone relied on: this node chose its peer, its peer chose
    /// this node, or it was inbound and its owner had kept it for
    /// [`KEPT_AGE`]. Only such a link is worth a re-dial when it breaks.
    pub(crate) neighbour: bool,
    /// The peer is still chosen (its link broke, this node did not give it
    /// up).
    pub(crate) chosen: bool,
}

impl Links {
    /// Links for a node that chooses `neighbours` peers and trims inbound
    /// links above `max_peers` connected peers (at least `2 × neighbours`).
    pub(crate) fn new(neighbours: usize, max_peers: usize) -> Self {
        let neighbours = neighbours.max(1);
        Links {
            neighbours,
            max_peers: max_peers.max(2 * neighbours),
            chosen: BTreeMap::new(),
            conns: BTreeMap::new(),
            used: BTreeMap::new(),
            chose_us: BTreeSet::new(),
        }
    }

    /// How many more peers this node should choose.
    pub(crate) fn wanted(&self) -> usize {
        self.neighbours.saturating_sub(self.chosen.len())
    }

    /// Whether this node chose `peer`.
    pub(crate) fn is_chosen(&self, peer: &PeerId) -> bool {
        self.chosen.contains_key(peer)
    }

    /// The peers this node chose, connected or being dialed.
    pub(crate) fn chosen(&self) -> impl Iterator<Item = &PeerId> {
        self.chosen.keys()
    }

    /// Choose `peer` (a dial to it starts now, or a kept connection is
    /// adopted).
    pub(crate) fn choose(&mut self, peer: PeerId, now: Instant) {
        self.chosen.insert(peer, now);
    }

    /// Give `peer` up (this node closed its links, it failed, or it is
    /// refused).
    pub(crate) fn unchoose(&mut self, peer: &PeerId) {
        self.chosen.remove(peer);
    }

    /// `peer`'s probes say it chose this node (`true`), or no longer do;
    /// kept while it is connected.
    pub(crate) fn chose_us(&mut self, peer: PeerId, chose: bool) {
        if chose && self.connected(&peer) {
            self.chose_us.insert(peer);
        } else {
            self.chose_us.remove(&peer);
        }
    }

    /// Whether an inbound connection `c` is its owner's neighbour link: the
    /// owner said it chose this node, or kept the link for [`KEPT_AGE`].
    fn kept(&self, c: &Conn, now: Instant) -> bool {
        !c.outbound && (self.chose_us.contains(&c.peer) || now.duration_since(c.opened) >= KEPT_AGE)
    }

    /// Whether an existing connection to `peer` may become a chosen link
    /// without a dial: one this node opened, or an inbound one its owner
    /// keeps (a young inbound one may be the owner's temporary connection,
    /// about to close).
    pub(crate) fn adoptable(&self, peer: &PeerId, now: Instant) -> bool {
        self.conns
            .values()
            .any(|c| c.peer == *peer && (c.outbound || self.kept(c, now)))
    }

    /// Peers with an inbound connection their owners keep (they said they
    /// chose this node, or kept it for [`KEPT_AGE`]): neighbour links.
    pub(crate) fn kept_inbound(&self, now: Instant) -> BTreeSet<PeerId> {
        self.conns
            .values()
            .filter(|c| self.kept(c, now))
            .map(|c| c.peer)
            .collect()
    }

    /// A connection to `peer` is established.
    pub(crate) fn established(&mut self, id: ConnectionId, peer: PeerId, outbound: bool, now: Instant) {
        self.conns.insert(
            id,
            Conn {
                peer,
                outbound,
                opened: now,
            },
        );
    }

    /// A connection closed; what it was (`None` if it was never known).
    pub(crate) fn closed(&mut self, id: ConnectionId, now: Instant) -> Option<Closed> {
        let c = self.conns.remove(&id)?;
        let chosen = self.chosen.contains_key(&c.peer);
        let neighbour = (c.outbound && chosen) || self.chose_us.contains(&c.peer) || self.kept(&c, now);
        if !self.connected(&c.peer) {
            self.used.remove(&c.peer);
            self.chose_us.remove(&c.peer);
        }
        Some(Closed { neighbour, chosen })
    }

    /// A request went to or came from `peer`: its temporary connection
    /// lingers on.
    pub(crate) fn used(&mut self, peer: PeerId, now: Instant) {
        self.used.insert(peer, now);
    }

    /// Give up chosen peers that have had no connection for
    /// [`DIAL_GRACE`] since they were chosen; the peers given up.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<PeerId> {
        let stale: Vec<PeerId> = self
            .chosen
            .iter()
            .filter(|(p, since)| now.duration_since(**since) >= DIAL_GRACE && !self.connected(p))
            .map(|(p, _)| *p)
            .collect();
        for p in &stale {
            self.chosen.remove(p);
        }
        stale
    }

    /// The connections to close now: temporary ones this node opened that
    /// have been quiet for [`LINGER`] (kept while no chosen peer is
    /// connected: they are the node's only way into the cluster), then,
    /// while more than `max_peers` peers are connected, the youngest quiet
    /// inbound links of peers this node did not choose. In connection order,
    /// so a run replays.
    pub(crate) fn to_close(&self, now: Instant) -> Vec<ConnectionId> {
        let quiet = |c: &Conn| {
            let last = self.used.get(&c.peer).map_or(c.opened, |u| (*u).max(c.opened));
            now.duration_since(last) >= LINGER
        };
        let anchored = self.chosen.keys().any(|p| self.connected(p));
        let mut close: BTreeSet<ConnectionId> = BTreeSet::new();
        if anchored {
            for (id, c) in &self.conns {
                if c.outbound && !self.chosen.contains_key(&c.peer) && quiet(c) {
                    close.insert(*id);
                }
            }
        }
        let mut peers: BTreeMap<PeerId, Vec<(ConnectionId, Conn)>> = BTreeMap::new();
        for (id, c) in &self.conns {
            if !close.contains(id) {
                peers.entry(c.peer).or_default().push((*id, *c));
            }
        }
        if peers.len() > self.max_peers {
            // Peers reachable only through quiet inbound links of their own,
            // youngest link first: the oldest links are the most settled.
            let mut victims: Vec<(Instant, PeerId)> = peers
                .iter()
                .filter(|(p, cs)| {
                    !self.chosen.contains_key(*p) && cs.iter().all(|(_, c)| !c.outbound && quiet(c))
                })
                .map(|(p, cs)| (cs.iter().map(|(_, c)| c.opened).max().unwrap_or(now), *p))
                .collect();
            victims.sort_by(|a, b| b.cmp(a));
            let excess = peers.len() - self.max_peers;
            for (_, p) in victims.into_iter().take(excess) {
                for (id, _) in &peers[&p] {
                    close.insert(*id);
                }
            }
        }
        close.into_iter().collect()
    }

    /// Peers with at least one connection.
    #[cfg(test)]
    fn connected_peers(&self) -> usize {
        self.conns.values().map(|c| c.peer).collect::<BTreeSet<_>>().len()
    }

    fn connected(&self, peer: &PeerId) -> bool {
        self.conns.values().any(|c| c.peer == *peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(i: u8) -> PeerId {
        let key =
            libp2p::identity::Keypair::ed25519_from_bytes([i; 32]).expect("32 bytes is a valid ed25519 seed");
        key.public().to_peer_id()
    }

    fn conn(i: usize) -> ConnectionId {
        ConnectionId::new_unchecked(i)
    }

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_node_wants_peers_until_it_chose_its_neighbour_count() {
        let t0 = Instant::now();
        let mut l = Links::new(3, 9);
        assert_eq!(l.wanted(), 3);
        l.choose(peer(1), t0);
        l.choose(peer(2), t0);
        assert_eq!(l.wanted(), 1);
        l.choose(peer(3), t0);
        l.choose(peer(4), t0);
        assert_eq!(l.wanted(), 0);
        l.unchoose(&peer(4));
        l.unchoose(&peer(3));
        assert_eq!(l.wanted(), 1);
    }

    #[test]
    fn a_connection_opened_for_a_sync_closes_after_lingering_quiet_and_a_chosen_one_stays() {
        let t0 = Instant::now();
        let mut l = Links::new(2, 6);
        l.choose(peer(1), t0);
        l.established(conn(1), peer(1), true, t0);
        l.established(conn(2), peer(2), true, t0); // a sync dial
        assert!(l.to_close(t0 + 4 * S).is_empty());
        // A request keeps it open a little longer.
        l.used(peer(2), t0 + 3 * S);
        assert!(l.to_close(t0 + 7 * S).is_empty());
        assert_eq!(l.to_close(t0 + 8 * S), vec![conn(2)]);
        // The chosen link never lingers out.
        assert_eq!(l.to_close(t0 + 3600 * S), vec![conn(2)]);
    }

    #[test]
    fn an_inbound_connection_is_the_other_sides_to_close() {
        let t0 = Instant::now();
        let mut l = Links::new(2, 6);
        l.choose(peer(1), t0);
        l.established(conn(1), peer(1), true, t0);
        l.established(conn(2), peer(2), false, t0);
        assert!(l.to_close(t0 + 3600 * S).is_empty());
    }

    #[test]
    fn temporary_connections_stay_while_no_chosen_peer_is_connected() {
        let t0 = Instant::now();
        let mut l = Links::new(2, 6);
        l.established(conn(1), peer(9), true, t0); // the bootstrap dial
        l.choose(peer(1), t0 + S); // dialing, not connected yet
        assert!(l.to_close(t0 + 60 * S).is_empty());
        l.established(conn(2), peer(1), true, t0 + 61 * S);
        assert_eq!(l.to_close(t0 + 61 * S), vec![conn(1)]);
    }

    #[test]
    fn above_the_peer_bound_the_youngest_quiet_inbound_links_of_unchosen_peers_are_trimmed() {
        let t0 = Instant::now();
        let mut l = Links::new(2, 4);
        l.choose(peer(1), t0);
        l.established(conn(1), peer(1), true, t0);
        // Inbound links from five peers, one a second; peer 1 also dialed us.
        l.established(conn(2), peer(1), false, t0);
        for i in 2..=6u8 {
            l.established(conn(i as usize + 1), peer(i), false, t0 + u32::from(i) * S);
        }
        // Peer 6's link carries a sync: not a victim while it does.
        l.used(peer(6), t0 + 9 * S);
        // Six peers connected, bound four: two go, the youngest quiet ones
        // (peers 5 and 4), never the chosen peer 1 nor the busy peer 6.
        assert_eq!(l.to_close(t0 + 10 * S), vec![conn(5), conn(6)]);
        assert_eq!(l.connected_peers(), 6);
    }

    #[test]
    fn only_a_neighbour_link_is_worth_a_redial_when_it_breaks() {
        let t0 = Instant::now();
        let mut l = Links::new(2, 6);
        l.choose(peer(1), t0);
        l.established(conn(1), peer(1), true, t0);
        l.established(conn(2), peer(2), true, t0); // our sync dial
        l.established(conn(3), peer(3), false, t0); // kept by peer 3
        l.established(conn(4), peer(4), false, t0 + 10 * S); // peer 4's sync dial
        let at = t0 + 20 * S;
        assert_eq!(
            l.closed(conn(1), at),
            Some(Closed {
                neighbour: true,
                chosen: true
            })
        );
        assert_eq!(
            l.closed(conn(2), at),
            Some(Closed {
                neighbour: false,
                chosen: false
            })
        );
        assert_eq!(
            l.closed(conn(3), at),
            Some(Closed {
                neighbour: true,
                chosen: false
            })
        );
        assert_eq!(
            l.closed(conn(4), at),
            Some(Closed {
                neighbour: false,
                chosen: false
            })
        );
        assert_eq!(l.closed(conn(4), at), None);
    }

    #[test]
    fn an_inbound_connection_becomes_a_neighbour_link_once_its_owner_kept_it() {
        let t0 = Instant::now();
        let mut l = Links::new(2, 6);
        l.established(conn(1), peer(1), false, t0);
        l.established(conn(2), peer(2), true, t0);
        assert!(l.kept_inbound(t0 + S).is_empty());
        assert_eq!(l.kept_inbound(t0 + KEPT_AGE), BTreeSet::from([peer(1)]));
    }

    #[test]
    fn a_chosen_peer_that_never_connects_is_given_up_after_the_grace() {
        let t0 = Instant::now();
        let mut l = Links::new(2, 6);
        l.choose(peer(1), t0);
        l.choose(peer(2), t0);
        l.established(conn(1), peer(2), true, t0 + S);
        assert!(l.expire(t0 + 9 * S).is_empty());
        assert_eq!(l.expire(t0 + 10 * S), vec![peer(1)]);
        assert!(l.is_chosen(&peer(2)));
        assert_eq!(l.wanted(), 1);
    }

    #[test]
    fn only_an_outbound_or_a_kept_inbound_connection_is_adopted() {
        let t0 = Instant::now();
        let mut l = Links::new(2, 6);
        l.established(conn(1), peer(1), true, t0);
        l.established(conn(2), peer(2), false, t0);
        assert!(l.adoptable(&peer(1), t0 + S));
        assert!(!l.adoptable(&peer(2), t0 + S));
        assert!(l.adoptable(&peer(2), t0 + KEPT_AGE));
        assert!(!l.adoptable(&peer(3), t0 + KEPT_AGE));
    }

    #[test]
    fn a_young_inbound_link_whose_owner_said_it_chose_this_node_is_a_neighbour_link() {
        let t0 = Instant::now();
        let mut l = Links::new(2, 6);
        l.chose_us(peer(1), true);
        assert!(l.chose_us.is_empty(), "not kept for a peer with no connection");
        l.established(conn(1), peer(1), false, t0);
        l.established(conn(2), peer(2), false, t0);
        l.chose_us(peer(1), true);
        assert_eq!(l.kept_inbound(t0 + S), BTreeSet::from([peer(1)]));
        assert!(l.adoptable(&peer(1), t0 + S));
        assert!(!l.adoptable(&peer(2), t0 + S));
        let neighbour = |closed: Option<Closed>| closed.map(|c| c.neighbour);
        // A crash a second after the links came up: the peer that said it
        // chose this node is worth a re-dial, the other one is not.
        assert_eq!(neighbour(l.closed(conn(1), t0 + S)), Some(true));
        assert_eq!(neighbour(l.closed(conn(2), t0 + S)), Some(false));
        // Said for one connection spell only; and taken back when said.
        l.established(conn(3), peer(1), false, t0 + S);
        assert_eq!(neighbour(l.closed(conn(3), t0 + 2 * S)), Some(false));
        l.established(conn(4), peer(1), false, t0 + S);
        l.chose_us(peer(1), true);
        l.chose_us(peer(1), false);
        assert_eq!(neighbour(l.closed(conn(4), t0 + 2 * S)), Some(false));
    }
}
