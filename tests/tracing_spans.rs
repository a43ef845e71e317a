//! The `tracing` spans and events of a lock: `lock.acquire` and `lock.held`
//! with their fields and parents, for a success, a busy lock, a timeout and
//! a loss, sync and async, by hand and through `#[lock]` stacked with
//! `#[tracing::instrument]` in both orders.
//!
//! One recording subscriber is the process's global default, so that events
//! from the lease watchdog's threads are seen too; each test picks out its
//! own records by its keys, which no other test uses.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, Once};
use std::time::Duration;

mod support;

use lock_runtime::registry::{self, AliasConfig};
use lock_runtime::{Lock, LockError, lock};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

#[derive(Clone, Debug)]
struct SpanRec {
    name: &'static str,
    /// Index of the parent span in `Log::spans`.
    parent: Option<usize>,
    fields: BTreeMap<String, String>,
    closed: bool,
}

#[derive(Clone, Debug)]
struct EventRec {
    level: tracing::Level,
    /// Index of the span the event happened in.
    span: Option<usize>,
    fields: BTreeMap<String, String>,
}

#[derive(Default)]
struct Log {
    spans: Vec<SpanRec>,
    events: Vec<EventRec>,
    /// Live span ids (the registry reuses closed ones) to indexes.
    live: HashMap<u64, usize>,
}

static LOG: Mutex<Option<Log>> = Mutex::new(None);

fn log() -> MutexGuard<'static, Option<Log>> {
    LOG.lock().unwrap_or_else(|p| p.into_inner())
}

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

struct Recorder;

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Recorder {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let parent_id = ctx.span(id).and_then(|s| s.parent()).map(|p| p.id());
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        let mut guard = log();
        let log = guard.get_or_insert_with(Log::default);
        let parent = parent_id.and_then(|p| log.live.get(&p.into_u64()).copied());
        log.spans.push(SpanRec {
            name: attrs.metadata().name(),
            parent,
            fields,
            closed: false,
        });
        let at = log.spans.len() - 1;
        log.live.insert(id.into_u64(), at);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        let mut guard = log();
        let log = guard.get_or_insert_with(Log::default);
        if let Some(&at) = log.live.get(&id.into_u64()) {
            values.record(&mut Fields(&mut log.spans[at].fields));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let span_id = ctx.event_span(event).map(|s| s.id());
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        let mut guard = log();
        let log = guard.get_or_insert_with(Log::default);
        let span = span_id.and_then(|s| log.live.get(&s.into_u64()).copied());
        log.events.push(EventRec {
            level: *event.metadata().level(),
            span,
            fields,
        });
    }

    fn on_close(&self, id: Id, _: Context<'_, S>) {
        let mut guard = log();
        let log = guard.get_or_insert_with(Log::default);
        if let Some(at) = log.live.remove(&id.into_u64()) {
            log.spans[at].closed = true;
        }
    }
}

fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let subscriber = tracing_subscriber::registry().with(Recorder);
        tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber");
    });
}

/// What was recorded, for one test's assertions.
struct Seen {
    spans: Vec<SpanRec>,
    events: Vec<EventRec>,
}

impl Seen {
    fn now() -> Self {
        let guard = log();
        let log = guard.as_ref().expect("the recorder saw something");
        Seen {
            spans: log.spans.clone(),
            events: log.events.clone(),
        }
    }

    /// Spans named `name` whose field `field` is `value`.
    fn spans(&self, name: &str, field: &str, value: &str) -> Vec<usize> {
        (0..self.spans.len())
            .filter(|&i| {
                self.spans[i].name == name
                    && self.spans[i].fields.get(field).map(String::as_str) == Some(value)
            })
            .collect()
    }

    /// The one span named `name` whose `key` is `key`.
    fn one(&self, name: &str, key: &str) -> &SpanRec {
        let found = self.spans(name, "key", key);
        assert_eq!(found.len(), 1, "{name} spans of {key}: {found:?}");
        &self.spans[found[0]]
    }

