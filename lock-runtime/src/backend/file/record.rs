//! What a key file holds while its key is held: one header line, then the
//! key's exact bytes.
//!
//! ```text
//! lock1 <owner token> <boot id> <acquired µs> <lease end µs> <fencing token> <key bytes>\n<key>
//! ```
//!
//! Read and written only under the file's row lock. Bytes after the key
//! (left by a longer record) are ignored; a file that does not read as a
//! record (empty, or torn by a power loss, when every holder died anyway)
//! holds nothing.

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
        out
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
        let key = bytes.get(start..start.checked_add(len)?)?;
        Some(Self {
            owner,
            epoch,
            since,
            until,
            fence,
            key: String::from_utf8(key.to_vec()).ok()?,
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
        }
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
