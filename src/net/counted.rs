//! Wire bytes at the transport: a TCP stream that counts every byte it
//! reads and writes (the noise, yamux and protocol framing included; not
//! the IP and TCP headers), into `starling_wire_bytes_total{direction}`.
//! QUIC connections are not counted. The same stream, with another
//! [`Tally`], counts each substream by protocol (`net::protocols`).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::{AsyncRead, AsyncWrite};
use prometheus_client::metrics::counter::Counter;

/// Where a transport counts its bytes.
#[derive(Clone, Debug, Default)]
pub struct WireCounters {
    /// Bytes read from peers.
    pub received: Counter,
    /// Bytes written to peers.
    pub sent: Counter,
}

/// Which way bytes went through a [`Counted`] stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    /// Read from the peer.
    In,
    /// Written to the peer.
    Out,
}

/// What a [`Counted`] stream reports its bytes to.
pub(crate) trait Tally {
    /// `bytes` just went `direction`.
    fn tally(&mut self, direction: Direction, bytes: &[u8]);
}

impl Tally for WireCounters {
    fn tally(&mut self, direction: Direction, bytes: &[u8]) {
        let c = match direction {
            Direction::In => &self.received,
            Direction::Out => &self.sent,
        };
        c.inc_by(bytes.len() as u64);
    }
}

/// A stream counting what passes through it: the TCP socket into
/// [`WireCounters`], a substream by protocol (`net::protocols`).
#[derive(Debug)]
pub(crate) struct Counted<S, T = WireCounters> {
    inner: S,
    tally: T,
}

impl<S, T> Counted<S, T> {
    /// Count `inner`'s traffic into `tally`.
    pub(crate) fn new(inner: S, tally: T) -> Self {
        Counted { inner, tally }
    }

    /// Where the bytes are counted.
    #[cfg(test)]
    pub(crate) fn tally(&self) -> &T {
        &self.tally
    }
}

impl<S: AsyncRead + Unpin, T: Tally + Unpin> AsyncRead for Counted<S, T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            this.tally.tally(Direction::In, &buf[..n.min(buf.len())]);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin, T: Tally + Unpin> AsyncWrite for Counted<S, T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            this.tally.tally(Direction::Out, &buf[..n.min(buf.len())]);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use futures::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[test]
    fn counts_what_is_read_and_written() {
        futures::executor::block_on(async {
            let c = WireCounters::default();
            let mut s = Counted::new(futures::io::Cursor::new(vec![0u8; 10]), c.clone());
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).await.unwrap();
            s.write_all(b"abcdef").await.unwrap();
            assert_eq!(c.received.get(), 4);
            assert_eq!(c.sent.get(), 6);
        });
    }
}
