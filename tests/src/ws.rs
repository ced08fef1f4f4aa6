//! WebSocket client helpers: connect to a gateway route with
//! tokio-tungstenite, read the next message that is not a ping or pong.

use std::time::Duration;

use futures::StreamExt as _;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{Error, Message};
use tokio_tungstenite::{WebSocketStream, client_async};

use crate::TestGateway;

/// Opens a WebSocket to `path` on the gateway's plain listener.
pub async fn connect(
    gateway: &TestGateway,
    path: &str,
) -> Result<WebSocketStream<TcpStream>, Error> {
    let stream = TcpStream::connect(gateway.http()).await.expect("connect");
    let url = format!("ws://{}{path}", gateway.http());
    client_async(url, stream)
        .await
        .map(|(socket, _response)| socket)
}

/// The next message that is not a keep-alive ping or pong, within 10 s.
pub async fn next<S>(socket: &mut WebSocketStream<S>) -> Message
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a frame in time")
            .expect("the socket is open")
            .expect("a valid frame");
        if !matches!(frame, Message::Ping(_) | Message::Pong(_)) {
            return frame;
        }
    }
}
