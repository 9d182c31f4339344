//! Probes: how a node learns that a connected peer hangs.
//!
//! A crashed process's connections break at once, but a hung one (SIGSTOP,
//! a stalled event loop) or a silently cut path keeps them open: only an
//! unanswered request shows it. Like SWIM, each node probes one connected
//! peer per period (`limits.probe_interval_ms`, 1 s), taking its peers in
//! a shuffled round, and a probe not answered within
//! `limits.probe_timeout_ms` (1 s) makes the peer unreachable (the driver
//! reports it to the engine, which suspects it at once). The cost per node
//! is one small exchange per period whatever the number of connections,
//! and a hung node, probed by each of its neighbours once per round of
//! theirs, is probed about once per period by the cluster as a whole: it
//! is noticed about half a period plus the timeout after it stops.
//! Loopback round trips are well under a millisecond, and while 50 nodes
//! joined on 2 cores every one of ~3,000 probes was answered
//! within 205 ms; this node's own stalls are not counted against its peers
//! (see [`Schedule::delay`] and [`Schedule::restart`]). libp2p's ping,
//! which this replaces, pinged every connection from both sides at a fixed
//! interval: the cost grew with the connections, and a hang waited for the
//! next ping of some neighbour.
//!
//! The exchange is an 8-byte nonce echoed back on a stream kept open per
//! peer (`/starling/<cluster>/probe/1`), opened on the first probe and
//! ignored for the connection's keep-alive. The nonce's top bit
//! ([`CHOSE_YOU`]) says the prober chose the peer as a neighbour: its link
//! is inbound on the peer's side, and without the bit the peer could not
//! tell it from a temporary connection until it had stayed open for
//! `links::KEPT_AGE` (see [`crate::node::links`]). A prober sends one such
//! probe as soon as a chosen link is up. Answering is the same echo
//! whatever the bit, so a node of an older version answers these probes
//! and never sets the bit. [`Schedule`] holds the rules
//! (whom to probe next, which probes are overdue) with time passed in, so
//! they are unit-tested; the tasks below move the bytes.

use std::collections::HashMap;
use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{PeerId, StreamProtocol};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The peers a node chose are in every this many rounds of its probes
/// (the others in every round; see [`Schedule::next`]).
const CHOSEN_EVERY: u64 = 4;

/// A peer's probes are answered at most this often: a prober sends one per
/// `limits.probe_interval_ms` (at least 100 ms), and a peer that streams
/// nonces faster gets them echoed no faster than this.
const ANSWER_SPACING: Duration = Duration::from_millis(50);

/// Bytes of a probe and of its answer.
const NONCE_BYTES: usize = 8;

/// Set in a probe's nonce when the prober chose the peer it probes; probe
/// ids count up from 1 and never reach it.
pub(crate) const CHOSE_YOU: u64 = 1 << 63;

/// Whom to probe next and which probes are overdue.
#[derive(Debug)]
pub(crate) struct Schedule {
    /// Salts the order of every round: this node's own (its peer id), so
    /// nodes do not probe in step.
    salt: Vec<u8>,
    /// Connected peers, with the probe outstanding to each (its id and
    /// when it was sent), if any.
    peers: HashMap<PeerId, Option<(u64, Instant)>>,
    /// The current round: peers still to be probed in it, last first.
    round: Vec<PeerId>,
    /// Rounds so far (varies each round's order).
    rounds: u64,
    /// Id of the last probe sent.
    last_id: u64,
}

impl Schedule {
    /// A schedule whose rounds are ordered by `salt` (see [`Self::next`]).
    pub(crate) fn new(salt: Vec<u8>) -> Self {
        Schedule {
            salt,
            peers: HashMap::new(),
            round: Vec::new(),
            rounds: 0,
            last_id: 0,
        }
    }

    /// A peer connected: it joins the next round.
    pub(crate) fn connected(&mut self, peer: PeerId) {
        self.peers.entry(peer).or_insert(None);
    }

    /// A peer is no longer probed: its last connection closed, or it does
    /// not speak the probe protocol.
    pub(crate) fn forget(&mut self, peer: &PeerId) {
        self.peers.remove(peer);
    }

    /// Whether `peer` is being probed (connected).
    #[cfg(test)]
    fn holds(&self, peer: &PeerId) -> bool {
        self.peers.contains_key(peer)
    }

