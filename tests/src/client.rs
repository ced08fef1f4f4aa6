//! Minimal real HTTP clients on hyper: one connection per [`Client`], with
//! the protocol chosen explicitly so tests can assert what was negotiated.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

/// A request body.
pub type Body = BoxBody<Bytes, Infallible>;

/// An empty body.
pub fn empty() -> Body {
    Empty::new().boxed()
}

/// A complete body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

/// A collected response.
#[derive(Debug)]
pub struct Reply {
    /// The status.
    pub status: StatusCode,
    /// The HTTP version the server answered with.
    pub version: Version,
    /// The headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

impl Reply {
    /// The body as UTF-8 text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// What a connection can run on.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static> Io for T {}

enum Sender {
    Http1(http1::SendRequest<Body>),
    Http2(http2::SendRequest<Body>),
}

/// One client connection; dropping it closes the connection.
pub struct Client {
    sender: Sender,
    connection: tokio::task::AbortHandle,
    scheme: &'static str,
    authority: String,
    /// The ALPN protocol the TLS handshake settled on, if TLS.
    pub alpn: Option<Vec<u8>>,
}

impl Client {
    /// HTTP/1.1 over plain TCP.
    pub async fn http1(addr: SocketAddr) -> Self {
        let io = TcpStream::connect(addr).await.expect("connect");
        Self::start_http1(io, "http", addr, None).await
    }

    /// HTTP/1.1 over a TCP connection the caller made (e.g. from a chosen
    /// source address) to `addr`.
    pub async fn over_tcp(io: TcpStream, addr: SocketAddr) -> Self {
        Self::start_http1(io, "http", addr, None).await
    }

    /// HTTP/2 over plain TCP with prior knowledge (h2c).
    pub async fn h2c(addr: SocketAddr) -> Self {
        let io = TcpStream::connect(addr).await.expect("connect");
        Self::start_http2(io, "http", addr, None).await
    }

    /// TLS offering `alpn`; speaks HTTP/2 if the server picked `h2`, else HTTP/1.1.
    pub async fn tls(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> Self {
        Self::tls_named(addr, "localhost", config).await
    }

    /// Like [`Self::tls`], asking for `server_name` (SNI and verification).
    pub async fn tls_named(
        addr: SocketAddr,
        server_name: &str,
        config: Arc<rustls::ClientConfig>,
    ) -> Self {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        Self::tls_over_tcp(tcp, addr, server_name, config).await
    }

    /// Like [`Self::tls_named`], over a TCP connection the caller made.
    pub async fn tls_over_tcp(
        tcp: TcpStream,
        addr: SocketAddr,
        server_name: &str,
        config: Arc<rustls::ClientConfig>,
    ) -> Self {
        let name =
            rustls::pki_types::ServerName::try_from(server_name.to_string()).expect("valid name");
        let stream = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .expect("TLS handshake");
        let alpn = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        if alpn.as_deref() == Some(b"h2") {
            Self::start_http2(stream, "https", addr, alpn).await
        } else {
            Self::start_http1(stream, "https", addr, alpn).await
        }
    }

    async fn start_http1<IO: Io>(
        io: IO,
        scheme: &'static str,
        addr: SocketAddr,
        alpn: Option<Vec<u8>>,
    ) -> Self {
        let (sender, connection) = http1::handshake(TokioIo::new(io))
            .await
            .expect("HTTP/1 handshake");
        let connection = tokio::spawn(connection).abort_handle();
        Self::new(Sender::Http1(sender), connection, scheme, addr, alpn)
    }

    async fn start_http2<IO: Io>(
        io: IO,
        scheme: &'static str,
        addr: SocketAddr,
        alpn: Option<Vec<u8>>,
    ) -> Self {
        let (sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .expect("HTTP/2 handshake");
        let connection = tokio::spawn(connection).abort_handle();
        Self::new(Sender::Http2(sender), connection, scheme, addr, alpn)
    }

    fn new(
        sender: Sender,
        connection: tokio::task::AbortHandle,
        scheme: &'static str,
        addr: SocketAddr,
        alpn: Option<Vec<u8>>,
    ) -> Self {
        Self {
            sender,
            connection,
            scheme,
            authority: addr.to_string(),
            alpn,
        }
    }

    /// Sends `authority` as the request's host (instead of the address).
    pub fn with_authority(mut self, authority: &str) -> Self {
        self.authority = authority.to_string();
        self
    }

    /// A request builder for `path` with the right URI form for the protocol.
    pub fn request(&self, method: &str, path: &str) -> http::request::Builder {
        match self.sender {
            Sender::Http1(_) => Request::builder()
                .method(method)
                .uri(path)
                .header(http::header::HOST, &self.authority),
            Sender::Http2(_) => Request::builder()
                .method(method)
                .uri(format!("{}://{}{path}", self.scheme, self.authority)),
        }
    }

    /// Sends `request` and collects the whole response.
    pub async fn send(&mut self, request: Request<Body>) -> Result<Reply, hyper::Error> {
        let (parts, body) = self.send_streaming(request).await?.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Reply {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            body,
        })
    }

    /// Sends a response head only and returns the body unread, for tests
    /// that watch a body arrive.
    pub async fn send_streaming(
        &mut self,
        request: Request<Body>,
    ) -> Result<http::Response<hyper::body::Incoming>, hyper::Error> {
        match &mut self.sender {
            Sender::Http1(sender) => {
                sender.ready().await?;
                sender.send_request(request).await
            }
            Sender::Http2(sender) => {
                sender.ready().await?;
                sender.send_request(request).await
            }
        }
    }

    /// `GET path`, returning the response with its body unread (an event
    /// stream, a slow body).
    pub async fn get_streaming(&mut self, path: &str) -> http::Response<hyper::body::Incoming> {
        let request = self
            .request("GET", path)
            .body(empty())
            .expect("valid request");
        self.send_streaming(request)
            .await
            .expect("GET succeeds at the HTTP level")
    }

    /// `GET path`.
    pub async fn get(&mut self, path: &str) -> Reply {
        let request = self
            .request("GET", path)
            .body(empty())
            .expect("valid request");
        self.send(request)
            .await
            .expect("GET succeeds at the HTTP level")
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.connection.abort();
    }
}
