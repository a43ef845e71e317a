//! A loopback TCP proxy with faults switched at run time (added latency, a
//! one-way black hole, a partition, connection resets), put between a client
//! and a test server to show the client a bad network.
//!
//! A black hole holds bytes back rather than dropping them: TCP never loses
//! bytes inside a live connection (it retransmits them, late, or the
//! connection dies), and a proxy that dropped them would hand the client a
//! reply stream out of step with its requests, a fault no real network
//! makes. So a hole delays one direction by its whole length; the client sees
//! a silent peer until its timeouts fire, then what it sent or was sent
//! arrives late, unless the connection was reset meanwhile. Threads and std only:
//! the maintained proxies with such faults (Toxiproxy and its Rust clients)
//! need a server binary of their own, which the tests would have to install.
//!
//! ```ignore
//! let server = RedisServer::start();
//! let proxy = Proxy::start(server.addr());
//! // ... point the client at `proxy.addr()` ...
//! proxy.set_latency(Duration::from_millis(200)); // every chunk waits 200 ms
//! proxy.black_hole(Direction::Downstream, true); // replies are held back
//! proxy.reset_all(); // every open connection is reset (RST)
//! proxy.heal(); // no faults; new connections work again
//! ```

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// How often idle threads look at the stop flag and the faults.
const POLL: Duration = Duration::from_millis(20);
/// How long the proxy tries to reach its upstream for a new connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A direction of the bytes through the proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Client to server (requests).
    Upstream,
    /// Server to client (replies).
    Downstream,
}

/// The faults in effect; [`Proxy::heal`] sets them back to this `default`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// Added before every chunk is passed on, both directions.
    pub latency: Duration,
    /// Bytes client to server are held back.
    pub hold_upstream: bool,
    /// Bytes server to client are held back.
    pub hold_downstream: bool,
    /// New connections are accepted and closed at once (refused).
    pub refuse: bool,
}

struct Shared {
    faults: Mutex<Faults>,
    /// Open connections: (id, client side, server side), to reset them.
    conns: Mutex<Vec<(u64, TcpStream, TcpStream)>>,
    next_id: AtomicU64,
    stop: AtomicBool,
    /// Bytes passed on, for tests.
    forwarded: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A proxy on a loopback port of its own, passing connections on to one
/// upstream address; stopped (and its connections closed) on drop.
pub struct Proxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Starts a proxy to `upstream` on a free loopback port, with no faults.
    ///
    /// # Panics
    /// If no loopback port can be bound.
    pub fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap_or_else(|e| panic!("proxy: cannot bind a loopback port: {e}"));
        listener
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("proxy: cannot make its listener non-blocking: {e}"));
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let shared = Arc::new(Shared {
            faults: Mutex::new(Faults::default()),
            conns: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            forwarded: AtomicU64::new(0),
        });
        let for_thread = Arc::clone(&shared);
        let acceptor = thread::Builder::new()
            .name(format!("proxy-{}", addr.port()))
            .spawn(move || accept_loop(listener, upstream, for_thread))
            .expect("cannot start the proxy's thread");
        Proxy {
            addr,
            upstream,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Where it passes connections on to.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// The faults in effect.
    pub fn faults(&self) -> Faults {
        *lock(&self.shared.faults)
    }

    /// Replaces every fault at once.
    pub fn set_faults(&self, faults: Faults) {
        *lock(&self.shared.faults) = faults;
    }

    /// Delays every chunk by `latency` (zero: none), in both directions.
    pub fn set_latency(&self, latency: Duration) {
        lock(&self.shared.faults).latency = latency;
    }

    /// Holds back (`true`) or passes (`false`) the bytes going one way:
    /// the other side sees a silent peer, not a closed connection, until the
    /// hole is healed and the held bytes arrive.
    pub fn black_hole(&self, direction: Direction, on: bool) {
        let mut faults = lock(&self.shared.faults);
        match direction {
            Direction::Upstream => faults.hold_upstream = on,
            Direction::Downstream => faults.hold_downstream = on,
        }
    }

    /// Cuts the server off (`true`): both directions are black holes, so
    /// open connections hang and new ones connect but get no answer, as
    /// across a network partition. `false` undoes it.
    pub fn partition(&self, on: bool) {
        let mut faults = lock(&self.shared.faults);
        faults.hold_upstream = on;
        faults.hold_downstream = on;
    }

    /// New connections are closed as soon as they are accepted (`true`).
    pub fn refuse(&self, on: bool) {
        lock(&self.shared.faults).refuse = on;
    }

    /// Resets every open connection (an RST to both ends); new ones work.
    pub fn reset_all(&self) {
        let conns: Vec<_> = lock(&self.shared.conns).drain(..).collect();
        for (_, client, server) in conns {
            abort(&client);
            abort(&server);
        }
    }

    /// Clears every fault.
    pub fn heal(&self) {
        self.set_faults(Faults::default());
    }

    /// How many connections are open through it now.
    pub fn open_connections(&self) -> usize {
        lock(&self.shared.conns).len()
    }

    /// Bytes passed on so far, both directions.
    pub fn forwarded_bytes(&self) -> u64 {
        self.shared.forwarded.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.reset_all();
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// Closes a socket with an RST rather than a FIN (`SO_LINGER` zero), as a
/// connection reset by a middlebox looks to the client.
fn abort(stream: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt reads `linger` for the given length only; the fd is
    // open for as long as `stream` is borrowed.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    let _ = stream.shutdown(Shutdown::Both);
}

fn accept_loop(listener: TcpListener, upstream: SocketAddr, shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        let client = match listener.accept() {
            Ok((client, _)) => client,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                thread::sleep(POLL / 4);
                continue;
            }
            Err(_) => {
                thread::sleep(POLL);
                continue;
            }
        };
        if lock(&shared.faults).refuse {
            abort(&client);
            continue;
        }
        let _ = connect(client, upstream, &shared);
    }
}

