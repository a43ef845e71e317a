//! Reading alias URLs: the query string, percent-escapes, which settings a
//! scheme accepts (with a "did you mean" for a near miss), and hiding
//! passwords in anything shown. Below both the registry and the stores, so
//! neither imports the other for it.

use std::time::Duration;

use crate::lease;

/// One `name=value` setting of a URL, value percent-decoded.
pub(crate) struct Setting {
    pub(crate) name: String,
    pub(crate) value: String,
    /// `name=value` as written, for settings passed on to a store's own URL.
    pub(crate) raw: String,
}

/// A setting that could not be used, and which one: becomes
/// [`LockError::Config`](crate::LockError::Config).
#[derive(Debug)]
pub(crate) struct Invalid {
    pub(crate) setting: String,
    pub(crate) reason: String,
}

impl Invalid {
    pub(crate) fn new(setting: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            setting: setting.into(),
            reason: reason.into(),
        }
    }
}

/// Splits `a=b&c=d` into settings, refusing any whose name is not in
/// `accepted` with the list of those that are (and the nearest one, when a
/// name looks misspelt). `store` names the store in the message.
pub(crate) fn settings(
    query: &str,
    store: &str,
    accepted: &[&str],
) -> Result<Vec<Setting>, Invalid> {
    let mut out = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = percent_decode(name).map_err(|r| Invalid::new(name, r))?;
        if !accepted.contains(&name.as_str()) {
            let hint = did_you_mean(&name, accepted)
                .map(|near| format!("did you mean `{near}`? "))
                .unwrap_or_default();
            return Err(Invalid::new(
                &name,
                format!(
                    "unknown setting `{name}` for a {store} alias; {hint}accepted: {}",
                    accepted.join(", ")
                ),
            ));
        }
        let value = percent_decode(value).map_err(|r| Invalid::new(&name, r))?;
        out.push(Setting {
            name,
            value,
            raw: pair.to_owned(),
        });
    }
    Ok(out)
}

impl Setting {
    /// The value as a positive number of milliseconds within
    /// [`MAX_DURATION`](crate::MAX_DURATION).
    pub(crate) fn millis(&self) -> Result<Duration, Invalid> {
        let (k, v) = (&self.name, &self.value);
        let d = match v.parse::<u64>() {
            Ok(n) if n > 0 => Duration::from_millis(n),
            _ => {
                return Err(Invalid::new(
                    k,
                    format!("`{k}={v}`: expected a positive number of milliseconds"),
                ));
            }
        };
        lease::check(k, d).map_err(|r| Invalid::new(k, format!("`{k}={v}`: {r}")))?;
        Ok(d)
    }
}

/// The accepted name nearest to `name`, if it is near enough to be a typo.
pub(crate) fn did_you_mean<'a>(name: &str, accepted: &[&'a str]) -> Option<&'a str> {
    let name = name.to_ascii_lowercase();
    accepted
        .iter()
        .filter_map(|a| {
            // `timeout` for `timeout_ms`: the start of a name is a near miss.
            let d = if name.len() >= 3 && a.starts_with(name.as_str()) {
                1
            } else {
                distance(&name, a)
            };
            (d <= (a.len() / 3).clamp(1, 3)).then_some((d, *a))
        })
        .min()
        .map(|(_, a)| a)
}

/// Levenshtein distance, by characters.
pub(crate) fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

pub(crate) fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                // Two hex digits, checked: `from_str_radix` alone takes a
                // sign (`%+1`).
                let hex = s
                    .get(i + 1..i + 3)
                    .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("bad percent-escape in `{s}`"))?;
                out.push(hex);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| format!("`{s}` does not decode to UTF-8"))
}

/// Hides the password of a URL for logs and `Debug`.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_misses_are_named() {
        let accepted = ["prefix", "poll_ms", "lease_ms", "timeout_ms"];
        assert_eq!(did_you_mean("leas_ms", &accepted), Some("lease_ms"));
        assert_eq!(did_you_mean("prefx", &accepted), Some("prefix"));
        assert_eq!(did_you_mean("timeout", &accepted), Some("timeout_ms"));
        assert_eq!(did_you_mean("LEASE_MS", &accepted), Some("lease_ms"));
        assert_eq!(did_you_mean("colour", &accepted), None);
        assert_eq!(distance("kitten", "sitting"), 3);
    }

    #[test]
    fn unknown_settings_list_the_accepted_ones() {
        let err = settings("prefix=a&leas_ms=1000", "Redis", &["prefix", "lease_ms"])
            .err()
            .unwrap();
        assert_eq!(err.setting, "leas_ms");
        assert_eq!(
            err.reason,
            "unknown setting `leas_ms` for a Redis alias; did you mean `lease_ms`? accepted: prefix, lease_ms"
        );
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("redis://user:secret@host:1/0"),
            "redis://user:***@host:1/0"
        );
        assert_eq!(redact("redis://host:1/0"), "redis://host:1/0");
    }
}
