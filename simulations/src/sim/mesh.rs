//! The gossip model: a mesh of degree D, grafts and prunes, and the flood
//! of a publish over it (with lazy-gossip repair of lost pushes).

use std::cmp::Reverse;
use std::rc::Rc;

use rand::seq::SliceRandom;
use rand::Rng;
use starling::core::{Input, Topic};

use super::{Ev, Flood, GossipMsg, NodeState, Queued, Sim};
use crate::rng::stream;

impl Sim {
    pub(super) fn build_initial_mesh(&mut self) {
        let n0 = self.sc.cluster.size;
        let d = self.sc.cluster.mesh_degree.min(n0.saturating_sub(1));
        let mut rng = stream(self.seed, 3, 0);
        let regional = self.sc.cluster.bootstrap == "region";
        // A ring first, so the mesh is connected, then random links.
        let mut order: Vec<usize> = (0..n0).collect();
        order.shuffle(&mut rng);
        if n0 > 1 {
            for k in 0..n0 {
                let (a, b) = (order[k], order[(k + 1) % n0]);
                if a != b {
                    self.mesh[a].insert(b);
                    self.mesh[b].insert(a);
                }
            }
        }
        for a in 0..n0 {
            let mut tries = 0;
            while self.mesh[a].len() < d && tries < 20 * d {
                tries += 1;
                let b = rng.gen_range(0..n0);
                if b == a || (regional && tries < 10 * d && self.net.region(a) != self.net.region(b)) {
                    continue;
                }
                if self.mesh[b].len() >= 2 * d {
                    continue;
                }
                self.mesh[a].insert(b);
                self.mesh[b].insert(a);
            }
        }
    }

    pub(super) fn reachable(&self, a: usize, b: usize) -> bool {
        self.nodes[b].state == NodeState::Up && !self.net.blocked(a, b) && !self.net.blocked(b, a)
    }

    /// Whether `a` can hold a working link to `b`: reachable, and not
    /// paused (a hung process accepts a TCP connection but answers no
    /// handshake and no ping).
    fn linkable(&self, a: usize, b: usize) -> bool {
        self.reachable(a, b) && !self.nodes[b].paused
    }

    /// Graft node `i` up to degree D; `connect` announces the new links.
    pub(super) fn graft(&mut self, i: usize, connect: bool) {
        let slots = self.nodes.len();
        let d = self.sc.cluster.mesh_degree;
        let mut tries = 0;
        let mut added = Vec::new();
        while self.mesh[i].len() < d && tries < 8 * d {
            tries += 1;
            let b = self.net.rng().gen_range(0..slots);
            if b == i || self.mesh[i].contains(&b) || !self.linkable(i, b) || self.mesh[b].len() >= 2 * d {
                continue;
            }
            self.mesh[i].insert(b);
            self.mesh[b].insert(i);
            added.push(b);
        }
        if self.mesh[i].len() < d {
            // The draws found too few peers below twice the degree (the
            // rest of the cluster linked up among itself while this node
            // was away and sits at the bound): take the next linkable peers
            // by index, beyond the bound, up to D. A Starling node's chosen
            // links are dials its peers accept (they trim only above
            // `3 × neighbours` connected peers), so a node short of links
            // always gets them; a bound that refused them left two nodes
            // back from a pause an island of their own for 25 s, each side
            // holding the other dead (`membership-islands-after-heal`, at a
            // 10 ms announcement delay). No draw, so runs that never get
            // here replay unchanged.
            for b in (1..slots).map(|k| (i + k) % slots) {
                if self.mesh[i].len() >= d {
                    break;
                }
                if !self.mesh[i].contains(&b) && self.linkable(i, b) {
                    self.mesh[i].insert(b);
                    self.mesh[b].insert(i);
                    added.push(b);
                }
            }
        }
        if connect {
            for b in added {
                let (ib, bi) = (self.nodes[b].id, self.nodes[i].id);
                if !self.nodes[i].paused {
                    self.handle(i, Input::PeerConnected(ib));
                }
                if !self.nodes[b].paused {
                    self.handle(b, Input::PeerConnected(bi));
                }
            }
        }
    }

    /// After a cut is lifted: every running node opens one more link, to
    /// a random reachable peer (beyond degree D if need be). The node
    /// driver re-dials every member it is not connected to once a partition
    /// heals; without this the mesh stays two islands (each side grafted
    /// its own peers while cut off) and the sides never hear each other's
    /// heartbeats again (found at 100+ nodes).
    pub(super) fn rewire(&mut self) {
        let slots = self.nodes.len();
        for i in 0..slots {
            if !self.runnable(i) {
                continue;
            }
            let mut pick = None;
            for _ in 0..8 {
                let b = self.net.rng().gen_range(0..slots);
                if b != i && !self.mesh[i].contains(&b) && self.linkable(i, b) {
                    pick = Some(b);
                    break;
                }
            }
            let Some(b) = pick else { continue };
            self.mesh[i].insert(b);
            self.mesh[b].insert(i);
            let (ib, bi) = (self.nodes[b].id, self.nodes[i].id);
            if !self.nodes[i].paused {
                self.handle(i, Input::PeerConnected(ib));
            }
            if !self.nodes[b].paused {
                self.handle(b, Input::PeerConnected(bi));
            }
        }
    }

