//! The PROXY protocol (v1 text and v2 binary, as HAProxy, AWS NLB and most
//! load balancers send it): the header a proxy puts in front of a connection
//! to say whose connection it is.
//!
//! Invariant: exactly the header's bytes are read (nothing of what follows,
//! so TLS or HTTP start where the proxy's client started), within a
//! deadline; a connection that does not begin with a valid header is
//! refused.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use ppp::HeaderResult;
use tokio::io::{AsyncRead, AsyncReadExt as _};

/// v1 headers start with this.
const V1_PREFIX: &[u8] = b"PROXY ";
/// The 12-byte v2 signature.
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 header, CRLF included (the specification's bound).
const V1_MAX: usize = 107;
/// v2: signature, version/command, family/protocol, 2-byte length.
const V2_FIXED: usize = 16;

/// Reads the PROXY header at the start of `stream`: the client's address,
/// or `None` when the proxy says it has none to give (v1 `UNKNOWN`, v2
/// `LOCAL`, e.g. its own health checks), in which case the connection's
/// own peer stands.
pub async fn read_header<S>(stream: &mut S, deadline: Duration) -> io::Result<Option<SocketAddr>>
where
    S: AsyncRead + Unpin,
{
    match tokio::time::timeout(deadline, read(stream)).await {
        Ok(result) => result,
        Err(_elapsed) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "no PROXY header in time",
        )),
    }
}

async fn read<S: AsyncRead + Unpin>(stream: &mut S) -> io::Result<Option<SocketAddr>> {
    let mut header = vec![0; V1_PREFIX.len()];
    stream.read_exact(&mut header).await?;
    if header == V1_PREFIX {
        // Text: up to the line feed, one byte at a time so that nothing
        // after it is consumed.
        let mut byte = [0; 1];
        while header.last() != Some(&b'\n') {
            if header.len() == V1_MAX {
                return Err(invalid("a PROXY v1 header longer than 107 bytes"));
            }
            stream.read_exact(&mut byte).await?;
            header.push(byte[0]);
        }
    } else if V2_SIGNATURE.starts_with(&header) {
        header.resize(V2_FIXED, 0);
        stream.read_exact(&mut header[V1_PREFIX.len()..]).await?;
        let length = usize::from(u16::from_be_bytes([header[14], header[15]]));
        header.resize(V2_FIXED + length, 0);
        stream.read_exact(&mut header[V2_FIXED..]).await?;
    } else {
        return Err(invalid("the connection does not start with a PROXY header"));
    }
    client_address(&header)
}

/// The source address a complete header names.
fn client_address(header: &[u8]) -> io::Result<Option<SocketAddr>> {
    match HeaderResult::parse(header) {
        HeaderResult::V1(Ok(header)) => Ok(match header.addresses {
            ppp::v1::Addresses::Tcp4(ip) => Some((ip.source_address, ip.source_port).into()),
            ppp::v1::Addresses::Tcp6(ip) => Some((ip.source_address, ip.source_port).into()),
            ppp::v1::Addresses::Unknown => None,
        }),
        HeaderResult::V2(Ok(header)) => Ok(match (header.command, header.addresses) {
            (ppp::v2::Command::Local, _) => None,
            (_, ppp::v2::Addresses::IPv4(ip)) => Some((ip.source_address, ip.source_port).into()),
            (_, ppp::v2::Addresses::IPv6(ip)) => Some((ip.source_address, ip.source_port).into()),
            (_, ppp::v2::Addresses::Unix(_) | ppp::v2::Addresses::Unspecified) => None,
        }),
        HeaderResult::V1(Err(error)) => Err(invalid(&format!("bad PROXY v1 header: {error}"))),
        HeaderResult::V2(Err(error)) => Err(invalid(&format!("bad PROXY v2 header: {error}"))),
    }
}