    fn field<'a>(&self, span: &'a SpanRec, field: &str) -> &'a str {
        span.fields
            .get(field)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("{} has no field {field}: {:?}", span.name, span.fields))
    }

    fn parent(&self, span: &SpanRec) -> Option<&SpanRec> {
        span.parent.map(|p| &self.spans[p])
    }

    /// The names of a span's ancestors, nearest first.
    fn ancestors(&self, span: &SpanRec) -> Vec<&'static str> {
        let mut names = Vec::new();
        let mut at = span.parent;
        while let Some(p) = at {
            names.push(self.spans[p].name);
            at = self.spans[p].parent;
        }
        names
    }

    /// Events with field `field` equal to `value`.
    fn events(&self, field: &str, value: &str) -> Vec<&EventRec> {
        self.events
            .iter()
            .filter(|e| e.fields.get(field).map(String::as_str) == Some(value))
            .collect()
    }
}

fn waited_ms(seen: &Seen, span: &SpanRec) -> f64 {
    seen.field(span, "waited_ms").parse().expect("a number")
}

#[test]
fn an_acquisition_and_its_hold_are_spans_under_the_callers_span() {
    install();
    let request = tracing::info_span!("request", id = "spans-success");
    request.in_scope(|| {
        let guard = Lock::new("spans-success").acquire().unwrap();
        tracing::info!(marker = "spans-success-outside", "not inside the hold");
        guard.span().in_scope(|| {
            tracing::info!(marker = "spans-success-inside", "inside the hold");
        });
        std::thread::sleep(Duration::from_millis(20));
        drop(guard);
    });
    let seen = Seen::now();
    let acquire = seen.one("lock.acquire", "spans-success");
    assert_eq!(seen.field(acquire, "alias"), "default");
    assert_eq!(seen.field(acquire, "mode"), "wait");
    assert_eq!(seen.field(acquire, "outcome"), "acquired");
    assert!(waited_ms(&seen, acquire) >= 0.0);
    assert!(!acquire.fields.contains_key("error"));
    assert_eq!(seen.parent(acquire).map(|p| p.name), Some("request"));
    assert!(acquire.closed);

    let held = seen.one("lock.held", "spans-success");
    assert_eq!(
        seen.parent(held).map(|p| p.name),
        Some("request"),
        "a sibling of lock.acquire"
    );
    assert_eq!(seen.field(held, "alias"), "default");
    assert_eq!(seen.field(held, "lost"), "false");
    assert_eq!(seen.field(held, "renewed"), "0");
    let hold: f64 = seen.field(held, "hold_ms").parse().unwrap();
    assert!(hold >= 20.0, "held for {hold} ms");
    assert!(!held.fields.contains_key("label"));
    assert!(!held.fields.contains_key("function"), "taken by hand");
    assert!(held.closed, "closed when the guard dropped");

    let inside = seen.events("marker", "spans-success-inside");
    assert_eq!(inside.len(), 1);
    assert_eq!(
        inside[0].span.map(|s| seen.spans[s].name),
        Some("lock.held")
    );
    let outside = seen.events("marker", "spans-success-outside");
    assert_eq!(outside[0].span.map(|s| seen.spans[s].name), Some("request"));
}

#[test]
fn a_busy_lock_ends_the_acquire_span_as_busy_with_no_hold() {
    install();
    let _held = Lock::new("spans-busy").acquire().unwrap();
    tracing::info_span!("request").in_scope(|| {
        let err = Lock::new("spans-busy").wait(false).acquire().unwrap_err();
        assert!(err.is_busy());
        assert!(Lock::new("spans-busy").try_acquire().unwrap().is_none());
    });
    let seen = Seen::now();
    let tries: Vec<&SpanRec> = seen
        .spans("lock.acquire", "key", "spans-busy")
        .into_iter()
        .map(|i| &seen.spans[i])
        .filter(|s| seen.parent(s).map(|p| p.name) == Some("request"))
        .collect();
    assert_eq!(tries.len(), 2, "wait(false) and try_acquire");
    for s in tries {
        assert_eq!(seen.field(s, "mode"), "try");
        assert_eq!(seen.field(s, "outcome"), "busy");
    }
    // Only the holder's hold.
    assert_eq!(seen.spans("lock.held", "key", "spans-busy").len(), 1);
}

