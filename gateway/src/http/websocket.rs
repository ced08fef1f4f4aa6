//! The WebSocket wire of a stream route: frames in and out, keep-alive
//! pings, close frames and their codes, bridged to the session's guest
//! ([`crate::guest::websocket`]), which sees only messages and events.
//!
//! Invariant: writing to the client never holds up reading from it: a client
//! that stops reading fills its send queue and meets the slow-consumer
//! policy, and every way a connection ends (guest trap 1011, oversized
//! message 1009, slow consumer 1008, idle or drain 1001, silence through two
//! keep-alive pings) is bounded in time.

use std::pin::pin;
use std::time::{Duration, Instant};

use futures::{Sink, SinkExt as _, StreamExt as _};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WireError, Message as WireMessage};

use crate::control::drain::Drain;
use crate::guest::pubsub::Outgoing;
use crate::guest::stream::Stream;
use crate::guest::websocket::{Event, Message, Session};

/// How long a closing connection may take to flush what is queued and its
/// close frame to a client that has stopped reading.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// How a connection ends, as the guest's `on-close` and the close frame see it.
struct Closing {
    code: u16,
    reason: String,
    /// Whether the gateway sends this close frame (not when the client sent
    /// one, nor when the connection is already gone).
    send: bool,
}

impl Closing {
    fn sent(code: u16, reason: &str) -> Self {
        Self {
            code,
            reason: reason.to_string(),
            send: true,
        }
    }

    fn silent(code: u16, reason: &str) -> Self {
        Self {
            code,
            reason: reason.to_string(),
            send: false,
        }
    }
}

/// Bridges `socket` and the guest of `session` until either side closes,
/// the connection breaks a limit, or the gateway drains (close 1001). A ping
/// goes out every `keep_alive`; a client silent through two of them is gone.
pub async fn run<S>(
    session: Session,
    socket: WebSocketStream<S>,
    drain: Drain,
    keep_alive: Duration,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Stream {
        mut calls,
        mut outbox,
        mut inbox,
        ending,
        limits,
        metrics,
        open,
    } = session;
    let (sink, mut frames) = socket.split();
    let (close_sender, close_receiver) = oneshot::channel();
    let mut writer = pin!(write_loop(
        sink,
        &mut outbox,
        close_receiver,
        keep_alive,
        &metrics.messages_out
    ));
    let reader = async {
        let mut idle = pin!(tokio::time::sleep(limits.idle_timeout));
        let mut liveness = tokio::time::interval(keep_alive);
        let mut heard = Instant::now();
        loop {
            let event = tokio::select! {
                frame = frames.next() => {
                    heard = Instant::now();
                    match frame {
                        Some(Ok(WireMessage::Text(text))) => Event::Message(Message::Text(text.to_string())),
                        Some(Ok(WireMessage::Binary(bytes))) => Event::Message(Message::Binary(bytes.to_vec())),
                        Some(Ok(WireMessage::Close(frame))) => {
                            return frame.map_or_else(
                                || Closing::silent(1005, ""),
                                |frame| Closing::silent(u16::from(frame.code), &frame.reason),
                            );
                        }
                        Some(Ok(_control)) => continue,
                        Some(Err(WireError::Capacity(_))) => {
                            return Closing::sent(1009, "message too big");
                        }
                        Some(Err(_)) | None => return Closing::silent(1006, ""),
                    }
                }
                Some(published) = inbox.recv() => Event::Published(published),
                (code, reason) = ending.ended() => return Closing::sent(code, &reason),
                () = drain.signaled() => return Closing::sent(1001, "gateway shutting down"),
                () = &mut idle => return Closing::sent(1001, "idle timeout"),
                _ = liveness.tick() => {
                    if heard.elapsed() > keep_alive * 2 {
                        return Closing::silent(1006, "no answer to pings");
                    }
                    continue;
                }
            };
            idle.as_mut()
                .reset(tokio::time::Instant::now() + limits.idle_timeout);
            if let Event::Message(_) = event {
                metrics.messages_in.inc();
            }
            if let Err(error) = calls.deliver(event).await {
                tracing::warn!(
                    handler = calls.handler(),
                    "WebSocket guest failed; closing with 1011: {error:#}"
                );
                return Closing::sent(1011, "guest failure");
            }
        }
    };
    let closing = {
        let mut reader = pin!(reader);
        tokio::select! {
          closing = &mut reader => {
              if closing.send {
                  let _ = close_sender.send(close(closing.code, &closing.reason));
              } else {
                  drop(close_sender);
              }
              let _ = tokio::time::timeout(CLOSE_GRACE, writer).await;
              closing
          }
          // Only a write error ends the writer first: the client is gone.
          // The reader stops at its next event, never inside a guest call.
          () = &mut writer => {
              ending.end(1006, "connection lost");
              reader.await
          }
        }
    };
    drop(open);
    if closing.code != 1011 {
        let _ = calls
            .deliver(Event::Closed(closing.code, closing.reason))
            .await;
    }
}

/// Writes the guest's messages and keep-alive pings to the client until the
/// reader hands over a close frame (or drops the sender: no frame), then
/// flushes what the guest queued, the close frame, and ends the socket.
async fn write_loop<K>(
    mut sink: K,
    outbox: &mut mpsc::Receiver<Outgoing>,
    mut close: oneshot::Receiver<WireMessage>,
    keep_alive: Duration,
    sent: &prometheus::IntCounter,
) where
    K: Sink<WireMessage> + Unpin,
{
    let mut pings = tokio::time::interval_at(tokio::time::Instant::now() + keep_alive, keep_alive);
    loop {
        let frame = tokio::select! {
            biased;
            frame = &mut close => {
                while let Ok(Outgoing::Message(message)) = outbox.try_recv() {
                    if sink.send(wire(message)).await.is_err() {
                        return;
                    }
                }
                if let Ok(frame) = frame {
                    let _ = sink.send(frame).await;
                }
                let _ = sink.close().await;
                return;
            }
            Some(outgoing) = outbox.recv() => match outgoing {
                Outgoing::Message(message) => {
                    sent.inc();
                    wire(message)
                }
                // SSE events have no place on a WebSocket.
                Outgoing::Event(_) => continue,
            },
            _ = pings.tick() => WireMessage::Ping(Default::default()),
        };
        if sink.send(frame).await.is_err() {
            return;
        }
    }
}

fn wire(message: Message) -> WireMessage {
    match message {
        Message::Text(text) => WireMessage::text(text),
        Message::Binary(bytes) => WireMessage::binary(bytes),
    }
}

fn close(code: u16, reason: &str) -> WireMessage {
    WireMessage::Close(Some(CloseFrame {
        code: CloseCode::from(code),
        reason: reason.to_string().into(),
    }))
}
