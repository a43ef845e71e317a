//! The clock every process locking through one host's stores (a SQLite file,
//! a lock directory) reads its lease ends from. It must be the same clock in
//! all of them and must not jump: on Linux that is `CLOCK_MONOTONIC` (the
//! clock behind `Instant`), which is system-wide and never goes back, but
//! restarts at boot; so each record also carries the boot it was written
//! in, and a record of another boot counts as ended. Elsewhere it is the
//! wall clock, with the risk that brings (see the SQLite store's docs).

// The memory store reads only `monotonic_ns`.
#![cfg_attr(not(any(feature = "sqlite", feature = "file")), allow(dead_code))]

use std::io;

/// A reading of the shared clock: which clock (its epoch) and where on it.
#[derive(Debug, Clone)]
pub(crate) struct Now {
    /// Names the clock's epoch: the boot id on Linux, `wall` elsewhere.
    pub(crate) epoch: &'static str,
    /// Microseconds since the epoch.
    pub(crate) micros: i64,
}

/// The shared clock, read now.
pub(crate) fn now() -> io::Result<Now> {
    Ok(Now {
        epoch: epoch()?,
        micros: micros()?,
    })
}

#[cfg(target_os = "linux")]
fn epoch() -> io::Result<&'static str> {
    use std::sync::OnceLock;
    static BOOT: OnceLock<Result<String, String>> = OnceLock::new();
    // Read once: it cannot change while this process lives.
    let boot = BOOT.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().to_owned())
            .map_err(|e| format!("cannot read the boot id (/proc/sys/kernel/random/boot_id): {e}"))
    });
    match boot {
        Ok(b) if !b.is_empty() => Ok(b.as_str()),
        Ok(_) => Err(io::Error::other("the boot id is empty")),
        Err(e) => Err(io::Error::other(e.clone())),
    }
}

#[cfg(target_os = "linux")]
fn micros() -> io::Result<i64> {
    let nanos = monotonic_ns().ok_or_else(io::Error::last_os_error)?;
    Ok(i64::try_from(nanos / 1_000).unwrap_or(i64::MAX))
}

/// `CLOCK_MONOTONIC` in nanoseconds, as a plain number (`Instant` keeps it
/// private); `None` if it cannot be read (`errno` says why).
#[cfg(target_os = "linux")]
pub(crate) fn monotonic_ns() -> Option<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call's duration.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    // Both fields are non-negative for this clock; `time_t` and `c_long`
    // are 32 bits on some targets.
    #[allow(clippy::useless_conversion)]
    let (secs, nanos) = (
        u64::try_from(ts.tv_sec).ok()?,
        u64::try_from(ts.tv_nsec).ok()?,
    );
    (rc == 0).then(|| secs.saturating_mul(1_000_000_000).saturating_add(nanos))
}

#[cfg(not(target_os = "linux"))]
fn epoch() -> io::Result<&'static str> {
    Ok("wall")
}

#[cfg(not(target_os = "linux"))]
fn micros() -> io::Result<i64> {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| io::Error::other(format!("the wall clock is before 1970: {e}")))?;
    Ok(i64::try_from(since.as_micros()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_never_goes_back_and_names_its_epoch() {
        let a = now().unwrap();
        let b = now().unwrap();
        assert!(b.micros >= a.micros);
        assert_eq!(a.epoch, b.epoch);
        assert!(!a.epoch.is_empty());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_clock_is_the_one_behind_instant() {
        // Instants and this clock advance together, so leases the runtime
        // counts on `Instant` end when the rows say they do.
        let (i0, c0) = (std::time::Instant::now(), micros().unwrap());
        std::thread::sleep(std::time::Duration::from_millis(20));
        let (i1, c1) = (std::time::Instant::now(), micros().unwrap());
        let by_instant = i64::try_from((i1 - i0).as_micros()).unwrap();
        assert!(
            (c1 - c0 - by_instant).abs() < 5_000,
            "{} vs {by_instant}",
            c1 - c0
        );
    }
}
