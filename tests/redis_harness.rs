//! Pins the test support itself: the Redis server it starts, stops, pauses
//! and kills, and the child processes it runs. Every other Redis test trusts
//! these behaviours, so each is checked against the real process here.

mod support;

use std::io::{self, BufRead, BufReader, ErrorKind, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use support::{RedisServer, RespValue, alive, gone_within};

fn pong() -> RespValue {
    RespValue::Simple("PONG".into())
}

fn refused(server: &RedisServer) -> bool {
    matches!(
        TcpStream::connect_timeout(&server.addr(), Duration::from_secs(1)),
        Err(e) if e.kind() == ErrorKind::ConnectionRefused
    )
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

#[test]
fn start_gives_a_server_that_answers_ping() {
    let server = RedisServer::start();
    assert_eq!(server.cmd(&["PING"]), pong());
    assert_eq!(server.url(), format!("redis://127.0.0.1:{}", server.port()));
    assert_eq!(server.addr().port(), server.port());
    assert!(server.addr().ip().is_loopback());
    assert!(server.is_running());
    // The server answering is the process the harness started.
    let pid = server.pid().expect("a started server has a pid");
    assert_eq!(server.info("server")["process_id"], pid.to_string());
    // Hermetic: no persistence configured.
    let save = server.cmd(&["CONFIG", "GET", "save"]);
    assert_eq!(
        save,
        RespValue::Array(vec![
            RespValue::Bulk(b"save".to_vec()),
            RespValue::Bulk(Vec::new())
        ])
    );
    assert!(
        server.log_tail(50).contains("Ready to accept connections"),
        "{}",
        server.log_tail(50)
    );
}

#[test]
fn two_servers_get_different_ports() {
    let a = RedisServer::start();
    let b = RedisServer::start();
    assert_ne!(a.port(), b.port());
    assert_ne!(a.pid(), b.pid());
    a.set("only-in-a", "1");
    assert_eq!(a.get("only-in-a").as_deref(), Some("1"));
    assert_eq!(b.get("only-in-a"), None);
}

#[test]
fn typed_helpers_read_what_the_server_holds() {
    let server = RedisServer::start();
    assert_eq!(
        server.cmd(&["SET", "lease", "x", "PX", "60000"]),
        RespValue::Simple("OK".into())
    );
    server.set("plain", "y");
    let pttl = server.pttl("lease");
    assert!(0 < pttl && pttl <= 60_000, "{pttl}");
    assert_eq!(server.pttl("plain"), -1);
    assert_eq!(server.pttl("absent"), -2);
    assert!(server.exists("lease"));
    assert!(!server.exists("absent"));
    assert_eq!(server.keys("*"), ["lease", "plain"]);
    let processed: u64 = server.info_stats()["total_commands_processed"]
        .parse()
        .unwrap();
    assert!(processed >= 6, "{processed}");
    // Error replies are values, not panics, so tests can assert on them.
    assert!(
        matches!(server.cmd(&["NO-SUCH-COMMAND"]), RespValue::Error(e) if e.starts_with("ERR"))
    );
    // Binary-safe arguments and replies.
    assert_eq!(
        server.cmd(&[&b"SET"[..], b"bin", b"a\r\nb\0"]),
        RespValue::Simple("OK".into())
    );
    assert_eq!(
        server.cmd(&["GET", "bin"]),
        RespValue::Bulk(b"a\r\nb\0".to_vec())
    );
    server.flushall();
    assert_eq!(server.keys("*"), Vec::<String>::new());
}

#[test]
fn stop_refuses_connections_and_restart_brings_the_same_port_back() {
    let server = RedisServer::start();
    let port = server.port();
    let old_pid = server.pid().unwrap();
    server.set("k", "v");

    server.stop();
    assert!(!server.is_running());
    assert_eq!(server.pid(), None);
    assert!(
        !alive(old_pid),
        "stop() returned before the process was gone"
    );
    assert!(
        refused(&server),
        "a stopped server's port still accepts connections"
    );
    server.stop(); // idempotent

    server.restart();
    assert_eq!(server.port(), port);
    assert!(server.is_running());
    assert_ne!(server.pid(), Some(old_pid));
    assert_eq!(server.cmd(&["PING"]), pong());
    assert_eq!(server.get("k"), None, "a restarted server starts empty");

    // Restarting a running server replaces it.
    let pid = server.pid().unwrap();
    server.restart();
    assert!(!alive(pid));
    assert_eq!(server.cmd(&["PING"]), pong());
}

#[test]
fn pause_makes_ping_time_out_and_resume_answers_again() {
    let server = RedisServer::start();
    server.pause();
    assert!(server.is_paused());
    assert!(server.is_running(), "a paused server is still alive");
    let started = Instant::now();
    match server.try_cmd(&["PING"], Duration::from_millis(300)) {
        Err(e) => assert!(
            matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
            "{e:?}"
        ),
        Ok(reply) => panic!("a paused server answered {reply:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(3));

    server.resume();
    assert!(!server.is_paused());
    assert_eq!(server.cmd(&["PING"]), pong());

    // A paused server can still be stopped and restarted.
    server.pause();
    server.stop();
    assert!(!server.is_paused());
    server.restart();
    assert_eq!(server.cmd(&["PING"]), pong());
}

#[test]
fn drop_kills_the_process_and_removes_its_dir() {
    let server = RedisServer::start();
    let pid = server.pid().unwrap();
    let log = server.log_path();
    let dir = log.parent().unwrap().to_owned();
    let addr = server.addr();
    assert!(alive(pid) && log.exists());
    drop(server);
    assert!(!alive(pid), "redis-server {pid} outlived its RedisServer");
    // SAFETY: kill(2) with signal 0 only checks for the process.
    let probe = unsafe { libc::kill(pid as libc::pid_t, 0) };
    assert_eq!(probe, -1, "pid {pid} still exists");
    assert_eq!(io::Error::last_os_error().raw_os_error(), Some(libc::ESRCH));
    assert!(!dir.exists(), "{} was left behind", dir.display());
    assert!(TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err());
}

#[test]
fn drop_kills_a_paused_server() {
    let server = RedisServer::start();
    let pid = server.pid().unwrap();
    server.pause();
    drop(server);
    assert!(!alive(pid));
}

#[test]
fn a_server_restarted_from_a_finished_thread_keeps_running() {
    // Servers are tied to the life of the test process, not of the thread
    // that (re)started them.
    let server = RedisServer::start();
    thread::scope(|s| {
        s.spawn(|| server.restart());
    });
    thread::sleep(Duration::from_millis(200));
    assert!(server.is_running());
    assert_eq!(server.cmd(&["PING"]), pong());
}

#[test]
fn test_name_names_the_enclosing_test() {
    assert_eq!(support::test_name!(), "test_name_names_the_enclosing_test");
    assert_eq!(
        support::test_name_from_path("suite::module::case::here"),
        "module::case"
    );
    assert_eq!(
        support::test_name_from_path("suite::case::{{closure}}::here"),
        "case"
    );
}

#[test]
fn children_run_and_report_back() {
    match support::child_role().as_deref() {
        Some("echo") => {
            let index = support::child_index().expect("a child has an index");
            let given = std::env::var("HARNESS_GIVEN").unwrap();
            support::report(format!("{index}:{given}"));
        }
        Some(other) => panic!("unexpected role {other}"),
        None => {
            assert_eq!(support::child_index(), None);
            let outputs = support::run_children(
                &support::test_name!(),
                "echo",
                3,
                &[("HARNESS_GIVEN", "hello")],
            );
            assert_eq!(outputs.len(), 3);
            for (i, output) in outputs.iter().enumerate() {
                assert!(output.success(), "{output}");
                assert_eq!(output.index, i);
                assert_eq!(output.role, "echo");
                assert_eq!(output.reports(), [format!("{i}:hello")]);
            }
        }
    }
}

#[test]
fn children_share_the_parents_server() {
    match support::child_role().as_deref() {
        Some("writer") => {
            let port: u16 = std::env::var("HARNESS_PORT").unwrap().parse().unwrap();
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let reply =
                support::resp_command(addr, &["INCR", "counter"], support::CMD_TIMEOUT).unwrap();
            support::report(reply.as_int().expect("INCR answers an integer"));
        }
        Some(other) => panic!("unexpected role {other}"),
        None => {
            let server = RedisServer::start();
            let port = server.port().to_string();
            let outputs = support::run_children(
                &support::test_name!(),
                "writer",
                4,
                &[("HARNESS_PORT", &port)],
            );
            let mut seen: Vec<String> = outputs.iter().flat_map(|o| o.reports()).collect();
            seen.sort();
            assert_eq!(seen, ["1", "2", "3", "4"]);
            assert_eq!(server.get("counter").as_deref(), Some("4"));
        }
    }
}

#[test]
fn a_failing_child_fails_the_parent_with_its_stderr() {
    match support::child_role().as_deref() {
        Some("ok") => {}
        Some("fail") => panic!("child-failure-marker-7f3a"),
        Some(other) => panic!("unexpected role {other}"),
        None => {
            let name = support::test_name!();
            let mut children = support::spawn_children(&name, "ok", 1, &[]);
            children.extend(support::spawn_children(&name, "fail", 1, &[]));
            let result = panic::catch_unwind(AssertUnwindSafe(|| {
                support::wait_children(children, Duration::from_secs(60))
            }));
            let msg = panic_message(result.expect_err("a failing child must fail the parent"));
            assert!(msg.contains("1 of 2 children failed"), "{msg}");
            assert!(msg.contains("child 0 (fail)"), "{msg}");
            assert!(
                msg.contains("child-failure-marker-7f3a"),
                "the child's stderr is missing: {msg}"
            );
        }
    }
}

#[test]
fn a_child_that_runs_no_test_is_not_a_pass() {
    let children = support::spawn_children("no_such_test_anywhere", "echo", 1, &[]);
    let outputs = support::collect_children(children, Duration::from_secs(60));
    assert!(
        outputs[0].status.success(),
        "libtest passes a filter that matches nothing"
    );
    assert!(!outputs[0].entered_test());
    assert!(!outputs[0].success());
    assert!(
        outputs[0].to_string().contains("never entered the test"),
        "{}",
        outputs[0]
    );
}

#[test]
fn a_hung_child_is_killed_at_the_timeout() {
    match support::child_role().as_deref() {
        Some("hang") => thread::sleep(Duration::from_secs(120)),
        Some(other) => panic!("unexpected role {other}"),
        None => {
            let children = support::spawn_children(&support::test_name!(), "hang", 1, &[]);
            let started = Instant::now();
            let outputs = support::collect_children(children, Duration::from_millis(500));
            assert!(started.elapsed() < Duration::from_secs(10));
            assert!(outputs[0].timed_out);
            assert!(!outputs[0].success());
        }
    }
}

#[test]
fn missing_redis_server_fails_with_what_to_install() {
    match support::child_role().as_deref() {
        Some("start") => {
            RedisServer::start();
        }
        Some(other) => panic!("unexpected role {other}"),
        None => {
            let name = support::test_name!();
            let not_on_path = support::spawn_children(
                &name,
                "start",
                1,
                &[("REDIS_SERVER_BIN", ""), ("PATH", "/nonexistent")],
            );
            let bad_override = support::spawn_children(
                &name,
                "start",
                1,
                &[("REDIS_SERVER_BIN", "/nonexistent/redis-server")],
            );
            let outputs = support::collect_children(
                not_on_path.into_iter().chain(bad_override).collect(),
                support::CHILD_TIMEOUT,
            );
            for output in &outputs {
                assert!(
                    output.entered_test() && !output.status.success(),
                    "{output}"
                );
                assert!(
                    output.stderr.contains("apt-get install redis-server"),
                    "{output}"
                );
                assert!(output.stderr.contains("REDIS_SERVER_BIN"), "{output}");
            }
            assert!(
                outputs[0].stderr.contains("not found on PATH"),
                "{}",
                outputs[0]
            );
            assert!(
                outputs[1].stderr.contains("/nonexistent/redis-server"),
                "{}",
                outputs[1]
            );
        }
    }
}

#[test]
fn a_failing_test_shows_the_server_log() {
    match support::child_role().as_deref() {
        Some("fail") => {
            let _server = RedisServer::start();
            panic!("failing on purpose");
        }
        Some(other) => panic!("unexpected role {other}"),
        None => {
            let children = support::spawn_children(&support::test_name!(), "fail", 1, &[]);
            let outputs = support::collect_children(children, support::CHILD_TIMEOUT);
            let stderr = &outputs[0].stderr;
            assert!(!outputs[0].status.success());
            assert!(stderr.contains("lines of redis-server log"), "{stderr}");
            assert!(stderr.contains("Ready to accept connections"), "{stderr}");
        }
    }
}

#[test]
fn servers_die_with_the_test_process() {
    match support::child_role().as_deref() {
        Some("orphan") => {
            let server = RedisServer::start();
            support::report(format!(
                "{} {}",
                server.pid().unwrap(),
                server.log_path().parent().unwrap().display()
            ));
            // Never dropped: only the death of this process can end it.
            std::mem::forget(server);
            thread::sleep(Duration::from_secs(60));
        }
        Some(other) => panic!("unexpected role {other}"),
        None => {
            let mut children = support::spawn_children(&support::test_name!(), "orphan", 1, &[]);
            let child = &mut children[0].child;
            let stdout = BufReader::new(child.stdout.take().unwrap());
            let report = stdout
                .lines()
                .map_while(Result::ok)
                .find_map(|line| {
                    line.split_once("lock-test-report: ")
                        .map(|(_, r)| r.to_owned())
                })
                .expect("the child never reported its server");
            let (pid, dir) = report.split_once(' ').unwrap();
            let pid: u32 = pid.parse().unwrap();
            assert!(alive(pid));
            child.kill().unwrap();
            child.wait().unwrap();
            let gone = gone_within(pid, Duration::from_secs(5));
            // Nothing else removes the dir of a server that was never dropped.
            std::fs::remove_dir_all(dir).unwrap();
            assert!(gone, "redis-server {pid} outlived the test process");
        }
    }
}

#[test]
fn servers_live_in_private_dirs() {
    let a = RedisServer::start();
    let b = RedisServer::start();
    let dir_a = a.log_path().parent().unwrap().to_owned();
    let dir_b = b.log_path().parent().unwrap().to_owned();
    assert_ne!(dir_a, dir_b);
    assert_eq!(a.cmd(&["CONFIG", "GET", "dir"]), dir_reply(&dir_a));
    assert!(dir_a.starts_with(env!("CARGO_TARGET_TMPDIR")));
}

fn dir_reply(dir: &Path) -> RespValue {
    RespValue::Array(vec![
        RespValue::Bulk(b"dir".to_vec()),
        RespValue::Bulk(dir.to_str().unwrap().as_bytes().to_vec()),
    ])
}

#[test]
fn restart_never_takes_a_foreign_server_for_its_own() {
    let server = RedisServer::start();
    server.stop();
    // Something else takes the port and even answers PING.
    let impostor = TcpListener::bind(server.addr()).expect("the stopped server's port is free");
    let stop = Arc::new(AtomicBool::new(false));
    let serving = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            for stream in impostor.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(mut stream) = stream {
                    let _ = stream.write_all(b"+PONG\r\n");
                }
            }
        })
    };
    let result = panic::catch_unwind(AssertUnwindSafe(|| server.restart()));
    stop.store(true, Ordering::SeqCst);
    let _ = TcpStream::connect(server.addr());
    serving.join().unwrap();
    let msg =
        panic_message(result.expect_err("restart() must not succeed on a port it does not own"));
    assert!(
        msg.contains(&format!("another process has held port {}", server.port())),
        "{msg}"
    );
    assert!(!server.is_running());
}
