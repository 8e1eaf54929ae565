//! MQTT v4 framing on a connection's byte stream: read buffer, packet parsing, the write
//! buffer and its flush. No session logic: what a packet means is decided in `relay`.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Poll, ready};
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use rumqttd::protocol::v4::{V4, check};
use rumqttd::protocol::{ConnAck, ConnectReturnCode, Error as WireError, Packet, Protocol};
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::time::timeout;
use tracing::warn;

use super::{Close, Stream};
use crate::router::Message;

/// A socket stalled this long on a write (client not reading) is closed.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Capacity a connection's read buffer gets when bytes arrive; it grows for larger packets.
const INITIAL_BUFFER: usize = 512;
/// Bytes read onto the stack while the read buffer has no allocation.
const STACK_READ: usize = 2048;

/// What identifies a PUBLISH of a client, read off its header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct PublishId {
    /// 0, 1 or 2.
    pub(super) qos: u8,
    /// 0 for QoS 0.
    pub(super) pkid: u16,
    /// The client says it sent this message before.
    pub(super) dup: bool,
}

/// The socket with its MQTT v4 framing buffers.
pub(super) struct Wire {
    pub(super) stream: Stream,
    pub(super) read: BytesMut,
    write: BytesMut,
    pub(super) max_packet_size: usize,
}

impl Wire {
    /// Wraps an accepted stream.
    pub(super) fn new(stream: Stream, max_packet_size: usize) -> Wire {
        Wire {
            stream,
            // No allocation until bytes arrive (see `read_some`) or packets are queued (see
            // `flush`): per-connection memory counts at 19,000 idle devices.
            read: BytesMut::new(),
            write: BytesMut::new(),
            max_packet_size,
        }
    }

