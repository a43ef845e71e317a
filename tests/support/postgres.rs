//! A real Postgres server per test ([`PostgresServer`]): `initdb` into a
//! private temp dir, `postgres` on a free loopback port with its unix
//! socket in that dir and trust authentication, killed on drop and when the
//! test process dies, its log printed when the test fails. As root (CI) it
//! runs as the `postgres` user, which owns the dir. It never touches the
//! system's cluster or port 5432.

use std::env;
use std::fs::{self, File};
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use super::files::tail;
use super::ports::{free_port, release_port};
use super::process::{signal, spawn};

/// Overrides where the Postgres binaries (`initdb`, `postgres`) are.
pub const PG_BIN_DIR_ENV: &str = "PG_BIN_DIR";
/// How long a start (initdb included) or a restart may take.
pub const PG_READY_TIMEOUT: Duration = Duration::from_secs(60);
const START_ATTEMPTS: usize = 5;
const LOG_TAIL_LINES: usize = 60;
const LOG_FILE: &str = "postgres.log";
const INSTALL_HINT: &str = "install it (Debian/Ubuntu: `apt-get install postgresql`) or set \
                            PG_BIN_DIR to the directory holding `initdb` and `postgres`";

/// A private Postgres server. The database is `postgres`, the user
/// `postgres`, no password.
pub struct PostgresServer {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    /// `(uid, gid)` to run the server as: the `postgres` user when root.
    ids: Option<(u32, u32)>,
    child: Mutex<Option<Child>>,
}

impl PostgresServer {
    /// Initialises a cluster and starts it; waits until it answers.
    ///
    /// # Panics
    /// If the binaries are missing (with how to install them) or the server
    /// does not come up (with its log).
    pub fn start() -> PostgresServer {
        let bin = pg_bin_dir().unwrap_or_else(|msg| panic!("{msg}"));
        let ids = server_ids();
        let dir = server_dir(ids);
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .args([
                "-D",
                "data",
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ])
            .current_dir(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        as_user(&mut initdb, ids);
        let out = initdb
            .output()
            .unwrap_or_else(|e| panic!("cannot run initdb in {}: {e}", bin.display()));
        if !out.status.success() {
            let _ = fs::remove_dir_all(&dir);
            panic!(
                "initdb failed: {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            let server = PostgresServer {
                bin: bin.clone(),
                dir: dir.clone(),
                port,
                ids,
                child: Mutex::new(None),
            };
            match server.launch() {
                Ok(()) => return server,
                Err(true) => {
                    // Port taken by another process: drop only the port.
                    release_port(port);
                    std::mem::forget(server);
                }
                Err(false) => panic!("postgres did not start on port {port}"),
            }
        }
        let _ = fs::remove_dir_all(&dir);
        panic!("could not start postgres: another process took each port chosen for it");
    }

    /// The port it listens on, the same across restarts.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A `postgres://` URL for the alias (add settings with `?`).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The postmaster's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child().as_ref().map(Child::id)
    }

    /// Stops the server the hard way (immediate shutdown, `SIGQUIT`: no
    /// checkpoint, clients cut off at once, as in a crash) and waits until
    /// it is gone. Committed rows survive (commits are synchronous; only
    /// `fsync` is off, and the OS keeps what was written). Does nothing if
    /// stopped.
    pub fn stop(&self) {
        let mut child = self.child();
        if let Some(mut c) = child.take() {
            signal(c.id(), libc::SIGQUIT);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if matches!(c.try_wait(), Ok(Some(_))) {
                    return;
                }
                thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the server (as [`stop`](Self::stop)) and starts it again on the
    /// same data and port; waits until it answers.
    pub fn restart(&self) {
        self.stop();
        let deadline = Instant::now() + PG_READY_TIMEOUT;
        loop {
            match self.launch() {
                Ok(()) => return,
                // A client socket may hold the port for a moment.
                Err(true) if Instant::now() < deadline => thread::sleep(Duration::from_millis(100)),
                Err(_) => panic!("postgres did not restart on port {}", self.port),
            }
        }
    }

    /// Runs SQL (simple protocol) on a fresh connection and returns the
    /// rows as text. Panics on an error.
    pub fn sql(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        self.try_sql(sql)
            .unwrap_or_else(|e| panic!("`{sql}` failed on postgres (port {}): {e}", self.port))
    }

    /// [`sql`](Self::sql), errors returned.
    pub fn try_sql(&self, sql: &str) -> Result<Vec<Vec<Option<String>>>, tokio_postgres::Error> {
        simple_query(&self.url(), sql)
    }

    /// The first column of the first row of `sql`, as a number.
    pub fn number(&self, sql: &str) -> i64 {
        let rows = self.sql(sql);
        let cell = rows.first().and_then(|r| r.first()).cloned().flatten();
        cell.and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("`{sql}` gave no number: {rows:?}"))
    }

    /// The server's log.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join(LOG_FILE)
    }

