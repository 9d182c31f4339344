//! Bytes per application protocol: a stream muxer wrapper whose substreams
//! count what they read and write under the protocol they carry, into
//! `starling_protocol_bytes_total{protocol, direction}`.
//!
//! Each substream of a TCP connection (after noise and yamux) learns its
//! protocol by sniffing the multistream-select negotiation at its start:
//! messages are an unsigned-varint length and that many bytes ending in
//! `\n`, the first being `/multistream/1.0.0`. The first message that is
//! neither that header nor `na` (nor `ls`), in either direction, names the
//! protocol; from then on both directions count under its label. Bytes
//! before that are held as a count only and attributed once the name is
//! known. A negotiation that is malformed, or names nothing in its first
//! [`SNIFF_LIMIT`] bytes, counts as `other`, as does a substream closed
//! before its name was seen.
//!
//! What is counted is the plaintext of the substreams, the negotiation
//! included: neither noise encryption nor yamux framing (both are in
//! `starling_wire_bytes_total`). QUIC connections are not wrapped, so
//! their substreams are not counted.
//!
//! The first name seen is taken as the protocol: a dialer whose first
//! proposal is refused (`na`) and whose second is accepted may be counted
//! under the first. This node's behaviours only offer alternatives with
//! the same label (gossipsub's `/meshsub/1.x.0` versions).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use libp2p::core::muxing::{StreamMuxer, StreamMuxerEvent};
use prometheus_client::metrics::counter::Counter;

use super::behaviour::ClusterNames;
use super::counted::{Counted, Direction, Tally};

/// Bytes of a substream's start searched for its protocol name, per
/// direction; past them it counts as `other`.
pub(crate) const SNIFF_LIMIT: usize = 512;

/// Longest multistream-select message read for a name (its `\n`
/// included). Cluster names are at most 64 bytes, so this node's own
/// protocol names are well under it.
const MAX_MESSAGE: usize = 256;

/// The coarse protocol a substream carries (a fixed set: the
/// `protocol` label of `starling_protocol_bytes_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProtocolLabel {
    /// Gossipsub (`/meshsub/...`).
    Gossip,
    /// The cluster's anti-entropy protocol ([`ClusterNames::sync_protocol`]).
    Sync,
    /// The cluster's liveness probes ([`ClusterNames::probe_protocol`]).
    Probe,
    /// The cluster's Kademlia protocol ([`ClusterNames::kad_protocol`]).
    Kad,
    /// Identify and identify push (`/ipfs/id/...`).
    Identify,
    /// Anything else, including another cluster's protocols and
    /// negotiations that could not be read.
    Other,
}

impl ProtocolLabel {
    /// Every label, in the order of [`ProtocolCounters`].
    pub const ALL: [ProtocolLabel; 6] = [
        ProtocolLabel::Gossip,
        ProtocolLabel::Sync,
        ProtocolLabel::Probe,
        ProtocolLabel::Kad,
        ProtocolLabel::Identify,
        ProtocolLabel::Other,
    ];

    /// The label's value in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ProtocolLabel::Gossip => "gossip",
            ProtocolLabel::Sync => "sync",
            ProtocolLabel::Probe => "probe",
            ProtocolLabel::Kad => "kad",
            ProtocolLabel::Identify => "identify",
            ProtocolLabel::Other => "other",
        }
    }

    fn index(self) -> usize {
        match self {
            ProtocolLabel::Gossip => 0,
            ProtocolLabel::Sync => 1,
            ProtocolLabel::Probe => 2,
            ProtocolLabel::Kad => 3,
            ProtocolLabel::Identify => 4,
            ProtocolLabel::Other => 5,
        }
    }
}

/// Where substreams count their bytes, by [`ProtocolLabel`] and direction.
/// Clones share the counters.
#[derive(Clone, Debug, Default)]
pub struct ProtocolCounters {
    received: [Counter; 6],
    sent: [Counter; 6],
}

impl ProtocolCounters {
    /// Bytes read from peers on `label`'s substreams.
    pub fn received(&self, label: ProtocolLabel) -> &Counter {
        &self.received[label.index()]
    }

    /// Bytes written to peers on `label`'s substreams.
    pub fn sent(&self, label: ProtocolLabel) -> &Counter {
        &self.sent[label.index()]
    }
}

