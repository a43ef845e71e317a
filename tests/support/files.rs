//! Files of a test's servers: a private temp dir for each (or for a test's
//! own files, such as TLS certificates), and the log a server leaves there,
//! read back (the tail of it) when the test fails.

use std::env;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A new directory, `<name>-<pid>-<n>-<nanos>`, that only its caller uses
/// (mode 0700), under cargo's temp dir for integration tests (so `cargo
/// clean` removes what a killed run leaves), or the system temp dir where
/// cargo sets none (an example such as the bench). The caller removes it.
pub fn private_dir(name: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let root = option_env!("CARGO_TARGET_TMPDIR").map_or_else(env::temp_dir, PathBuf::from);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    loop {
        let unique = format!(
            "{name}-{}-{}-{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let dir = root.join(unique);
        match fs::create_dir_all(&root).and_then(|()| fs::create_dir(&dir)) {
            Ok(()) => {
                use std::os::unix::fs::PermissionsExt;
                let _ = fs::set_permissions(&dir, fs::Permissions::from_mode(0o700));
                return dir;
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => panic!(
                "cannot create a temp dir for {name} in {}: {e}",
                root.display()
            ),
        }
    }
}

/// The last `n` lines of a file, or a note saying why there are none.
pub(super) fn tail(path: &Path, n: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            let mut out = lines[lines.len().saturating_sub(n)..].join("\n");
            out.push('\n');
            out
        }
        Err(e) => format!("({} unreadable: {e})\n", path.display()),
    }
}

/// A file's text from byte `start` on.
pub(super) fn read_from(path: &Path, start: u64) -> String {
    let mut text = Vec::new();
    if let Ok(mut file) = File::open(path) {
        let _ = file
            .seek(SeekFrom::Start(start))
            .and_then(|_| file.read_to_end(&mut text));
    }
    String::from_utf8_lossy(&text).into_owned()
}