    /// Reads what the socket has (at least one byte; `Ok(0)` at end of stream) into the
    /// read buffer. Cancel-safe. A read buffer that was [released](Self::release_read)
    /// gets an allocation only once bytes have arrived: they are read onto the stack first,
    /// so a connection waiting for its next packet holds no buffer.
    pub(super) fn read_some(&mut self) -> impl Future<Output = io::Result<usize>> + '_ {
        std::future::poll_fn(move |cx| {
            if self.read.capacity() > self.read.len() {
                return tokio_util::io::poll_read_buf(
                    Pin::new(&mut self.stream),
                    cx,
                    &mut self.read,
                );
            }
            let mut stack = [0u8; STACK_READ];
            let mut buf = ReadBuf::new(&mut stack);
            ready!(Pin::new(&mut self.stream).poll_read(cx, &mut buf))?;
            let filled = buf.filled();
            self.read.reserve(INITIAL_BUFFER.max(filled.len()));
            self.read.extend_from_slice(filled);
            Poll::Ready(Ok(filled.len()))
        })
    }

    /// Gives the read buffer's allocation back if every byte in it was parsed: packets
    /// still referring to it keep it alive, the connection no longer does.
    pub(super) fn release_read(&mut self) {
        if self.read.is_empty() {
            self.read = BytesMut::new();
        }
    }

    /// The next complete packet already buffered, if any.
    pub(super) fn parse(&mut self) -> Result<Option<Packet>, WireError> {
        match V4.read_mut(&mut self.read, self.max_packet_size) {
            Ok(packet) => Ok(Some(packet)),
            Err(WireError::InsufficientBytes(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// QoS (as its number), packet id and DUP flag of the PUBLISH at the front of the read
    /// buffer, if one is buffered whole: rumqttd's `Publish` keeps them private. Call before
    /// [`parse`](Self::parse) consumes the frame.
    pub(super) fn publish_id(&self) -> Option<PublishId> {
        let first = *self.read.first()?;
        if first >> 4 != 3 {
            return None;
        }
        let qos = (first >> 1) & 0b11;
        let dup = first & 0b1000 != 0;
        if qos == 0 {
            return Some(PublishId {
                qos: 0,
                pkid: 0,
                dup,
            });
        }
        let header = check(self.read.iter(), self.max_packet_size).ok()?;
        let start = header.fixed_header_len;
        let topic_len = usize::from(u16::from_be_bytes([
            *self.read.get(start)?,
            *self.read.get(start + 1)?,
        ]));
        let at = start + 2 + topic_len;
        let pkid = u16::from_be_bytes([*self.read.get(at)?, *self.read.get(at + 1)?]);
        Some(PublishId { qos, pkid, dup })
    }

    /// Encodes `packet` for the next flush. Callers strip v5 properties first: rumqttd's v4
    /// encoder panics on them.
    pub(super) fn queue(&mut self, packet: Packet) {
        if let Err(e) = V4.write(packet, &mut self.write) {
            warn!(error = %e, "cannot encode packet, dropped");
        }
    }

    /// Encodes a PUBLISH of `message` (at its QoS, with `pkid` when above 0) for the next
    /// flush. Written here rather than through rumqttd's `Publish`, whose QoS, packet id and
    /// DUP flag are private.
    pub(super) fn queue_publish(&mut self, message: &Message, pkid: u16, dup: bool) {
        let qos = message.qos.min(2);
        let id_len = if qos > 0 { 2 } else { 0 };
        let remaining = 2 + message.topic.len() + id_len + message.payload.len();
        let Ok(topic_len) = u16::try_from(message.topic.len()) else {
            warn!("topic too long to encode, message dropped");
            return;
        };
        let mut header = 0b0011_0000 | (qos << 1) | u8::from(message.retain);
        if dup && qos > 0 {
            header |= 0b0000_1000;
        }
        self.write.reserve(5 + remaining);
        self.write.put_u8(header);
        let mut length = remaining;
        loop {
            let mut byte = (length % 128) as u8;
            length /= 128;
            if length > 0 {
                byte |= 0x80;
            }
            self.write.put_u8(byte);
            if length == 0 {
                break;
            }
        }
        self.write.put_u16(topic_len);
        self.write.extend_from_slice(&message.topic);
        if qos > 0 {
            self.write.put_u16(pkid);
        }
        self.write.extend_from_slice(&message.payload);
    }

    /// Whether packets are queued for the next flush.
    pub(super) fn has_queued(&self) -> bool {
        !self.write.is_empty()
    }

    /// Writes what is queued; a client that does not read for [`WRITE_TIMEOUT`] is dropped.
    pub(super) async fn flush(&mut self) -> Result<(), Close> {
        if self.write.is_empty() {
            return Ok(());
        }
        // TLS and WebSocket buffer inside the stream: flush pushes the bytes out.
        let write = async {
            self.stream.write_all(&self.write).await?;
            self.stream.flush().await
        };
        match timeout(WRITE_TIMEOUT, write).await {
            Ok(Ok(())) => {
                // Given back: an idle connection then holds no write buffer at all, and a busy
                // one allocates one per flush (of up to a batch of messages).
                self.write = BytesMut::new();
                Ok(())
            }
            Ok(Err(e)) => Err(Close::Io(e)),
            Err(_) => Err(Close::Io(io::Error::new(
                io::ErrorKind::TimedOut,
                "write timed out",
            ))),
        }
    }

    /// Answers CONNECT. A write error is not reported here: the next read or flush sees it.
    pub(super) async fn connack(&mut self, code: ConnectReturnCode, session_present: bool) {
        let connack = ConnAck {
            session_present,
            code,
        };
        self.queue(Packet::ConnAck(connack, None));
        let _ = self.flush().await;
    }
}

/// The packet's name for a protocol-violation message.
pub(super) fn packet_name(packet: &Packet) -> &'static str {
    match packet {
        Packet::Connect(..) => "CONNECT",
        Packet::ConnAck(..) => "CONNACK",
        Packet::SubAck(..) => "SUBACK",
        Packet::UnsubAck(..) => "UNSUBACK",
        Packet::PingResp(..) => "PINGRESP",
        _ => "other",
    }
}
