//! systemd socket activation: listening sockets passed in by the service
//! manager (`LISTEN_FDS`, a `wasmgate.socket` unit) instead of bound here.
//!
//! With them, the ports stay open across `systemctl restart`: systemd owns
//! the sockets, so a connection that arrives while one process drains and
//! the next one loads waits in the kernel's queue instead of being refused.
//!
//! Invariant: a passed socket is used by the listener (or admin listener)
//! configured on exactly its address, and only by it; a socket the
//! configuration does not name is closed and logged, never served.

use std::net::TcpListener;
use std::os::fd::OwnedFd;

use crate::config::Config;
use crate::edge::handover::{Inherited, SocketKey};

/// The TCP listening sockets systemd passed to this process.
#[derive(Debug, Default)]
pub struct Activated {
    sockets: Vec<TcpListener>,
}

impl Activated {
    /// Takes the sockets named by `LISTEN_FDS` (when `LISTEN_PID` is this
    /// process) and removes those variables, so children do not see them.
    /// Call it before any other thread runs: it changes the environment.
    pub fn from_env() -> Self {
        let mut passed = listenfd::ListenFd::from_env();
        let sockets = (0..passed.len())
            .filter_map(|index| match passed.take_tcp_listener(index) {
                Ok(socket) => socket,
                Err(error) => {
                    tracing::warn!(index, "ignoring a socket systemd passed: {error}");
                    None
                }
            })
            .collect();
        Self { sockets }
    }

    /// Whether systemd passed any socket.
    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }

    /// The sockets as inherited ones, each keyed by the listener of
    /// `config` bound to its address.
    pub fn into_inherited(self, config: &Config) -> Inherited {
        let keyed = self
            .sockets
            .into_iter()
            .filter_map(|socket| {
                let addr = match socket.local_addr() {
                    Ok(addr) => addr,
                    Err(error) => {
                        tracing::warn!("ignoring a socket systemd passed: {error}");
                        return None;
                    }
                };
                let key = if config.listeners.iter().any(|l| l.addr == addr) {
                    SocketKey::listener(addr)
                } else if config.admin == Some(addr) {
                    SocketKey::admin(addr)
                } else {
                    tracing::warn!(
                        %addr,
                        "systemd passed a socket no listener of the configuration is on; closing it"
                    );
                    return None;
                };
                Some((key, OwnedFd::from(socket)))
            })
            .collect::<Vec<_>>();
        tracing::info!(
            sockets = keyed.len(),
            "listening on the sockets systemd passed"
        );
        Inherited::from_sockets(keyed)
    }
}