fn connect(client: TcpStream, upstream: SocketAddr, shared: &Arc<Shared>) -> io::Result<()> {
    client.set_nonblocking(false)?;
    let server = match TcpStream::connect_timeout(&upstream, CONNECT_TIMEOUT) {
        Ok(server) => server,
        Err(e) => {
            // The upstream is down: the client sees its connection reset, as
            // it would see a refused one without the proxy.
            abort(&client);
            return Err(e);
        }
    };
    for s in [&client, &server] {
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(POLL))?;
    }
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    lock(&shared.conns).push((id, client.try_clone()?, server.try_clone()?));
    let pumps = [
        (
            client.try_clone()?,
            server.try_clone()?,
            Direction::Upstream,
        ),
        (server, client, Direction::Downstream),
    ];
    for (from, to, direction) in pumps {
        let shared = Arc::clone(shared);
        thread::Builder::new()
            .name(format!("proxy-conn-{id}"))
            .spawn(move || pump(from, to, direction, id, &shared))?;
    }
    Ok(())
}

fn held(direction: Direction, faults: &Faults) -> bool {
    match direction {
        Direction::Upstream => faults.hold_upstream,
        Direction::Downstream => faults.hold_downstream,
    }
}

/// Copies one direction of one connection, applying the faults chunk by
/// chunk, until either side closes or the proxy stops.
fn pump(mut from: TcpStream, mut to: TcpStream, direction: Direction, id: u64, shared: &Shared) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        // A black hole: read nothing, so the bytes wait in the kernel's
        // buffers (and the sender feels TCP's back pressure).
        if held(direction, &lock(&shared.faults)) {
            thread::sleep(POLL / 4);
            continue;
        }
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(_) => break,
        };
        let mut faults = *lock(&shared.faults);
        if !faults.latency.is_zero() {
            thread::sleep(faults.latency);
        }
        // A chunk read just as a hole opened waits for it to close.
        while held(direction, &faults) && !shared.stop.load(Ordering::SeqCst) {
            thread::sleep(POLL / 4);
            faults = *lock(&shared.faults);
        }
        // Counted before the write, so that a peer that has read the bytes
        // finds them counted.
        shared.forwarded.fetch_add(n as u64, Ordering::SeqCst);
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    // One side is done: close both, so the other pump ends too.
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
    lock(&shared.conns).retain(|(open, _, _)| *open != id);
}