    fn child(&self) -> MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts `postgres` and waits until it answers; `Err(true)` if its
    /// port was taken, `Err(false)` if it failed otherwise (log printed).
    fn launch(&self) -> Result<(), bool> {
        let log_start = fs::metadata(self.log_path()).map_or(0, |m| m.len());
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("cannot open the postgres log file");
        let mut cmd = Command::new(self.bin.join("postgres"));
        cmd.arg("-D")
            .arg(self.dir.join("data"))
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(&self.dir)
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=200",
                "-c",
                "logging_collector=off",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log);
        as_user(&mut cmd, self.ids);
        let mut child = spawn(cmd).unwrap_or_else(|e| panic!("cannot start postgres: {e}"));
        let deadline = Instant::now() + PG_READY_TIMEOUT;
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                let text = super::files::read_from(&self.log_path(), log_start);
                if text.contains("Address already in use") {
                    return Err(true);
                }
                eprintln!("--- postgres log ---\n{text}--- end ---");
                return Err(false);
            }
            if simple_query(&self.url(), "SELECT 1").is_ok() {
                *self.child() = Some(child);
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                eprintln!(
                    "--- postgres log ---\n{}--- end ---",
                    tail(&self.log_path(), LOG_TAIL_LINES)
                );
                return Err(false);
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        self.stop();
        if thread::panicking() {
            eprintln!(
                "--- last {LOG_TAIL_LINES} lines of the postgres log (port {}) ---\n{}--- end of postgres log ---",
                self.port,
                tail(&self.log_path(), LOG_TAIL_LINES)
            );
        }
        let _ = fs::remove_dir_all(&self.dir);
        release_port(self.port);
    }
}

/// One query on a connection of its own, on a runtime of its own (tests
/// call it from sync code and from inside their runtimes alike).
pub fn simple_query(
    url: &str,
    sql: &str,
) -> Result<Vec<Vec<Option<String>>>, tokio_postgres::Error> {
    let (url, sql) = (url.to_owned(), sql.to_owned());
    thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the test's SQL");
        rt.block_on(async {
            let mut cfg: tokio_postgres::Config = url.parse()?;
            cfg.connect_timeout(Duration::from_secs(5));
            let (client, conn) = cfg.connect(tokio_postgres::NoTls).await?;
            tokio::spawn(conn);
            let mut rows = Vec::new();
            for m in client.simple_query(&sql).await? {
                if let tokio_postgres::SimpleQueryMessage::Row(r) = m {
                    rows.push((0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect());
                }
            }
            Ok(rows)
        })
    })
    .join()
    .expect("the SQL thread panicked")
}

/// The newest `/usr/lib/postgresql/<version>/bin`, or `PG_BIN_DIR`, or the
/// directory of a `postgres` on `PATH`.
fn pg_bin_dir() -> Result<PathBuf, String> {
    if let Some(dir) = env::var_os(PG_BIN_DIR_ENV) {
        let dir = PathBuf::from(dir);
        return if dir.join("postgres").exists() {
            Ok(dir)
        } else {
            Err(format!(
                "{PG_BIN_DIR_ENV}={} has no `postgres`; {INSTALL_HINT}",
                dir.display()
            ))
        };
    }
    let newest = fs::read_dir("/usr/lib/postgresql")
        .ok()
        .and_then(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| {
                    let version: u32 = e.file_name().to_str()?.parse().ok()?;
                    let bin = e.path().join("bin");
                    bin.join("initdb").exists().then_some((version, bin))
                })
                .max()
                .map(|(_, bin)| bin)
        });
    if let Some(bin) = newest {
        return Ok(bin);
    }
    env::var_os("PATH")
        .into_iter()
        .flat_map(|p| env::split_paths(&p).collect::<Vec<_>>())
        .find(|d| d.join("postgres").exists() && d.join("initdb").exists())
        .ok_or_else(|| format!("no Postgres server binaries found; {INSTALL_HINT}"))
}

/// `(uid, gid)` of the `postgres` user when running as root (Postgres
/// refuses to run as root); `None` otherwise.
fn server_ids() -> Option<(u32, u32)> {
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    let ids = passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first() == Some(&"postgres") && f.len() > 3)
            .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
            .flatten()
    });
    Some(ids.unwrap_or_else(|| {
        panic!(
            "running as root, and there is no `postgres` user to run the server as; {INSTALL_HINT}"
        )
    }))
}

/// A private dir the server's user owns, under the system temp dir (whose
/// ancestors that user can traverse, unlike a 0700 build dir).
fn server_dir(ids: Option<(u32, u32)>) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    sweep_dead_dirs();
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    loop {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = env::temp_dir().join(format!("lock-pg-{}-{n}", std::process::id()));
        match fs::create_dir(&dir) {
            Ok(()) => {
                let _ = fs::set_permissions(&dir, fs::Permissions::from_mode(0o700));
                if let Some((uid, gid)) = ids {
                    std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                        .unwrap_or_else(|e| panic!("cannot chown {}: {e}", dir.display()));
                }
                return dir;
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => panic!("cannot create {}: {e}", dir.display()),
        }
    }
}

/// Removes the dirs of test processes that are gone: a server that lives
/// as long as its test binary (the conformance suite's) is never dropped,
/// so its dir outlives it.
fn sweep_dead_dirs() {
    let Ok(entries) = fs::read_dir(env::temp_dir()) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name();
        let pid = name
            .to_str()
            .and_then(|n| n.strip_prefix("lock-pg-"))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok());
        if let Some(pid) = pid
            && pid != std::process::id()
            && Path::new("/proc/self").exists()
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// Runs `cmd` as `ids`. Through the credentials std sets between fork and
/// exec rather than `runuser`, which would stand between the test and the
/// server and keep the server alive when the test dies.
fn as_user(cmd: &mut Command, ids: Option<(u32, u32)>) {
    if let Some((uid, gid)) = ids {
        cmd.uid(uid).gid(gid);
    }
}
