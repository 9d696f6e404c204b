//! The driver's UDP socket: batched receives (`recvmmsg`, GRO) and segmented sends (GSO)
//! through quinn-udp, falling back to one datagram per call where the kernel offers neither.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;

use quinn_udp::{BATCH_SIZE, RecvMeta, Transmit as UdpTransmit, UdpSockRef, UdpSocketState};
use tokio::io::Interest;
use tokio::net::UdpSocket;

use crate::connection::Transmit;

/// Largest GSO batch in bytes: one UDP datagram's worth, less headroom for headers.
const MAX_BATCH_BYTES: usize = 64_000;
/// Room for one received buffer: the largest UDP payload, which GRO may fill with segments.
const RECV_SLOT: usize = 65_536;
/// Socket buffer size asked for; the kernel caps it (`net.core.rmem_max`/`wmem_max`).
const SOCKET_BUFFER: usize = 8 << 20;

/// Datagrams to one destination, all `segment_size` long but the last, sent in one call.
#[derive(Debug, Default)]
pub(super) struct Batch {
    destination: Option<SocketAddr>,
    segment_size: usize,
    segments: usize,
    bytes: Vec<u8>,
}

impl Batch {
    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.segments == 0
    }

    /// Datagrams held.
    #[cfg(test)]
    pub fn segments(&self) -> usize {
        self.segments
    }

    fn clear(&mut self) {
        self.destination = None;
        self.segment_size = 0;
        self.segments = 0;
        self.bytes.clear();
    }

    /// Adds `transmit` if it can share this batch (at most `max_segments`); otherwise hands it
    /// back. A datagram shorter than the segment size must end a GSO batch, so it closes it.
    pub fn push(&mut self, transmit: Transmit, max_segments: usize) -> Result<(), Transmit> {
        let len = transmit.contents.len();
        if self.segments == 0 {
            self.destination = Some(transmit.destination);
            self.segment_size = len;
        } else {
            let fits = self.destination == Some(transmit.destination)
                && self.segments < max_segments
                && len <= self.segment_size
                && self.bytes.len() + len <= MAX_BATCH_BYTES
                && !self.is_closed();
            if !fits {
                return Err(transmit);
            }
        }
        self.bytes.extend_from_slice(&transmit.contents);
        self.segments += 1;
        Ok(())
    }

    /// Whether a short last segment has been added, so nothing more may follow.
    fn is_closed(&self) -> bool {
        self.segments > 0 && self.bytes.len() != self.segments * self.segment_size
    }
}

/// Counters of the socket layer.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct IoCounters {
    pub datagrams_received: u64,
    pub datagrams_sent: u64,
    pub receive_calls: u64,
    pub send_calls: u64,
    pub send_errors: u64,
}

/// One bound UDP socket with quinn-udp's state and the receive buffers, allocated once.
pub(super) struct UdpIo {
    socket: UdpSocket,
    state: UdpSocketState,
    recv_buf: Vec<u8>,
    metas: Vec<RecvMeta>,
    pub counters: IoCounters,
}

