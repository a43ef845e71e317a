//! The metrics of a lock (feature `metrics`), read from a recorder local to
//! the test's thread (`metrics::with_local_recorder`): names, labels and
//! counts for acquired, busy, timeout and lost locks, samples of the wait
//! and hold histograms, and the held and waiting gauges.

#![cfg(feature = "metrics")]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use lock_runtime::backend::memory::MemoryBackend;
use lock_runtime::backend::{Attempt, Backend, BackendError, BackendErrorKind, Request, Token};
use lock_runtime::registry::{self, AliasConfig};
use lock_runtime::{Lock, observe};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use metrics_util::{CompositeKey, MetricKind};

/// One metric as the recorder saw it: its kind, name and labels.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Id {
    kind: &'static str,
    name: String,
    labels: Vec<(String, String)>,
}

fn id(key: &CompositeKey) -> Id {
    let kind = match key.kind() {
        MetricKind::Counter => "counter",
        MetricKind::Gauge => "gauge",
        MetricKind::Histogram => "histogram",
    };
    Id {
        kind,
        name: key.key().name().to_owned(),
        labels: key
            .key()
            .labels()
            .map(|l| (l.key().to_owned(), l.value().to_owned()))
            .collect(),
    }
}

/// Everything recorded (and, for the debugging recorder, reset) so far.
fn snapshot(recorder: &DebuggingRecorder) -> BTreeMap<Id, DebugValue> {
    recorder
        .snapshotter()
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(k, _, _, v)| (id(&k), v))
        .collect()
}

fn alias_labels(alias: &str) -> Vec<(String, String)> {
    vec![("alias".to_owned(), alias.to_owned())]
}

fn counter(seen: &BTreeMap<Id, DebugValue>, name: &str, alias: &str) -> u64 {
    let key = Id {
        kind: "counter",
        name: name.to_owned(),
        labels: alias_labels(alias),
    };
    match seen.get(&key) {
        Some(DebugValue::Counter(n)) => *n,
        None => 0,
        other => panic!("{name}: {other:?}"),
    }
}

fn samples(seen: &BTreeMap<Id, DebugValue>, name: &str, alias: &str) -> Vec<f64> {
    let key = Id {
        kind: "histogram",
        name: name.to_owned(),
        labels: alias_labels(alias),
    };
    match seen.get(&key) {
        Some(DebugValue::Histogram(v)) => v.iter().map(|f| f.into_inner()).collect(),
        None => Vec::new(),
        other => panic!("{name}: {other:?}"),
    }
}

fn gauge(seen: &BTreeMap<Id, DebugValue>, name: &str, alias: &str) -> f64 {
    let key = Id {
        kind: "gauge",
        name: name.to_owned(),
        labels: alias_labels(alias),
    };
    match seen.get(&key) {
        Some(DebugValue::Gauge(v)) => v.into_inner(),
        None => 0.0,
        other => panic!("{name}: {other:?}"),
    }
}

