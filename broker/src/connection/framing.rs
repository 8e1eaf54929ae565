//! MQTT framing on a connection's byte stream: read buffer, packet parsing (MQTT 3.1.1 or
//! 5, as the CONNECT said), the packets the broker writes, the write buffer and its flush.
//! No session logic: what a packet means is decided in `relay`.
//!
//! Every packet the broker writes is encoded here or in `mqtt5`, not by rumqttd: its
//! `Publish` keeps QoS, packet id and DUP private, its v4 encoder panics on v5 properties
//! and its v5 encoders on some reason codes (docs/mqtt.md).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Poll, ready};
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use rumqttd::protocol::v4::{V4, check};
use rumqttd::protocol::v5::V5;
use rumqttd::protocol::{Error as WireError, Packet, Protocol};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::time::timeout;
use tracing::warn;

use super::mqtt5::{self, Announced, Negotiated, PublishExtras, reason};
use super::{Close, Stream};
use crate::router::{Message, now_ms};

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

/// First bytes of the packets the broker writes.
pub(super) const PUBACK: u8 = 0x40;
pub(super) const PUBREC: u8 = 0x50;
pub(super) const PUBREL: u8 = 0x62;
pub(super) const PUBCOMP: u8 = 0x70;

/// The socket with its framing buffers.
pub(super) struct Wire {
    pub(super) stream: Stream,
    pub(super) read: BytesMut,
    write: BytesMut,
    pub(super) max_packet_size: usize,
    /// What an MQTT 5 client and the broker agreed on; `None` for MQTT 3.1.1.
    pub(super) v5: Option<Box<Negotiated>>,
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
            v5: None,
        }
    }

    /// Whether the client speaks MQTT 5.
    pub(super) fn is_v5(&self) -> bool {
        self.v5.is_some()
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

    /// The next complete packet already buffered, if any, in the client's protocol version.
    pub(super) fn parse(&mut self) -> Result<Option<Packet>, WireError> {
        let parsed = if self.is_v5() {
            // Packets only a server sends: rumqttd's v5 decoder panics on some of them.
            if let Some(kind @ (2 | 9 | 11 | 13)) = self.read.first().map(|b| b >> 4) {
                return Err(WireError::InvalidPacketType(kind));
            }
            V5.read_mut(&mut self.read, self.max_packet_size)
        } else {
            V4.read_mut(&mut self.read, self.max_packet_size)
        };
        match parsed {
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

    /// PUBACK, PUBREC, PUBREL or PUBCOMP (`first` byte) for `pkid`. The reason code goes to
    /// an MQTT 5 client only (with `reason` as reason string if it wants problem
    /// information); MQTT 3.1.1 has none.
    pub(super) fn queue_ack(&mut self, first: u8, pkid: u16, code: u8, reason: Option<&str>) {
        match &self.v5 {
            Some(v5) => {
                let reason = reason.filter(|_| v5.problem_information);
                mqtt5::ack(&mut self.write, first, pkid, code, reason);
            }
            None => mqtt5::ack(&mut self.write, first, pkid, reason::SUCCESS, None),
        }
    }

    /// SUBACK with one code per filter: the granted QoS, or an MQTT 5 failure reason code
    /// (an MQTT 3.1.1 client gets `0x80` for any of them).
    pub(super) fn queue_suback(&mut self, pkid: u16, codes: &[u8]) {
        if self.is_v5() {
            mqtt5::suback(&mut self.write, 0x90, pkid, codes);
            return;
        }
        let codes: Vec<u8> = codes
            .iter()
            .map(|c| if *c > 2 { 0x80 } else { *c })
            .collect();
        self.write.reserve(4 + codes.len());
        self.write.put_u8(0x90);
        put_remaining(&mut self.write, 2 + codes.len());
        self.write.put_u16(pkid);
        self.write.extend_from_slice(&codes);
    }

    /// UNSUBACK; an MQTT 5 client gets, per filter, whether it was subscribed.
    pub(super) fn queue_unsuback(&mut self, pkid: u16, subscribed: &[bool]) {
        if self.is_v5() {
            let codes: Vec<u8> = subscribed
                .iter()
                .map(|s| match s {
                    true => reason::SUCCESS,
                    false => reason::NO_SUBSCRIPTION_EXISTED,
                })
                .collect();
            mqtt5::suback(&mut self.write, 0xB0, pkid, &codes);
        } else {
            self.write.extend_from_slice(&[0xB0, 0x02]);
            self.write.put_u16(pkid);
        }
    }

    pub(super) fn queue_pingresp(&mut self) {
        self.write.extend_from_slice(&[0xD0, 0x00]);
    }

    /// DISCONNECT with a reason code, for an MQTT 5 client (MQTT 3.1.1 has no server
    /// DISCONNECT: its connection is just closed).
    pub(super) fn queue_disconnect(&mut self, code: u8, reason: &str) {
        if let Some(v5) = &self.v5 {
            let reason = Some(reason).filter(|_| v5.problem_information);
            mqtt5::disconnect(&mut self.write, code, reason);
        }
    }

    /// Encodes a PUBLISH of `message` (at its QoS, with `pkid` when above 0, matched by the
    /// subscriptions `ids`) for the next flush. Returns `false`, writing nothing, when it is
    /// larger than an MQTT 5 client accepts (its maximum packet size).
    pub(super) fn queue_publish(
        &mut self,
        message: &Message,
        pkid: u16,
        dup: bool,
        ids: Option<&[u32]>,
    ) -> bool {
        let qos = message.qos.min(2);
        let mut first = 0b0011_0000 | (qos << 1) | u8::from(message.retain);
        if dup && qos > 0 {
            first |= 0b0000_1000;
        }
        let pkid = (qos > 0).then_some(pkid);
        if let Some(v5) = &mut self.v5 {
            let properties = message.properties.as_deref();
            let expiry = properties.and_then(|p| {
                // Expired since it was taken: sent with the least time left.
                mqtt5::remaining_expiry(p, now_ms()).unwrap_or(Some(1))
            });
            let extras = PublishExtras {
                subscription_ids: ids.unwrap_or_default(),
                expiry,
            };
            return mqtt5::publish(
                &mut self.write,
                v5,
                first,
                &message.topic,
                pkid,
                &message.payload,
                properties,
                &extras,
            );
        }
        let id_len = if pkid.is_some() { 2 } else { 0 };
        let remaining = 2 + message.topic.len() + id_len + message.payload.len();
        let Ok(topic_len) = u16::try_from(message.topic.len()) else {
            warn!("topic too long to encode, message dropped");
            return true;
        };
        self.write.reserve(5 + remaining);
        self.write.put_u8(first);
        put_remaining(&mut self.write, remaining);
        self.write.put_u16(topic_len);
        self.write.extend_from_slice(&message.topic);
        if let Some(pkid) = pkid {
            self.write.put_u16(pkid);
        }
        self.write.extend_from_slice(&message.payload);
        true
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

    /// Ends the broker's side of the stream and reads (and drops) what the client sends
    /// until it closes its side. Bounded by the caller's timeout.
    pub(super) async fn drain_until_closed(&mut self) {
        if self.stream.shutdown().await.is_err() {
            return;
        }
        let mut discard = [0u8; 4096];
        while let Ok(1..) = self.stream.read(&mut discard).await {}
    }

    /// Answers CONNECT with an MQTT 5 reason code (an MQTT 3.1.1 client gets the matching
    /// return code) and, for an accepted MQTT 5 client, the broker's limits. A write error is
    /// not reported here: the next read or flush sees it.
    pub(super) async fn connack(
        &mut self,
        code: u8,
        session_present: bool,
        announced: Option<&Announced>,
    ) {
        if self.is_v5() {
            mqtt5::connack(&mut self.write, code, session_present, announced);
        } else {
            let code = mqtt5::return_code(code);
            self.write.extend_from_slice(&[
                0x20,
                0x02,
                u8::from(session_present && code == 0),
                code,
            ]);
        }
        let _ = self.flush().await;
    }
}

/// A remaining length (variable byte integer).
fn put_remaining(out: &mut BytesMut, mut length: usize) {
    loop {
        let mut byte = (length % 128) as u8;
        length /= 128;
        if length > 0 {
            byte |= 0x80;
        }
        out.put_u8(byte);
        if length == 0 {
            break;
        }
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