#[test]
fn a_wait_that_times_out_records_how_long_it_waited() {
    install();
    let _held = Lock::new("spans-timeout").acquire().unwrap();
    let err = Lock::new("spans-timeout")
        .wait_for(Duration::from_millis(40))
        .acquire()
        .unwrap_err();
    assert!(err.is_timeout());
    let seen = Seen::now();
    let timed_out: Vec<&SpanRec> = seen
        .spans("lock.acquire", "outcome", "timeout")
        .into_iter()
        .map(|i| &seen.spans[i])
        .filter(|s| s.fields.get("key").map(String::as_str) == Some("spans-timeout"))
        .collect();
    assert_eq!(timed_out.len(), 1);
    assert_eq!(seen.field(timed_out[0], "mode"), "wait_for");
    assert!(waited_ms(&seen, timed_out[0]) >= 40.0);
}

#[test]
fn a_store_failure_is_an_error_outcome_with_the_error() {
    install();
    let err = Lock::new("spans-error")
        .alias("spans-no-such-alias")
        .acquire()
        .unwrap_err();
    assert!(matches!(err, LockError::UnknownAlias { .. }));
    let seen = Seen::now();
    let acquire = seen.one("lock.acquire", "spans-error");
    assert_eq!(seen.field(acquire, "outcome"), "error");
    assert!(seen.field(acquire, "error").contains("spans-no-such-alias"));
}

#[test]
fn a_lock_lost_before_its_release_says_so_in_its_hold() {
    install();
    let guard = Lock::new("spans-lost")
        .expire(Duration::from_millis(30))
        .acquire()
        .unwrap();
    std::thread::sleep(Duration::from_millis(60));
    let next = Lock::new("spans-lost").acquire().unwrap();
    assert!(guard.release().unwrap_err().is_not_held());
    let seen = Seen::now();
    let holds = seen.spans("lock.held", "key", "spans-lost");
    assert_eq!(holds.len(), 2);
    let first = &seen.spans[holds[0]];
    assert_eq!(seen.field(first, "lost"), "true");
    assert!(first.closed);
    let warned: Vec<&EventRec> = seen
        .events("key", "spans-lost")
        .into_iter()
        .filter(|e| e.level == tracing::Level::WARN)
        .collect();
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert_eq!(warned[0].span, Some(holds[0]), "inside the lost hold");
    assert!(warned[0].fields["message"].contains("no longer held"));
    assert_eq!(warned[0].fields["alias"], "default");
    drop(next);
}

#[test]
fn a_loss_the_watchdog_finds_is_an_event_with_the_users_key() {
    install();
    registry::add(
        "spans-leased",
        AliasConfig::memory_named("spans-leased")
            .prefix("app:")
            .default_lease(Duration::from_millis(150)),
    )
    .unwrap();
    let guard = Lock::new("spans-stolen")
        .alias("spans-leased")
        .acquire()
        .unwrap();
    std::thread::sleep(Duration::from_millis(30));
    let thief = Lock::new("spans-stolen")
        .alias("spans-leased")
        .steal_after(Duration::from_millis(10))
        .acquire()
        .unwrap();
    // The next renewal (a third of the lease) finds it taken.
    futures::executor::block_on(async {
        let lost = guard.lost();
        let deadline = futures_timeout(Duration::from_secs(3));
        futures::pin_mut!(lost, deadline);
        futures::future::select(lost, deadline).await;
    });
    assert!(guard.is_lost());
    drop(guard);
    let seen = Seen::now();
    let lost: Vec<&EventRec> = seen
        .events("key", "spans-stolen")
        .into_iter()
        .filter(|e| e.fields["message"].starts_with("lock lost"))
        .collect();
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert_eq!(lost[0].level, tracing::Level::WARN);
    assert_eq!(lost[0].fields["alias"], "spans-leased");
    let holds = seen.spans("lock.held", "key", "spans-stolen");
    assert_eq!(seen.field(&seen.spans[holds[0]], "lost"), "true");
    drop(thief);
}

async fn futures_timeout(d: Duration) {
    let (tx, rx) = futures::channel::oneshot::channel::<()>();
    std::thread::spawn(move || {
        std::thread::sleep(d);
        let _ = tx.send(());
    });
    let _ = rx.await;
}

