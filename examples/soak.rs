//! A soak test: 4 processes of 16 threads each (64 in all) lock random keys
//! out of 10,000 on one private Redis for the given time, through the
//! builder and `#[lock]`. RSS of every process, Redis's memory, its client
//! connections and its keys are printed at the start and at the end; after
//! everyone stops, the keys left in Redis are listed. It fails when the
//! numbers say something grows without bound or is left behind.
//!
//! ```text
//! cargo run --release --example soak -- --seconds 60
//! ```
//!
//! The last line of stdout is every figure as one JSON object. Not part of
//! the test suite (it runs for minutes); CI runs the 60-second version.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use lock_runtime::registry::{self, AliasConfig};
use lock_runtime::{Lock, LockError, lock};
use serde_json::json;

use support::{RedisServer, RespValue};

const PROCESSES: usize = 4;
const THREADS: usize = 16;
const KEYS: u64 = 10_000;
const ALIAS: &str = "soak";
const PREFIX: &str = "soak:";
const WORKER_ENV: &str = "LOCK_SOAK_WORKER";
/// The lease of the alias, so a lock a worker left would expire soon.
const LEASE: Duration = Duration::from_secs(2);
/// RSS and Redis memory may grow by this much plus 10% between the first
/// sample after the warm-up and the end before it counts as unbounded.
const GROWTH_SLACK_KB: u64 = 8 * 1024;

fn main() -> ExitCode {
    if let Ok(spec) = std::env::var(WORKER_ENV) {
        return match worker(&spec) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("soak worker failed: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let seconds = match args.as_slice() {
        [] => 60,
        [flag, n] if flag == "--seconds" => match n.parse() {
            Ok(n) => n,
            Err(e) => {
                eprintln!("--seconds: {e}");
                return ExitCode::from(2);
            }
        },
        _ => {
            eprintln!("usage: soak [--seconds N]");
            return ExitCode::from(2);
        }
    };
    match controller(seconds) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("soak could not run: {e}");
            ExitCode::from(3)
        }
    }
}

fn alias(url: &str) -> Result<(), String> {
    let cfg = AliasConfig::redis(url).prefix(PREFIX).default_lease(LEASE);
    registry::add(ALIAS, cfg).map_err(|e| e.to_string())
}

/// One key, a `#[lock]` path beside the builder's.
#[lock("<key>", alias = "soak", wait_for_ms = 1000)]
fn attr_hold(key: &str) -> Result<(), LockError> {
    let _ = key;
    thread::sleep(Duration::from_micros(200));
    Ok(())
}

