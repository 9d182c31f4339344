//! Wire bytes at the transport: a TCP stream that counts every byte it
//! reads and writes (the noise, yamux and protocol framing included; not
//! the IP and TCP headers), into `starling_wire_bytes_total{direction}`.
//! QUIC connections are not counted.

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

/// A stream counting what passes through it.
#[derive(Debug)]
pub struct Counted<S> {
    inner: S,
    counters: WireCounters,
}

impl<S> Counted<S> {
    /// Count `inner`'s traffic into `counters`.
    pub fn new(inner: S, counters: WireCounters) -> Self {
        Counted { inner, counters }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.counters.received.inc_by(n as u64);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.counters.sent.inc_by(n as u64);
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
