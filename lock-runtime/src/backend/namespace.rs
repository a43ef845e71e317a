//! How an alias's prefix and a lock's key become the one name a store keeps,
//! and where a store may keep its own bookkeeping. The mapping is injective
//! by construction: two different (prefix, key) pairs never name the same
//! lock, and no key names a store's own records, whatever its bytes.
//!
//! The rules, with `esc` replacing `%` by `%25` and `:` by `%3A`:
//! - a prefix names a namespace; one trailing `:` is its separator and
//!   optional (`app` and `app:` are the same namespace);
//! - a key under a prefix `p` is stored as `esc(p without its trailing :)`,
//!   then `:`, then the key as it is: `lock:` + `invoice-7` is
//!   `lock:invoice-7`, `app:x:` + `k` is `app%3Ax:k`;
//! - a key under no prefix is stored as `esc(key)`, which has no `:`;
//! - a store's own records live under `esc(p)%:` (`%%:` for no prefix): a
//!   `%` that escapes nothing, followed by `:`, which no stored key can
//!   contain before its first `:`.

use std::borrow::Cow;

/// An alias's namespace: turns its keys into the names its store keeps, and
/// names the store's own records beside them without ever meeting a key.
///
/// ```
/// use lock_runtime::backend::Namespace;
///
/// let ns = Namespace::new("lock:");
/// assert_eq!(ns.key("invoice-7".into()), "lock:invoice-7");
/// // Nested prefixes stay apart:
/// assert_ne!(Namespace::new("app:").key("x:k".into()), Namespace::new("app:x:").key("k".into()));
/// // Keys under no prefix are escaped, so they never look prefixed:
/// assert_eq!(Namespace::new("").key("app:k".into()), "app%3Ak");
/// // A store's own records:
/// assert_eq!(ns.internal("fence"), "lock%:fence");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    prefix: Box<str>,
    /// What goes before every key: `esc(body):`, or empty for no prefix.
    head: Box<str>,
    /// What goes before every internal name: `esc(body)%:`, or `%%:`.
    internal: Box<str>,
}

impl Namespace {
    /// The namespace of `prefix` (as configured on an alias).
    ///
    /// ```
    /// use lock_runtime::backend::Namespace;
    ///
    /// assert_eq!(Namespace::new("app").key("k".into()), Namespace::new("app:").key("k".into()));
    /// ```
    pub fn new(prefix: &str) -> Self {
        let (head, internal) = if prefix.is_empty() {
            // Not `%:`, which is the records' head of the prefix `:`.
            (String::new(), "%%:".to_owned())
        } else {
            let body = escape(prefix.strip_suffix(':').unwrap_or(prefix));
            (format!("{body}:"), format!("{body}%:"))
        };
        Self {
            prefix: prefix.into(),
            head: head.into(),
            internal: internal.into(),
        }
    }

