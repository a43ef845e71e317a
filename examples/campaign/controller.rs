//! The controller: starts the store (and the proxy in front of it), the
//! fenced resource and the workers, injects one seeded fault at a time
//! until the time is up, stops everyone, and hands the history to the
//! checker.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;

use super::checker::{self, Profile};
use super::history::{self, Fault, History, mono_ns};
use super::resource::Resource;
use super::settings::{KEYS, PREFIX, Rng, Settings, WORKER_ENV};
use super::support::memcached::MemcachedServer;
use super::support::postgres::PostgresServer;
use super::support::{Direction, Proxy, RedisServer, RespValue, private_dir};
use super::worker;

/// What the command line asked for.
pub struct Options {
    pub store: String,
    pub seconds: u64,
    pub seed: Option<u64>,
    pub workers: usize,
    /// Threads taking locks at once in each worker process.
    pub threads: u32,
    /// Single Redis: AOF with `appendfsync always`, so that a restart keeps
    /// held locks and the fencing counter.
    pub persist: bool,
    /// Keep the run's files (histories, faults, worker logs) even if it
    /// passed.
    pub keep: bool,
    /// How to start a worker (a program and its arguments; the worker's
    /// own arguments go in its environment). Empty: this program again.
    pub worker_command: Vec<String>,
}

/// A server of the store under test.
enum Node {
    Redis(RedisServer),
    Memcached(MemcachedServer),
    Postgres(PostgresServer),
}

impl Node {
    fn port(&self) -> u16 {
        match self {
            Node::Redis(s) => s.port(),
            Node::Memcached(s) => s.port(),
            Node::Postgres(s) => s.port(),
        }
    }

    fn url(&self) -> String {
        match self {
            Node::Redis(s) => s.url(),
            Node::Memcached(s) => s.url(),
            Node::Postgres(s) => s.url(),
        }
    }

    fn stop(&self) {
        match self {
            Node::Redis(s) => s.stop(),
            Node::Memcached(s) => s.stop(),
            Node::Postgres(s) => s.stop(),
        }
    }

    fn restart(&self) {
        match self {
            Node::Redis(s) => s.restart(),
            Node::Memcached(s) => s.restart(),
            Node::Postgres(s) => s.restart(),
        }
    }

    /// Freezes the server (`SIGSTOP`), returning its pid; `None` for
    /// Postgres, whose backends are processes of their own (stopping the
    /// postmaster stops nothing a client talks to). The signal is sent here
    /// rather than through the harness's `pause`, which fails when the
    /// process does not show as stopped within 2 s: a Redis in an
    /// `appendfsync always` write on a busy disk can take longer.
    fn pause(&self) -> Option<u32> {
        let pid = match self {
            Node::Redis(s) => s.pid(),
            Node::Memcached(s) => s.pid(),
            Node::Postgres(_) => None,
        }?;
        signal(pid, libc::SIGSTOP);
        Some(pid)
    }
}

/// The store under test: its servers (none for the stores of one host)
/// and the proxy in front of the first, or its directory.
struct Store {
    kind: String,
    /// One server, three for `quorum`; the first is behind `proxy`.
    nodes: Vec<Node>,
    proxy: Option<Proxy>,
    /// The SQLite file's or the lock files' directory.
    local: Option<PathBuf>,
}

impl Store {
    fn start(opts: &Options, dir: &std::path::Path) -> Store {
        let persist = [
            "--appendonly".to_owned(),
            "yes".to_owned(),
            "--appendfsync".to_owned(),
            "always".to_owned(),
        ];
        let nodes: Vec<Node> = match opts.store.as_str() {
            "redis" if opts.persist => vec![Node::Redis(RedisServer::start_with(&persist))],
            "redis" => vec![Node::Redis(RedisServer::start())],
            "quorum" => (0..3).map(|_| Node::Redis(RedisServer::start())).collect(),
            "memcache" => vec![Node::Memcached(MemcachedServer::start())],
            "postgres" => vec![Node::Postgres(PostgresServer::start())],
            _ => Vec::new(),
        };
        let proxy = nodes
            .first()
            .map(|n| Proxy::start(std::net::SocketAddr::from(([127, 0, 0, 1], n.port()))));
        let local = matches!(opts.store.as_str(), "sqlite" | "file").then(|| {
            let local = dir.join("store");
            let _ = fs::create_dir_all(&local);
            local
        });
        Store {
            kind: opts.store.clone(),
            nodes,
            proxy,
            local,
        }
    }