/// `url seconds`: THREADS threads lock random keys until the time is up,
/// then print `ops N errors M` and exit.
fn worker(spec: &str) -> Result<(), String> {
    let (url, seconds) = spec.split_once(' ').ok_or("bad worker spec")?;
    let seconds: u64 = seconds.parse().map_err(|e| format!("seconds: {e}"))?;
    alias(url)?;
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (stop, ops, errors) = (Arc::clone(&stop), Arc::clone(&ops), Arc::clone(&errors));
            thread::spawn(move || {
                let mut x = (std::process::id() as u64) << 16 | t as u64 | 1;
                while !stop.load(Ordering::Relaxed) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let key = format!("key-{}", x % KEYS);
                    let r = if t % 2 == 0 {
                        Lock::new(key)
                            .alias(ALIAS)
                            .wait_for(Duration::from_secs(1))
                            .acquire()
                            .and_then(|g| {
                                thread::sleep(Duration::from_micros(200));
                                g.release()
                            })
                    } else {
                        attr_hold(&key)
                    };
                    match r {
                        Ok(()) => ops.fetch_add(1, Ordering::Relaxed),
                        Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    thread::sleep(Duration::from_secs(seconds));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().map_err(|_| "a soak thread panicked")?;
    }
    println!(
        "ops {} errors {}",
        ops.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed)
    );
    Ok(())
}

fn rss_kb(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// What one sample saw.
#[derive(Clone, Debug)]
struct Sample {
    at_s: u64,
    rss_kb: Vec<u64>,
    redis_rss_kb: u64,
    redis_used_kb: u64,
    clients: u64,
    keys: u64,
}

fn info_field(server: &RedisServer, section: &str, field: &str) -> u64 {
    server
        .info(section)
        .get(field)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn sample(server: &RedisServer, workers: &[Child], started: Instant) -> Sample {
    let keys = match server.cmd(&["DBSIZE"]) {
        RespValue::Int(n) => n as u64,
        _ => 0,
    };
    Sample {
        at_s: started.elapsed().as_secs(),
        rss_kb: workers
            .iter()
            .map(|c| rss_kb(c.id()).unwrap_or(0))
            .collect(),
        redis_rss_kb: server.pid().and_then(rss_kb).unwrap_or(0),
        redis_used_kb: info_field(server, "memory", "used_memory") / 1024,
        clients: info_field(server, "clients", "connected_clients"),
        keys,
    }
}

fn print_sample(label: &str, s: &Sample) {
    println!(
        "{label} (t={}s): worker RSS {:?} kB, redis RSS {} kB, redis used_memory {} kB, clients {}, keys {}",
        s.at_s, s.rss_kb, s.redis_rss_kb, s.redis_used_kb, s.clients, s.keys
    );
}

fn grew(from: u64, to: u64) -> bool {
    to > from + from / 10 + GROWTH_SLACK_KB
}

fn controller(seconds: u64) -> Result<bool, String> {
    let started = Instant::now();
    let server = RedisServer::start();
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut workers: Vec<Child> = Vec::new();
    for _ in 0..PROCESSES {
        let mut command = Command::new(&exe);
        command
            .env(WORKER_ENV, format!("{} {seconds}", server.url()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // SAFETY: prctl is async-signal-safe; workers die with the soak.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        workers.push(
            command
                .spawn()
                .map_err(|e| format!("cannot start a worker: {e}"))?,
        );
    }
    // The first sample after a warm-up: pools filled, allocator settled.
    let warm_up = Duration::from_secs((seconds / 6).clamp(2, 10));
    thread::sleep(warm_up);
    let first = sample(&server, &workers, started);
    print_sample("start", &first);
    let mut last = first.clone();
    let end = started + Duration::from_secs(seconds);
    let mut peak_clients = first.clients;
    // The workers' mean RSS every sample, to tell a plateau from a climb.
    let mean = |s: &Sample| s.rss_kb.iter().sum::<u64>() / s.rss_kb.len().max(1) as u64;
    let mut trace = vec![(first.at_s, mean(&first), first.redis_used_kb)];
    while Instant::now() + Duration::from_secs(5) < end {
        thread::sleep(Duration::from_secs(5));
        last = sample(&server, &workers, started);
        peak_clients = peak_clients.max(last.clients);
        trace.push((last.at_s, mean(&last), last.redis_used_kb));
    }
    print_sample("end", &last);

    let mut ops = 0u64;
    let mut errors = 0u64;
    let mut failures: Vec<String> = Vec::new();
    for (i, mut child) in workers.into_iter().enumerate() {
        let out = child.stdout.take().ok_or("no worker stdout")?;
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("ops ") {
                let mut parts = rest.split(" errors ");
                ops += parts.next().and_then(|n| n.parse().ok()).unwrap_or(0);
                errors += parts.next().and_then(|n| n.parse().ok()).unwrap_or(0);
            }
        }
        let status = child.wait().map_err(|e| e.to_string())?;
        if !status.success() {
            failures.push(format!("worker {i} ended with {status}"));
        }
    }
    let keys_at_stop = key_list(&server);
    // Whatever carries a TTL gets its lease plus a margin to go.
    thread::sleep(LEASE + Duration::from_millis(500));
    let keys_after_lease = key_list(&server);
    let clients_after = info_field(&server, "clients", "connected_clients");
    println!("keys left at stop: {keys_at_stop:?}");
    println!("keys left a lease later: {keys_after_lease:?}");

    for (i, (a, b)) in first.rss_kb.iter().zip(&last.rss_kb).enumerate() {
        if grew(*a, *b) {
            failures.push(format!("worker {i} RSS grew from {a} kB to {b} kB"));
        }
    }
    if grew(first.redis_used_kb, last.redis_used_kb) {
        failures.push(format!(
            "redis used_memory grew from {} kB to {} kB",
            first.redis_used_kb, last.redis_used_kb
        ));
    }
    if last.clients > first.clients + 4 {
        failures.push(format!(
            "redis connections grew from {} to {}",
            first.clients, last.clients
        ));
    }
    // Only the alias's fencing counter may stay, and one process record per
    // worker process (who holds what, for the admin API), which expires a
    // week after its process last locked (both documented).
    let records = keys_after_lease
        .keys()
        .filter(|k| k.starts_with("soak%:proc:"))
        .count();
    let stray: Vec<&String> = keys_after_lease
        .keys()
        .filter(|k| k.as_str() != "soak%:fence" && !k.starts_with("soak%:proc:"))
        .collect();
    if !stray.is_empty() {
        failures.push(format!(
            "keys left a lease after everyone stopped: {stray:?}"
        ));
    }
    if records > PROCESSES {
        failures.push(format!(
            "{records} process records for {PROCESSES} processes: one each is documented"
        ));
    }
    for f in &failures {
        eprintln!("soak: FAILED: {f}");
    }
    let summary = json!({
        "seconds": seconds,
        "processes": PROCESSES,
        "threads": PROCESSES * THREADS,
        "keys": KEYS,
        "ops": ops,
        "errors": errors,
        "ops_per_s": ops / seconds.max(1),
        "rss_kb_start": first.rss_kb,
        "rss_kb_end": last.rss_kb,
        "redis_rss_kb": [first.redis_rss_kb, last.redis_rss_kb],
        "redis_used_memory_kb": [first.redis_used_kb, last.redis_used_kb],
        "redis_clients": [first.clients, last.clients],
        "redis_clients_peak": peak_clients,
        "redis_clients_after_stop": clients_after,
        "redis_keys": [first.keys, last.keys],
        "trace_s_mean_rss_kb_redis_used_kb": trace,
        "keys_left_at_stop": keys_at_stop,
        "keys_left_after_lease": keys_after_lease,
        "elapsed_ms": started.elapsed().as_millis() as u64,
        "passed": failures.is_empty(),
        "failures": failures,
    });
    println!("{summary}");
    Ok(summary["passed"] == true)
}

/// Every key in Redis with its TTL in ms (-1: none).
fn key_list(server: &RedisServer) -> BTreeMap<String, i64> {
    server
        .keys("*")
        .into_iter()
        .map(|k| {
            let ttl = server.pttl(&k);
            (k, ttl)
        })
        .collect()
}
