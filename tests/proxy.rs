//! The test support's TCP proxy: bytes pass both ways, latency delays them,
//! a black hole holds one direction back until healed, a reset closes open
//! connections, a partition hangs them, refusing closes new ones.

mod support;

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use support::{Direction, Proxy};

/// An echo server on a loopback port: every byte it reads, it writes back.
fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let addr = listener.local_addr().expect("addr");
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 || stream.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

fn client(proxy: &Proxy) -> TcpStream {
    let s = TcpStream::connect(proxy.addr()).expect("connect to the proxy");
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    s
}

/// Sends `msg` and reads back as many bytes: the echo, or an error.
fn round_trip(s: &mut TcpStream, msg: &[u8]) -> io::Result<Vec<u8>> {
    s.write_all(msg)?;
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back)?;
    Ok(back)
}

#[test]
fn bytes_pass_both_ways() {
    let proxy = Proxy::start(echo_server());
    let mut s = client(&proxy);
    for i in 0..20 {
        let msg = format!("hello {i}");
        assert_eq!(round_trip(&mut s, msg.as_bytes()).unwrap(), msg.as_bytes());
    }
    assert_eq!(proxy.open_connections(), 1);
    assert!(proxy.forwarded_bytes() >= 2 * 20 * 7);
}

#[test]
fn latency_delays_every_round_trip() {
    let proxy = Proxy::start(echo_server());
    let mut s = client(&proxy);
    round_trip(&mut s, b"warm").unwrap();
    proxy.set_latency(Duration::from_millis(150));
    let started = Instant::now();
    round_trip(&mut s, b"slow").unwrap();
    // Delayed on the way there and on the way back.
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    proxy.heal();
    let started = Instant::now();
    round_trip(&mut s, b"fast").unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn reset_closes_open_connections_and_new_ones_work() {
    let proxy = Proxy::start(echo_server());
    let mut s = client(&proxy);
    round_trip(&mut s, b"before").unwrap();
    proxy.reset_all();
    let after = round_trip(&mut s, b"after");
    let e = after.expect_err("a reset connection gives no echo");
    assert!(
        matches!(
            e.kind(),
            io::ErrorKind::ConnectionReset
                | io::ErrorKind::UnexpectedEof
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::ConnectionAborted
        ),
        "{e:?}"
    );
    let mut fresh = client(&proxy);
    assert_eq!(round_trip(&mut fresh, b"again").unwrap(), b"again");
}

/// Reads exactly `n` bytes within `limit`.
fn read_within(s: &mut TcpStream, n: usize, limit: Duration) -> io::Result<Vec<u8>> {
    s.set_read_timeout(Some(limit))?;
    let mut back = vec![0u8; n];
    s.read_exact(&mut back)?;
    Ok(back)
}

#[test]
fn black_hole_holds_back_one_direction_until_healed() {
    let proxy = Proxy::start(echo_server());
    let mut s = client(&proxy);
    round_trip(&mut s, b"x").unwrap();

    // Replies are held: the request reaches the server and is echoed, but
    // the echo does not come through while the hole lasts...
    proxy.black_hole(Direction::Downstream, true);
    let forwarded = proxy.forwarded_bytes();
    let e = round_trip(&mut s, b"late").expect_err("no reply through the hole");
    assert!(
        matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ),
        "{e:?}"
    );
    assert_eq!(
        proxy.forwarded_bytes(),
        forwarded + 4,
        "the request went through"
    );
    // ...and arrives, in order, once it is healed: TCP delays, never drops.
    proxy.black_hole(Direction::Downstream, false);
    assert_eq!(
        read_within(&mut s, 4, Duration::from_secs(2)).unwrap(),
        b"late"
    );
    assert_eq!(round_trip(&mut s, b"back").unwrap(), b"back");

    // Requests are held: nothing reaches the server, nothing comes back.
    proxy.black_hole(Direction::Upstream, true);
    let forwarded = proxy.forwarded_bytes();
    assert!(round_trip(&mut s, b"wait").is_err());
    assert_eq!(
        proxy.forwarded_bytes(),
        forwarded,
        "nothing passed either way"
    );
    proxy.heal();
    assert_eq!(
        read_within(&mut s, 4, Duration::from_secs(2)).unwrap(),
        b"wait"
    );
    assert_eq!(round_trip(&mut s, b"ok").unwrap(), b"ok");
}

#[test]
fn partition_hangs_open_and_new_connections() {
    let proxy = Proxy::start(echo_server());
    let mut open = client(&proxy);
    round_trip(&mut open, b"x").unwrap();
    proxy.partition(true);
    assert!(round_trip(&mut open, b"y").is_err());
    let mut new = client(&proxy);
    assert!(
        round_trip(&mut new, b"z").is_err(),
        "connects, but no answer"
    );
    proxy.partition(false);
    assert_eq!(
        read_within(&mut new, 1, Duration::from_secs(2)).unwrap(),
        b"z"
    );
    let mut healed = client(&proxy);
    assert_eq!(round_trip(&mut healed, b"ok").unwrap(), b"ok");
}

#[test]
fn refuse_closes_new_connections() {
    let proxy = Proxy::start(echo_server());
    proxy.refuse(true);
    let mut s = client(&proxy);
    assert!(round_trip(&mut s, b"no").is_err());
    proxy.refuse(false);
    let mut s = client(&proxy);
    assert_eq!(round_trip(&mut s, b"yes").unwrap(), b"yes");
}
