//! Section 8: the memcached store (built with `--features memcache`), set
//! against the least a client does for a lock there: `ms` with `I`
//! (add-if-absent) and a TTL, then `md`, on one reused connection in
//! alternating rounds. Ours also draws a fencing number and checks the
//! owner before deleting by CAS, so a cycle is more round trips; the ratio
//! says what they cost (no target).

use crate::BenchResult;
use crate::report::Report;

pub fn run(report: &mut Report, quick: bool) -> BenchResult<()> {
    report.section("8. Memcached store: acquire + release next to a bare ms + md, medians");
    #[cfg(feature = "memcache")]
    measure(report, quick)?;
    #[cfg(not(feature = "memcache"))]
    {
        let _ = quick;
        report.line(
            "not measured in this build: run the bench with `--features memcache` for memcached",
        );
    }
    Ok(())
}

#[cfg(feature = "memcache")]
fn measure(report: &mut Report, quick: bool) -> BenchResult<()> {
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpStream;
    use std::time::Instant;

    use lock_runtime::registry::{self, AliasConfig};

    use crate::measure::{Rounds, ours_sync};
    use crate::support::memcached::MemcachedServer;

    const ALIAS: &str = "bench-memcache";
    let (rounds, cycles) = if quick { (6, 1_000) } else { (10, 5_000) };
    // Panics, saying what to install, when memcached is missing.
    let server = MemcachedServer::start();
    registry::add(ALIAS, AliasConfig::from_url(&server.url())?)?;
    let stream = TcpStream::connect(server.addr())?;
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    let mut line = String::new();
    let mut bare = || -> BenchResult<f64> {
        // A value as long as a token; `ME` makes `ms` add only if absent.
        let (set, del) = (
            b"ms bare:uncontended 22 T30 ME\r\nbare-token-0123456789x\r\n".as_slice(),
            b"md bare:uncontended\r\n".as_slice(),
        );
        let t = Instant::now();
        for _ in 0..cycles {
            for (command, what) in [(set, "ms"), (del, "md")] {
                writer.write_all(command)?;
                line.clear();
                reader.read_line(&mut line)?;
                if !line.starts_with("HD") {
                    return Err(format!("bare {what} answered {line:?}").into());
                }
            }
        }
        Ok(cycles as f64 / t.elapsed().as_secs_f64())
    };
    let r = Rounds::run(rounds, &mut bare, || {
        ours_sync(ALIAS, "uncontended", cycles)
    })?;
    report.line(&format!("{rounds} rounds of {cycles} cycles"));
    r.judge(
        report,
        "memcache sync",
        "memcache.sync",
        "ms (add if absent, TTL) + md on one connection",
        None,
    );
    Ok(())
}
