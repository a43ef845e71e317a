//! Property tests of alias URLs: no string makes `from_url` panic, an
//! accepted URL keeps every setting it was written with, and a password
//! never shows in a refusal.

use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::MAX_DURATION;

/// `s` percent-encoded: every byte but the unreserved ones as `%XX`.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect()
}

/// Milliseconds every setting accepts.
fn millis() -> impl Strategy<Value = u64> {
    let max = MAX_DURATION.as_millis() as u64;
    prop_oneof![1..10_000u64, 1..=max, Just(max)]
}

const SCHEMES: &[&str] = &[
    "memory",
    "redis",
    "rediss",
    "redis+unix",
    "redis+quorum",
    "sqlite",
    "file",
    "postgres",
    "postgresql",
    "memcache",
    "ftp",
    "",
];

/// URL-ish strings: a scheme of the table (or not), any text, and a query of
/// known, misspelt and unknown settings with any values.
fn url_like() -> impl Strategy<Value = String> {
    let setting = (
        prop_oneof![
            Just("prefix"),
            Just("poll_ms"),
            Just("lease_ms"),
            Just("timeout_ms"),
            Just("connect_timeout_ms"),
            Just("protocol"),
            Just("table"),
            Just("leas_ms"),
            Just("%zz"),
            Just(""),
        ],
        prop_oneof![any::<String>(), "[0-9%+a-fA-F-]{0,6}"],
    )
        .prop_map(|(n, v)| format!("{n}={v}"));
    (
        proptest::sample::select(SCHEMES),
        prop_oneof![any::<String>(), "[a-z0-9:@/.%\\[\\]]{0,12}"],
        proptest::collection::vec(setting, 0..4),
    )
        .prop_map(|(scheme, rest, settings)| {
            let mut url = format!("{scheme}://{rest}");
            if !settings.is_empty() {
                url.push('?');
                url.push_str(&settings.join("&"));
            }
            url
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any string is an alias URL or refused as a configuration error; none
    /// panics.
    #[test]
    fn any_string_is_an_alias_url_or_refused(url in prop_oneof![any::<String>(), url_like()]) {
        if let Err(e) = AliasConfig::from_url(&url) {
            prop_assert!(matches!(e, LockError::Config { .. }), "{:?}: {:?}", url, e);
        }
    }

    /// A memory URL keeps its prefix (any text, percent-encoded), poll
    /// interval and lease, in either order of its settings.
    #[test]
    fn memory_urls_keep_their_settings(
        name in "[a-z0-9-]{0,8}",
        prefix in any::<String>(),
        poll in millis(),
        lease in millis(),
        reversed in any::<bool>(),
    ) {
        let mut settings = [
            format!("prefix={}", encode(&prefix)),
            format!("poll_ms={poll}"),
            format!("lease_ms={lease}"),
        ];
        if reversed {
            settings.reverse();
        }
        let url = format!("memory://{name}?{}", settings.join("&"));
        let cfg = AliasConfig::from_url(&url).map_err(|e| TestCaseError::fail(format!("{url}: {e}")))?;
        prop_assert_eq!(cfg.get_prefix(), prefix.as_str());
        prop_assert_eq!(cfg.get_poll_interval(), Duration::from_millis(poll));
        prop_assert_eq!(cfg.lease, Some(Some(Duration::from_millis(lease))));
    }

    /// A Redis URL keeps its timeouts and prefix, and its password shows in
    /// no refusal of a setting.
    #[cfg(feature = "redis")]
    #[test]
    fn redis_urls_keep_their_timeouts_and_hide_their_password(
        prefix in any::<String>(),
        connect in millis(),
        command in millis(),
        password in "[A-Za-z0-9]{12}",
        bad in prop_oneof![Just("timeout_ms=0"), Just("poll_ms=-1"), Just("leas_ms=5"), Just("lease_ms=%zz")],
    ) {
        let base = format!("redis://app:{password}@127.0.0.1:6379/2");
        let url = format!(
            "{base}?prefix={}&connect_timeout_ms={connect}&timeout_ms={command}",
            encode(&prefix)
        );
        let cfg = AliasConfig::from_url(&url).map_err(|e| TestCaseError::fail(format!("{url}: {e}")))?;
        prop_assert_eq!(cfg.get_prefix(), prefix.as_str());
        prop_assert_eq!(cfg.connect_timeout, Duration::from_millis(connect));
        prop_assert_eq!(cfg.command_timeout, Duration::from_millis(command));
        let shown = format!("{cfg:?}");
        prop_assert!(!shown.contains(&password), "{}", shown);
        let e = AliasConfig::from_url(&format!("{base}?{bad}")).unwrap_err().to_string();
        prop_assert!(!e.contains(&password), "{}", e);
    }

    /// Millisecond settings out of range, or not numbers, are refused with
    /// a message naming the setting as written.
    #[test]
    fn bad_millisecond_settings_are_refused(
        name in prop_oneof![Just("poll_ms"), Just("lease_ms")],
        value in prop_oneof![
            Just("0".to_owned()),
            Just((MAX_DURATION.as_millis() + 1).to_string()),
            Just(u64::MAX.to_string()),
            "-[0-9]{1,4}",
            "[0-9]{0,3}[.a-z ][0-9]{0,3}",
        ],
    ) {
        let url = format!("memory://?{name}={}", encode(&value));
        let e = AliasConfig::from_url(&url).map(|_| ()).unwrap_err().to_string();
        prop_assert!(e.contains(&format!("`{name}={value}`")), "{}: {}", url, e);
    }

    /// Percent-escapes decode what they encode; a `%` not followed by two
    /// hexadecimal digits is refused, never read some other way.
    #[test]
    fn percent_escapes_decode_exactly(
        text in any::<String>(),
        (a, b) in {
            let c = || prop_oneof![any::<char>(), Just('+'), Just('-'), prop::char::range('0', 'g')];
            (c(), c())
        },
    ) {
        prop_assert_eq!(config::percent_decode(&encode(&text)), Ok(text.clone()));
        let escape = format!("x%{a}{b}");
        let decoded = config::percent_decode(&escape);
        if a.is_ascii_hexdigit() && b.is_ascii_hexdigit() {
            let byte = u8::from_str_radix(&format!("{a}{b}"), 16).unwrap();
            if byte.is_ascii() {
                prop_assert_eq!(decoded, Ok(format!("x{}", byte as char)));
            }
        } else {
            prop_assert!(decoded.is_err(), "{:?} decoded to {:?}", escape, decoded);
        }
    }
}

/// A local store's path survives the trip through the URL the store keeps:
/// what `locate_path` read is what `path_of` reads back, whatever the path.
#[cfg(any(feature = "sqlite", feature = "file"))]
mod local_paths {
    use super::*;
    use crate::backend::kind::{locate_path, path_of};

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn a_path_reads_back_from_the_url_it_is_kept_as(
            path in prop_oneof![
                "[a-z0-9 +%?#&=:@._/-]{1,16}",
                any::<String>().prop_filter("not empty", |p| !p.is_empty()),
            ],
        ) {
            prop_assume!(!path.contains('\0'));
            let url = format!("file://{}", encode(&path));
            let (read, kept) = locate_path(&url, "file", "no directory")
                .map_err(|e| TestCaseError::fail(format!("{url}: {e}")))?;
            prop_assert_eq!(&read, &path);
            let absolute = std::path::absolute(&path).unwrap();
            let (back, query) = path_of(&kept).map_err(TestCaseError::fail)?;
            prop_assert_eq!(back.as_str(), absolute.to_str().unwrap(), "kept as {}", kept);
            prop_assert_eq!(query, "");
        }
    }
}

/// Seen while writing `percent_escapes_decode_exactly`: `u8::from_str_radix`
/// takes a sign, so `%+1` decoded to byte 1.
#[test]
fn a_sign_is_no_hexadecimal_digit() {
    for bad in ["%+1", "%+f", "%-1", "a%+0b"] {
        assert!(config::percent_decode(bad).is_err(), "{bad}");
    }
}
