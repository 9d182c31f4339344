//! The anti-entropy request-response codec: length-prefixed frames.

use std::io;

use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::{request_response, StreamProtocol};
use prometheus_client::metrics::counter::Counter;

/// What a frame buffer starts at; it grows (doubling) only as bytes
/// actually arrive, so a length prefix alone never costs more than this.
const INITIAL_FRAME_CAPACITY: usize = 64 << 10;

/// Request-response codec for anti-entropy: a 4-byte big-endian length and
/// the core's envelope bytes, with the length checked before reading.
///
/// A frame whose length prefix is over the limit is refused before any of
/// it is read (the stream fails with `InvalidData`) and counted. Memory
/// follows the bytes received, not the length claimed: a peer announcing
/// 32 MiB and sending nothing costs 64 KiB (`INITIAL_FRAME_CAPACITY`).
#[derive(Clone, Debug)]
pub struct SyncCodec {
    max_bytes: usize,
    oversized: Counter,
}

impl SyncCodec {
    /// A codec refusing frames over `max_bytes`, counting each refusal in
    /// `oversized`.
    pub fn new(max_bytes: usize, oversized: Counter) -> Self {
        SyncCodec { max_bytes, oversized }
    }

    async fn read_frame<T: futures::AsyncRead + Unpin + Send>(&self, io: &mut T) -> io::Result<Vec<u8>> {
        let mut len = [0u8; 4];
        io.read_exact(&mut len).await?;
        let len = u32::from_be_bytes(len) as usize;
        if len > self.max_bytes {
            self.oversized.inc();
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("frame of {len} bytes exceeds limit {}", self.max_bytes),
            ));
        }
        let buf = read_at_most(io, len).await?;
        if buf.len() != len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("frame ended after {} of {len} bytes", buf.len()),
            ));
        }
        Ok(buf)
    }
}

/// Up to `len` bytes, fewer if the stream ends first; the buffer grows
/// with what arrives.
async fn read_at_most<T: futures::AsyncRead + Unpin + Send>(io: &mut T, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(len.min(INITIAL_FRAME_CAPACITY));
    io.take(len as u64).read_to_end(&mut buf).await?;
    Ok(buf)
}

async fn write_frame<T: futures::AsyncWrite + Unpin + Send>(io: &mut T, bytes: &[u8]) -> io::Result<()> {
    let len = u32::try_from(bytes.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(bytes).await?;
    io.close().await
}

impl request_response::Codec for SyncCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: futures::AsyncRead + Unpin + Send,
    {
        self.read_frame(io).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: futures::AsyncRead + Unpin + Send,
    {
        self.read_frame(io).await
    }

    async fn write_request<T>(&mut self, _: &StreamProtocol, io: &mut T, req: Vec<u8>) -> io::Result<()>
    where
        T: futures::AsyncWrite + Unpin + Send,
    {
        write_frame(io, &req).await
    }

    async fn write_response<T>(&mut self, _: &StreamProtocol, io: &mut T, res: Vec<u8>) -> io::Result<()>
    where
        T: futures::AsyncWrite + Unpin + Send,
    {
        write_frame(io, &res).await
    }
}

#[cfg(test)]
mod tests {
    use futures::io::Cursor;

    use super::*;

    fn codec(max: usize) -> SyncCodec {
        SyncCodec::new(max, Counter::default())
    }

    fn frame(claimed: u32, body: &[u8]) -> Cursor<Vec<u8>> {
        let mut v = claimed.to_be_bytes().to_vec();
        v.extend_from_slice(body);
        Cursor::new(v)
    }

    #[tokio::test]
    async fn a_frame_within_the_limit_reads_back_exactly() {
        let c = codec(1 << 20);
        let body = vec![7u8; 200_000];
        let got = c.read_frame(&mut frame(200_000, &body)).await.unwrap();
        assert_eq!(got, body);
        assert_eq!(c.oversized.get(), 0);
    }

    #[tokio::test]
    async fn a_length_over_the_limit_is_refused_before_reading_and_counted() {
        let c = codec(1024);
        let err = c.read_frame(&mut frame(1025, &[0u8; 1025])).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("exceeds limit 1024"), "{err}");
        assert_eq!(c.oversized.get(), 1);
    }

    #[tokio::test]
    async fn a_claimed_length_without_the_bytes_allocates_only_what_arrived() {
        // 32 MiB claimed, 10 bytes sent: an error, and a buffer that never
        // grew towards the claim.
        let c = codec(32 << 20);
        let err = c.read_frame(&mut frame(32 << 20, &[1u8; 10])).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert!(err.to_string().contains("after 10 of"), "{err}");
        assert_eq!(c.oversized.get(), 0, "short is not oversized");
        let buf = read_at_most(&mut Cursor::new(vec![1u8; 10]), 32 << 20)
            .await
            .unwrap();
        assert_eq!(buf.len(), 10);
        assert!(buf.capacity() <= INITIAL_FRAME_CAPACITY, "{}", buf.capacity());
        let big = read_at_most(&mut Cursor::new(vec![1u8; 300_000]), 32 << 20)
            .await
            .unwrap();
        assert_eq!(big.len(), 300_000);
        assert!(
            big.capacity() < 1 << 20,
            "grows with the data: {}",
            big.capacity()
        );
    }
}