    /// The prefix as configured.
    ///
    /// ```
    /// use lock_runtime::backend::Namespace;
    ///
    /// assert_eq!(Namespace::new("app:").prefix(), "app:");
    /// ```
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The name the store keeps for `key`. Borrows (or moves) the key when
    /// nothing needs adding or escaping.
    ///
    /// ```
    /// use lock_runtime::backend::Namespace;
    ///
    /// assert_eq!(Namespace::new("").key("plain".into()), "plain");
    /// assert_eq!(Namespace::new("").key("100%".into()), "100%25");
    /// assert_eq!(Namespace::new("jobs:").key("a:b".into()), "jobs:a:b");
    /// ```
    #[inline]
    pub fn key<'k>(&self, key: Cow<'k, str>) -> Cow<'k, str> {
        if !self.head.is_empty() {
            let mut out = String::with_capacity(self.head.len() + key.len());
            out.push_str(&self.head);
            out.push_str(&key);
            return Cow::Owned(out);
        }
        if has_escaped_byte(key.as_bytes()) {
            Cow::Owned(escape(&key))
        } else {
            key
        }
    }

    /// [`key`](Self::key) of a key its caller keeps: copied only when the
    /// stored name is the key as given (and then only an owned key's
    /// text). Passing the key by reference also spares the copy of a `Cow`
    /// built just to be passed, which the processor could not forward to
    /// the read that followed (a stall on every acquisition).
    #[inline(always)]
    // A `&str` could not be given back borrowed for `'static`.
    #[allow(clippy::ptr_arg)]
    pub(crate) fn stored(&self, key: &Cow<'static, str>) -> Cow<'static, str> {
        // The test of `key` made again rather than its answer matched: a
        // `Cow` it returned through memory cost 20 ns here (measured).
        if self.head.is_empty() && !has_escaped_byte(key.as_bytes()) {
            return key.clone();
        }
        Cow::Owned(self.key(Cow::Borrowed(key)).into_owned())
    }

    /// The key a stored name stands for, if it is a key of this namespace
    /// (`None` for another namespace's keys and for a store's own records):
    /// the inverse of [`key`](Self::key), for listing what a store holds.
    ///
    /// ```
    /// use lock_runtime::backend::Namespace;
    ///
    /// let jobs = Namespace::new("jobs:");
    /// assert_eq!(jobs.key_of("jobs:a:b").as_deref(), Some("a:b"));
    /// assert_eq!(jobs.key_of("mail:a"), None, "another namespace");
    /// assert_eq!(jobs.key_of(&jobs.internal("fence")), None, "the store's own record");
    /// assert_eq!(Namespace::new("").key_of("100%25").as_deref(), Some("100%"));
    /// ```
    pub fn key_of(&self, stored: &str) -> Option<String> {
        if !self.head.is_empty() {
            return stored.strip_prefix(&*self.head).map(str::to_owned);
        }
        // Under no prefix a key is stored escaped: no `:` at all, and every
        // `%` starts `%25` or `%3A`.
        if stored.contains(':') {
            return None;
        }
        let mut out = String::with_capacity(stored.len());
        let mut rest = stored;
        while let Some(at) = rest.find('%') {
            out.push_str(&rest[..at]);
            let tail = &rest[at..];
            if let Some(r) = tail.strip_prefix("%25") {
                out.push('%');
                rest = r;
            } else if let Some(r) = tail.strip_prefix("%3A") {
                out.push(':');
                rest = r;
            } else {
                return None;
            }
        }
        out.push_str(rest);
        Some(out)
    }

    /// What every stored key of a prefixed namespace starts with (`""` under
    /// no prefix, where keys are stored escaped instead).
    #[cfg_attr(
        not(any(feature = "sqlite", feature = "postgres", feature = "file")),
        allow(dead_code)
    )]
    pub(crate) fn head(&self) -> &str {
        &self.head
    }

    /// The stored name's part that comes before the key, when the key follows
    /// it unchanged (so the key can be read back from the stored name);
    /// `None` when the stored name is the escaped key.
    pub(crate) fn head_len(&self) -> Option<usize> {
        (!self.head.is_empty()).then_some(self.head.len())
    }

    /// A name for a store's own record (a counter, a waiting line), which no
    /// key of any namespace can name. Give each kind of record a name that no
    /// other kind's name starts with (for example `fence`, and `line:` then a
    /// stored key).
    ///
    /// ```
    /// use lock_runtime::backend::Namespace;
    ///
    /// let ns = Namespace::new("");
    /// assert_eq!(ns.internal("fence"), "%%:fence");
    /// assert_ne!(ns.key("%%:fence".into()), "%%:fence");
    /// ```
    pub fn internal(&self, name: &str) -> String {
        let mut out = String::with_capacity(self.internal.len() + name.len());
        out.push_str(&self.internal);
        out.push_str(name);
        out
    }
}

