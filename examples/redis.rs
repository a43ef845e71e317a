//! Two worker processes contend for one Redis lock through `#[lock]`.
//!
//! ```text
//! REDIS_URL=redis://127.0.0.1:6379 cargo run --example redis
//! ```
//!
//! The program starts two copies of itself (workers A and B). Each one
//! configures the alias `shared` from `REDIS_URL` (default
//! `redis://127.0.0.1:6379`) and runs the locked function three times; the
//! printed timeline shows that the two never hold the lock at once.

use std::process::{Command, ExitCode};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lock_runtime::registry::{self, AliasConfig};
use lock_runtime::{LockError, lock};

const DEFAULT_URL: &str = "redis://127.0.0.1:6379";

/// Milliseconds since the parent started, the same clock in every worker.
fn at(epoch_ms: u128) -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
        - epoch_ms
}

#[lock("nightly-report", alias = "shared", wait_for_ms = 5000)]
fn nightly_report(worker: &str, round: u32, epoch_ms: u128) -> Result<(), LockError> {
    println!(
        "{:>5} ms  worker {worker} holds the lock (round {round})",
        at(epoch_ms)
    );
    thread::sleep(Duration::from_millis(300));
    println!("{:>5} ms  worker {worker} releases it", at(epoch_ms));
    Ok(())
}

fn worker(name: &str, url: &str, epoch_ms: u128) -> Result<(), LockError> {
    registry::configure([("shared", AliasConfig::from_url(url)?)])?;
    for round in 1..=3 {
        nightly_report(name, round, epoch_ms)?;
        // Give the other worker a chance to take its turn.
        thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn main() -> ExitCode {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned());
    let mut args = std::env::args().skip(1);
    if let (Some(flag), Some(name), Some(epoch)) = (args.next(), args.next(), args.next())
        && flag == "--worker"
    {
        let epoch_ms = epoch.parse().unwrap_or(0);
        return match worker(&name, &url, epoch_ms) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("worker {name}: {e}");
                ExitCode::FAILURE
            }
        };
    }

    println!("two workers, one lock, on {url}");
    let epoch_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("cannot find this program to start its workers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let children: Vec<_> = ["A", "B"]
        .iter()
        .map(|name| {
            Command::new(&exe)
                .args(["--worker", name, &epoch_ms.to_string()])
                .spawn()
        })
        .collect();
    let mut ok = true;
    for child in children {
        match child.and_then(|mut c| c.wait()) {
            Ok(status) => ok &= status.success(),
            Err(e) => {
                eprintln!("a worker could not run: {e}");
                ok = false;
            }
        }
    }
    if ok {
        println!("done: the holds above never overlap");
        ExitCode::SUCCESS
    } else {
        eprintln!("a worker failed; is Redis running at {url}? (set REDIS_URL)");
        ExitCode::FAILURE
    }
}