    pub(super) fn maintain_mesh(&mut self) {
        let slots = self.nodes.len();
        let d = self.sc.cluster.mesh_degree;
        // Connections opened for requests beyond the links (a sync with a
        // non-neighbour): they bridge islands of the mesh, as in libp2p,
        // where gossipsub takes every connection as a topic peer.
        for (a, b) in std::mem::take(&mut self.dialed) {
            if self.mesh[a].contains(&b)
                || !self.runnable(a)
                || self.nodes[a].paused
                || !self.linkable(a, b)
                || self.mesh[b].len() >= 2 * d
            {
                continue;
            }
            self.mesh[a].insert(b);
            self.mesh[b].insert(a);
            let (ia, ib) = (self.nodes[a].id, self.nodes[b].id);
            self.handle(a, Input::PeerConnected(ib));
            if self.runnable(b) && !self.nodes[b].paused {
                self.handle(b, Input::PeerConnected(ia));
            }
        }
        for i in 0..slots {
            if self.nodes[i].state != NodeState::Up {
                continue;
            }
            // A link to a crashed or cut-off peer breaks and cannot be
            // re-dialled; one to a paused (hung) peer stops answering
            // probes, and is given up once one has gone unanswered for
            // the probe timeout. Either way the node holding it has
            // first-hand evidence (`PeerUnreachable`), as the libp2p
            // driver does. A paused node notices nothing until it resumes.
            let hung_for = self.sc.cluster.probe_timeout_ms * 1000;
            let dead: Vec<usize> = self.mesh[i]
                .iter()
                .copied()
                .filter(|&p| {
                    !self.reachable(i, p)
                        || (self.nodes[p].paused
                            && self.now.saturating_sub(self.nodes[p].paused_at) >= hung_for)
                })
                .collect();
            for p in dead {
                self.mesh[i].remove(&p);
                self.mesh[p].remove(&i);
                let pid = self.nodes[p].id;
                if !self.nodes[i].paused && self.runnable(i) {
                    self.handle(i, Input::PeerUnreachable(pid));
                }
            }
            if self.mesh[i].len() < d {
                self.graft(i, true);
            }
        }
    }

    /// Flood a publish over the mesh: compute each node's first arrival.
    pub(super) fn flood(&mut self, src: usize, topic: Topic, bytes: Vec<u8>) {
        let len = bytes.len() as u64;
        let msg = Rc::new(GossipMsg {
            author: self.nodes[src].id,
            author_slot: src,
            topic,
            hash: xxhash_rust::xxh3::xxh3_64(&bytes),
            bytes,
            decoded: starling::core::wire::SharedDecode::new(),
            sent_us: self.now,
        });
        let lazy = self.sc.cluster.lazy_gossip;
        let gossip_us = self.sc.cluster.gossip_interval_ms * 1000;
        let mut reached = std::mem::take(&mut self.flood_reached);
        let mut heap = std::mem::take(&mut self.flood_heap);
        reached.clear();
        heap.clear();
        self.dist[src] = 0;
        heap.push(Reverse((0, src)));
        while let Some(Reverse((d, u))) = heap.pop() {
            if d > self.dist[u] {
                continue;
            }
            reached.push(u);
            if self.nodes[u].paused && u != src {
                continue; // a paused node relays nothing
            }
            for &v in &self.mesh[u] {
                if v == self.parent[u] {
                    continue;
                }
                self.wire_bytes += len;
                if self.nodes[v].state != NodeState::Up || self.net.blocked(u, v) {
                    continue;
                }
                let mut arrival = d + self.net.latency_us(u, v);
                if self.net.lost(u, v) {
                    if !lazy || self.net.lost(u, v) {
                        continue;
                    }
                    // IHAVE at the next gossip heartbeat, IWANT, the message.
                    arrival += self.net.rng().gen_range(0..gossip_us.max(1))
                        + self.net.latency_us(v, u)
                        + self.net.latency_us(u, v);
                }
                if arrival < self.dist[v] {
                    self.dist[v] = arrival;
                    self.parent[v] = u;
                    heap.push(Reverse((arrival, v)));
                }
            }
        }
        // Nodes are reached in order of arrival (Dijkstra's order), so
        // the deliveries, numbered in that order, are sorted by (time, seq).
        let mut deliveries = Vec::with_capacity(reached.len());
        for &v in &reached {
            let d = self.dist[v];
            self.dist[v] = u64::MAX;
            self.parent[v] = usize::MAX;
            if v != src {
                self.seq += 1;
                deliveries.push((self.now + d, self.seq, v, self.nodes[v].life));
            }
        }
        debug_assert!(deliveries.windows(2).all(|w| (w[0].0, w[0].1) < (w[1].0, w[1].1)));
        let flood = Flood {
            msg,
            deliveries,
            next: 0,
        };
        if let Some((time, seq)) = flood.head() {
            self.queue.push(Reverse(Queued {
                time,
                seq,
                ev: Ev::Flood(Box::new(flood)),
            }));
        }
        self.flood_reached = reached;
        self.flood_heap = heap;
    }
}