impl UdpIo {
    /// Wraps a bound, non-blocking-capable std socket.
    pub fn new(socket: std::net::UdpSocket) -> io::Result<UdpIo> {
        socket.set_nonblocking(true)?;
        let socket = UdpSocket::from_std(socket)?;
        let state = UdpSocketState::new(UdpSockRef::from(&socket))?;
        // Larger buffers absorb bursts; failure only means the kernel's default size.
        let _ = state.set_recv_buffer_size(UdpSockRef::from(&socket), SOCKET_BUFFER);
        let _ = state.set_send_buffer_size(UdpSockRef::from(&socket), SOCKET_BUFFER);
        Ok(UdpIo {
            socket,
            state,
            recv_buf: vec![0; RECV_SLOT * BATCH_SIZE],
            metas: vec![RecvMeta::default(); BATCH_SIZE],
            counters: IoCounters::default(),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Datagrams a send call may carry (1 without GSO).
    pub fn max_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    /// Waits until a receive may succeed.
    pub async fn readable(&self) -> io::Result<()> {
        self.socket.readable().await
    }

    /// Waits until a send may succeed.
    pub async fn writable(&self) -> io::Result<()> {
        self.socket.writable().await
    }

    /// Receives one batch without blocking and calls `each` per datagram (GRO buffers are
    /// split at their stride). Returns the datagram count; `WouldBlock` when none waited.
    pub fn try_recv(&mut self, mut each: impl FnMut(SocketAddr, &[u8])) -> io::Result<usize> {
        let UdpIo {
            socket,
            state,
            recv_buf,
            metas,
            counters,
        } = self;
        let mut slices: Vec<IoSliceMut<'_>> = recv_buf
            .chunks_mut(RECV_SLOT)
            .map(IoSliceMut::new)
            .collect();
        let count = socket.try_io(Interest::READABLE, || {
            state.recv(UdpSockRef::from(&*socket), &mut slices, metas)
        })?;
        counters.receive_calls += 1;
        let mut datagrams = 0;
        for (meta, slice) in metas.iter().zip(&slices).take(count) {
            let filled = &slice[..meta.len.min(slice.len())];
            if filled.is_empty() {
                // An empty datagram is still a datagram (malformed, but counted as such).
                each(meta.addr, filled);
                datagrams += 1;
                continue;
            }
            let stride = if meta.stride == 0 {
                filled.len()
            } else {
                meta.stride
            };
            for datagram in filled.chunks(stride) {
                each(meta.addr, datagram);
                datagrams += 1;
            }
        }
        counters.datagrams_received += datagrams as u64;
        Ok(datagrams)
    }

    /// Sends `batch` without blocking. On success, or on an error other than `WouldBlock`
    /// (the datagrams are then lost, which the protocol repairs), the batch is emptied.
    pub fn try_send(&mut self, batch: &mut Batch) -> io::Result<()> {
        let Some(destination) = batch.destination else {
            return Ok(());
        };
        let transmit = UdpTransmit {
            destination,
            ecn: None,
            contents: &batch.bytes,
            segment_size: (batch.segments > 1).then_some(batch.segment_size),
            src_ip: None,
        };
        let state = &self.state;
        let socket = &self.socket;
        let result = socket.try_io(Interest::WRITABLE, || {
            state.try_send(UdpSockRef::from(socket), &transmit)
        });
        match result {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(e),
            Err(e) => {
                self.counters.send_errors += 1;
                tracing::debug!(error = %e, %destination, "quantum: send failed; datagrams dropped");
                batch.clear();
                Ok(())
            }
            Ok(()) => {
                self.counters.send_calls += 1;
                self.counters.datagrams_sent += batch.segments as u64;
                batch.clear();
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transmit(port: u16, len: usize) -> Transmit {
        Transmit {
            destination: SocketAddr::from(([127, 0, 0, 1], port)),
            contents: vec![7; len],
        }
    }

    #[test]
    fn a_batch_holds_equal_segments_to_one_destination_and_ends_at_a_short_one() {
        let mut batch = Batch::default();
        assert!(batch.push(transmit(1, 100), 10).is_ok());
        assert!(batch.push(transmit(1, 100), 10).is_ok());
        assert!(
            batch.push(transmit(2, 100), 10).is_err(),
            "other destination"
        );
        assert!(
            batch.push(transmit(1, 101), 10).is_err(),
            "longer than the segment"
        );
        assert!(batch.push(transmit(1, 40), 10).is_ok());
        assert!(
            batch.push(transmit(1, 40), 10).is_err(),
            "a short segment ends it"
        );
        assert_eq!(batch.segments(), 3);
    }

    #[test]
    fn a_batch_respects_the_segment_limit() {
        let mut batch = Batch::default();
        assert!(batch.push(transmit(1, 10), 2).is_ok());
        assert!(batch.push(transmit(1, 10), 2).is_ok());
        assert!(batch.push(transmit(1, 10), 2).is_err());
    }
}