/// Whether `key` holds a byte to escape, eight bytes at a time: every
/// acquisition under no prefix asks, and a fold over the bytes (which the
/// compiler neither stops early nor vectorizes) cost 145 instructions for
/// an 11-byte key, a tenth of an uncontended in-memory lock's.
#[inline]
fn has_escaped_byte(key: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    // Some byte of `x` is zero. A borrow only starts at a zero byte, so
    // the bits it sets above one never make a word without one look like it.
    let zero_byte = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS != 0;
    let hit =
        |w: u64| zero_byte(w ^ (ONES * u64::from(b'%'))) || zero_byte(w ^ (ONES * u64::from(b':')));
    // Eight bytes as one load (a byte-by-byte copy into a word cost more
    // than the test itself).
    let word = |bytes: &[u8]| bytes.try_into().map_or(0, u64::from_ne_bytes);
    let half = |bytes: &[u8]| bytes.try_into().map_or(0, u32::from_ne_bytes);
    match key.len() {
        0..4 => key.iter().any(|&b| b == b'%' || b == b':'),
        // The first four bytes and the last four (overlapping): every byte
        // of the key, and nothing else, in one word.
        len @ 4..8 => {
            let (first, last) = (key.get(..4), key.get(len - 4..));
            let w = u64::from(half(first.unwrap_or_default()))
                | (u64::from(half(last.unwrap_or_default())) << 32);
            hit(w)
        }
        // Whole words, then the eight bytes that end the key (overlapping
        // the last whole word) for the rest.
        len => {
            key.chunks_exact(8).any(|w| hit(word(w)))
                || key.get(len - 8..).is_some_and(|w| hit(word(w)))
        }
    }
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '%' => out.push_str("%25"),
            ':' => out.push_str("%3A"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The word-at-a-time scan agrees with a byte loop: each escaped byte
    /// and its neighbours (the values a borrow or a stray high bit could
    /// confuse) at every place of every length up to three words.
    fn needs_escape(b: u8) -> bool {
        b == b'%' || b == b':'
    }

    #[test]
    fn the_word_scan_finds_exactly_the_bytes_to_escape() {
        let near = [
            b'%', b':', 0x00, 0x01, 0x24, 0x26, 0x39, 0x3B, 0x7F, 0x80, 0xA5, 0xBA, 0xFF, b'a',
        ];
        for len in 0..=24 {
            for at in 0..len {
                for &b in &near {
                    for &fill in &[b'a', 0x00, 0x01, 0xFF] {
                        let mut key = vec![fill; len];
                        key[at] = b;
                        let expected = key.iter().any(|&b| needs_escape(b));
                        assert_eq!(has_escaped_byte(&key), expected, "{key:?}");
                    }
                }
            }
        }
    }

    const PREFIXES: [&str; 12] = [
        "", ":", "::", "lock:", "lock", "app:", "app:x:", "app:x", "%", "%:", "a%3Ab", "a:b",
    ];
    const KEYS: [&str; 14] = [
        "",
        "k",
        "x:k",
        ":k",
        "k:",
        "%",
        "%:",
        "%:fence",
        "fence",
        "%3A",
        "%25",
        "line:k",
        "\u{0}fence",
        "x:",
    ];

    /// Every stored and internal name made from the prefixes and keys above:
    /// no two different (namespace, key) pairs and no internal name may meet.
    #[test]
    fn names_never_meet() {
        let mut seen = std::collections::HashMap::new();
        for p in PREFIXES {
            let ns = Namespace::new(p);
            // `app` and `app:` are one namespace, by design.
            let ns_id = ns.head.clone();
            for k in KEYS {
                let name = ns.key(k.into()).into_owned();
                let who = format!("key {k:?} in {ns_id:?}");
                if let Some(prev) = seen.insert(name.clone(), who.clone()) {
                    assert_eq!(prev, who, "{name:?} is named twice");
                }
            }
            for internal in ["fence", "line:k", "alive:k"] {
                let name = ns.internal(internal);
                let who = format!("internal {internal:?} of {ns_id:?}");
                if let Some(prev) = seen.insert(name.clone(), who.clone()) {
                    assert_eq!(prev, who, "{name:?} is named twice");
                }
            }
        }
    }

    /// `key_of` reads back exactly the keys of its own namespace.
    #[test]
    fn stored_names_read_back_to_their_keys_only() {
        for p in PREFIXES {
            let ns = Namespace::new(p);
            for k in KEYS {
                let stored = ns.key(k.into()).into_owned();
                assert_eq!(ns.key_of(&stored).as_deref(), Some(k), "{k:?} in {p:?}");
                for other in PREFIXES {
                    let theirs = Namespace::new(other);
                    if theirs.head != ns.head {
                        assert_eq!(
                            theirs.key_of(&stored),
                            None,
                            "{k:?} of {p:?} read in {other:?}"
                        );
                    }
                }
            }
            for internal in ["fence", "line:k", "alive:k"] {
                for other in PREFIXES {
                    let theirs = Namespace::new(other);
                    assert_eq!(
                        theirs.key_of(&ns.internal(internal)),
                        None,
                        "{internal:?} of {p:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_default_prefix_keeps_keys_readable() {
        assert_eq!(
            Namespace::new("lock:").key("report-7".into()),
            "lock:report-7"
        );
        assert_eq!(Namespace::new("").key("report-7".into()), "report-7");
        assert_eq!(Namespace::new("lock:").head_len(), Some(5));
        assert_eq!(Namespace::new("").head_len(), None);
    }
}
