//! `lockctl`, the command-line tool for the people on call, as a function:
//! list who holds which lock, show one key, release a key by force with a
//! recorded reason, clean up stale records, watch a live table, read the
//! audit log. The `lockctl` binary (feature `cli`) is [`run`] over the
//! process's arguments; an operator tool of your own can call it too.
//!
//! ```text
//! lockctl --url redis://10.0.0.5:6379 list report-
//! lockctl --alias jobs show report-42          # URL from LOCK_ALIAS_JOBS
//! lockctl --alias jobs release report-42 --reason "holder hung, INC-1234" --yes
//! lockctl --alias jobs --json list | jq '.[].key'
//! ```
//!
//! The store comes from `--url`, or from the variable `LOCK_ALIAS_<NAME>` of
//! `--alias NAME` (`default` when neither is given), the same variables
//! [`configure_from_env`](crate::registry::configure_from_env) reads. The
//! in-process `memory://` store is refused: each process has its own, so no
//! other process can see its locks.

mod render;

use std::ffi::OsString;
use std::io::{self, BufRead, IsTerminal, Write};
use std::thread;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::LockError;
use crate::registry::{self, Alias, AliasConfig};

use self::render::Render;

/// How `lockctl` ended, as its exit code ([`Exit::code`]): scripts can test
/// it.
///
/// ```
/// use lock_runtime::cli::Exit;
///
/// assert_eq!(Exit::Ok.code(), 0);
/// assert_eq!(Exit::NotHeld.code(), 1);
/// assert_eq!(Exit::Usage.code(), 2);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Exit {
    /// 0: done (`show`: the key is held; `release`: a holder was removed).
    Ok,
    /// 1: the key is not held (`show`), or was not held so nothing was
    /// released (`release`, which still records the attempt).
    NotHeld,
    /// 2: a bad command line or configuration: unknown option, a URL the
    /// library refuses, no URL at all, the per-process memory store.
    Usage,
    /// 3: the store failed or could not be reached.
    Store,
    /// 4: the store cannot do what was asked (memcached keeps no index to
    /// list; a file lock is held by its process's kernel handle).
    Unsupported,
    /// 5: `release` was not confirmed (no `--yes`, and the answer at the
    /// prompt was not yes, or there was no terminal to ask on).
    Declined,
}

impl Exit {
    /// The process exit code.
    ///
    /// ```
    /// assert_eq!(lock_runtime::cli::Exit::Unsupported.code(), 4);
    /// ```
    pub fn code(self) -> i32 {
        match self {
            Exit::Ok => 0,
            Exit::NotHeld => 1,
            Exit::Usage => 2,
            Exit::Store => 3,
            Exit::Unsupported => 4,
            Exit::Declined => 5,
        }
    }
}