    /// The next peer to probe and the probe's id, recorded as sent at
    /// `now`: the next connected peer of the round without a probe
    /// outstanding. A round takes the connected peers this node did not
    /// choose (`chosen` says which it did) and, every
    /// [`CHOSEN_EVERY`]th round or when there are no others, the ones it
    /// chose, in an order drawn from the salt and the round number.
    ///
    /// Why the peers that were not chosen: every node chooses
    /// `limits.neighbours` peers, so every node is held unchosen by that
    /// many others, each holding about as many unchosen peers on average,
    /// whatever its own number of connections. Probing those first makes
    /// the rate at which a node is probed about the same for every node
    /// (about one probe a second); by count, a round over all peers probes
    /// a node that only its own choices hold about half as often.
    pub(crate) fn next(&mut self, now: Instant, chosen: impl Fn(&PeerId) -> bool) -> Option<(PeerId, u64)> {
        for _ in 0..2 {
            while let Some(peer) = self.round.pop() {
                if let Some(slot @ None) = self.peers.get_mut(&peer) {
                    self.last_id += 1;
                    *slot = Some((self.last_id, now));
                    return Some((peer, self.last_id));
                }
            }
            // A new round.
            self.rounds += 1;
            let rounds = self.rounds.to_le_bytes();
            let all = self.rounds.is_multiple_of(CHOSEN_EVERY) || self.peers.keys().all(&chosen);
            let mut order: Vec<(u64, PeerId)> = self
                .peers
                .keys()
                .filter(|p| all || !chosen(p))
                .map(|p| {
                    let key = [&self.salt[..], &p.to_bytes(), &rounds].concat();
                    (xxhash_rust::xxh3::xxh3_64(&key), *p)
                })
                .collect();
            order.sort_unstable();
            self.round = order.into_iter().map(|(_, p)| p).collect();
        }
        None
    }

    /// A probe to `peer` now, outside the round (its chosen link just came
    /// up): its id, or `None` if `peer` is not connected or already has a
    /// probe outstanding. The round is unchanged.
    pub(crate) fn at_once(&mut self, peer: &PeerId, now: Instant) -> Option<u64> {
        let slot = self.peers.get_mut(peer)?;
        if slot.is_some() {
            return None;
        }
        self.last_id += 1;
        *slot = Some((self.last_id, now));
        Some(self.last_id)
    }

    /// The probe `id` was answered by `peer` at `now`: how long it took,
    /// if it was the one outstanding.
    pub(crate) fn answered(&mut self, peer: &PeerId, id: u64, now: Instant) -> Option<Duration> {
        self.take(peer, id).map(|sent| now.duration_since(sent))
    }

    /// The probe `id` to `peer` was never sent (its task is gone): forget
    /// it, so the peer is probed again in a later round.
    pub(crate) fn unsent(&mut self, peer: &PeerId, id: u64) {
        self.take(peer, id);
    }

    /// Clear the probe `id` to `peer` if it is the one outstanding; when
    /// it was sent.
    fn take(&mut self, peer: &PeerId, id: u64) -> Option<Instant> {
        let slot = self.peers.get_mut(peer)?;
        match *slot {
            Some((sent_id, sent)) if sent_id == id => {
                *slot = None;
                Some(sent)
            }
            _ => None,
        }
    }

    /// Peers whose outstanding probe is more than `timeout` old at `now`;
    /// they are no longer probed (their connections are closed).
    pub(crate) fn overdue(&mut self, now: Instant, timeout: Duration) -> Vec<PeerId> {
        let late: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, s)| matches!(s, Some((_, sent)) if now.duration_since(*sent) > timeout))
            .map(|(p, _)| *p)
            .collect();
        for p in &late {
            self.peers.remove(p);
        }
        late
    }

    /// This node's loop ran `lag` late: answers that arrived meanwhile
    /// waited unread, so that much of every outstanding probe's wait does
    /// not count against the peer.
    pub(crate) fn delay(&mut self, lag: Duration, now: Instant) {
        for (_, sent) in self.peers.values_mut().flatten() {
            *sent = (*sent + lag).min(now);
        }
    }

    /// This node itself stalled (stopped, starved of CPU): every
    /// outstanding probe's wait starts over at `now`.
    pub(crate) fn restart(&mut self, now: Instant) {
        for (_, sent) in self.peers.values_mut().flatten() {
            *sent = now;
        }
    }
}

