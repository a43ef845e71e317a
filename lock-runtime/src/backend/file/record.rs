//! What a key file holds while its key is held: one header line, then the
//! key's exact bytes.
//!
//! ```text
//! lock1 <owner token> <boot id> <acquired µs> <lease end µs> <fencing token> <key bytes>\n<key>
//! \n<owner token> <pid> <label bytes or -> <function bytes or ->\n<label><function>
//! ```
//!
//! Read and written only under the file's row lock. The second part names
//! the holder for the admin API; a reader of the first version ignores it
//! (as it ignores any bytes after the key), and it counts only when it
//! names the record's owner, so a tail left by an earlier record never
//! passes for it. A file that does not read as a record (empty, or torn by
//! a power loss, when every holder died anyway) holds nothing.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};

const MAGIC: &str = "lock1";

/// One holder's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Record {
    pub(super) owner: String,
    pub(super) epoch: String,
    /// µs on the shared clock.
    pub(super) since: i64,
    /// µs on the shared clock.
    pub(super) until: i64,
    pub(super) fence: u64,
    pub(super) key: String,
    /// Who holds it, when the holder said.
    pub(super) holder: Option<Holder>,
}

/// The holder's process and what it said about the lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Holder {
    pub(super) pid: u32,
    pub(super) label: Option<String>,
    pub(super) function: Option<String>,
}

impl Record {
    /// The bytes of the record.
    fn encode(&self) -> Vec<u8> {
        let mut out = format!(
            "{MAGIC} {} {} {} {} {} {}\n",
            self.owner,
            self.epoch,
            self.since,
            self.until,
            self.fence,
            self.key.len()
        )
        .into_bytes();
        out.extend_from_slice(self.key.as_bytes());
        if let Some(h) = &self.holder {
            let len =
                |s: &Option<String>| s.as_ref().map_or("-".to_owned(), |s| s.len().to_string());
            out.extend_from_slice(
                format!(
                    "\n{} {} {} {}\n",
                    self.owner,
                    h.pid,
                    len(&h.label),
                    len(&h.function)
                )
                .as_bytes(),
            );
            for s in [&h.label, &h.function].into_iter().flatten() {
                out.extend_from_slice(s.as_bytes());
            }
        }
        out
    }

    /// The holder part after the key, if it is this record's.
    fn holder(owner: &str, tail: &[u8]) -> Option<Holder> {
        let tail = tail.strip_prefix(b"\n")?;
        let newline = tail.iter().take(128).position(|&b| b == b'\n')?;
        let header = std::str::from_utf8(&tail[..newline]).ok()?;
        let mut fields = header.split(' ');
        if fields.next()? != owner {
            return None;
        }
        let pid = fields.next()?.parse().ok()?;
        let len = |f: Option<&str>| -> Option<Option<usize>> {
            match f? {
                "-" => Some(None),
                n => n.parse().ok().map(Some),
            }
        };
        let (label_len, function_len) = (len(fields.next())?, len(fields.next())?);
        let mut rest = &tail[newline + 1..];
        let mut take = |n: Option<usize>| -> Option<Option<String>> {
            let Some(n) = n else { return Some(None) };
            let (s, r) = (rest.get(..n)?, rest.get(n..)?);
            rest = r;
            String::from_utf8(s.to_vec()).ok().map(Some)
        };
        let label = take(label_len)?;
        let function = take(function_len)?;
        Some(Holder {
            pid,
            label,
            function,
        })
    }

    /// The record at the start of `bytes`, if there is one.
    fn decode(bytes: &[u8]) -> Option<Self> {
        let newline = bytes.iter().take(256).position(|&b| b == b'\n')?;
        let header = std::str::from_utf8(&bytes[..newline]).ok()?;
        let mut fields = header.split(' ');
        if fields.next()? != MAGIC {
            return None;
        }
        let owner = fields.next()?.to_owned();
        let epoch = fields.next()?.to_owned();
        let since = fields.next()?.parse().ok()?;
        let until = fields.next()?.parse().ok()?;
        let fence = fields.next()?.parse().ok()?;
        let len: usize = fields.next()?.parse().ok()?;
        if fields.next().is_some() {
            return None;
        }
        let start = newline + 1;
        let end = start.checked_add(len)?;
        let key = bytes.get(start..end)?;
        let holder = Self::holder(&owner, bytes.get(end..).unwrap_or_default());
        Some(Self {
            owner,
            epoch,
            since,
            until,
            fence,
            key: String::from_utf8(key.to_vec()).ok()?,
            holder,
        })
    }
}

/// The record in `file`, if any.
pub(super) fn read(mut file: &File) -> io::Result<Option<Record>> {
    let mut bytes = Vec::new();
    file.seek(SeekFrom::Start(0))?;
    file.read_to_end(&mut bytes)?;
    Ok(Record::decode(&bytes))
}

/// Replaces the record in `file`.
pub(super) fn write(mut file: &File, record: &Record) -> io::Result<()> {
    let bytes = record.encode();
    file.seek(SeekFrom::Start(0))?;
    file.write_all(&bytes)?;
    // A shorter record than the last one leaves its tail; the header's
    // length already says where this one ends, the truncation only tidies.
    file.set_len(bytes.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(key: &str) -> Record {
        Record {
            owner: "AAAAAAAAAAAAAAAAAAAAAB".into(),
            epoch: "8d4c5a6e-boot".into(),
            since: 10,
            until: -5,
            fence: u64::MAX,
            key: key.into(),
            holder: None,
        }
    }

    #[test]
    fn the_holder_part_round_trips_and_a_stale_one_is_ignored() {
        let mut r = sample("k\n1 2 3");
        r.holder = Some(Holder {
            pid: 42,
            label: Some("nightly \n-".into()),
            function: None,
        });
        let bytes = r.encode();
        assert_eq!(Record::decode(&bytes), Some(r.clone()));
        // A reader of the first version sees the same lock.
        let first = Record {
            holder: None,
            ..r.clone()
        };
        assert_eq!(Record::decode(&first.encode()).unwrap().key, r.key);
        // A tail left by another owner's record names nobody.
        let mut other = first.clone();
        other.owner = "BBBBBBBBBBBBBBBBBBBBBB".into();
        let mut stale = other.encode();
        stale.extend_from_slice(&bytes[first.encode().len()..]);
        assert_eq!(Record::decode(&stale).unwrap().holder, None);
    }

    #[test]
    fn records_round_trip_and_garbage_is_no_record() {
        for key in ["k", "", "line\nbreak lock1 x", "nul\0", &"é".repeat(40_000)] {
            let r = sample(key);
            let mut bytes = r.encode();
            assert_eq!(Record::decode(&bytes), Some(r.clone()));
            bytes.extend_from_slice(b"left over from a longer record");
            assert_eq!(Record::decode(&bytes), Some(r));
        }
        let whole = sample("abc").encode();
        for cut in 0..whole.len() {
            assert_eq!(Record::decode(&whole[..cut]), None, "torn at {cut}");
        }
        for bad in [
            &b""[..],
            b"\n",
            b"lock2 a b 1 2 3 0\n",
            b"lock1 a b x 2 3 0\n",
            b"lock1 a b 1 2 3 0 9\n",
        ] {
            assert_eq!(Record::decode(bad), None, "{bad:?}");
        }
    }
}
