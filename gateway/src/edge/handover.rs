//! Zero-downtime restarts: a new wasmgate process takes the running one's
//! listening sockets through a Unix socket (`[gateway] handover_socket`),
//! file descriptors passed with `SCM_RIGHTS`.
//!
//! Invariant: a listening socket is never closed while a successor may
//! need it, and never has two owners that both stop accepting. The old
//! process offers duplicates of its sockets until it starts draining; the
//! new one accepts on the very same kernel sockets (one accept queue), so a
//! connection that arrives while both run, or while the old one drains, is
//! accepted by the new one and none is refused or reset. Sockets pass only
//! between processes of the gateway's own user: the socket file is 0600 and
//! each side checks the other's uid (`SO_PEERCRED`).

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, recvmsg, sendmsg,
};
use serde::{Deserialize, Serialize};

use crate::control::drain::Drain;

/// What a socket is, so the successor can match it with its own config:
/// by kind and *configured* address (port 0 stays 0), in config order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocketKey {
    /// `listener` or `admin`.
    pub kind: String,
    /// The address in the config.
    pub configured: SocketAddr,
}

impl SocketKey {
    /// A public listener's key.
    pub fn listener(configured: SocketAddr) -> Self {
        Self {
            kind: "listener".into(),
            configured,
        }
    }

    /// The admin listener's key.
    pub fn admin(configured: SocketAddr) -> Self {
        Self {
            kind: "admin".into(),
            configured,
        }
    }
}

/// The biggest handover message (keys as JSON; descriptors ride alongside).
const MAX_MESSAGE: usize = 64 * 1024;
/// Most sockets passed at once (the kernel's SCM_MAX_FD is 253).
const MAX_SOCKETS: usize = 200;
/// How long a predecessor may take to answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// Sockets taken from a predecessor, each used at most once.
#[derive(Default)]
pub struct Inherited {
    sockets: Vec<(SocketKey, Option<OwnedFd>)>,
}

impl Inherited {
    /// Asks the gateway serving `path` for its sockets; none when no
    /// gateway answers there (the first start, or a stale socket file).
    pub fn receive(path: &Path) -> io::Result<Self> {
        let stream = match UnixStream::connect(path) {
            Ok(stream) => stream,
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                ) =>
            {
                return Ok(Self::default());
            }
            Err(error) => return Err(error),
        };
        // Sockets from another user's process would be theirs to watch.
        same_user(&stream)?;
        stream.set_read_timeout(Some(ANSWER_TIMEOUT))?;
        let mut data = vec![0; MAX_MESSAGE];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_SOCKETS))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let mut iov = [IoSliceMut::new(&mut data)];
        let message = recvmsg(&stream, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC)?;
        let mut fds: Vec<OwnedFd> = Vec::new();
        for cmsg in control.drain() {
            if let RecvAncillaryMessage::ScmRights(received) = cmsg {
                fds.extend(received);
            }
        }
        let length = message.bytes;
        let keys: Vec<SocketKey> = serde_json::from_slice(&data[..length])
            .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))?;
        if keys.len() != fds.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} sockets named but {} passed", keys.len(), fds.len()),
            ));
        }
        Ok(Self {
            sockets: keys.into_iter().zip(fds.into_iter().map(Some)).collect(),
        })
    }

    /// Sockets from elsewhere (systemd), keyed the same way.
    pub fn from_sockets(sockets: Vec<(SocketKey, OwnedFd)>) -> Self {
        Self {
            sockets: sockets
                .into_iter()
                .map(|(key, fd)| (key, Some(fd)))
                .collect(),
        }
    }

    /// How many sockets were received.
    pub fn len(&self) -> usize {
        self.sockets.len()
    }

    /// Whether none were.
    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }

    /// The first unused socket with `key`, ready for tokio.
    pub fn take(&mut self, key: &SocketKey) -> Option<tokio::net::TcpListener> {
        let fd = self
            .sockets
            .iter_mut()
            .find(|(offered, fd)| offered == key && fd.is_some())
            .and_then(|(_, fd)| fd.take())?;
        let socket = std::net::TcpListener::from(fd);
        socket.set_nonblocking(true).ok()?;
        tokio::net::TcpListener::from_std(socket).ok()
    }
}

