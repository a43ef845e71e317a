//! The admin API on an alias (`list`, `show`, `force_release`,
//! `audit_log`) beyond what the conformance suite holds every store to:
//! the function path of `#[lock]` in the owner, paging cut by the runtime
//! for a store that can only list everything, typed errors for a store
//! that cannot, the `lock.forced_release` event and the audit log's bound.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lock_runtime::admin::AUDIT_LOG_LEN;
use lock_runtime::backend::{
    Abilities, Acquired, Attempt, BackendError, Busy, Held, Listing, Namespace, Request, Store,
    Token,
};
use lock_runtime::registry::{self, AliasConfig};
use lock_runtime::{Lock, LockError, lock};

#[lock("admin-macro-<n>", alias = "admin-macro")]
fn locked(n: u32, seen: &dyn Fn() -> Option<Held>) -> Result<Option<Held>, LockError> {
    let _ = n;
    Ok(seen())
}

#[test]
fn a_locked_function_is_named_in_its_owner() {
    registry::add("admin-macro", AliasConfig::memory_named("admin-macro")).unwrap();
    let alias = registry::alias("admin-macro").unwrap();
    let held = locked(7, &|| alias.show("admin-macro-7").unwrap())
        .unwrap()
        .expect("held while it runs");
    let owner = held.owner.expect("the memory store records owners");
    let function = owner.function.expect("the function path");
    assert!(function.ends_with("locked"), "{function}");
    assert_eq!(owner.pid, Some(std::process::id()));
    assert!(held.acquired_at.is_some());
    assert!(
        alias.show("admin-macro-7").unwrap().is_none(),
        "released after"
    );
}

/// A store that lists everything at once and records no owners: the
/// runtime pages it.
#[derive(Default)]
struct Listed(Mutex<Vec<String>>);

impl Store for Listed {
    fn try_acquire(&self, req: &Request<'_>) -> Result<Attempt, BackendError> {
        let mut keys = self.0.lock().unwrap();
        if keys.iter().any(|k| k == req.key) {
            return Ok(Attempt::Busy(Busy::new(None)));
        }
        keys.push(req.key.to_owned());
        Ok(Attempt::Acquired(Acquired::new(None)))
    }
    fn release(&self, key: &str, _: Token) -> Result<bool, BackendError> {
        let mut keys = self.0.lock().unwrap();
        let before = keys.len();
        keys.retain(|k| k != key);
        Ok(keys.len() < before)
    }
    fn extend(&self, key: &str, _: Token, _: Duration) -> Result<bool, BackendError> {
        Ok(self.0.lock().unwrap().iter().any(|k| k == key))
    }
    fn abilities(&self) -> Abilities<'_> {
        Abilities::none().listing(self)
    }
}

impl Listing for Listed {
    fn holders(&self, _: &Namespace) -> Result<Vec<Held>, BackendError> {
        // Out of order on purpose.
        let mut keys = self.0.lock().unwrap().clone();
        keys.reverse();
        Ok(keys.into_iter().map(Held::new).collect())
    }
}

#[test]
fn a_store_that_lists_everything_is_paged_by_the_runtime() {
    let cfg = AliasConfig::store(Arc::new(Listed::default())).prefix("jobs:");
    registry::add("admin-listed", cfg).unwrap();
    let alias = registry::alias("admin-listed").unwrap();
    let guards: Vec<_> = ["b-2", "a", "b-1", "b-3", "c"]
        .into_iter()
        .map(|k| Lock::new(k).alias("admin-listed").acquire().unwrap())
        .collect();
    let mut keys = Vec::new();
    let mut cursor = None;
    loop {
        let page = alias.list("b-", cursor.as_deref(), 2).unwrap().unwrap();
        assert!(page.held.len() <= 2);
        keys.extend(page.held.into_iter().map(|h| h.key));
        cursor = page.next;
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(keys, ["b-1", "b-2", "b-3"]);
    assert_eq!(alias.show("c").unwrap().unwrap().key, "c");
    assert!(alias.show("d").unwrap().is_none());
    // It cannot force a release or keep a log: typed errors, nothing changed.
    let e = alias.force_release("c", "test").unwrap_err();
    assert!(e.is_unsupported(), "{e}");
    assert!(alias.audit_log(10).unwrap_err().is_unsupported());
    assert!(alias.show("c").unwrap().is_some(), "still held");
    drop(guards);
}

/// A store with no admin ability at all.
struct Plain;

impl Store for Plain {
    fn try_acquire(&self, _: &Request<'_>) -> Result<Attempt, BackendError> {
        Ok(Attempt::Acquired(Acquired::new(None)))
    }
    fn release(&self, _: &str, _: Token) -> Result<bool, BackendError> {
        Ok(true)
    }
    fn extend(&self, _: &str, _: Token, _: Duration) -> Result<bool, BackendError> {
        Ok(true)
    }
}

#[test]
fn a_store_without_the_abilities_says_so() {
    registry::add("admin-plain", AliasConfig::store(Arc::new(Plain))).unwrap();
    let alias = registry::alias("admin-plain").unwrap();
    assert!(alias.list("", None, 10).unwrap().is_none());
    for e in [
        alias.show("k").unwrap_err(),
        alias.force_release("k", "x").unwrap_err(),
        alias.audit_log(1).unwrap_err(),
    ] {
        match &e {
            LockError::Unsupported { alias, what } => {
                assert_eq!(alias, "admin-plain");
                assert!(!what.is_empty());
            }
            other => panic!("expected Unsupported, got {other:?}"),
        }
        assert!(e.to_string().contains("cannot"), "{e}");
    }
}

#[test]
fn the_memory_audit_log_keeps_the_newest_entries() {
    registry::add("admin-bound", AliasConfig::memory_named("admin-bound")).unwrap();
    let alias = registry::alias("admin-bound").unwrap();
    for i in 0..AUDIT_LOG_LEN + 5 {
        alias.force_release(&format!("k{i}"), "bulk").unwrap();
    }
    let log = alias.audit_log(usize::MAX).unwrap();
    assert_eq!(log.len(), AUDIT_LOG_LEN);
    assert_eq!(
        log[0].key,
        format!("k{}", AUDIT_LOG_LEN + 4),
        "newest first"
    );
    assert_eq!(log[AUDIT_LOG_LEN - 1].key, "k5", "the oldest five dropped");
}

mod event {
    use std::sync::{Arc, Mutex};

    use tracing::field::{Field, Visit};
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::{Context, SubscriberExt};

    /// One event's fields, by name, as `Debug` shows their values.
    pub type Event = Vec<(String, String)>;

    /// Keeps the fields of every `lock.forced_release` event.
    #[derive(Clone, Default)]
    pub struct Forced(pub Arc<Mutex<Vec<Event>>>);

    struct Fields(Vec<(String, String)>);

    impl Visit for Fields {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            self.0.push((field.name().to_owned(), format!("{value:?}")));
        }
    }

    impl<S: tracing::Subscriber> Layer<S> for Forced {
        fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
            if event.metadata().name() == "lock.forced_release" {
                let mut fields = Fields(Vec::new());
                event.record(&mut fields);
                self.0.lock().unwrap().push(fields.0);
            }
        }
    }

    pub fn subscriber(seen: &Forced) -> impl tracing::Subscriber + Send + Sync {
        tracing_subscriber::registry().with(seen.clone())
    }
}

