//! Property tests of what users feed the runtime as text, at the level of
//! its public API: the names stores keep for (alias prefix, key) pairs
//! ([`Namespace`]). Alias URLs are tested inside the crate
//! (`registry/properties.rs`, where the parsed timeouts can be read), and
//! key templates and option values in the macro crate.

use std::borrow::Cow;

use lock_runtime::backend::Namespace;
use proptest::prelude::*;

/// Text heavy in what the escaping is about (`:`, `%`, what follows a `%`),
/// and anything else.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[:%3Aa25^]{0,6}",
        1 => any::<String>(),
    ]
}

/// `app` and `app:` are one namespace, by design; no prefix is another one
/// than `:`.
fn same_namespace(p: &str, q: &str) -> bool {
    let body = |s: &str| s.strip_suffix(':').unwrap_or(s).to_owned();
    p.is_empty() == q.is_empty() && body(p) == body(q)
}

fn stored(prefix: &str, key: &str) -> String {
    Namespace::new(prefix).key(Cow::Borrowed(key)).into_owned()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// A stored name reads back to its key in its own namespace, and to
    /// nothing in any other.
    #[test]
    fn stored_names_read_back_only_in_their_namespace(p in text(), q in text(), key in text()) {
        let name = stored(&p, &key);
        prop_assert_eq!(Namespace::new(&p).key_of(&name), Some(key.clone()));
        let theirs = Namespace::new(&q).key_of(&name);
        if same_namespace(&p, &q) {
            prop_assert_eq!(theirs, Some(key));
        } else {
            prop_assert_eq!(theirs, None, "{:?} of {:?} read under {:?}", key, p, q);
        }
    }

    /// Two different (namespace, key) pairs never name the same lock.
    #[test]
    fn different_pairs_never_share_a_name(p in text(), k in text(), q in text(), l in text()) {
        prop_assume!(!(same_namespace(&p, &q) && k == l));
        prop_assert_ne!(stored(&p, &k), stored(&q, &l));
    }

    /// A store's own records never read as a key of any namespace, nor
    /// equal any stored key, whatever the key's bytes.
    #[test]
    fn store_records_are_out_of_every_keys_reach(p in text(), q in text(), record in text(), key in text()) {
        let internal = Namespace::new(&p).internal(&record);
        prop_assert_eq!(Namespace::new(&q).key_of(&internal), None, "{:?}", internal);
        prop_assert_ne!(stored(&q, &key), internal);
    }
}
