//! The clock every process locking through one host's stores (a SQLite file,
//! a lock directory) reads its lease ends from. It must be the same clock in
//! all of them and must not jump: on Linux that is `CLOCK_MONOTONIC` (the
//! clock behind `Instant`), which is system-wide and never goes back, but
//! restarts at boot; so each record also carries the boot it was written
//! in, and a record of another boot counts as ended. Elsewhere it is the
//! wall clock, with the risk that brings (see the SQLite store's docs).
//!
//! It also keeps the process's own plain readings of the monotonic clock
//! (nanoseconds since its first reading), precise or to within a kernel
//! tick, which the memory store records and the guards count from.

// The memory store and the guards read only the plain readings.
#![cfg_attr(not(any(feature = "sqlite", feature = "file")), allow(dead_code))]

use std::io;
use std::time::{Duration, Instant};

use once_cell::sync::Lazy;

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
    // SAFETY: the call writes only the timespec it is given.
    read(|ts| unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, ts) })
}

/// The kernel's copy of `CLOCK_MONOTONIC` as of its last tick: a quarter
/// of the cost of the precise clock (4 ns against 18 here), never later
/// than it, and behind it by at most a tick save when the kernel's
/// timekeeping stalls.
#[cfg(target_os = "linux")]
fn monotonic_coarse_ns() -> Option<u64> {
    // SAFETY: as above.
    read(|ts| unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, ts) })
}

/// How far apart the coarse clock's steps are.
#[cfg(target_os = "linux")]
fn coarse_tick_ns() -> Option<u64> {
    // SAFETY: as above.
    read(|ts| unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, ts) })
}

/// The nanoseconds a clock call wrote into its timespec, if it succeeded.
#[cfg(target_os = "linux")]
#[inline(always)]
fn read(call: impl FnOnce(&mut libc::timespec) -> libc::c_int) -> Option<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let rc = call(&mut ts);
    // Both fields are non-negative for these clocks; `time_t` and `c_long`
    // are 32 bits on some targets.
    #[allow(clippy::useless_conversion)]
    let (secs, nanos) = (
        u64::try_from(ts.tv_sec).ok()?,
        u64::try_from(ts.tv_nsec).ok()?,
    );
    (rc == 0).then(|| secs.saturating_mul(1_000_000_000).saturating_add(nanos))
}

/// Where the process's plain readings of the monotonic clock
/// ([`elapsed_ns`]) count from.
struct Epoch {
    at: Instant,
    /// `at` on `CLOCK_MONOTONIC` (the clock behind `Instant`), read just
    /// after it: a reading turned back into an `Instant` is then never
    /// later than the moment it was taken, so a lease counted from it
    /// errs short.
    #[cfg(target_os = "linux")]
    raw: u64,
    /// The coarse clock's step, when it can be read (else the precise
    /// clock stands in for it).
    #[cfg(target_os = "linux")]
    tick: Option<u64>,
}

static EPOCH: Lazy<Epoch> = Lazy::new(|| Epoch {
    at: Instant::now(),
    #[cfg(target_os = "linux")]
    raw: monotonic_ns().unwrap_or(0),
    // A coarse clock that cannot be read, or steps a second or more, is no
    // use for stamps.
    #[cfg(target_os = "linux")]
    tick: coarse_tick_ns()
        .filter(|&t| t < 1_000_000_000)
        .filter(|_| monotonic_coarse_ns().is_some()),
});

/// Nanoseconds since the process first read this clock, on the monotonic
/// clock. Read as a plain number: `Instant::elapsed`'s timespec
/// arithmetic and `Duration` conversion cost a fifth as much as the
/// reading itself. A reading that failed (it cannot on Linux) counts as
/// the epoch, never later.
#[cfg(target_os = "linux")]
pub(crate) fn elapsed_ns() -> u64 {
    let epoch = &*EPOCH;
    monotonic_ns().unwrap_or(0).saturating_sub(epoch.raw)
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn elapsed_ns() -> u64 {
    nanos(EPOCH.at.elapsed())
}

/// [`elapsed_ns`] as of the kernel's last tick: never later than it, and
/// behind it by a tick at most, plus however late that tick itself is
/// (tens of microseconds in a VM, more if the host stops the CPU).
#[cfg(target_os = "linux")]
pub(crate) fn elapsed_ns_coarse() -> u64 {
    let epoch = &*EPOCH;
    match epoch.tick {
        Some(_) => monotonic_coarse_ns().unwrap_or(0).saturating_sub(epoch.raw),
        None => elapsed_ns(),
    }
}

/// How far a coarse reading is raised to stand for "no earlier than now":
/// a tick, and a millisecond for that tick to come late (every tick is a
/// little late; a VM's can be by tens of microseconds, and by more only if
/// the host stops the CPU). Zero where the coarse clock is the precise one.
#[cfg(target_os = "linux")]
pub(crate) fn coarse_margin_ns() -> u64 {
    EPOCH.tick.map_or(0, |tick| tick.saturating_add(1_000_000))
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn elapsed_ns_coarse() -> u64 {
    elapsed_ns()
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn coarse_margin_ns() -> u64 {
    0
}

/// [`elapsed_ns`] to within a kernel tick and a millisecond (2 to 5 ms),
/// never earlier than it unless the kernel's tick comes more than a
/// millisecond late: for when a lock was taken, which a stealer or a
/// clean-up must not judge older than it is.
#[inline]
pub(crate) fn elapsed_ns_coarse_high() -> u64 {
    elapsed_ns_coarse().saturating_add(coarse_margin_ns())
}

/// The moment [`elapsed_ns`] counts from.
pub(crate) fn origin() -> Instant {
    EPOCH.at
}

/// The `Instant` an [`elapsed_ns`] reading stands for.
pub(crate) fn instant_at(ns: u64) -> Instant {
    EPOCH.at + Duration::from_nanos(ns)
}

#[cfg(not(target_os = "linux"))]
fn nanos(d: Duration) -> u64 {
    d.as_nanos().min(u64::MAX as u128 - 1) as u64
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

    /// The coarse clock is never later than the precise one, and the high
    /// reading never earlier, unless a tick came more than a millisecond
    /// late (which the test only counts).
    #[test]
    fn the_coarse_readings_bound_the_precise_one() {
        let mut late = 0;
        for _ in 0..100_000 {
            let low = elapsed_ns_coarse();
            let precise = elapsed_ns();
            let high = elapsed_ns_coarse_high();
            assert!(low <= precise, "{low} > {precise}");
            if precise > high {
                late += 1;
            }
        }
        // A tick more than a tick late (a host stopping the VM) may make a
        // few early; a missing margin, all of them.
        assert!(late < 50_000, "{late} of 100000 high readings were early");
        let at = elapsed_ns();
        assert!(instant_at(at) <= Instant::now());
        assert!(origin() <= instant_at(at));
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