#[derive(Parser)]
#[command(
    name = "lockctl",
    version,
    about = "See and manage the locks held in a lock_runtime store",
    after_help = "The store: --url URL, or --alias NAME to read LOCK_ALIAS_<NAME> \
                  (LOCK_ALIAS_DEFAULT when neither is given).\n\
                  Exit codes: 0 done, 1 not held, 2 usage or configuration, \
                  3 store failed, 4 not supported by this store, 5 release not confirmed."
)]
struct Cli {
    /// The store's URL, in the forms of LOCK_ALIAS_<NAME>
    /// (redis://, postgres://, sqlite://, file://, memcache://, ...).
    #[arg(long, global = true, value_name = "URL", conflicts_with = "alias")]
    url: Option<String>,
    /// Read the store's URL from LOCK_ALIAS_<NAME> (default: LOCK_ALIAS_DEFAULT).
    #[arg(long, global = true, value_name = "NAME")]
    alias: Option<String>,
    /// Print JSON instead of tables (one document; `watch` prints a line per refresh).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the held locks, optionally only the keys starting with PREFIX.
    List {
        /// Only keys that start with this.
        prefix: Option<String>,
        /// Stop after this many locks.
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        /// How many locks to ask the store for at a time.
        #[arg(long, value_name = "N", default_value_t = 500)]
        page: usize,
    },
    /// Show who holds KEY, since when, and how many wait for it.
    Show {
        /// The lock's key, as the program names it (without the alias prefix).
        key: String,
    },
    /// Release KEY whoever holds it: its holder's guard reports the lock
    /// lost, a waiter gets it, and the reason goes to the audit log.
    Release {
        /// The lock's key.
        key: String,
        /// Why (recorded with who released it, and when).
        #[arg(long, value_name = "TEXT")]
        reason: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Delete the records of locks whose lease ended more than GRACE ago
    /// (SQL, file stores; nothing to do on Redis or memcached).
    Cleanup {
        /// How long after its lease's end a record is kept (`90s`, `10m`, `1h`, `250ms`).
        #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = parse_duration)]
        grace: Duration,
    },
    /// A live table of the held locks, refreshed every INTERVAL.
    Watch {
        /// Only keys that start with this.
        prefix: Option<String>,
        /// Time between refreshes (`1s`, `500ms`).
        #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
        interval: Duration,
        /// Stop after this many refreshes (default: until interrupted).
        #[arg(long, value_name = "N")]
        count: Option<u64>,
        /// Show at most this many locks a refresh.
        #[arg(long, value_name = "N", default_value_t = 40)]
        rows: usize,
    },
    /// The forced releases recorded in the store, newest first.
    Audit {
        /// How many entries.
        #[arg(long, value_name = "N", default_value_t = 20)]
        limit: usize,
    },
}

/// Runs `lockctl` with `args` (the program name first, as in
/// `std::env::args_os`), writing its output to `out` and its messages to
/// `err`, and answers how it ended.
///
/// ```
/// use lock_runtime::cli::{run, Exit};
///
/// let (mut out, mut err) = (Vec::new(), Vec::new());
/// let exit = run(["lockctl", "--url", "memory://", "list"], &mut out, &mut err);
/// assert_eq!(exit, Exit::Usage);
/// assert!(String::from_utf8_lossy(&err).contains("per-process"));
///
/// let exit = run(["lockctl", "--help"], &mut out, &mut err);
/// assert_eq!(exit, Exit::Ok);
/// ```
pub fn run<I, T>(args: I, out: &mut dyn Write, err: &mut dyn Write) -> Exit
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let text = e.render().to_string();
            return if e.use_stderr() {
                let _ = write!(err, "{text}");
                Exit::Usage
            } else {
                let _ = write!(out, "{text}");
                Exit::Ok
            };
        }
    };
    let outcome = open(&cli).and_then(|alias| {
        let r = Render::new(cli.json);
        execute(&cli.command, &alias, &r, out, err)
    });
    match outcome {
        Ok(exit) => exit,
        Err(Failure(exit, message)) => {
            let _ = writeln!(err, "lockctl: {message}");
            exit
        }
    }
}

/// An exit other than success, with what to tell the user.
struct Failure(Exit, String);

impl From<LockError> for Failure {
    fn from(e: LockError) -> Self {
        let exit = match &e {
            LockError::Backend { .. } => Exit::Store,
            LockError::Unsupported { .. } => Exit::Unsupported,
            _ => Exit::Usage,
        };
        Failure(exit, e.to_string())
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Failure(Exit::Store, format!("writing the output failed: {e}"))
    }
}

/// The alias the command line names, configured in this process.
fn open(cli: &Cli) -> Result<Alias, Failure> {
    let (name, url) = match (&cli.url, &cli.alias) {
        (Some(url), _) => ("lockctl".to_owned(), url.clone()),
        (None, alias) => {
            let name = alias.as_deref().unwrap_or("default").to_ascii_lowercase();
            let var = format!("LOCK_ALIAS_{}", name.to_ascii_uppercase());
            let url = std::env::var(&var).map_err(|_| {
                Failure(
                    Exit::Usage,
                    format!("no store given: set {var} to the store's URL, or pass --url URL"),
                )
            })?;
            (name, url)
        }
    };
    if url.trim_start().to_ascii_lowercase().starts_with("memory:") {
        return Err(Failure(
            Exit::Usage,
            "memory:// is the embedded per-process store: each process has its own, so \
             lockctl cannot see another process's locks. Point it at a shared store \
             (redis://, postgres://, sqlite://, file://, memcache://)"
                .to_owned(),
        ));
    }
    let config = AliasConfig::from_url(&url)?;
    registry::add(name.clone(), config)?;
    Ok(registry::alias(&name)?)
}