/// The protocol names of this node, to tell its substreams apart.
#[derive(Debug)]
struct Names {
    sync: String,
    probe: String,
    kad: String,
}

impl Names {
    fn of(names: &ClusterNames) -> Self {
        Names {
            sync: names.sync_protocol.to_string(),
            probe: names.probe_protocol.to_string(),
            kad: names.kad_protocol.to_string(),
        }
    }

    fn classify(&self, name: &[u8]) -> ProtocolLabel {
        if name.windows(7).any(|w| w == b"meshsub") {
            ProtocolLabel::Gossip
        } else if name == self.sync.as_bytes() {
            ProtocolLabel::Sync
        } else if name == self.probe.as_bytes() {
            ProtocolLabel::Probe
        } else if name == self.kad.as_bytes() {
            ProtocolLabel::Kad
        } else if name.starts_with(b"/ipfs/id/") {
            ProtocolLabel::Identify
        } else {
            ProtocolLabel::Other
        }
    }
}

/// What every substream of a node shares: its names and its counters.
#[derive(Debug)]
struct Shared {
    names: Names,
    counters: ProtocolCounters,
}

/// Counts a node's substreams by protocol: build one per swarm and wrap
/// each connection's muxer with [`ProtocolCounting::wrap`].
#[derive(Clone, Debug)]
pub(crate) struct ProtocolCount(Arc<Shared>);

impl ProtocolCount {
    /// Count the substreams carrying `names`' protocols into `counters`.
    pub(crate) fn new(names: &ClusterNames, counters: ProtocolCounters) -> Self {
        ProtocolCount(Arc::new(Shared {
            names: Names::of(names),
            counters,
        }))
    }
}

/// A stream muxer whose substreams, inbound and outbound, count their
/// bytes by protocol ([`ProtocolStream`]).
#[derive(Debug)]
pub(crate) struct ProtocolCounting<M> {
    inner: M,
    count: ProtocolCount,
}

impl<M> ProtocolCounting<M> {
    /// Wrap `inner`, counting into `count`.
    pub(crate) fn wrap(inner: M, count: ProtocolCount) -> Self {
        ProtocolCounting { inner, count }
    }
}