    fn proxy(&self) -> &Proxy {
        self.proxy
            .as_ref()
            .expect("network faults only for stores with a server")
    }

    fn urls(&self) -> Vec<String> {
        if let Some(local) = &self.local {
            return vec![match self.kind.as_str() {
                "sqlite" => format!("sqlite://{}", local.join("locks.db").display()),
                _ => format!("file://{}", local.display()),
            }];
        }
        let proxied = self.proxy().port();
        let first = &self.nodes[0];
        let mut urls =
            vec![
                first
                    .url()
                    .replacen(&format!(":{}", first.port()), &format!(":{proxied}"), 1),
            ];
        urls.extend(self.nodes[1..].iter().map(Node::url));
        urls
    }

    fn fault_kinds(&self) -> &'static [&'static str] {
        match self.kind.as_str() {
            "redis" | "memcache" => &[
                "pause_worker",
                "kill_worker",
                "restart_server",
                "pause_server",
                "latency",
                "black_hole",
                "reset_connections",
            ],
            "postgres" => &[
                "pause_worker",
                "kill_worker",
                "restart_server",
                "latency",
                "black_hole",
                "reset_connections",
            ],
            "quorum" => &[
                "pause_worker",
                "kill_worker",
                "restart_node",
                "pause_node",
                "latency",
                "black_hole",
                "reset_connections",
                "partition_node",
            ],
            _ => &["pause_worker", "kill_worker"],
        }
    }

    /// Lock keys (not the fencing counter and other books) left on any
    /// Redis node, and every key there; the other stores are not looked
    /// into (their leftovers are the soak's and their own tests' job).
    fn left_locks(&self) -> (Vec<String>, Vec<String>) {
        let locks: Vec<String> = KEYS.iter().map(|k| format!("{PREFIX}{k}")).collect();
        let mut left = Vec::new();
        let mut all = Vec::new();
        for (i, node) in self.nodes.iter().enumerate() {
            let Node::Redis(node) = node else { continue };
            if let RespValue::Array(items) = node.cmd(&["KEYS", "*"]) {
                for item in items {
                    let Some(key) = item.into_string() else {
                        continue;
                    };
                    if locks.contains(&key) {
                        left.push(format!("node {i}: {key}"));
                    }
                    let ttl = match node.cmd(&["PTTL", &key]) {
                        RespValue::Int(ms) if ms >= 0 => format!(" (expires in {ms} ms)"),
                        _ => String::new(),
                    };
                    all.push(format!("node {i}: {key}{ttl}"));
                }
            }
        }
        all.sort();
        (left, all)
    }
}

struct Workers {
    running: Vec<(u32, Child)>,
    next: u32,
    command: Vec<String>,
    /// The arguments every worker shares (its index is set per worker).
    args: worker::Args,
    dir: PathBuf,
}