#[test]
fn async_acquisitions_nest_under_the_span_of_the_awaiting_task() {
    use tracing::Instrument;
    install();
    futures::executor::block_on(
        async {
            let guard = Lock::new("spans-async").acquire_async().await.unwrap();
            let busy = Lock::new("spans-async").try_acquire_async().await.unwrap();
            assert!(busy.is_none());
            guard.release_async().await.unwrap();
        }
        .instrument(tracing::info_span!("task", id = "spans-async")),
    );
    let seen = Seen::now();
    let acquires = seen.spans("lock.acquire", "key", "spans-async");
    assert_eq!(acquires.len(), 2);
    let outcomes: Vec<&str> = acquires
        .iter()
        .map(|&i| seen.field(&seen.spans[i], "outcome"))
        .collect();
    assert_eq!(outcomes, ["acquired", "busy"]);
    for &i in &acquires {
        assert_eq!(seen.ancestors(&seen.spans[i]), ["task"]);
    }
    let held = seen.one("lock.held", "spans-async");
    assert_eq!(seen.ancestors(held), ["task"]);
    assert_eq!(seen.field(held, "lost"), "false");
    assert!(held.closed);
}

#[test]
fn a_cancelled_async_acquisition_says_so() {
    install();
    let held = Lock::new("spans-cancel").acquire().unwrap();
    futures::executor::block_on(async {
        // Boxed, so that dropping it ends the acquisition here.
        let waiting = Box::pin(Lock::new("spans-cancel").acquire_async());
        let deadline = Box::pin(futures_timeout(Duration::from_millis(30)));
        match futures::future::select(waiting, deadline).await {
            futures::future::Either::Left(_) => panic!("acquired a held lock"),
            futures::future::Either::Right(((), waiting)) => drop(waiting),
        }
    });
    drop(held);
    let seen = Seen::now();
    let cancelled = seen.spans("lock.acquire", "outcome", "cancelled");
    assert!(
        cancelled
            .iter()
            .any(|&i| seen.spans[i].fields["key"] == "spans-cancel"),
        "no cancelled acquisition of spans-cancel"
    );
}

// `#[lock]` above `#[tracing::instrument]`: the instrument span is the
// outermost layer, and the lock's spans are inside it.
#[lock("spans-lock-first-<id>", label = "stacked")]
#[tracing::instrument]
fn lock_first(id: u32) -> Result<(), LockError> {
    tracing::info!(marker = "lock-first-body", id);
    Ok(())
}

// `#[tracing::instrument]` above `#[lock]`: the lock is the outermost
// layer; its spans are children of the caller's span, and the function's
// span runs inside the hold.
#[tracing::instrument]
#[lock("spans-instrument-first-<id>")]
fn instrument_first(id: u32) -> Result<(), LockError> {
    tracing::info!(marker = "instrument-first-body", id);
    Ok(())
}

#[lock("spans-async-lock-first-<id>")]
#[tracing::instrument]
async fn async_lock_first(id: u32) -> Result<(), LockError> {
    tracing::info!(marker = "async-lock-first-body", id);
    Ok(())
}

#[tracing::instrument]
#[lock("spans-async-instrument-first-<id>")]
async fn async_instrument_first(id: u32) -> Result<(), LockError> {
    tracing::info!(marker = "async-instrument-first-body", id);
    Ok(())
}

