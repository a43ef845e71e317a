//! The system calls std does not offer: open-file-description (OFD) byte
//! locks, which mark a holder alive, and the type of the file system the
//! directory is on. Linux only; elsewhere every call says it is unsupported,
//! and the store refuses to open (see [`supported`]).

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

/// Why this system cannot run the store, if it cannot.
pub(super) fn supported() -> Result<(), &'static str> {
    if cfg!(target_os = "linux") {
        Ok(())
    } else {
        Err(UNSUPPORTED)
    }
}

const UNSUPPORTED: &str =
    "the file store needs Linux: it marks holders alive with open-file-description locks";

/// Options to open (and maybe create) a lock file: read and write, never
/// through a symbolic link planted in the directory.
pub(super) fn options(create: bool) -> OpenOptions {
    let mut o = OpenOptions::new();
    o.read(true).write(true).create(create);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.custom_flags(libc::O_NOFOLLOW);
    }
    o
}

/// Whether `path` still names the file `file` has open: false once a
/// clean-up or a release unlinked it (and maybe another file took its name).
pub(super) fn still_named(file: &File, path: &Path) -> io::Result<bool> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let open = file.metadata()?;
        match std::fs::symlink_metadata(path) {
            Ok(named) => Ok(named.dev() == open.dev() && named.ino() == open.ino()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (file, path);
        Ok(true)
    }
}

#[cfg(target_os = "linux")]
mod imp {
    use std::fs::File;
    use std::io;
    use std::os::fd::AsRawFd;

    fn range(kind: libc::c_int, byte: u64) -> io::Result<libc::flock> {
        let start = libc::off_t::try_from(byte).map_err(|_| {
            io::Error::other(format!("byte {byte} is past the largest lock offset"))
        })?;
        // SAFETY: `flock` is plain data; all-zero is a valid value (and
        // `l_pid` must be 0 for OFD locks).
        let mut lock: libc::flock = unsafe { std::mem::zeroed() };
        lock.l_type = kind as libc::c_short;
        lock.l_whence = libc::SEEK_SET as libc::c_short;
        lock.l_start = start;
        lock.l_len = 1;
        Ok(lock)
    }

    fn fcntl(file: &File, cmd: libc::c_int, lock: &mut libc::flock) -> io::Result<()> {
        loop {
            // SAFETY: the fd is open for the call's duration and `lock`
            // is a valid, writable `flock`.
            let rc = unsafe { libc::fcntl(file.as_raw_fd(), cmd, lock as *mut libc::flock) };
            if rc != -1 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    pub(super) fn hold(file: &File, byte: u64) -> io::Result<bool> {
        let mut lock = range(libc::F_WRLCK, byte)?;
        match fcntl(file, libc::F_OFD_SETLK, &mut lock) {
            Ok(()) => Ok(true),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EACCES)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub(super) fn is_held(file: &File, byte: u64) -> io::Result<bool> {
        let mut lock = range(libc::F_WRLCK, byte)?;
        fcntl(file, libc::F_OFD_GETLK, &mut lock)?;
        // A watcher's read lock is not a holder.
        Ok(lock.l_type == libc::F_WRLCK as libc::c_short)
    }

    pub(super) fn wait_free(file: &File, byte: u64) -> io::Result<()> {
        let mut lock = range(libc::F_RDLCK, byte)?;
        fcntl(file, libc::F_OFD_SETLKW, &mut lock)?;
        let mut unlock = range(libc::F_UNLCK, byte)?;
        fcntl(file, libc::F_OFD_SETLK, &mut unlock)
    }

    /// File systems whose locks do not work between hosts, or not at all:
    /// NFS, SMB/CIFS (both dialects), Coda, AFS (two magics), Ceph and 9p.
    const REMOTE: &[(u32, &str)] = &[
        (0x6969, "NFS"),
        (0x517B, "SMB"),
        (0xFF53_4D42, "CIFS"),
        (0xFE53_4D42, "SMB2"),
        (0x7375_7245, "Coda"),
        (0x5346_414F, "AFS"),
        (0x6B41_4653, "AFS"),
        (0x00C3_6400, "Ceph"),
        (0x0102_1997, "9p"),
    ];

    pub(super) fn remote(path: &std::path::Path) -> io::Result<Option<&'static str>> {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::other("the path has a NUL byte"))?;
        // SAFETY: all-zero is a valid `statfs`; `c` is a NUL-terminated path
        // and `st` is writable for the call.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // `f_type`'s width and sign differ between targets; magics are 32 bits.
        #[allow(clippy::unnecessary_cast)]
        let magic = (st.f_type as i64 as u64 & 0xFFFF_FFFF) as u32;
        Ok(REMOTE.iter().find(|(m, _)| *m == magic).map(|(_, n)| *n))
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use std::fs::File;
    use std::io;

    fn unsupported() -> io::Error {
        io::Error::new(io::ErrorKind::Unsupported, super::UNSUPPORTED)
    }

    pub(super) fn hold(_: &File, _: u64) -> io::Result<bool> {
        Err(unsupported())
    }

    pub(super) fn is_held(_: &File, _: u64) -> io::Result<bool> {
        Err(unsupported())
    }

    pub(super) fn wait_free(_: &File, _: u64) -> io::Result<()> {
        Err(unsupported())
    }

    pub(super) fn remote(_: &std::path::Path) -> io::Result<Option<&'static str>> {
        Ok(None)
    }
}

/// Marks a holder alive: a write lock on byte `byte` (its fencing token) of
/// the open file description `file`, which the kernel drops when the last
/// descriptor of it closes, whether the process released or died. False if
/// another open file holds it.
pub(super) fn hold(file: &File, byte: u64) -> io::Result<bool> {
    imp::hold(file, byte)
}

/// Whether another open file description holds byte `byte` (a live holder).
pub(super) fn is_held(file: &File, byte: u64) -> io::Result<bool> {
    imp::is_held(file, byte)
}

/// Blocks in the kernel until nobody holds byte `byte`; takes and drops a
/// read lock on it to know.
pub(super) fn wait_free(file: &File, byte: u64) -> io::Result<()> {
    imp::wait_free(file, byte)
}

/// The name of the network file system `path` is on, if it is on one.
pub(super) fn remote(path: &Path) -> io::Result<Option<&'static str>> {
    imp::remote(path)
}
