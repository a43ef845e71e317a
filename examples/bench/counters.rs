//! What the bench's Redis server counted: `INFO` fields and the calls per
//! command since the last `CONFIG RESETSTAT`, read through the test
//! support's own RESP client (never through the code under test).

use std::collections::HashMap;

use crate::BenchResult;
use crate::support::{RedisServer, RespValue};

/// One numeric `INFO` field.
pub fn info_u64(server: &RedisServer, section: &str, field: &str) -> BenchResult<u64> {
    server
        .info(section)
        .get(field)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("INFO {section} has no numeric `{field}`").into())
}

/// Zeroes `INFO stats` and `INFO commandstats` before a measured run.
pub fn reset(server: &RedisServer) -> BenchResult<()> {
    match server.cmd(&["CONFIG", "RESETSTAT"]) {
        RespValue::Simple(_) => Ok(()),
        other => Err(format!("CONFIG RESETSTAT answered {other:?}").into()),
    }
}

/// What Redis ran since [`reset`]: the `total_commands_processed` of
/// `INFO stats` (which counts the commands scripts run, too) and the calls
/// per command of `INFO commandstats` (`evalsha`, `script|load`, `set`, ...),
/// both without the bench's own `CONFIG RESETSTAT` and `INFO`.
pub fn since_reset(server: &RedisServer) -> BenchResult<(u64, HashMap<String, u64>)> {
    let total = info_u64(server, "stats", "total_commands_processed")?;
    let mut calls: HashMap<String, u64> = server
        .info("commandstats")
        .into_iter()
        .filter_map(|(k, v)| {
            let name = k.strip_prefix("cmdstat_")?.to_owned();
            let calls = v.split(',').find_map(|f| f.strip_prefix("calls="))?;
            Some((name, calls.parse().ok()?))
        })
        .collect();
    // The reset counts itself; an INFO is counted only once it has
    // answered, so the total above does not hold the INFO that read it.
    let own = calls.get("config|resetstat").copied().unwrap_or(0);
    calls.retain(|cmd, _| cmd != "config|resetstat" && cmd != "info");
    Ok((total.saturating_sub(own), calls))
}
