//! Loopback ports for servers started by tests: free when chosen, and never
//! handed to two servers of this process at once.

use std::collections::HashSet;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};

/// Ports held by live servers of this process, so that two tests running at
/// once never get the same one from the OS.
fn ports() -> MutexGuard<'static, HashSet<u16>> {
    static PORTS: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    PORTS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

/// A loopback port nothing listens on right now (for a server, or a second
/// port of one, such as its TLS port), reserved in this process until
/// [`release_port`].
///
/// The OS picks it for a listener that is closed at once, so another
/// process may still take it before the server binds it; a server starter
/// notices (the server says the address is in use) and tries another.
pub fn free_port() -> u16 {
    loop {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .unwrap_or_else(|e| panic!("cannot bind a loopback port to find a free one: {e}"))
            .port();
        if ports().insert(port) {
            return port;
        }
    }
}

/// Gives a port from [`free_port`] back, once its server is gone.
pub(super) fn release_port(port: u16) {
    ports().remove(&port);
}
