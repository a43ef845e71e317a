//! The table the registry opens aliases from: each kind of store says which
//! URL schemes name it, which settings its URLs take, and how to open it. A
//! new store adds one entry here and knows nothing of the registry; the
//! registry knows no store by name.

use std::sync::Arc;
use std::time::Duration;

use super::Backend;
use super::memory::VirtualClock;

/// What an alias gives a store to open with, besides its locations.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) struct Opening<'a> {
    pub(crate) prefix: &'a str,
    pub(crate) connect_timeout: Duration,
    pub(crate) command_timeout: Duration,
    pub(crate) tls_ca: Option<&'a [u8]>,
}

/// Opens a store of a kind at its locations.
pub(crate) type Open = fn(&[String], &Opening<'_>) -> Result<Arc<dyn Backend>, String>;

/// Opens a fresh, private store of a kind that lives in the process, on an
/// isolation scope's clock.
pub(crate) type Fresh = fn(&Arc<VirtualClock>) -> Arc<dyn Backend>;

/// One kind of store, as URLs name it.
pub(crate) struct StoreKind {
    /// For messages: "a memory alias", "a Redis alias".
    pub(crate) name: &'static str,
    pub(crate) schemes: &'static [&'static str],
    /// The URL settings this kind accepts, `passed_on` included.
    pub(crate) settings: &'static [&'static str],
    /// Settings the store reads from its own URL, put back into it.
    pub(crate) passed_on: &'static [&'static str],
    /// The prefix of an alias that sets none.
    pub(crate) default_prefix: &'static str,
    /// Where the store is, from a URL without its query: a memory store's
    /// name, a server's URL, a quorum's node URLs.
    pub(crate) locate: fn(&str) -> Result<Vec<String>, String>,
    pub(crate) open: Open,
    /// For stores that live in the process: an isolation scope opens a
    /// fresh one instead of taking a namespace on the shared one.
    pub(crate) fresh: Option<Fresh>,
}

/// Every kind of store this build has: a new store adds its line here.
static KINDS: &[&StoreKind] = &[
    &super::memory::KIND,
    #[cfg(feature = "redis")]
    &super::redis::KIND,
    #[cfg(feature = "redis")]
    &super::redis::UNIX_KIND,
    #[cfg(feature = "redis")]
    &super::redis::QUORUM_KIND,
    #[cfg(feature = "postgres")]
    &super::postgres::KIND,
    #[cfg(feature = "sqlite")]
    &super::sqlite::KIND,
    #[cfg(feature = "file")]
    &super::file::KIND,
    #[cfg(feature = "memcache")]
    &super::memcache::KIND,
];

pub(crate) fn kinds() -> &'static [&'static StoreKind] {
    KINDS
}

/// Schemes of stores that need a cargo feature this build lacks, and it.
const NEEDS_FEATURE: &[(&str, &str)] = &[
    ("redis", "redis"),
    ("rediss", "tls"),
    ("redis+unix", "redis"),
    ("unix", "redis"),
    ("redis+quorum", "redis"),
    ("postgres", "postgres"),
    ("postgresql", "postgres"),
    ("sqlite", "sqlite"),
    ("file", "file"),
    ("memcache", "memcache"),
];

/// The kind of store `scheme` names, or why there is none.
pub(crate) fn by_scheme(scheme: &str) -> Result<&'static StoreKind, String> {
    if let Some(kind) = kinds().iter().find(|k| k.schemes.contains(&scheme)) {
        return Ok(kind);
    }
    if let Some((_, feature)) = NEEDS_FEATURE.iter().find(|(s, _)| *s == scheme) {
        return Err(format!(
            "`{scheme}://` URLs need the `{feature}` feature of lock-runtime"
        ));
    }
    let known: Vec<String> = kinds()
        .iter()
        .flat_map(|k| k.schemes.iter().map(|s| format!("{s}://")))
        .collect();
    Err(format!(
        "unknown scheme `{scheme}://`; expected {}",
        known.join(", ")
    ))
}

/// For stores that live at a local path (`sqlite://`, `file://`): the path
/// a URL `scheme://path` names, percent-decoded and checked (not empty, no
/// NUL byte), made absolute so that a later change of working directory
/// does not move the store, and written back as a URL for [`path_of`]. `names`
/// says what the path names, for messages ("no file: expected `...`").
#[cfg(any(feature = "sqlite", feature = "file"))]
pub(crate) fn locate_path(
    url: &str,
    scheme: &str,
    names: &str,
) -> Result<(String, String), String> {
    let shown = crate::config::redact(url);
    let raw = url.split_once("://").map_or("", |(_, p)| p);
    let path = crate::config::percent_decode(raw).map_err(|e| format!("`{shown}`: {e}"))?;
    if path.is_empty() {
        return Err(format!("`{shown}` names {names}"));
    }
    if path.contains('\0') {
        return Err(format!("`{shown}`: a path cannot hold a NUL byte"));
    }
    let abs = std::path::absolute(&path).map_err(|e| format!("`{shown}`: {e}"))?;
    let abs = abs
        .to_str()
        .ok_or_else(|| format!("`{shown}`: the path is not valid UTF-8"))?;
    // `?`, `%` and `+` would read as a query, an escape or a space when
    // `path_of` parses it.
    let escaped = abs
        .replace('%', "%25")
        .replace('?', "%3F")
        .replace('+', "%2B");
    Ok((path, format!("{scheme}://{escaped}")))
}

/// The path and the query of a URL [`locate_path`] made.
#[cfg(any(feature = "sqlite", feature = "file"))]
pub(crate) fn path_of(url: &str) -> Result<(String, &str), String> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let raw = base.split_once("://").map_or(base, |(_, p)| p);
    Ok((crate::config::percent_decode(raw)?, query))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scheme_names_one_kind() {
        let mut seen = std::collections::HashSet::new();
        for kind in kinds() {
            for s in kind.schemes {
                assert!(seen.insert(*s), "`{s}` is claimed twice");
                assert!(std::ptr::eq(by_scheme(s).unwrap(), *kind));
            }
            for p in kind.passed_on {
                assert!(
                    kind.settings.contains(p),
                    "{p} is passed on but not accepted"
                );
            }
        }
        assert!(by_scheme("ftp").is_err_and(|e| e.contains("expected memory://")));
    }
}
