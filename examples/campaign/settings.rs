//! What the controller, the workers and the checker share: the alias and
//! keys, the lock settings of a run, the seeded generator, and how a worker
//! is told what to do.

use std::time::Duration;

use lock_runtime::registry::AliasConfig;

/// The alias every worker registers (the `#[lock]`s name it).
pub const ALIAS: &str = "campaign";
/// The keys the workers fight over: few, so that they contend.
pub const KEYS: [&str; 3] = ["k0", "k1", "k2"];
/// The key prefix on the store.
pub const PREFIX: &str = "camp:";

/// The lock settings of a run.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    pub lease: Duration,
    pub wait_for: Duration,
    pub command_timeout: Duration,
}

impl Settings {
    /// The acquisition deadline, in ms (also the `#[lock]`s' literal).
    pub const WAIT_FOR_MS: u64 = 3000;
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            lease: Duration::from_millis(800),
            wait_for: Duration::from_millis(Self::WAIT_FOR_MS),
            command_timeout: Duration::from_millis(300),
        }
    }
}

/// The alias for `store` at `urls`, with the run's settings.
pub fn alias_config(store: &str, urls: &[String], s: &Settings) -> Result<AliasConfig, String> {
    let cfg = match store {
        "redis" => AliasConfig::redis(urls.first().ok_or("no url")?.clone()),
        "quorum" => AliasConfig::quorum(urls.iter().cloned()),
        "memcache" | "postgres" | "sqlite" | "file" => {
            AliasConfig::from_url(urls.first().ok_or("no url")?)
                .map_err(|e| format!("{e} (build the campaign with --all-features)"))?
        }
        other => return Err(format!("unknown store {other:?}")),
    };
    Ok(cfg
        .prefix(PREFIX)
        .default_lease(s.lease)
        .command_timeout(s.command_timeout)
        .connect_timeout(s.command_timeout))
}

/// xorshift64*: a seeded schedule that replays exactly, without a
/// dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform enough in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// A duration in `[lo, hi)`.
    pub fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let span = hi.saturating_sub(lo).as_millis().max(1) as u64;
        lo + Duration::from_millis(self.below(span))
    }
}

/// The environment variable that hands a worker its arguments (so the
/// same worker runs from the example binary and from the test binary).
pub const WORKER_ENV: &str = "LOCK_CAMPAIGN_WORKER";
