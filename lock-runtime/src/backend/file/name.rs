//! Stored keys to file names: `k_` + a readable stem + `.` + the SHA-256 of
//! the key's exact bytes in hex. The stem keeps only `[A-Za-z0-9_-]` of the
//! key's first characters, so no name holds `/`, `.` runs, NUL or a newline;
//! the hash keeps different keys apart (the file also records its key, and
//! a mismatch is an error rather than a shared lock); every name is at most
//! 2 + 48 + 1 + 64 = 115 bytes, under any file system's 255. The store's
//! own files (`fence`) do not start with `k_`, so no key names them.

use sha2::{Digest, Sha256};

/// What every key file's name starts with, and no other file's.
pub(super) const KEY_FILE: &str = "k_";

/// The store's fencing counter: not a key file's name.
pub(super) const FENCE_FILE: &str = "fence";

/// Characters of the key kept (sanitized) in the name, for people reading
/// the directory.
const STEM: usize = 48;

/// The file name of a stored key.
pub(super) fn of(key: &str) -> String {
    let mut name = String::with_capacity(KEY_FILE.len() + STEM + 65);
    name.push_str(KEY_FILE);
    for c in key.chars().take(STEM) {
        name.push(if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
            c
        } else {
            '_'
        });
    }
    name.push('.');
    for b in Sha256::digest(key.as_bytes()) {
        name.push(char::from(HEX[usize::from(b >> 4)]));
        name.push(char::from(HEX[usize::from(b & 15)]));
    }
    name
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Whether a directory entry is a key file (anything else there is left
/// alone by listing and clean-up).
pub(super) fn is_key_file(name: &std::ffi::OsStr) -> bool {
    name.to_str().is_some_and(|n| n.starts_with(KEY_FILE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_safe_short_and_distinct() {
        let long = "x/".repeat(32 * 1024);
        let keys = [
            "",
            "a",
            "A",
            "a/b",
            "a_b",
            "a.b",
            "..",
            "../../etc/passwd",
            "/",
            "nul\0",
            "nul",
            "line\nbreak",
            "fence",
            "k_fence",
            "ключ",
            "%%:fence",
            &long,
        ];
        let mut seen = std::collections::HashSet::new();
        for k in keys {
            let n = of(k);
            assert!(n.len() <= 115, "{k:?}: {} bytes", n.len());
            assert!(n.starts_with(KEY_FILE));
            assert!(
                n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.'),
                "{n}"
            );
            assert_eq!(n.matches('.').count(), 1, "{n}");
            assert!(seen.insert(n), "{k:?} collides");
        }
        assert_ne!(of("fence"), FENCE_FILE);
        assert!(!is_key_file(std::ffi::OsStr::new(FENCE_FILE)));
        assert_eq!(
            of("abc"),
            "k_abc.ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