impl<M> StreamMuxer for ProtocolCounting<M>
where
    M: StreamMuxer + Unpin,
    M::Substream: Unpin,
{
    type Substream = ProtocolStream<M::Substream>;
    type Error = M::Error;

    fn poll_inbound(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        let count = self.count.clone();
        Pin::new(&mut self.inner)
            .poll_inbound(cx)
            .map_ok(|s| counted(s, count))
    }

    fn poll_outbound(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        let count = self.count.clone();
        Pin::new(&mut self.inner)
            .poll_outbound(cx)
            .map_ok(|s| counted(s, count))
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<StreamMuxerEvent, Self::Error>> {
        Pin::new(&mut self.inner).poll(cx)
    }
}

/// Where a [`Sniffer`] is in the message it reads.
#[derive(Debug)]
enum SniffState {
    /// Reading a varint length: its value so far and the bytes read.
    Length { value: usize, bytes: u32 },
    /// Reading a message of `len` bytes (its `\n` included).
    Message { len: usize, read: Vec<u8> },
}

/// Reads the multistream-select messages of one direction of a
/// substream, up to the first that names a protocol. Holds at most
/// [`MAX_MESSAGE`] bytes and reads at most [`SNIFF_LIMIT`].
#[derive(Debug)]
struct Sniffer {
    seen: usize,
    state: SniffState,
}

/// What a [`Sniffer`] made of the bytes it was given.
#[derive(Debug, PartialEq, Eq)]
enum Sniffed {
    /// No name yet.
    Pending,
    /// The protocol's label.
    Found(ProtocolLabel),
}

impl Sniffer {
    fn new() -> Self {
        Sniffer {
            seen: 0,
            state: SniffState::Length { value: 0, bytes: 0 },
        }
    }

    /// Read `bytes`, the next bytes of this direction. A malformed
    /// negotiation, or none within the limit, is `Found(Other)`.
    fn feed(&mut self, bytes: &[u8], names: &Names) -> Sniffed {
        for &b in bytes {
            self.seen += 1;
            if self.seen > SNIFF_LIMIT {
                return Sniffed::Found(ProtocolLabel::Other);
            }
            match &mut self.state {
                SniffState::Length { value, bytes } => {
                    // multistream-select lengths take at most two varint
                    // bytes; a message this node reads fits in them.
                    if *bytes >= 2 {
                        return Sniffed::Found(ProtocolLabel::Other);
                    }
                    *value |= usize::from(b & 0x7f) << (7 * *bytes);
                    *bytes += 1;
                    if b & 0x80 == 0 {
                        let len = *value;
                        if len == 0 || len > MAX_MESSAGE {
                            return Sniffed::Found(ProtocolLabel::Other);
                        }
                        self.state = SniffState::Message {
                            len,
                            read: Vec::with_capacity(len),
                        };
                    }
                }
                SniffState::Message { len, read } => {
                    read.push(b);
                    if read.len() == *len {
                        let Some((b'\n', message)) = read.split_last() else {
                            return Sniffed::Found(ProtocolLabel::Other);
                        };
                        match message {
                            b"/multistream/1.0.0" | b"na" | b"ls" => {
                                self.state = SniffState::Length { value: 0, bytes: 0 };
                            }
                            name => return Sniffed::Found(names.classify(name)),
                        }
                    }
                }
            }
        }
        Sniffed::Pending
    }
}

/// What a substream knows of its protocol.
#[derive(Debug)]
enum Protocol {
    /// Still sniffing: the bytes read and written so far, counted once
    /// the label is known.
    Sniffing {
        received: u64,
        sent: u64,
        reads: Sniffer,
        writes: Sniffer,
    },
    /// Known: every byte counts under it.
    Known(ProtocolLabel),
}

/// A substream counting its bytes under its protocol's label.
pub(crate) type ProtocolStream<S> = Counted<S, Substream>;

/// `inner`, counting into `count`.
fn counted<S>(inner: S, count: ProtocolCount) -> ProtocolStream<S> {
    Counted::new(
        inner,
        Substream {
            count,
            protocol: Protocol::Sniffing {
                received: 0,
                sent: 0,
                reads: Sniffer::new(),
                writes: Sniffer::new(),
            },
        },
    )
}

/// What a substream knows of its protocol, and where it counts.
#[derive(Debug)]
pub(crate) struct Substream {
    count: ProtocolCount,
    protocol: Protocol,
}

impl Tally for Substream {
    fn tally(&mut self, direction: Direction, bytes: &[u8]) {
        let shared = &*self.count.0;
        let found = match &mut self.protocol {
            Protocol::Known(label) => {
                let counter = match direction {
                    Direction::In => shared.counters.received(*label),
                    Direction::Out => shared.counters.sent(*label),
                };
                counter.inc_by(bytes.len() as u64);
                return;
            }
            Protocol::Sniffing {
                received,
                sent,
                reads,
                writes,
            } => {
                let (total, sniffer) = match direction {
                    Direction::In => (received, reads),
                    Direction::Out => (sent, writes),
                };
                *total += bytes.len() as u64;
                match sniffer.feed(bytes, &shared.names) {
                    Sniffed::Pending => return,
                    Sniffed::Found(label) => label,
                }
            }
        };
        self.settle(found);
    }
}

impl Substream {
    /// Take `label` as the protocol and count the bytes held so far.
    fn settle(&mut self, label: ProtocolLabel) {
        if let Protocol::Sniffing { received, sent, .. } = self.protocol {
            let counters = &self.count.0.counters;
            counters.received(label).inc_by(received);
            counters.sent(label).inc_by(sent);
        }
        self.protocol = Protocol::Known(label);
    }

    /// The protocol's label, once known.
    #[cfg(test)]
    fn label(&self) -> Option<ProtocolLabel> {
        match self.protocol {
            Protocol::Known(label) => Some(label),
            Protocol::Sniffing { .. } => None,
        }
    }
}

impl Drop for Substream {
    fn drop(&mut self) {
        // A substream closed before its protocol was named still moved
        // bytes: they count as `other`.
        if matches!(self.protocol, Protocol::Sniffing { .. }) {
            self.settle(ProtocolLabel::Other);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

    use super::*;

    const CLUSTER: &str = "test";

    fn count() -> (ProtocolCount, ProtocolCounters) {
        let counters = ProtocolCounters::default();
        (
            ProtocolCount::new(&ClusterNames::new(CLUSTER), counters.clone()),
            counters,
        )
    }

    /// One multistream-select message: varint length, `text`, `\n`.
    fn msg(text: &str) -> Vec<u8> {
        let len = text.len() + 1;
        let mut out = Vec::new();
        if len < 0x80 {
            out.push(len as u8);
        } else {
            out.push((len & 0x7f) as u8 | 0x80);
            out.push((len >> 7) as u8);
        }
        out.extend_from_slice(text.as_bytes());
        out.push(b'\n');
        out
    }

    fn header() -> Vec<u8> {
        msg("/multistream/1.0.0")
    }

    fn sync_name() -> String {
        ClusterNames::new(CLUSTER).sync_protocol.to_string()
    }

    /// Totals by label, both directions, from `c`.
    fn totals(c: &ProtocolCounters, label: ProtocolLabel) -> (u64, u64) {
        (c.received(label).get(), c.sent(label).get())
    }

    fn sum(c: &ProtocolCounters) -> (u64, u64) {
        ProtocolLabel::ALL.iter().fold((0, 0), |(r, s), &l| {
            let (lr, ls) = totals(c, l);
            (r + lr, s + ls)
        })
    }

    /// A substream's far end: what it reads comes from `incoming`, what it
    /// writes is kept apart.
    struct Duplex {
        incoming: futures::io::Cursor<Vec<u8>>,
        written: Vec<u8>,
    }

    impl AsyncRead for Duplex {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.incoming).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Duplex {
        fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            self.written.extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn duplex(incoming: Vec<u8>) -> Duplex {
        Duplex {
            incoming: futures::io::Cursor::new(incoming),
            written: Vec::new(),
        }
    }

    fn names() -> Names {
        Names::of(&ClusterNames::new(CLUSTER))
    }

    #[test]
    fn a_lazy_dialer_single_write_names_its_protocol_and_counts_all_of_it() {
        futures::executor::block_on(async {
            let (count, c) = count();
            let mut s = counted(duplex(Vec::new()), count);
            let mut write = header();
            write.extend(msg(&sync_name()));
            write.extend_from_slice(&[7u8; 100]);
            s.write_all(&write).await.unwrap();
            assert_eq!(s.tally().label(), Some(ProtocolLabel::Sync));
            s.write_all(b"more").await.unwrap();
            assert_eq!(totals(&c, ProtocolLabel::Sync), (0, write.len() as u64 + 4));
            assert_eq!(sum(&c), (0, write.len() as u64 + 4));
        });
    }

    #[test]
    fn a_listener_echo_names_the_protocol_for_both_directions() {
        futures::executor::block_on(async {
            let (count, c) = count();
            // The listener read the dialer's header (its proposal not yet).
            let mut incoming = header();
            incoming.extend(msg("/meshsub/1.2.0"));
            incoming.extend_from_slice(b"rpc");
            let mut s = counted(duplex(incoming.clone()), count);
            let mut buf = vec![0u8; header().len()];
            s.read_exact(&mut buf).await.unwrap();
            assert_eq!(s.tally().label(), None);
            // Its echo names the protocol.
            let mut echo = header();
            echo.extend(msg("/meshsub/1.2.0"));
            s.write_all(&echo).await.unwrap();
            assert_eq!(s.tally().label(), Some(ProtocolLabel::Gossip));
            let mut rest = Vec::new();
            s.read_to_end(&mut rest).await.unwrap();
            assert_eq!(
                totals(&c, ProtocolLabel::Gossip),
                (incoming.len() as u64, echo.len() as u64)
            );
            assert_eq!(sum(&c), totals(&c, ProtocolLabel::Gossip));
        });
    }

    #[test]
    fn a_refusal_then_a_second_proposal() {
        let names = names();
        let mut sniffer = Sniffer::new();
        let mut bytes = header();
        bytes.extend(msg("na"));
        assert_eq!(sniffer.feed(&bytes, &names), Sniffed::Pending);
        let mut next = msg("/ipfs/id/1.0.0");
        next.extend_from_slice(b"payload");
        assert_eq!(
            sniffer.feed(&next, &names),
            Sniffed::Found(ProtocolLabel::Identify)
        );
    }

    #[test]
    fn a_name_split_byte_by_byte() {
        futures::executor::block_on(async {
            let (count, c) = count();
            let probe = ClusterNames::new(CLUSTER).probe_protocol.to_string();
            let mut all = header();
            all.extend(msg(&probe));
            all.extend_from_slice(&[1u8; 8]);
            let mut s = counted(duplex(all.clone()), count);
            let mut byte = [0u8; 1];
            for i in 0..all.len() {
                s.read_exact(&mut byte).await.unwrap();
                let named = i + 1 >= header().len() + msg(&probe).len();
                assert_eq!(s.tally().label().is_some(), named, "after {} bytes", i + 1);
            }
            assert_eq!(s.tally().label(), Some(ProtocolLabel::Probe));
            assert_eq!(totals(&c, ProtocolLabel::Probe), (all.len() as u64, 0));
            assert_eq!(sum(&c), (all.len() as u64, 0));
        });
    }

    #[test]
    fn the_cluster_names_and_the_libp2p_ones_get_their_labels() {
        let names = names();
        let n = ClusterNames::new(CLUSTER);
        for (name, label) in [
            ("/meshsub/1.1.0".to_string(), ProtocolLabel::Gossip),
            (n.sync_protocol.to_string(), ProtocolLabel::Sync),
            (n.probe_protocol.to_string(), ProtocolLabel::Probe),
            (n.kad_protocol.to_string(), ProtocolLabel::Kad),
            ("/ipfs/id/push/1.0.0".to_string(), ProtocolLabel::Identify),
            ("/starling/another/sync/1".to_string(), ProtocolLabel::Other),
            ("/ipfs/kad/1.0.0".to_string(), ProtocolLabel::Other),
        ] {
            let mut bytes = header();
            bytes.extend(msg(&name));
            assert_eq!(
                Sniffer::new().feed(&bytes, &names),
                Sniffed::Found(label),
                "{name}"
            );
        }
    }

    #[test]
    fn malformed_negotiations_are_other() {
        let names = names();
        let no_newline = {
            let mut m = header();
            m.push(5);
            m.extend_from_slice(b"/abcd");
            m
        };
        let long_varint = vec![0x80, 0x80, 0x80, 0x01];
        let too_long = vec![0xff, 0x7f];
        let empty = vec![0x00];
        let mut endless_headers = Vec::new();
        while endless_headers.len() <= SNIFF_LIMIT {
            endless_headers.extend(header());
        }
        for (what, bytes) in [
            ("no newline", no_newline),
            ("over-long varint", long_varint),
            ("message over the limit", too_long),
            ("empty message", empty),
            ("headers past the sniff limit", endless_headers),
        ] {
            assert_eq!(
                Sniffer::new().feed(&bytes, &names),
                Sniffed::Found(ProtocolLabel::Other),
                "{what}"
            );
        }
        // Random garbage never panics, and ends as `other` or pending.
        let mut x: u32 = 0x1234_5678;
        for _ in 0..200 {
            let mut sniffer = Sniffer::new();
            let bytes: Vec<u8> = (0..700)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            for chunk in bytes.chunks(37) {
                if sniffer.feed(chunk, &names) != Sniffed::Pending {
                    break;
                }
            }
        }
    }

    #[test]
    fn garbage_counts_as_other_exactly() {
        futures::executor::block_on(async {
            let (count, c) = count();
            let garbage = vec![0xffu8; 2000];
            let mut s = counted(duplex(Vec::new()), count);
            s.write_all(&garbage).await.unwrap();
            assert_eq!(s.tally().label(), Some(ProtocolLabel::Other));
            assert_eq!(sum(&c), (0, 2000));
            assert_eq!(totals(&c, ProtocolLabel::Other), (0, 2000));
        });
    }

    #[test]
    fn a_substream_dropped_unnamed_counts_as_other() {
        futures::executor::block_on(async {
            let (count, c) = count();
            let mut s = counted(duplex(Vec::new()), count);
            s.write_all(&header()).await.unwrap();
            assert_eq!(sum(&c), (0, 0));
            drop(s);
            assert_eq!(totals(&c, ProtocolLabel::Other), (0, header().len() as u64));
        });
    }
}