#[test]
fn a_forced_release_is_a_warning_event() {
    registry::add("admin-event", AliasConfig::memory_named("admin-event")).unwrap();
    let alias = registry::alias("admin-event").unwrap();
    let guard = Lock::new("stuck")
        .alias("admin-event")
        .label("worker-3")
        .acquire()
        .unwrap();
    let seen = event::Forced::default();
    // With one dispatcher alive, tracing works a new callsite's interest
    // out from the registering thread's subscriber alone: another test's
    // thread, with none, reaching the event first would cache "never" for
    // it. A second one, kept alive, makes every callsite ask them all.
    let _second = tracing::Dispatch::new(tracing_subscriber::registry());
    tracing::subscriber::with_default(event::subscriber(&seen), || {
        alias.force_release("stuck", "hung for an hour").unwrap();
    });
    let events = seen.0.lock().unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    let field = |name: &str| {
        events[0]
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no field {name}: {events:?}"))
    };
    assert_eq!(field("key"), "stuck");
    assert_eq!(field("reason"), "hung for an hour");
    assert_eq!(field("removed_label"), "\"worker-3\"");
    assert_eq!(field("by_pid"), std::process::id().to_string());
    assert_eq!(
        field("removed_fencing_token"),
        guard.fencing_token().unwrap().to_string()
    );
    // The forced-out guard finds it lost at its next check.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let lost =
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), guard.lost()).await });
    assert!(lost.is_ok(), "the holder never noticed");
    assert!(guard.is_lost());
}

#[cfg(feature = "file")]
#[test]
fn the_file_store_refuses_a_forced_release_naming_the_holder() {
    let dir = std::env::temp_dir().join(format!("lock-admin-file-{}", std::process::id()));
    let url = format!("file://{}", dir.display());
    registry::add("admin-file", AliasConfig::from_url(&url).unwrap()).unwrap();
    let alias = registry::alias("admin-file").unwrap();
    let guard = Lock::new("held")
        .alias("admin-file")
        .label("importer")
        .acquire()
        .unwrap();
    let shown = alias.show("held").unwrap().unwrap();
    assert_eq!(
        shown.owner.unwrap().label.as_deref(),
        Some("importer"),
        "the record names its holder"
    );
    let e = alias.force_release("held", "stuck").unwrap_err();
    assert!(e.is_unsupported(), "{e}");
    let text = e.to_string();
    assert!(
        text.contains(&format!("pid {}", std::process::id())) && text.contains("stop"),
        "{text}"
    );
    assert!(alias.show("held").unwrap().is_some(), "still held");
    guard.release().unwrap();
    assert!(
        alias
            .force_release("held", "free now")
            .unwrap()
            .removed
            .is_none(),
        "a free lock: nothing to remove"
    );
    assert!(alias.audit_log(10).unwrap_err().is_unsupported());
    std::fs::remove_dir_all(&dir).ok();
}

#[cfg(feature = "metrics")]
#[test]
fn a_forced_release_is_counted() {
    use metrics_util::MetricKind;
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    registry::add("admin-metrics", AliasConfig::memory_named("admin-metrics")).unwrap();
    let alias = registry::alias("admin-metrics").unwrap();
    let recorder = DebuggingRecorder::new();
    metrics::with_local_recorder(&recorder, || {
        alias.force_release("a", "one").unwrap();
        alias.force_release("b", "two").unwrap();
    });
    let counted: u64 = recorder
        .snapshotter()
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(k, ..)| {
            k.kind() == MetricKind::Counter
                && k.key().name() == "lock_forced_releases_total"
                && k.key()
                    .labels()
                    .any(|l| l.key() == "alias" && l.value() == "admin-metrics")
        })
        .map(|(.., v)| match v {
            DebugValue::Counter(n) => n,
            other => panic!("{other:?}"),
        })
        .sum();
    assert_eq!(counted, 2);
}