#[test]
fn lock_stacked_with_instrument_nests_under_the_callers_span_in_both_orders() {
    install();
    let request = tracing::info_span!("request", id = "stacked");
    request.in_scope(|| {
        lock_first(1).unwrap();
        instrument_first(1).unwrap();
        futures::executor::block_on(async {
            async_lock_first(1).await.unwrap();
            async_instrument_first(1).await.unwrap();
        });
    });
    let seen = Seen::now();
    for (key, function, marker) in [
        ("spans-lock-first-1", "lock_first", "lock-first-body"),
        (
            "spans-async-lock-first-1",
            "async_lock_first",
            "async-lock-first-body",
        ),
    ] {
        let acquire = seen.one("lock.acquire", key);
        assert_eq!(seen.ancestors(acquire), [function, "request"], "{key}");
        let held = seen.one("lock.held", key);
        assert_eq!(seen.ancestors(held), [function, "request"], "{key}");
        assert!(
            seen.field(held, "function")
                .ends_with(&format!("tracing_spans::{function}")),
            "{:?}",
            held.fields
        );
        let body = seen.events("marker", marker);
        assert_eq!(body.len(), 1);
        let at = body[0].span.map(|s| &seen.spans[s]).expect("in a span");
        assert_eq!(at.name, "lock.held", "{key}: the body runs inside the hold");
        assert_eq!(seen.ancestors(at), [function, "request"]);
    }
    for (key, function, marker) in [
        (
            "spans-instrument-first-1",
            "instrument_first",
            "instrument-first-body",
        ),
        (
            "spans-async-instrument-first-1",
            "async_instrument_first",
            "async-instrument-first-body",
        ),
    ] {
        let acquire = seen.one("lock.acquire", key);
        assert_eq!(seen.ancestors(acquire), ["request"], "{key}");
        let held = seen.one("lock.held", key);
        assert_eq!(seen.ancestors(held), ["request"], "{key}");
        let body = seen.events("marker", marker);
        assert_eq!(body.len(), 1);
        let at = body[0].span.map(|s| &seen.spans[s]).expect("in a span");
        assert_eq!(at.name, function);
        assert_eq!(seen.ancestors(at), ["lock.held", "request"], "{key}");
    }
    let labelled = seen.one("lock.held", "spans-lock-first-1");
    assert_eq!(seen.field(labelled, "label"), "stacked");
}

#[test]
fn a_renewed_hold_counts_its_renewals_and_extensions() {
    install();
    registry::add(
        "spans-renewed",
        AliasConfig::memory_named("spans-renewed").default_lease(Duration::from_millis(90)),
    )
    .unwrap();
    let mut guard = Lock::new("spans-renewed")
        .alias("spans-renewed")
        .acquire()
        .unwrap();
    // Renewed every third of the lease: at least three times in 200 ms.
    std::thread::sleep(Duration::from_millis(200));
    guard.extend(Duration::from_secs(1)).unwrap();
    guard.release().unwrap();
    let seen = Seen::now();
    let held = seen.one("lock.held", "spans-renewed");
    let renewed: u64 = seen.field(held, "renewed").parse().unwrap();
    assert!(renewed >= 4, "renewed {renewed} times");
    assert_eq!(seen.field(held, "lost"), "false");
}

/// A cancelled acquisition on Redis gives back whatever it may have won by
/// its token, and says nothing when it won nothing: it used to warn that
/// the lock "was no longer held when its guard was dropped", though it
/// never had a guard, once for every acquisition a timeout cancelled.
#[cfg(feature = "redis")]
#[test]
fn a_cancelled_redis_acquisition_that_won_nothing_warns_of_nothing() {
    install();
    let server = support::RedisServer::start();
    let a = support::add_alias("spans-redis", AliasConfig::from_url(&server.url()).unwrap());
    let held = Lock::new("spans-cancel-redis").alias(a).acquire().unwrap();
    futures::executor::block_on(async {
        let waiting = Box::pin(Lock::new("spans-cancel-redis").alias(a).acquire_async());
        let deadline = Box::pin(futures_timeout(Duration::from_millis(30)));
        match futures::future::select(waiting, deadline).await {
            futures::future::Either::Left(_) => panic!("acquired a held lock"),
            futures::future::Either::Right(((), waiting)) => drop(waiting),
        }
    });
    // The give-back goes out on the store's I/O thread.
    std::thread::sleep(Duration::from_millis(300));
    held.release().unwrap();
    let seen = Seen::now();
    let said: Vec<&EventRec> = seen
        .events
        .iter()
        .filter(|e| e.level <= tracing::Level::WARN)
        .filter(|e| {
            e.fields
                .get("key")
                .is_some_and(|k| k.contains("spans-cancel-redis"))
        })
        .collect();
    assert!(
        said.is_empty(),
        "a cancelled acquisition that won nothing said: {said:?}"
    );
}
