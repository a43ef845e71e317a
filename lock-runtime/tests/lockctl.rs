//! `lockctl` run as a process against a private redis-server: it lists a
//! lock this (other) process holds with its host, pid and label; shows it;
//! refuses to release without confirmation; releases it with a reason, after
//! which the holder's guard reports the lock lost, a waiter gets it with a
//! higher fencing token, and the audit log has the entry; `--json` parses;
//! bad input exits non-zero with a message.
//!
//! The test support of the workspace's root tests, shared by path: this test
//! lives in `lock-runtime` because only a package's own tests can run its
//! binaries (`CARGO_BIN_EXE_lockctl`).

#[allow(dead_code, unused_imports)]
#[path = "../../tests/support/files.rs"]
mod files;
#[allow(dead_code, unused_imports)]
#[path = "../../tests/support/ports.rs"]
mod ports;
#[allow(dead_code, unused_imports)]
#[path = "../../tests/support/process.rs"]
mod process;
#[allow(dead_code, unused_imports)]
#[path = "../../tests/support/redis.rs"]
mod redis;
#[allow(dead_code, unused_imports)]
#[path = "../../tests/support/server.rs"]
mod server;

use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use lock_runtime::Lock;
use lock_runtime::registry::{self, AliasConfig};
use serde_json::Value;

use redis::RedisServer;

/// Runs `lockctl ARGS` with no terminal on stdin.
fn lockctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lockctl"))
        .args(args)
        .env_remove("LOCK_ALIAS_DEFAULT")
        .stdin(Stdio::null())
        .output()
        .expect("cannot run lockctl")
}

/// Its output and messages, also printed (`--nocapture` shows a session).
fn text(o: &Output) -> (String, String) {
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    );
    println!("{out}{err}(exit {})", o.status.code().unwrap_or(-1));
    (out, err)
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

