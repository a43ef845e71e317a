//! The fault campaign (examples/campaign.rs) as a test: a short seeded run
//! per store, asserting the properties from its summary; and the checker fed
//! hand-made histories, so that it is seen to fail on each kind of bad one.
//!
//! This test binary is also the campaign's worker: the controller re-runs it
//! with only `worker_process` selected and the worker's arguments in its
//! environment.

#[path = "../examples/campaign/checker.rs"]
mod checker;
#[path = "../examples/campaign/controller.rs"]
mod controller;
#[path = "../examples/campaign/history.rs"]
mod history;
#[path = "../examples/campaign/resource.rs"]
mod resource;
#[path = "../examples/campaign/settings.rs"]
mod settings;
mod support;
#[path = "../examples/campaign/worker.rs"]
mod worker;

use checker::{Profile, check};
use history::{Fault, History, Hold, Write};
use serde_json::Value;

const MS: u64 = 1_000_000;

// ---------------------------------------------------------------------------
// Short campaigns
// ---------------------------------------------------------------------------

/// Not a test of its own: the worker processes the campaigns start.
#[test]
#[ignore = "a campaign's worker process, started by the campaign tests"]
fn worker_process() {
    // Run by hand (`--ignored`), there is nothing to do.
    let Ok(args) = std::env::var(settings::WORKER_ENV) else {
        return;
    };
    worker::run(worker::Args::parse(&args).unwrap()).unwrap();
}

fn campaign(store: &str, seconds: u64, seed: u64) -> Value {
    campaign_threads(store, seconds, seed, 1)
}

/// A campaign whose worker processes each take locks on `threads` threads
/// at once.
fn campaign_threads(store: &str, seconds: u64, seed: u64, threads: u32) -> Value {
    let exe = std::env::current_exe().unwrap().display().to_string();
    let opts = controller::Options {
        store: store.into(),
        seconds,
        seed: Some(seed),
        workers: 4,
        threads,
        persist: true,
        keep: false,
        worker_command: vec![
            exe,
            "--exact".into(),
            "worker_process".into(),
            "--include-ignored".into(),
            "--nocapture".into(),
            "--test-threads=1".into(),
        ],
    };
    let summary = controller::run(&opts).unwrap();
    println!("{summary}");
    summary
}