fn invalid(reason: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, reason.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parse(bytes: &[u8]) -> (io::Result<Option<SocketAddr>>, Vec<u8>) {
        let mut reader = bytes;
        let result = read_header(&mut reader, Duration::from_secs(1)).await;
        (result, reader.to_vec())
    }

    #[tokio::test]
    async fn v1_gives_the_source_and_leaves_the_rest_unread() {
        let (address, rest) = parse(b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\r\nGET /").await;
        assert_eq!(
            address.expect("valid"),
            Some("203.0.113.7:51234".parse().expect("address"))
        );
        assert_eq!(rest, b"GET /");
        let (unknown, rest) = parse(b"PROXY UNKNOWN\r\nX").await;
        assert_eq!(unknown.expect("valid"), None);
        assert_eq!(rest, b"X");
    }

    #[tokio::test]
    async fn v2_gives_the_source_and_leaves_the_rest_unread() {
        let mut header = V2_SIGNATURE.to_vec();
        // v2 PROXY, TCP over IPv6, 36 address bytes.
        header.extend([0x21, 0x21, 0, 36]);
        let source: std::net::Ipv6Addr = "2001:db8::7".parse().expect("ip");
        header.extend(source.octets());
        header.extend(std::net::Ipv6Addr::LOCALHOST.octets());
        header.extend(4000u16.to_be_bytes());
        header.extend(443u16.to_be_bytes());
        header.extend(b"\x16\x03\x01");
        let (address, rest) = parse(&header).await;
        assert_eq!(
            address.expect("valid"),
            Some("[2001:db8::7]:4000".parse().expect("address"))
        );
        assert_eq!(rest, b"\x16\x03\x01");
    }

    #[tokio::test]
    async fn anything_else_is_refused() {
        for bytes in [
            &b"GET / HTTP/1.1\r\n\r\n"[..],
            b"PROXY TCP4 not-an-address\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2",
            b"\r\n\r\n\0\r\nQUIT\n\x99",
        ] {
            assert!(parse(bytes).await.0.is_err(), "{bytes:?}");
        }
    }

    mod properties {
        use std::net::{IpAddr, SocketAddr};

        use proptest::prelude::*;

        use super::parse;

        fn run<T>(future: impl std::future::Future<Output = T>) -> T {
            tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .expect("runtime")
                .block_on(future)
        }

        fn v1(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
            let family = if source.is_ipv4() { "TCP4" } else { "TCP6" };
            format!(
                "PROXY {family} {} {} {} {}\r\n",
                source.ip(),
                destination.ip(),
                source.port(),
                destination.port()
            )
            .into_bytes()
        }

        fn v2(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
            let addresses = match (source, destination) {
                (SocketAddr::V4(s), SocketAddr::V4(d)) => ppp::v2::Addresses::IPv4(
                    ppp::v2::IPv4::new(*s.ip(), *d.ip(), s.port(), d.port()),
                ),
                (SocketAddr::V6(s), SocketAddr::V6(d)) => ppp::v2::Addresses::IPv6(
                    ppp::v2::IPv6::new(*s.ip(), *d.ip(), s.port(), d.port()),
                ),
                _ => unreachable!("same family by construction"),
            };
            ppp::v2::Builder::with_addresses(
                ppp::v2::Version::Two | ppp::v2::Command::Proxy,
                ppp::v2::Protocol::Stream,
                addresses,
            )
            .build()
            .expect("a v2 header")
        }

        fn same_family() -> impl Strategy<Value = (SocketAddr, SocketAddr)> {
            prop_oneof![
                (
                    any::<[u8; 4]>(),
                    any::<u16>(),
                    any::<[u8; 4]>(),
                    any::<u16>()
                )
                    .prop_map(|(s, sp, d, dp)| (
                        SocketAddr::new(IpAddr::from(s), sp),
                        SocketAddr::new(IpAddr::from(d), dp)
                    )),
                (
                    any::<[u8; 16]>(),
                    any::<u16>(),
                    any::<[u8; 16]>(),
                    any::<u16>()
                )
                    .prop_map(|(s, sp, d, dp)| (
                        SocketAddr::new(IpAddr::from(s), sp),
                        SocketAddr::new(IpAddr::from(d), dp)
                    )),
            ]
        }

        proptest! {
            /// A valid header gives its source, and not one byte after it is read.
            #[test]
            fn a_valid_header_gives_its_source_and_nothing_more(
                (source, destination) in same_family(),
                version_two in any::<bool>(),
                rest in proptest::collection::vec(any::<u8>(), 0..64),
            ) {
                let mut bytes = if version_two { v2(source, destination) } else { v1(source, destination) };
                bytes.extend_from_slice(&rest);
                let (address, left) = run(parse(&bytes));
                prop_assert_eq!(address.expect("valid"), Some(source));
                prop_assert_eq!(left, rest);
            }

            /// Any bytes at all: an answer, never a panic, never more read than a header.
            #[test]
            fn any_bytes_are_answered_without_panicking(
                bytes in proptest::collection::vec(any::<u8>(), 0..300),
                prefix in prop_oneof![Just(&b""[..]), Just(&b"PROXY "[..]), Just(&b"\r\n\r\n\0\r\nQUIT\n"[..])],
            ) {
                let mut input = prefix.to_vec();
                input.extend_from_slice(&bytes);
                let (_, left) = run(parse(&input));
                prop_assert!(input.ends_with(&left));
            }
        }
    }
}