impl Workers {
    /// Whether worker `index` holds a lock now, by its history file.
    fn holding(&self, index: u32) -> bool {
        fs::read_to_string(self.dir.join(format!("w{index:03}.jsonl")))
            .ok()
            .and_then(|text| text.lines().last().map(|l| l.starts_with(r#"{"ev":"acq""#)))
            .unwrap_or(false)
    }

    fn spawn(&mut self) -> Result<(), String> {
        let index = self.next;
        self.next += 1;
        let log = File::create(self.dir.join(format!("w{index:03}.log")))
            .map_err(|e| format!("cannot create a worker log: {e}"))?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        self.args.index = index;
        let mut command = Command::new(&self.command[0]);
        command
            .args(&self.command[1..])
            .env(WORKER_ENV, self.args.to_env())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err);
        // SAFETY: prctl is async-signal-safe; the worker dies with the
        // controller (whose main thread, the only one that spawns, lives as
        // long as it does).
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start a worker: {e}"))?;
        self.running.push((index, child));
        Ok(())
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(pid as libc::pid_t, sig) };
}

/// Runs a campaign; the summary (the JSON line to print), with `passed`.
pub fn run(opts: &Options) -> Result<serde_json::Value, String> {
    let began = Instant::now();
    let seed = opts
        .seed
        .unwrap_or_else(|| mono_ns() ^ u64::from(std::process::id()));
    eprintln!(
        "campaign: store {} seed {seed} for {} s",
        opts.store, opts.seconds
    );
    let settings = Settings::default();
    let dir = private_dir("campaign");
    let store = Store::start(opts, &dir);
    let resource = Resource::start().map_err(|e| format!("cannot start the resource: {e}"))?;
    let mut workers = Workers {
        running: Vec::new(),
        next: 0,
        command: if opts.worker_command.is_empty() {
            vec![
                std::env::current_exe()
                    .map_err(|e| e.to_string())?
                    .display()
                    .to_string(),
            ]
        } else {
            opts.worker_command.clone()
        },
        args: worker::Args {
            index: 0,
            store: opts.store.clone(),
            urls: store.urls(),
            resource: resource.addr(),
            dir: dir.clone(),
            seed,
            threads: opts.threads,
        },
        dir: dir.clone(),
    };
    for _ in 0..opts.workers {
        workers.spawn()?;
    }

    let mut rng = Rng::new(seed);
    let mut faults: Vec<Fault> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(opts.seconds);
    // Let the workers warm up before the first fault.
    thread::sleep(Duration::from_millis(500));
    while Instant::now() < deadline {
        thread::sleep(rng.between(Duration::from_millis(200), Duration::from_millis(1200)));
        let kinds = store.fault_kinds();
        let kind = kinds[rng.below(kinds.len() as u64) as usize];
        let fault = inject(kind, &store, &mut workers, &mut rng, &settings)?;
        faults.push(fault);
    }

    // Stop: the workers finish their hold and exit.
    fs::write(dir.join("stop"), b"").map_err(|e| e.to_string())?;
    let mut history = History::default();
    let stop_by = Instant::now() + Duration::from_secs(30);
    for (index, mut child) in workers.running.drain(..) {
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() < stop_by => thread::sleep(Duration::from_millis(20)),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
            }
        };
        match status {
            Some(s) if s.success() => {}
            other => history.worker_failures.push(format!(
                "worker {index} {}; its log:\n{}",
                other.map_or("did not stop within 30 s".to_owned(), |s| format!(
                    "ended with {s}"
                )),
                fs::read_to_string(dir.join(format!("w{index:03}.log"))).unwrap_or_default()
            )),
        }
    }
    // Killed holders' leases run out.
    thread::sleep(settings.lease + Duration::from_millis(300));
    let (left, keys_left) = store.left_locks();
    history.left_locks = left;
    history.writes = resource.log();
    history.faults = faults;
    history::read_workers(&dir, &mut history)?;

    let profile = Profile {
        lease_ns: settings.lease.as_nanos() as u64,
        wait_for_ns: settings.wait_for.as_nanos() as u64,
        command_timeout_ns: settings.command_timeout.as_nanos() as u64,
        // memcached: "an eviction or a restart drops held locks".
        restart_forgets: (opts.store == "redis" && !opts.persist) || opts.store == "memcache",
        node_restart_forgets: opts.store == "quorum",
    };
    let s = checker::check(&history, &profile);
    let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
    for f in &history.faults {
        *by_kind.entry(&f.kind).or_default() += 1;
    }
    let mut by_mode: BTreeMap<&str, usize> = BTreeMap::new();
    for h in &history.holds {
        *by_mode.entry(&h.mode).or_default() += 1;
    }
    // Errors by their text with numbers taken out, so alike ones count
    // together.
    let mut failed_by_error: BTreeMap<String, usize> = BTreeMap::new();
    for w in &history.failed_waits {
        let shape: String = w
            .error
            .chars()
            .filter(|c| !c.is_ascii_digit())
            .take(120)
            .collect();
        *failed_by_error.entry(shape).or_default() += 1;
    }
    let holder_pauses = history
        .faults
        .iter()
        .filter(|f| f.kind == "pause_worker")
        .filter(|f| {
            history.holds.iter().any(|h| {
                Some(h.pid) == f.pid && h.start <= f.start && h.end.is_none_or(|e| e >= f.start)
            })
        })
        .count();
    let summary = json!({
        "store": opts.store,
        "persist": opts.store == "redis" && opts.persist,
        "seed": seed,
        "seconds": opts.seconds,
        "workers_started": workers.next,
        "faults": by_kind,
        "holder_pauses": holder_pauses,
        "holds": s.holds,
        "holds_by_mode": by_mode,
        "failed_waits": history.failed_waits.len(),
        "failed_waits_by_error": failed_by_error,
        "writes": history.writes.len(),
        "stale_writes_rejected": s.stale_writes_rejected,
        "stale_writes_accepted": s.stale_writes_accepted,
        "stale_attempts": s.stale_attempts,
        "overlaps": s.overlaps,
        "explained_overlaps": s.explained_overlaps,
        "unexplained_overlaps": s.unexplained_overlaps,
        "token_regressions": s.token_regressions,
        "lost_signals": s.lost_signals,
        "lost_signals_expected": s.lost_signals_expected,
        "lost_signals_missed": s.lost_signals_missed,
        "stranded": s.stranded,
        "keys_left": keys_left,
        "longest_wait_ms": s.longest_wait_ms,
        "longest_wait_bound_ms": s.longest_wait_bound_ms,
        "waits_over_bound": s.waits_over_bound,
        "elapsed_ms": began.elapsed().as_millis() as u64,
        "passed": s.passed(),
        "failures": s.failures.iter().take(20).collect::<Vec<_>>(),
    });
    for f in &s.failures {
        eprintln!("campaign: FAILED: {f}");
    }
    let faults_file: Vec<_> = history
        .faults
        .iter()
        .map(|f| json!({"kind": f.kind, "target": f.target, "pid": f.pid, "start": f.start, "end": f.end}))
        .collect();
    let _ = fs::write(dir.join("faults.json"), json!(faults_file).to_string());
    if s.passed() && !opts.keep {
        let _ = fs::remove_dir_all(&dir);
    } else {
        eprintln!("campaign: history kept in {}", dir.display());
        if s.passed() {
            eprintln!("campaign: (kept as asked)");
        }
    }
    Ok(summary)
}

