//! MQTT over WebSocket (for browser clients): the handshake on `/mqtt` with the `mqtt`
//! subprotocol, and an adapter that turns binary WebSocket messages into the byte stream the
//! MQTT codec reads. The same code serves `ws://` (on TCP) and `wss://` (on the TLS stream
//! the listener's handshake produced).
//!
//! MQTT 3.1.1 §6: MQTT packets travel in binary frames; a frame may hold part of a packet or
//! several; the client offers the `mqtt` subprotocol and the server selects it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// The request path MQTT is served on.
pub(crate) const PATH: &str = "/mqtt";
/// The subprotocol clients must offer.
const SUBPROTOCOL: &str = "mqtt";

/// Runs the WebSocket handshake on `stream` (TCP, or TLS for `wss://`). Requests for another
/// path get 404, requests without the `mqtt` subprotocol 400. Unbounded in time: the
/// listener bounds the whole transport handshake by the connect timeout.
pub(crate) async fn accept<S>(
    stream: S,
    max_packet_size: usize,
) -> Result<WsTransport<S>, tokio_tungstenite::tungstenite::Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // A WebSocket message never needs to be larger than one MQTT packet and its header.
    let max = max_packet_size.saturating_add(8);
    let config = WebSocketConfig::default()
        .max_message_size(Some(max))
        .max_frame_size(Some(max));
    let ws = tokio_tungstenite::accept_hdr_async_with_config(stream, check_request, Some(config))
        .await?;
    Ok(WsTransport {
        ws,
        pending: Bytes::new(),
    })
}

// The signature is tungstenite's handshake `Callback`.
#[allow(clippy::result_large_err)]
fn check_request(request: &Request, mut response: Response) -> Result<Response, ErrorResponse> {
    if request.uri().path() != PATH {
        return Err(refusal(StatusCode::NOT_FOUND, "MQTT is served on /mqtt"));
    }
    let offers_mqtt = request
        .headers()
        .get_all("Sec-WebSocket-Protocol")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|protocol| protocol.trim().eq_ignore_ascii_case(SUBPROTOCOL));
    if !offers_mqtt {
        return Err(refusal(
            StatusCode::BAD_REQUEST,
            "offer the `mqtt` WebSocket subprotocol",
        ));
    }
    response.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static(SUBPROTOCOL),
    );
    Ok(response)
}

fn refusal(status: StatusCode, reason: &str) -> ErrorResponse {
    let mut response = ErrorResponse::new(Some(reason.to_owned()));
    *response.status_mut() = status;
    response
}

/// A WebSocket connection as a byte stream: reads concatenate binary messages, each flush
/// of the connection's write buffer becomes one binary message.
pub(crate) struct WsTransport<S> {
    ws: WebSocketStream<S>,
    /// What is left of the last binary message received.
    pending: Bytes,
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsTransport<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.pending.is_empty() {
                let n = buf.remaining().min(self.pending.len());
                buf.put_slice(&self.pending[..n]);
                self.pending.advance(n);
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut self.ws).poll_next(cx)) {
                Some(Ok(Message::Binary(data))) => self.pending = data,
                // End of stream.
                None | Some(Ok(Message::Close(_))) => return Poll::Ready(Ok(())),
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "MQTT over WebSocket uses binary frames",
                    )));
                }
                // Pings are answered by tungstenite; pongs and raw frames carry no MQTT.
                Some(Ok(_)) => {}
                Some(Err(e)) => return Poll::Ready(Err(io::Error::other(e))),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsTransport<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(Pin::new(&mut self.ws).poll_ready(cx)).map_err(io::Error::other)?;
        Pin::new(&mut self.ws)
            .start_send(Message::Binary(Bytes::copy_from_slice(buf)))
            .map_err(io::Error::other)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws)
            .poll_flush(cx)
            .map_err(io::Error::other)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws)
            .poll_close(cx)
            .map_err(io::Error::other)
    }
}