/// Offers duplicates of `sockets` at `path` until the drain starts (or the
/// successor took the path over). The path is replaced, so the newest
/// process is always the one a successor finds.
/// `taken` is set once a successor has the sockets.
pub fn offer(
    path: &Path,
    sockets: Vec<(SocketKey, OwnedFd)>,
    drain: Drain,
    taken: Arc<AtomicBool>,
) -> io::Result<tokio::task::JoinHandle<()>> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => return Err(error),
    }
    let listener = tokio::net::UnixListener::bind(path)?;
    // Only this user's processes may connect, and ask for the sockets.
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    let ours = inode(path)?;
    let path = path.to_path_buf();
    Ok(tokio::spawn(async move {
        let (keys, fds): (Vec<SocketKey>, Vec<OwnedFd>) = sockets.into_iter().unzip();
        let message = match serde_json::to_vec(&keys) {
            Ok(message) => message,
            Err(error) => {
                tracing::error!("handover: cannot describe the sockets: {error}");
                return;
            }
        };
        loop {
            let stream = tokio::select! {
                () = drain.signaled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => match same_user(&stream) {
                        Ok(()) => stream,
                        Err(error) => {
                            tracing::warn!("handover refused: {error}");
                            continue;
                        }
                    },
                    Err(error) => {
                        tracing::warn!("handover accept failed: {error}");
                        continue;
                    }
                },
            };
            match send(stream, &message, &fds) {
                Ok(()) => {
                    taken.store(true, Ordering::Release);
                    tracing::info!(
                        sockets = fds.len(),
                        "handed the listening sockets to a new process"
                    );
                }
                Err(error) => tracing::warn!("handover failed: {error}"),
            }
        }
        // Draining: a successor that comes now binds afresh, and the path
        // is only removed if it is still ours.
        if inode(&path).is_ok_and(|on_disk| on_disk == ours) {
            let _ = std::fs::remove_file(&path);
        }
    }))
}

fn send(stream: tokio::net::UnixStream, message: &[u8], fds: &[OwnedFd]) -> io::Result<()> {
    let stream = stream.into_std()?;
    stream.set_nonblocking(false)?;
    stream.set_write_timeout(Some(ANSWER_TIMEOUT))?;
    let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(AsFd::as_fd).collect();
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(borrowed.len()))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(&borrowed)) {
        return Err(io::Error::other("too many sockets for one message"));
    }
    let sent = sendmsg(
        &stream,
        &[IoSlice::new(message)],
        &mut control,
        SendFlags::empty(),
    )?;
    if sent == message.len() {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "short handover message",
        ))
    }
}

/// The file's identity, to tell our socket file from a successor's.
fn inode(path: &Path) -> io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(path).map(|meta| (meta.dev(), meta.ino()))
}
/// Whether the process at the other end of `stream` runs as this user
/// (SO_PEERCRED): listening sockets go to no one else, and are taken from no
/// one else.
fn same_user(stream: &impl std::os::fd::AsFd) -> io::Result<()> {
    let peer = rustix::net::sockopt::socket_peercred(stream)?;
    let user = rustix::process::geteuid();
    if peer.uid == user {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "the process at the other end runs as user {}, not {}",
                peer.uid.as_raw(),
                user.as_raw()
            ),
        ))
    }
}

#[cfg(test)]
mod trust_tests {
    use super::*;

    #[tokio::test]
    async fn the_handover_socket_is_private_and_checks_its_peer() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("handover.sock");
        let offered = offer(&path, Vec::new(), Drain::new(), Arc::default()).expect("offer");
        let mode = std::fs::metadata(&path)
            .expect("socket file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let (ours, theirs) = UnixStream::pair().expect("pair");
        assert!(same_user(&ours).is_ok());
        drop(theirs);
        offered.abort();
    }
}
