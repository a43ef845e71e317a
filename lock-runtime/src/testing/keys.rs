//! Hostile keys: characters that mean something to some store or protocol
//! (line breaks, glob and hash-tag characters, NUL, spaces), keys that look
//! empty, look-alike unicode and a very long key. Each must be a lock of its
//! own that works, and never the same lock as another key.

use std::collections::HashSet;

use crate::LockError;

use super::{Conformance, runtime};

/// The keys, each distinct from all the others as a string.
fn hostile_keys() -> Vec<String> {
    let mut keys: Vec<String> = [
        "new\nline",
        "\n",
        "\r\n",
        "\r",
        "a\r\nb",
        "*",
        "lock*",
        "?",
        "[a-z]",
        "[",
        "^$",
        "a|b",
        ".*",
        "{}",
        "{tag}",
        "{tag}x",
        "x{tag}",
        "}{",
        " ",
        "  ",
        "\t",
        "a b",
        " a",
        "a ",
        "a",
        "\0",
        "\0\0",
        "a\0",
        "a\0b",
        "\u{1}",
        "\u{7f}",
        "\u{200b}",
        "\u{feff}",
        "\u{a0}",
        "\u{2028}",
        "ключ",
        "🔒",
        "é",
        "e\u{301}",
        "ﬁ",
        "fi",
        "İ",
        "i",
        "I",
        "%",
        "%2A",
        "%00",
        "\\",
        "\\n",
        "\"",
        "'",
        "`",
        "$1",
        "--",
        ";",
        "#",
        ":",
        "::",
        "lock:",
        "lock:a",
        "a:",
        "/",
        "..",
        "../a",
        "0",
        "-1",
        "nil",
        "null",
        "NULL",
        "(nil)",
        "true",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    // Far past any line or bulk-string limit a careless store might assume.
    keys.push("k".repeat(64 * 1024));
    keys.push(format!("{}!", "k".repeat(64 * 1024)));
    keys
}

impl Conformance {
    /// Every hostile key (line breaks, `*?[`, `{}`, spaces and empty-looking
    /// keys, NUL and control characters, look-alike unicode, escapes, prefix
    /// look-alikes, two 64 KiB keys one character apart) can be taken and
    /// held at the same time as all the others (no two are the same lock),
    /// excludes a second taker, and is free again after its release while the
    /// others stay held. The empty key is refused as invalid, not taken.
    ///
    /// ```
    /// use lock_runtime::registry::AliasConfig;
    /// use lock_runtime::testing::Conformance;
    ///
    /// Conformance::new("memory", AliasConfig::memory).hostile_keys_are_distinct_locks();
    /// ```
    pub fn hostile_keys_are_distinct_locks(&self) {
        // The keys are bare, so that they start and end the store's key; a
        // prefix of this run's own keeps them from any other run's.
        let run = crate::backend::Token::new();
        let s = self.scope_with("hostile_keys_are_distinct_locks", |cfg| {
            let prefix = format!("{}conformance-{run}:", cfg.get_prefix());
            cfg.prefix(prefix)
        });
        let keys = hostile_keys();
        let distinct: HashSet<&String> = keys.iter().collect();
        assert_eq!(
            distinct.len(),
            keys.len(),
            "the suite's own hostile keys repeat one"
        );

        let mut guards = Vec::with_capacity(keys.len());
        for key in &keys {
            let guard = match s.lock(key).try_acquire() {
                Ok(Some(guard)) => guard,
                Ok(None) => panic!(
                    "{s}: key {} was busy while only other keys were held: it is the same lock as one of {:?}",
                    show(key),
                    guards
                        .iter()
                        .map(|g: &crate::LockGuard| show(g.key()))
                        .collect::<Vec<_>>()
                ),
                Err(e) => panic!("{s}: key {} could not be taken: {e}", show(key)),
            };
            assert_eq!(guard.key(), key, "{s}: the guard names another key");
            guards.push(guard);
        }
        for key in &keys {
            s.busy(
                &format!("a second taker of key {}", show(key)),
                s.lock(key).try_acquire(),
            );
        }
        // Released one by one: each is free again, the later ones still held.
        let mut guards = guards.into_iter();
        for (i, key) in keys.iter().enumerate() {
            let Some(guard) = guards.next() else {
                unreachable!("one guard per key")
            };
            if let Err(e) = guard.release() {
                panic!("{s}: key {} could not be released: {e}", show(key));
            }
            drop(s.free(
                &format!("key {} after its release", show(key)),
                s.lock(key).try_acquire(),
            ));
            // Every eighth step, so that the check stays linear in time.
            if i % 8 == 0 {
                for later in &keys[i + 1..] {
                    s.busy(
                        &format!("key {} after releasing key {}", show(later), show(key)),
                        s.lock(later).try_acquire(),
                    );
                }
            }
        }

        // Async, and the builder's check of the one key that is never valid.
        let rt = runtime(&s);
        rt.block_on(async {
            for key in keys.iter().step_by(7) {
                let guard = s.held(
                    &format!("key {} (async)", show(key)),
                    s.lock(key).acquire_async().await,
                );
                s.busy(
                    &format!("a second async taker of key {}", show(key)),
                    s.lock(key).try_acquire_async().await,
                );
                if let Err(e) = guard.release_async().await {
                    panic!("{s}: key {} could not be released: {e}", show(key));
                }
            }
        });
        match s.lock("").try_acquire() {
            Err(LockError::InvalidOptions { .. }) => {}
            other => panic!("{s}: the empty key: expected InvalidOptions, got {other:?}"),
        }
    }
}

/// A key for a failure message: escaped, and cut short if long.
fn show(key: &str) -> String {
    if key.len() > 40 {
        format!(
            "{:?}... ({} bytes)",
            key.chars().take(16).collect::<String>(),
            key.len()
        )
    } else {
        format!("{key:?}")
    }
}