#[test]
fn lockctl_lists_shows_and_releases_a_lock_held_by_another_process() {
    let server = RedisServer::start();
    let url = server.url();
    // A short lease, renewed while the guard lives: the forced-out holder
    // learns of its loss at its next renewal, within a second.
    let config = AliasConfig::from_url(&url)
        .unwrap()
        .default_lease(Duration::from_secs(2));
    registry::add("ops", config).unwrap();
    let holder = Lock::new("report-42")
        .alias("ops")
        .label("nightly-report")
        .acquire()
        .unwrap();
    let held_token = holder.fencing_token().expect("Redis gives fencing tokens");
    let me = std::process::id();

    // list: the lock, with who holds it.
    let out = lockctl(&["--url", &url, "list"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("report-42"))
        .unwrap_or_else(|| panic!("report-42 not listed:\n{stdout}"));
    assert!(line.contains(&format!(":{me}")), "pid missing: {line}");
    assert!(line.contains("nightly-report"), "label missing: {line}");
    assert!(line.contains(&host_name()), "host missing: {line}");

    // list --json: one document that parses, with the same facts.
    let out = lockctl(&["--url", &url, "--json", "list", "report-"]);
    let listed: Value = serde_json::from_slice(&out.stdout).expect("list --json parses");
    let lock = &listed.as_array().expect("an array")[0];
    assert_eq!(lock["key"], "report-42");
    assert_eq!(lock["owner"]["pid"], me);
    assert_eq!(lock["owner"]["label"], "nightly-report");
    // Redis keeps one fencing counter per alias, not a lock's token in its
    // value: a listing may not know it, and must not make one up.
    assert!(
        lock["fencing"].is_null() || lock["fencing"] == held_token,
        "{lock}"
    );
    assert!(lock["lease_left_ms"].as_u64().is_some_and(|ms| ms <= 2_000));

    // watch --json: a line per refresh, each a table of the locks held.
    let out = lockctl(&[
        "--url",
        &url,
        "--json",
        "watch",
        "--count",
        "2",
        "--interval",
        "10ms",
    ]);
    assert!(out.status.success(), "{:?}", text(&out));
    let refreshes: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each refresh parses"))
        .collect();
    assert_eq!(refreshes.len(), 2);
    assert!(
        refreshes
            .iter()
            .all(|r| r["locks"][0]["key"] == "report-42"),
        "{refreshes:?}"
    );

    // show: exit 0 for a held key, 1 for a free one.
    let out = lockctl(&["--url", &url, "show", "report-42"]);
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("nightly-report") && stdout.contains(&me.to_string()),
        "{stdout}"
    );
    let out = lockctl(&["--url", &url, "show", "report-43"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).0.contains("report-43 is not held"));

    // A waiter in this process.
    let (got_tx, got_rx) = mpsc::channel();
    let waiter = thread::spawn(move || {
        let guard = Lock::new("report-42").alias("ops").acquire().unwrap();
        got_tx.send(guard.fencing_token()).unwrap();
    });

    // release without --yes and no terminal: refused, exit 5, still held.
    let out = lockctl(&["--url", &url, "release", "report-42", "--reason", "stuck"]);
    assert_eq!(out.status.code(), Some(5), "{:?}", text(&out));
    assert!(text(&out).1.contains("--yes"));
    assert!(!holder.is_lost());

    // release --yes: freed, recorded, the holder told.
    let reason = "holder hung on a dead NFS mount, INC-1234";
    let out = lockctl(&[
        "--url",
        &url,
        "release",
        "report-42",
        "--reason",
        reason,
        "--yes",
    ]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("released report-42"), "{stdout}");
    let next = got_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the waiter gets the lock after the forced release");
    assert!(
        next.is_some_and(|t| t > held_token),
        "fencing {next:?} after {held_token}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !holder.is_lost() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    assert!(
        holder.is_lost(),
        "the forced-out guard reports the lock lost"
    );
    waiter.join().unwrap();
    drop(holder);

    // audit: the entry, newest first, with who was removed.
    let out = lockctl(&["--url", &url, "--json", "audit"]);
    let audit: Value = serde_json::from_slice(&out.stdout).expect("audit --json parses");
    let entry = &audit[0];
    assert_eq!(entry["key"], "report-42");
    assert_eq!(entry["reason"], reason);
    assert_eq!(entry["removed"]["owner"]["pid"], me);
    assert!(
        entry["removed"]["held_for_ms"].as_u64().is_some(),
        "{entry}"
    );
    assert!(
        entry["by"]["pid"]
            .as_u64()
            .is_some_and(|p| p != u64::from(me)),
        "lockctl's own pid"
    );

    // release of a free key: exit 1, still recorded.
    let out = lockctl(&[
        "--url",
        &url,
        "release",
        "report-42",
        "--reason",
        "again",
        "--yes",
    ]);
    assert_eq!(out.status.code(), Some(1), "{:?}", text(&out));
}

#[test]
fn bad_input_exits_non_zero_with_a_message() {
    let cases: [(&[&str], i32, &str); 5] = [
        (&["--url", "nope://x", "list"], 2, "nope"),
        (&["--url", "memory://", "list"], 2, "per-process"),
        (&["list"], 2, "LOCK_ALIAS_DEFAULT"),
        (
            &["--url", "redis://127.0.0.1:1", "frobnicate"],
            2,
            "frobnicate",
        ),
        (
            &[
                "--url",
                "redis://127.0.0.1:1",
                "release",
                "k",
                "--reason",
                " ",
                "--yes",
            ],
            2,
            "--reason",
        ),
    ];
    for (args, code, says) in cases {
        let out = lockctl(args);
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(code), "lockctl {args:?}: {stderr}");
        assert!(
            stderr.contains(says),
            "lockctl {args:?} should mention {says:?}: {stderr}"
        );
    }
    // A store that is not there (a free port nobody listens on): exit 3,
    // naming what failed.
    let port = ports::free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let out = lockctl(&["--url", &url, "show", "k"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.starts_with("lockctl: "), "{stderr}");
}