/// Answer every probe stream opened to this node, one stream per peer (a
/// peer's newer stream replaces its older one: a prober re-opens only
/// after its stream broke), until the node stops accepting. Whether a
/// peer chose this node ([`CHOSE_YOU`]) goes to `replies` whenever it
/// changes on the peer's stream ([`Reply::Chose`]).
pub(crate) async fn answer(
    mut incoming: libp2p_stream::IncomingStreams,
    replies: mpsc::UnboundedSender<Reply>,
) {
    // Dropped with this task (the node stopped): every answering task ends.
    let mut answering: HashMap<PeerId, Task> = HashMap::new();
    let mut prune_at = 64;
    while let Some((peer, mut stream)) = incoming.next().await {
        stream.ignore_for_keep_alive();
        let replies = replies.clone();
        // Replacing a peer's older stream aborts its task.
        answering.insert(
            peer,
            Task::spawn(async move {
                let mut buf = [0u8; NONCE_BYTES];
                let mut chose = false;
                while stream.read_exact(&mut buf).await.is_ok() {
                    if stream.write_all(&buf).await.is_err() || stream.flush().await.is_err() {
                        break;
                    }
                    let flagged = u64::from_le_bytes(buf) & CHOSE_YOU != 0;
                    if flagged != chose {
                        chose = flagged;
                        if replies.send(Reply::Chose(peer, chose)).is_err() {
                            break;
                        }
                    }
                    tokio::time::sleep(ANSWER_SPACING).await;
                }
            }),
        );
        if answering.len() >= prune_at {
            answering.retain(|_, t| !t.0.is_finished());
            prune_at = (answering.len() * 2).max(64);
        }
    }
}

/// A spawned task that is aborted when this handle is dropped: the probe
/// tasks end with the driver (or with their peer's connection), even while
/// waiting on a stream.
#[derive(Debug)]
pub(crate) struct Task(tokio::task::AbortHandle);

impl Task {
    pub(crate) fn spawn<F>(future: F) -> Self
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        Task(tokio::spawn(future).abort_handle())
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What a peer's probe task reports.
#[derive(Debug)]
pub(crate) enum Reply {
    /// The probe with this id was answered.
    Answered(PeerId, u64),
    /// The peer's probes say it chose this node as a neighbour (`true`),
    /// or no longer do (`false`).
    Chose(PeerId, bool),
    /// The peer does not speak the probe protocol (a node of an older
    /// version): it is not probed on this connection; its liveness rests on
    /// its connections and heartbeats.
    Unsupported(PeerId),
}

/// Send the probes that arrive on `probes` to `peer` over one stream, each
/// an id and whether this node chose `peer`, reporting each answered one
/// on `replies`, until `probes` closes (the
/// driver drops it when the peer disconnects). A probe whose stream fails
/// is simply not answered (the driver's schedule times it out); the next
/// one opens a new stream.
pub(crate) async fn probe_peer(
    mut control: libp2p_stream::Control,
    peer: PeerId,
    protocol: StreamProtocol,
    mut probes: mpsc::Receiver<(u64, bool)>,
    replies: mpsc::UnboundedSender<Reply>,
) {
    let mut stream: Option<libp2p::Stream> = None;
    while let Some((id, chosen)) = probes.recv().await {
        let nonce = if chosen { id | CHOSE_YOU } else { id };
        // A stream that fails (the peer dropped it: its accept queue was
        // full while many streams arrived at once, or it restarted the
        // answering side) is replaced once at once, within the same probe:
        // only a peer that does not answer on a fresh stream either is
        // left to time out.
        for attempt in 0..2 {
            if stream.is_none() {
                match control.open_stream(peer, protocol.clone()).await {
                    Ok(mut s) => {
                        s.ignore_for_keep_alive();
                        stream = Some(s);
                    }
                    Err(libp2p_stream::OpenStreamError::UnsupportedProtocol(_)) => {
                        let _ = replies.send(Reply::Unsupported(peer));
                        return;
                    }
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, attempt, "probe stream not opened");
                        continue;
                    }
                }
            }
            let Some(s) = stream.as_mut() else { continue };
            match exchange(s, nonce).await {
                Ok(true) => {
                    if replies.send(Reply::Answered(peer, id)).is_err() {
                        return;
                    }
                    break;
                }
                Ok(false) => {
                    tracing::debug!(%peer, attempt, "probe answered with the wrong nonce; reopening");
                    stream = None;
                }
                Err(e) => {
                    tracing::debug!(%peer, error = %e, attempt, "probe stream failed");
                    stream = None;
                }
            }
        }
    }
}

