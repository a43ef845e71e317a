//! Section 7: the file store (built with `--features file`), set against
//! the least a lock in a file does: `try_lock` and `unlock` on a file kept
//! open, in alternating rounds. Ours opens the key's file, reads and writes
//! its record under the file's lock, marks its holder alive with a byte
//! lock, draws a fencing number from the counter file, and deletes the file
//! on release: the ratio says what that costs (no target).

use crate::BenchResult;
use crate::report::Report;

pub fn run(report: &mut Report, quick: bool) -> BenchResult<()> {
    report.section("7. File store: acquire + release next to a bare try_lock + unlock, medians");
    #[cfg(feature = "file")]
    measure(report, quick)?;
    #[cfg(not(feature = "file"))]
    {
        let _ = quick;
        report.line(
            "not measured in this build: run the bench with `--features file` for the file store",
        );
    }
    Ok(())
}

#[cfg(feature = "file")]
fn measure(report: &mut Report, quick: bool) -> BenchResult<()> {
    use std::fs::{File, OpenOptions};
    use std::time::Instant;

    use lock_runtime::registry::{self, AliasConfig};

    use crate::measure::{Rounds, ours_sync};

    const ALIAS: &str = "bench-file";
    let (rounds, cycles) = if quick { (6, 2_000) } else { (10, 10_000) };
    let scratch = crate::measure::Scratch::new("bench-file");
    let dir = &scratch.0;
    registry::add(
        ALIAS,
        AliasConfig::from_url(&format!("file://{}", dir.join("locks").display()))?,
    )?;
    let bare_file: File = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(dir.join("bare.lock"))?;
    let bare = || -> BenchResult<f64> {
        let t = Instant::now();
        for _ in 0..cycles {
            if bare_file.try_lock().is_err() {
                return Err("the bare file lock was not free".into());
            }
            bare_file.unlock()?;
        }
        Ok(cycles as f64 / t.elapsed().as_secs_f64())
    };
    let r = Rounds::run(rounds, bare, || ours_sync(ALIAS, "uncontended", cycles))?;
    report.line(&format!("{rounds} rounds of {cycles} cycles"));
    r.judge(
        report,
        "file sync",
        "file.sync",
        "flock try_lock + unlock on an open file",
        None,
    );
    Ok(())
}