/// Injects one fault and waits for it to be over (the network faults are
/// healed, a paused process resumed, a killed worker replaced).
fn inject(
    kind: &str,
    store: &Store,
    workers: &mut Workers,
    rng: &mut Rng,
    s: &Settings,
) -> Result<Fault, String> {
    let start = mono_ns();
    let mut fault = Fault {
        kind: kind.to_owned(),
        start,
        ..Fault::default()
    };
    let node = |rng: &mut Rng| rng.below(store.nodes.len() as u64) as usize;
    match kind {
        "pause_worker" => {
            // A holder if there is one (its history's last line is a
            // guard in hand), so that the pause outlives a lease it holds.
            let n = workers.running.len();
            let first = rng.below(n as u64) as usize;
            let pick = (0..n)
                .map(|i| (first + i) % n)
                .find(|&i| workers.holding(workers.running[i].0))
                .unwrap_or(first);
            let (index, child) = &workers.running[pick];
            let pid = child.id();
            fault.target = format!("worker {index}");
            fault.pid = Some(pid);
            // A GC pause: longer than the lease, so the lock passes on.
            let pause = rng.between(s.lease * 3 / 2, s.lease * 5 / 2);
            signal(pid, libc::SIGSTOP);
            thread::sleep(pause);
            signal(pid, libc::SIGCONT);
        }
        "kill_worker" => {
            let at = rng.below(workers.running.len() as u64) as usize;
            let (index, mut child) = workers.running.remove(at);
            fault.target = format!("worker {index}");
            fault.pid = Some(child.id());
            fault.start = mono_ns();
            let _ = child.kill();
            let _ = child.wait();
            workers.spawn()?;
        }
        "restart_server" | "restart_node" => {
            let n = node(rng);
            fault.target = format!("node {n}");
            store.nodes[n].stop();
            thread::sleep(rng.between(Duration::from_millis(100), Duration::from_millis(1000)));
            store.nodes[n].restart();
        }
        "pause_server" | "pause_node" => {
            let n = node(rng);
            fault.target = format!("node {n}");
            // Past the command timeout, and sometimes past the lease.
            let pause = rng.between(s.command_timeout * 2, s.lease * 2);
            if let Some(pid) = store.nodes[n].pause() {
                thread::sleep(pause);
                signal(pid, libc::SIGCONT);
            }
        }
        "latency" => {
            fault.target = "proxy".into();
            let latency = rng.between(Duration::from_millis(20), Duration::from_millis(250));
            store.proxy().set_latency(latency);
            thread::sleep(rng.between(Duration::from_millis(500), Duration::from_millis(2000)));
            store.proxy().heal();
        }
        "black_hole" => {
            fault.target = "proxy, replies".into();
            store.proxy().black_hole(Direction::Downstream, true);
            thread::sleep(rng.between(s.lease, s.lease * 2));
            // The held replies now arrive, late, as TCP delivers them.
            store.proxy().heal();
        }
        "reset_connections" => {
            fault.target = "proxy".into();
            store.proxy().reset_all();
        }
        "partition_node" => {
            fault.target = "node 0 (proxy)".into();
            store.proxy().partition(true);
            thread::sleep(rng.between(Duration::from_millis(1000), Duration::from_millis(3000)));
            store.proxy().partition(false);
        }
        other => return Err(format!("unknown fault {other}")),
    }
    fault.end = mono_ns();
    Ok(fault)
}