/// One probe on `s`: whether the answer matched.
async fn exchange(s: &mut libp2p::Stream, nonce: u64) -> std::io::Result<bool> {
    let nonce = nonce.to_le_bytes();
    let mut back = [0u8; NONCE_BYTES];
    s.write_all(&nonce).await?;
    s.flush().await?;
    s.read_exact(&mut back).await?;
    Ok(back == nonce)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROBE_PERIOD: Duration = Duration::from_secs(1);
    const PROBE_TIMEOUT: Duration = Duration::from_millis(1_000);

    fn peers(n: usize) -> Vec<PeerId> {
        (0..n).map(|_| PeerId::random()).collect()
    }

    /// A schedule salted with `salt` and holding `peers`.
    fn holding(salt: &[u8], peers: &[PeerId]) -> Schedule {
        let mut s = Schedule::new(salt.to_vec());
        for p in peers {
            s.connected(*p);
        }
        s
    }

    /// The next `n` peers probed at `t`, each probe answered at once.
    fn probe_answered(
        s: &mut Schedule,
        n: usize,
        t: Instant,
        chosen: impl Fn(&PeerId) -> bool,
    ) -> Vec<PeerId> {
        (0..n)
            .map(|_| {
                let (p, id) = s.next(t, &chosen).expect("a peer to probe");
                s.answered(&p, id, t);
                p
            })
            .collect()
    }

    fn sorted(mut ps: Vec<PeerId>) -> Vec<PeerId> {
        ps.sort();
        ps
    }

    #[test]
    fn a_round_probes_every_connected_peer_once_before_any_twice() {
        let ps = peers(5);
        let mut s = holding(b"me", &ps);
        let t = Instant::now();
        let first = probe_answered(&mut s, 5, t, |_| false);
        assert_eq!(
            sorted(first.clone()),
            sorted(ps.clone()),
            "each peer once in a round: {first:?}"
        );
        // The next round takes each of them once again.
        let second = probe_answered(&mut s, 5, t, |_| false);
        assert_eq!(sorted(second), sorted(ps));
    }

    #[test]
    fn a_peer_with_a_probe_outstanding_is_skipped_and_overdue_after_the_timeout() {
        let mut s = holding(b"me", &peers(2));
        let t0 = Instant::now();
        let (hung, _) = s.next(t0, |_| false).unwrap();
        let (other, id) = s.next(t0, |_| false).unwrap();
        assert_ne!(hung, other);
        assert_eq!(
            s.answered(&other, id, t0 + Duration::from_millis(3)),
            Some(Duration::from_millis(3))
        );
        // Next round: the hung peer's probe is still outstanding, so only
        // the other one is probed.
        let (p, id) = s.next(t0 + Duration::from_millis(500), |_| false).unwrap();
        assert_eq!(p, other);
        s.answered(&other, id, t0 + Duration::from_millis(500));
        assert!(
            s.overdue(t0 + PROBE_TIMEOUT, PROBE_TIMEOUT).is_empty(),
            "not before the timeout"
        );
        assert_eq!(
            s.overdue(t0 + PROBE_TIMEOUT + Duration::from_millis(1), PROBE_TIMEOUT),
            vec![hung]
        );
        assert!(!s.holds(&hung), "an overdue peer is no longer probed");
        assert!(s.holds(&other));
    }

    #[test]
    fn a_stale_answer_does_not_clear_a_newer_probe() {
        let p = PeerId::random();
        let mut s = holding(b"me", &[p]);
        let t0 = Instant::now();
        let (_, first) = s.next(t0, |_| false).unwrap();
        s.answered(&p, first, t0);
        let (_, second) = s.next(t0 + PROBE_PERIOD, |_| false).unwrap();
        assert_eq!(
            s.answered(&p, first, t0 + PROBE_PERIOD),
            None,
            "a stale answer is not timed"
        );
        assert_eq!(
            s.overdue(
                t0 + PROBE_PERIOD + PROBE_TIMEOUT + Duration::from_millis(1),
                PROBE_TIMEOUT
            ),
            vec![p],
            "the answer to probe {first} says nothing of probe {second}"
        );
    }

    #[test]
    fn this_nodes_own_stall_or_lag_does_not_count_against_its_peers() {
        let p = PeerId::random();
        let mut s = holding(b"me", &[p]);
        let t0 = Instant::now();
        s.next(t0, |_| false).unwrap();
        // The loop ran 800 ms late: the probe has waited 200 ms of its own.
        let t1 = t0 + Duration::from_secs(1);
        s.delay(Duration::from_millis(800), t1);
        let left = PROBE_TIMEOUT - Duration::from_millis(200);
        assert!(s.overdue(t1 + left, PROBE_TIMEOUT).is_empty());
        assert_eq!(
            s.overdue(t1 + left + Duration::from_millis(1), PROBE_TIMEOUT),
            vec![p]
        );
        // A stall starts the wait over.
        s.connected(p);
        s.next(t1, |_| false).unwrap();
        let t2 = t1 + Duration::from_secs(30);
        s.restart(t2);
        assert!(s.overdue(t2 + PROBE_TIMEOUT, PROBE_TIMEOUT).is_empty());
    }

    #[test]
    fn a_forgotten_peer_is_not_probed_and_nothing_is_due_with_no_peers() {
        let mut s = holding(b"me", &[]);
        let t = Instant::now();
        assert!(s.next(t, |_| false).is_none());
        let ps = peers(3);
        for p in &ps {
            s.connected(*p);
        }
        s.forget(&ps[1]);
        assert!(!probe_answered(&mut s, 6, t, |_| false).contains(&ps[1]));
    }

    #[test]
    fn nodes_with_different_salts_probe_in_different_orders() {
        let ps = peers(8);
        let order = |salt: &[u8]| probe_answered(&mut holding(salt, &ps), 8, Instant::now(), |_| false);
        assert_eq!(order(b"a"), order(b"a"), "deterministic per salt");
        assert_ne!(order(b"a"), order(b"b"));
    }

    #[test]
    fn peers_this_node_chose_are_probed_every_fourth_round_and_the_others_every_round() {
        let ps = peers(4);
        let mut s = holding(b"me", &ps);
        let chosen = |p: &PeerId| *p == ps[0] || *p == ps[1];
        let t = Instant::now();
        // Rounds 1..=8: two unchosen peers each round, the chosen ones too
        // in rounds 4 and 8: 2 * 8 + 2 * 2 probes.
        let probed = probe_answered(&mut s, 20, t, chosen);
        let count = |p: &PeerId| probed.iter().filter(|q| *q == p).count();
        assert_eq!(count(&ps[2]), 8);
        assert_eq!(count(&ps[3]), 8);
        assert_eq!(count(&ps[0]), 2);
        assert_eq!(count(&ps[1]), 2);
        // With only chosen peers connected, every round takes them.
        s.forget(&ps[2]);
        s.forget(&ps[3]);
        let seen = probe_answered(&mut s, 4, t, chosen);
        assert_eq!(seen.iter().filter(|p| **p == ps[0]).count(), 2, "{seen:?}");
    }

    #[test]
    fn a_probe_at_once_goes_outside_the_round_and_only_with_none_outstanding() {
        let ps = peers(3);
        let mut s = holding(b"me", &ps);
        let t = Instant::now();
        let id = s
            .at_once(&ps[1], t)
            .expect("a connected peer with nothing outstanding");
        assert!(id & CHOSE_YOU == 0, "ids leave the top bit to the flag");
        assert_eq!(s.at_once(&ps[1], t), None, "one probe outstanding per peer");
        assert_eq!(s.at_once(&PeerId::random(), t), None, "not connected");
        // The round skips the peer with a probe outstanding; once it
        // answered, it is probed again (what is left of this round, or the
        // next one).
        let round = probe_answered(&mut s, 2, t, |_| false);
        assert_eq!(sorted(round), sorted(vec![ps[0], ps[2]]));
        assert_eq!(s.answered(&ps[1], id, t), Some(Duration::ZERO));
        let next = probe_answered(&mut s, 4, t, |_| false);
        assert!(next.contains(&ps[1]), "{next:?}");
    }
}