/// A memory alias of the test's own, so that its labels are its own.
fn alias(name: &'static str) -> &'static str {
    registry::add(name, AliasConfig::memory_named(name)).unwrap();
    name
}

#[test]
fn acquired_busy_and_timeout_are_counted_by_alias() {
    let a = alias("metrics-counts");
    let recorder = DebuggingRecorder::new();
    metrics::with_local_recorder(&recorder, || {
        let held = Lock::new("k").alias(a).acquire().unwrap();
        assert!(
            Lock::new("k")
                .alias(a)
                .wait(false)
                .acquire()
                .unwrap_err()
                .is_busy()
        );
        assert!(Lock::new("k").alias(a).try_acquire().unwrap().is_none());
        assert!(
            Lock::new("k")
                .alias(a)
                .wait_for(Duration::from_millis(30))
                .acquire()
                .unwrap_err()
                .is_timeout()
        );
        std::thread::sleep(Duration::from_millis(10));
        drop(held);
        drop(Lock::new("other").alias(a).acquire().unwrap());
    });
    let seen = snapshot(&recorder);
    assert_eq!(counter(&seen, "lock_acquired_total", a), 2);
    assert_eq!(counter(&seen, "lock_busy_total", a), 2);
    assert_eq!(counter(&seen, "lock_timeout_total", a), 1);
    assert_eq!(counter(&seen, "lock_lost_total", a), 0);

    let waits = samples(&seen, "lock_wait_seconds", a);
    assert_eq!(waits.len(), 3, "two acquisitions and a timeout: {waits:?}");
    assert!(
        waits.iter().any(|w| *w >= 0.030),
        "the timeout waited 30 ms: {waits:?}"
    );
    let holds = samples(&seen, "lock_hold_seconds", a);
    assert_eq!(holds.len(), 2);
    assert!(holds.iter().any(|h| *h >= 0.030), "{holds:?}");
    // Taken and given back, waited and done: both gauges are back at zero.
    assert_eq!(gauge(&seen, "lock_held", a), 0.0);
    assert_eq!(gauge(&seen, "lock_waiting", a), 0.0);
    // Nothing without the alias label, and no key label unless asked for.
    for id in seen.keys().filter(|id| id.name.starts_with("lock_")) {
        assert_eq!(id.labels, alias_labels(a), "{id:?}");
    }
}

#[test]
fn a_lock_lost_before_its_release_is_counted_once() {
    let a = alias("metrics-lost");
    let recorder = DebuggingRecorder::new();
    metrics::with_local_recorder(&recorder, || {
        let guard = Lock::new("k")
            .alias(a)
            .expire(Duration::from_millis(20))
            .acquire()
            .unwrap();
        std::thread::sleep(Duration::from_millis(40));
        let next = Lock::new("k").alias(a).acquire().unwrap();
        assert!(guard.is_lost());
        assert!(guard.release().unwrap_err().is_not_held());
        drop(next);
    });
    let seen = snapshot(&recorder);
    assert_eq!(counter(&seen, "lock_lost_total", a), 1);
    assert_eq!(counter(&seen, "lock_acquired_total", a), 2);
    assert_eq!(samples(&seen, "lock_hold_seconds", a).len(), 2);
}

#[test]
fn the_gauges_count_locks_held_and_waiters_while_they_are() {
    let a = alias("metrics-gauges");
    let recorder = DebuggingRecorder::new();
    let snapshot_while_busy = std::thread::scope(|s| {
        let held =
            metrics::with_local_recorder(&recorder, || Lock::new("k").alias(a).acquire().unwrap());
        let waiter = s.spawn(|| {
            metrics::with_local_recorder(&recorder, || {
                drop(Lock::new("k").alias(a).acquire().unwrap());
            })
        });
        let store = MemoryBackend::named(a);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while store.waiting("k") == 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        let seen = snapshot(&recorder);
        drop(held);
        waiter.join().unwrap();
        seen
    });
    assert_eq!(gauge(&snapshot_while_busy, "lock_held", a), 1.0);
    assert_eq!(gauge(&snapshot_while_busy, "lock_waiting", a), 1.0);
}

#[test]
fn async_acquisitions_on_a_current_thread_runtime_are_counted() {
    let a = alias("metrics-async");
    let recorder = DebuggingRecorder::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        rt.block_on(async {
            let guard = Lock::new("k").alias(a).acquire_async().await.unwrap();
            assert!(
                Lock::new("k")
                    .alias(a)
                    .try_acquire_async()
                    .await
                    .unwrap()
                    .is_none()
            );
            guard.release_async().await.unwrap();
        })
    });
    let seen = snapshot(&recorder);
    assert_eq!(counter(&seen, "lock_acquired_total", a), 1);
    assert_eq!(counter(&seen, "lock_busy_total", a), 1);
    assert_eq!(samples(&seen, "lock_hold_seconds", a).len(), 1);
}

#[test]
fn keys_become_labels_only_when_asked() {
    let a = alias("metrics-key-labels");
    let recorder = DebuggingRecorder::new();
    metrics::with_local_recorder(&recorder, || {
        observe::set_metrics_key_labels(a, true);
        drop(Lock::new("nightly").alias(a).acquire().unwrap());
    });
    assert!(observe::metrics_key_labels(a));
    assert!(!observe::metrics_key_labels("metrics-counts"));
    let seen = snapshot(&recorder);
    let acquired = Id {
        kind: "counter",
        name: "lock_acquired_total".to_owned(),
        labels: vec![
            ("alias".to_owned(), a.to_owned()),
            ("key".to_owned(), "nightly".to_owned()),
        ],
    };
    assert_eq!(seen.get(&acquired), Some(&DebugValue::Counter(1)));
}

/// A memory store whose renewals fail: the store cannot be reached to
/// extend a lease.
#[derive(Default)]
struct Unrenewable {
    inner: MemoryBackend,
}

impl Backend for Unrenewable {
    fn try_acquire(&self, req: &Request<'_>) -> Result<Attempt, BackendError> {
        self.inner.try_acquire(req)
    }
    fn release(&self, key: &str, token: Token) -> Result<bool, BackendError> {
        self.inner.release(key, token)
    }
    fn extend(&self, _: &str, _: Token, _: Duration) -> Result<bool, BackendError> {
        Err(BackendError::new(
            BackendErrorKind::Connection,
            "the store is unreachable",
        ))
    }
}

/// The lease watchdog counts on its own threads, which see the global
/// recorder: installed here, for this test only (the others' local
/// recorders take precedence on their threads).
#[test]
fn failed_renewals_and_the_loss_they_cause_are_counted_once() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().expect("the only global recorder");
    let a = "metrics-unrenewable";
    registry::add(
        a,
        AliasConfig::custom(Arc::new(Unrenewable::default()))
            .default_lease(Duration::from_millis(150)),
    )
    .unwrap();
    let guard = Lock::new("k").alias(a).acquire().unwrap();
    futures::executor::block_on(guard.lost());
    // Past the drift allowance the store's lease has run out too.
    std::thread::sleep(Duration::from_millis(30));
    assert!(guard.release().unwrap_err().is_not_held());
    let seen: BTreeMap<Id, DebugValue> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(k, _, _, v)| (id(&k), v))
        .collect();
    assert!(
        counter(&seen, "lock_renew_failures_total", a) >= 2,
        "retried until the lease ran out: {seen:?}"
    );
    assert_eq!(
        counter(&seen, "lock_lost_total", a),
        1,
        "found by the watchdog, then by the release: one loss"
    );
}