fn execute(
    command: &Command,
    alias: &Alias,
    r: &Render,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<Exit, Failure> {
    match command {
        Command::List {
            prefix,
            limit,
            page,
        } => list(
            alias,
            prefix.as_deref().unwrap_or(""),
            *limit,
            *page,
            r,
            out,
        ),
        Command::Show { key } => match alias.show(key)? {
            Some(held) => {
                r.held(out, &held)?;
                Ok(Exit::Ok)
            }
            None => {
                r.not_held(out, key)?;
                Ok(Exit::NotHeld)
            }
        },
        Command::Release { key, reason, yes } => release(alias, key, reason, *yes, r, out, err),
        Command::Cleanup { grace } => {
            let removed = alias.clean_up(*grace)?;
            r.cleaned(out, removed)?;
            Ok(Exit::Ok)
        }
        Command::Watch {
            prefix,
            interval,
            count,
            rows,
        } => watch(
            alias,
            prefix.as_deref().unwrap_or(""),
            *interval,
            *count,
            *rows,
            r,
            out,
        ),
        Command::Audit { limit } => {
            r.audit(out, &alias.audit_log(*limit)?)?;
            Ok(Exit::Ok)
        }
    }
}

/// Every page of the listing, printed as it comes so that memory stays
/// bounded by one page however many locks there are.
fn list(
    alias: &Alias,
    prefix: &str,
    limit: Option<usize>,
    page: usize,
    r: &Render,
    out: &mut dyn Write,
) -> Result<Exit, Failure> {
    let mut left = limit.unwrap_or(usize::MAX);
    let mut cursor: Option<String> = None;
    let mut table = r.table(out)?;
    while left > 0 {
        let Some(got) = alias.list(prefix, cursor.as_deref(), page.clamp(1, 10_000).min(left))?
        else {
            return Err(unlisted(alias));
        };
        left -= got.held.len().min(left);
        table.rows(out, &got.held)?;
        match got.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    table.finish(out)?;
    Ok(Exit::Ok)
}

fn unlisted(alias: &Alias) -> Failure {
    Failure(
        Exit::Unsupported,
        format!(
            "the store of alias `{}` cannot list its locks; `lockctl show KEY` asks for one key",
            alias.name()
        ),
    )
}

fn release(
    alias: &Alias,
    key: &str,
    reason: &str,
    yes: bool,
    r: &Render,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<Exit, Failure> {
    if reason.trim().is_empty() {
        return Err(Failure(
            Exit::Usage,
            "--reason cannot be empty: say why, it goes to the audit log".to_owned(),
        ));
    }
    if !yes {
        // Who would be removed, when the store can say.
        let holder = alias.show(key).ok().flatten();
        if !confirm(key, holder.as_ref(), err)? {
            return Err(Failure(
                Exit::Declined,
                format!(
                    "{key} was not released: not confirmed (pass --yes to release without asking)"
                ),
            ));
        }
    }
    let forced = alias.force_release(key, reason)?;
    r.forced(out, &forced)?;
    Ok(if forced.removed.is_some() {
        Exit::Ok
    } else {
        Exit::NotHeld
    })
}

/// Asks on the terminal; `false` when there is none to ask on.
fn confirm(
    key: &str,
    holder: Option<&crate::backend::Held>,
    err: &mut dyn Write,
) -> Result<bool, Failure> {
    let stdin = io::stdin();
    if !stdin.is_terminal() {
        return Ok(false);
    }
    let who = holder
        .and_then(|h| h.owner.as_ref())
        .map_or_else(|| "its holder".to_owned(), render::holder);
    write!(
        err,
        "Release {key}, held by {who}? Its holder will lose the lock. [y/N] "
    )?;
    err.flush()?;
    let mut answer = String::new();
    stdin.lock().read_line(&mut answer)?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

fn watch(
    alias: &Alias,
    prefix: &str,
    interval: Duration,
    count: Option<u64>,
    rows: usize,
    r: &Render,
    out: &mut dyn Write,
) -> Result<Exit, Failure> {
    let mut done = 0u64;
    loop {
        let Some(page) = alias.list(prefix, None, rows.max(1))? else {
            return Err(unlisted(alias));
        };
        r.refresh(out, alias.name(), prefix, &page)?;
        done += 1;
        if count.is_some_and(|c| done >= c) {
            return Ok(Exit::Ok);
        }
        thread::sleep(interval);
    }
}

/// `250ms`, `90s`, `10m`, `1h`, `2d`, or a plain number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().map_err(|_| {
        format!("`{text}` is not a duration: write a whole number and a unit, as `90s` or `10m`")
    })?;
    let unit_ms: u64 = match unit {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        other => {
            return Err(format!(
                "`{other}` is not a unit of time: use ms, s, m, h or d"
            ));
        }
    };
    n.checked_mul(unit_ms)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("`{text}` is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_and_refuse_the_rest() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        assert!(
            parse_duration("ten")
                .unwrap_err()
                .contains("not a duration")
        );
        assert!(parse_duration("5y").unwrap_err().contains("unit of time"));
        assert!(parse_duration("99999999999999999999d").is_err());
    }

    #[test]
    fn the_command_line_is_checked_before_any_store_is_touched() {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let exit = run(["lockctl", "release", "k"], &mut out, &mut err);
        assert_eq!(exit, Exit::Usage, "--reason is required");
        assert!(String::from_utf8_lossy(&err).contains("--reason"));

        let mut err = Vec::new();
        let exit = run(["lockctl", "--url", "nope://x", "list"], &mut out, &mut err);
        assert_eq!(exit, Exit::Usage);
        assert!(
            String::from_utf8_lossy(&err).contains("nope"),
            "{}",
            String::from_utf8_lossy(&err)
        );
    }
}