fn assert_properties(s: &Value) {
    assert_eq!(s["passed"], true, "failures: {:#}", s["failures"]);
    assert!(
        s["holds"].as_u64().unwrap() >= 40,
        "too few holds to mean much: {s}"
    );
    let faults: u64 = s["faults"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert!(faults >= 5, "too few faults: {s}");
    assert_eq!(s["stale_writes_accepted"], 0);
    assert_eq!(s["stale_writes_rejected"], s["stale_attempts"]);
    assert_eq!(s["unexplained_overlaps"], 0);
    assert_eq!(s["lost_signals_missed"], 0);
    assert_eq!(s["stranded"], 0);
    assert_eq!(s["waits_over_bound"], 0);
    for mode in history::MODES {
        assert!(
            s["holds_by_mode"][mode].as_u64().unwrap_or(0) > 0,
            "no {mode} holds: {s}"
        );
    }
}

#[test]
fn campaign_on_redis() {
    assert_properties(&campaign("redis", 25, 20_261_202));
}

/// Four threads per worker process: waiters of one process queue in its
/// local line, and a release hands the lock to the next of them in its own
/// script (`RELEASE_TO`), under the same faults.
#[test]
fn campaign_on_redis_with_threads() {
    assert_properties(&campaign_threads("redis", 20, 20_261_208, 4));
}

#[test]
fn campaign_on_quorum() {
    assert_properties(&campaign("quorum", 25, 20_261_203));
}

#[cfg(feature = "memcache")]
#[test]
fn campaign_on_memcache() {
    assert_properties(&campaign("memcache", 15, 20_261_204));
}

#[cfg(feature = "postgres")]
#[test]
fn campaign_on_postgres() {
    assert_properties(&campaign("postgres", 15, 20_261_205));
}

#[cfg(feature = "sqlite")]
#[test]
fn campaign_on_sqlite() {
    assert_properties(&campaign("sqlite", 15, 20_261_206));
}

#[cfg(feature = "file")]
#[test]
fn campaign_on_file() {
    assert_properties(&campaign("file", 15, 20_261_207));
}

// ---------------------------------------------------------------------------
// The checker on hand-made histories
// ---------------------------------------------------------------------------

fn profile() -> Profile {
    Profile {
        lease_ns: 800 * MS,
        wait_for_ns: 3000 * MS,
        command_timeout_ns: 300 * MS,
        restart_forgets: false,
        node_restart_forgets: false,
    }
}

fn hold(worker: u32, hold: u64, token: u64, start_ms: u64, end_ms: u64) -> Hold {
    Hold {
        worker,
        pid: 1000 + worker,
        hold,
        key: "k0".into(),
        mode: "builder_sync".into(),
        token,
        start: start_ms * MS,
        waited: MS,
        end: Some(end_ms * MS),
        write: Some("ok".into()),
        write_at: Some((end_ms - 1) * MS),
        release: Some("ok".into()),
        ..Hold::default()
    }
}

fn write(h: &Hold, accepted: bool) -> Write {
    Write {
        key: h.key.clone(),
        token: h.token,
        worker: h.worker,
        hold: h.hold,
        at: h.write_at.unwrap(),
        accepted,
    }
}

/// Two holds one after the other, each writing with its token.
fn clean() -> History {
    let a = hold(0, 1, 1, 0, 100);
    let b = hold(1, 1, 2, 110, 200);
    History {
        writes: vec![write(&a, true), write(&b, true)],
        holds: vec![a, b],
        ..History::default()
    }
}

#[test]
fn checker_passes_a_clean_history() {
    let s = check(&clean(), &profile());
    assert!(s.passed(), "{:?}", s.failures);
    assert_eq!((s.holds, s.overlaps, s.stale_writes_rejected), (2, 0, 0));
}

#[test]
fn checker_flags_an_unexplained_overlap() {
    let mut h = clean();
    h.holds[1].start = 50 * MS; // B starts while A still holds
    let s = check(&h, &profile());
    assert_eq!((s.overlaps, s.unexplained_overlaps), (1, 1));
    assert!(!s.passed());
}

#[test]
fn checker_explains_an_overlap_by_a_pause_and_wants_the_lost_signal() {
    let mut h = clean();
    // A is paused from 10 ms for a second; B gets the lock meanwhile; A
    // resumes, sees the loss, skips its write.
    h.holds[0].end = Some(1020 * MS);
    h.holds[0].write = Some("skipped".into());
    h.holds[0].write_at = None;
    h.writes.remove(0);
    h.holds[1].start = 900 * MS;
    h.holds[1].end = Some(950 * MS);
    h.holds[1].write_at = Some(940 * MS);
    h.writes[0].at = 940 * MS;
    h.faults.push(Fault {
        kind: "pause_worker".into(),
        target: "worker 0".into(),
        pid: Some(1000),
        start: 10 * MS,
        end: 1010 * MS,
    });
    h.holds[0].lost = Some(1015 * MS);
    let s = check(&h, &profile());
    assert!(s.passed(), "{:?}", s.failures);
    assert_eq!((s.overlaps, s.unexplained_overlaps), (1, 0));
    assert_eq!((s.lost_signals_expected, s.lost_signals), (1, 1));

    // Without the signal, the same history fails.
    h.holds[0].lost = None;
    let s = check(&h, &profile());
    assert_eq!(s.lost_signals_missed, 1);
    assert!(!s.passed());
}

#[test]
fn checker_explains_a_hold_whose_worker_was_paused_as_its_acquisition_returned() {
    // B won the lock (token 1) at 10 ms, and its worker was paused from
    // 11 ms for a second, past the 800 ms lease, before B's hold was
    // recorded; A got the lock meanwhile (token 2). B's hold shows at
    // 1,012 ms with the older token, sees the loss and writes nothing.
    let mut a = hold(0, 1, 2, 900, 1100);
    a.pid = 1000;
    let mut b = hold(1, 1, 1, 1012, 1014);
    b.waited = 1007 * MS;
    b.lost = Some(1013 * MS);
    b.write = Some("cancelled".into());
    b.write_at = None;
    b.release = Some("not_held".into());
    let mut h = History {
        writes: vec![write(&a, true)],
        holds: vec![a, b],
        ..History::default()
    };
    h.faults.push(Fault {
        kind: "pause_worker".into(),
        target: "worker 1".into(),
        pid: Some(1001),
        start: 11 * MS,
        end: 1011 * MS,
    });
    let s = check(&h, &profile());
    assert!(s.passed(), "{:?}", s.failures);
    assert_eq!((s.overlaps, s.unexplained_overlaps), (1, 0));

    // A pause shorter than the lease explains nothing: B's lease held.
    h.faults[0].end = 300 * MS;
    let s = check(&h, &profile());
    assert_eq!(s.unexplained_overlaps, 1);
    assert!(
        s.failures.iter().any(|f| f.contains("did not grow")),
        "{:?}",
        s.failures
    );
}

#[test]
fn checker_flags_a_stale_write_accepted() {
    let mut h = clean();
    // The resource took token 2, then token 1.
    h.writes[0].at = 300 * MS;
    let s = check(&h, &profile());
    assert_eq!(s.stale_writes_accepted, 1);
    assert!(!s.passed());
}

#[test]
fn checker_counts_a_rejected_stale_write_as_expected_only_when_it_was_stale() {
    let mut h = clean();
    // A, paused, writes after B did: rejected, and stale by the workers'
    // records too.
    h.holds[0].write_at = Some(250 * MS);
    h.holds[0].write = Some("stale".into());
    h.holds[0].end = Some(260 * MS);
    h.holds[0].lost = Some(105 * MS);
    h.writes = vec![write(&h.holds[1], true), write(&h.holds[0], false)];
    let s = check(&h, &profile());
    assert!(s.passed(), "{:?}", s.failures);
    assert_eq!((s.stale_writes_rejected, s.stale_attempts), (1, 1));

    // A resource that rejects a write nobody had outrun is wrong.
    let mut h = clean();
    h.writes[1].accepted = false;
    let s = check(&h, &profile());
    assert!(!s.passed());
}

#[test]
fn checker_flags_a_stranded_hold_and_a_lock_left_behind() {
    let mut h = clean();
    h.holds[1].end = None; // never ended, and its worker was not killed
    let s = check(&h, &profile());
    assert_eq!(s.stranded, 1);
    assert!(!s.passed());

    // Killed by a fault: its lease frees it; not stranded.
    h.faults.push(Fault {
        kind: "kill_worker".into(),
        target: "worker 1".into(),
        pid: Some(1001),
        start: 150 * MS,
        end: 151 * MS,
    });
    assert!(check(&h, &profile()).passed());

    let mut h = clean();
    h.left_locks.push("node 0: camp:k0".into());
    assert_eq!(check(&h, &profile()).stranded, 1);
}

#[test]
fn checker_flags_a_wait_past_its_bound_and_a_token_that_did_not_grow() {
    let mut h = clean();
    h.holds[1].waited = 10_000 * MS; // no fault to excuse ten seconds
    h.holds[1].start = 11_000 * MS;
    h.holds[1].end = Some(11_100 * MS);
    let s = check(&h, &profile());
    assert_eq!(s.waits_over_bound, 1);
    assert!(!s.passed());

    let mut h = clean();
    h.holds[1].token = 1;
    assert!(!check(&h, &profile()).passed());
}

#[test]
fn checker_explains_a_restart_only_for_a_store_that_documents_it() {
    let mut h = clean();
    h.holds[1].start = 50 * MS;
    h.faults.push(Fault {
        kind: "restart_server".into(),
        target: "node 0".into(),
        pid: None,
        start: 20 * MS,
        end: 40 * MS,
    });
    assert_eq!(check(&h, &profile()).unexplained_overlaps, 1);
    let forgetful = Profile {
        restart_forgets: true,
        ..profile()
    };
    let s = check(&h, &forgetful);
    assert!(s.passed(), "{:?}", s.failures);
    assert_eq!(s.explained_overlaps.values().sum::<usize>(), 1);
}

// ---------------------------------------------------------------------------
// What the campaign found, pinned
// ---------------------------------------------------------------------------

const HANDOVER_URL_ENV: &str = "LOCK_HANDOVER_URL";
const HANDOVER_LEASE: std::time::Duration = std::time::Duration::from_millis(800);

fn handover_alias(name: &str, url: &str) {
    // The campaign's settings.
    let cfg = lock_runtime::registry::AliasConfig::redis(url)
        .default_lease(HANDOVER_LEASE)
        .command_timeout(std::time::Duration::from_millis(300))
        .connect_timeout(std::time::Duration::from_millis(300));
    lock_runtime::registry::add(name, cfg).unwrap();
}

const HANDOVER_MACRO_ENV: &str = "LOCK_HANDOVER_MACRO";

/// Ok(token) when the body ran to its end.
#[lock_runtime::lock("k", alias = "handover-macro", fencing = token, wait_for_ms = 4000, on_lost = "cancel")]
async fn handover_body(
    token: u64,
    work: std::time::Duration,
) -> Result<u64, lock_runtime::LockError> {
    tokio::time::sleep(work).await;
    Ok(token)
}

/// Campaign `--store redis --seed 5 --seconds 30` found two holders of one
/// key, twice in two runs: a worker paused while waiting for `k2` (a
/// `#[lock]` async fn with `on_lost = "cancel"`) resumed and ran its body
/// with an old grant's token while another worker held `k2` with a higher
/// one. The runtime took a grant's message read after a later busy look in
/// line, or read too late to be sure of its lease, as the lock; it now looks
/// again (lock-runtime/src/backend/redis/waiting.rs). Kept as a test, with
/// the two below that replay its steps one at a time (they failed 11 runs
/// of 12 before the fix).
#[test]
fn campaign_on_redis_seed_5() {
    let s = campaign("redis", 30, 5);
    assert_eq!(s["unexplained_overlaps"], 0, "{s}");
    assert_properties(&s);
}

/// A waiter in line paused (SIGSTOP) while a release hands it the lock, past
/// the handed lease, while another process then takes the lock: when it
/// wakes, it must not hold the lock beside the other: it waits on (and here
/// gives up, the other holding on), or its guard is lost at once (builder),
/// or its body does not run (`#[lock]` with `on_lost = "cancel"`).
#[test]
fn paused_waiter_handed_the_lock_does_not_hold_it() {
    paused_waiter_handed_the_lock(&support::test_name!(), "handover", false);
}

#[test]
fn paused_waiter_handed_the_lock_does_not_run_a_lock_body() {
    paused_waiter_handed_the_lock(&support::test_name!(), "handover-macro", true);
}

fn paused_waiter_handed_the_lock(test: &str, alias: &'static str, with_macro: bool) {
    use std::time::Duration;
    if support::child_role().is_some() {
        handover_alias(alias, &std::env::var(HANDOVER_URL_ENV).unwrap());
        let rt = tokio::runtime::Runtime::new().unwrap();
        if std::env::var(HANDOVER_MACRO_ENV).is_ok_and(|v| !v.is_empty()) {
            // The campaign's waiter: `#[lock]` on an `async fn`, cancelled
            // when the lock is lost.
            let r = rt.block_on(handover_body(Duration::from_millis(40)));
            support::report(format!("macro body {r:?}"));
            return;
        }
        let guard = rt.block_on(
            lock_runtime::Lock::new("k")
                .alias(alias)
                .wait_for(Duration::from_secs(4))
                .acquire_async(),
        );
        match guard {
            Ok(g) => {
                support::report(format!(
                    "acquired {:?} lost {}",
                    g.fencing_token(),
                    g.is_lost()
                ));
                std::thread::sleep(Duration::from_millis(100));
                let lost = g.is_lost();
                let release = g.release().map_err(|e| e.to_string());
                support::report(format!("later lost {lost} release {release:?}"));
            }
            Err(e) => support::report(format!("failed {e}")),
        }
        return;
    }
    let server = support::RedisServer::start();
    handover_alias(alias, &server.url());
    let first = lock_runtime::Lock::new("k").alias(alias).acquire().unwrap();
    let mut waiter = support::spawn_children(
        test,
        "waiter",
        1,
        &[
            (HANDOVER_URL_ENV, &server.url()),
            (HANDOVER_MACRO_ENV, if with_macro { "1" } else { "" }),
        ],
    );
    // In line by now (a waiter joins it after 10 ms).
    std::thread::sleep(Duration::from_millis(700));
    let pid = waiter[0].child.id() as libc::pid_t;
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    // The release hands the lock to the paused waiter; its lease runs out.
    first.release().unwrap();
    std::thread::sleep(HANDOVER_LEASE + Duration::from_millis(700));
    let second = lock_runtime::Lock::new("k")
        .alias(alias)
        .wait_for(Duration::from_secs(5))
        .acquire()
        .expect("the handed lease ran out");
    let second_token = second.fencing_token();
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let out = support::wait_children(std::mem::take(&mut waiter), Duration::from_secs(30));
    let reports = out[0].reports();
    assert!(!second.is_lost());
    drop(second);
    let said = reports.join(" | ");
    println!("waiter: {said}; second holder token {second_token:?}");
    assert!(
        said.starts_with("failed")
            || said.contains("lost true")
            || said.contains("Err(NotHeld")
            || said.contains("Err(Timeout"),
        "the paused waiter holds the lock beside a holder with token {second_token:?}: {said}"
    );
}
