//! The memcached meta protocol, sans I/O: the few commands the store sends
//! (`mg`, `ms`, `md`, `ma`), the replies it reads back, the binary
//! item keys it names locks by, and the record a lock item holds. The
//! connection code only moves these bytes.

use sha2::{Digest, Sha256};

use crate::backend::Token;

/// The longest binary key memcached takes in base64 mode: the encoded key
/// must fit in 250 characters, and 4 × ⌈186 / 3⌉ = 248.
pub(super) const MAX_BINARY_KEY: usize = 186;

/// Every item of the store starts with a NUL byte, which no key of the text
/// protocol can contain: a cache client of another application sharing the
/// server can never name (or overwrite) a lock by accident.
const LOCK_DIRECT: &[u8] = b"\0l";
const LOCK_HASHED: &[u8] = b"\0h";
/// The fencing counter, one per server. No lock item starts like it.
pub(super) const FENCE_KEY: &[u8] = b"\0fence";

/// Memcached reads a TTL above 30 days as a Unix timestamp.
pub(super) const MAX_RELATIVE_TTL: u64 = 30 * 24 * 60 * 60;

/// Where a lock lives in memcached: its binary item key, and the stored key
/// its record must name (for a hashed item key only; a direct one is the
/// stored key itself, so it needs no check).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ItemKey {
    pub(super) binary: Vec<u8>,
    pub(super) hashed: bool,
}

impl ItemKey {
    /// `\0l` + the stored key when that fits, else `\0h` + SHA-256 of it:
    /// the two forms never meet, and two stored keys that hash alike are
    /// still told apart by the full key kept in the record.
    pub(super) fn of(stored: &str) -> Self {
        if LOCK_DIRECT.len() + stored.len() <= MAX_BINARY_KEY {
            let mut binary = Vec::with_capacity(LOCK_DIRECT.len() + stored.len());
            binary.extend_from_slice(LOCK_DIRECT);
            binary.extend_from_slice(stored.as_bytes());
            Self {
                binary,
                hashed: false,
            }
        } else {
            let mut binary = Vec::with_capacity(LOCK_HASHED.len() + 32);
            binary.extend_from_slice(LOCK_HASHED);
            binary.extend_from_slice(&Sha256::digest(stored.as_bytes()));
            Self {
                binary,
                hashed: true,
            }
        }
    }

    /// The full key a record of this item must carry.
    pub(super) fn record_key<'a>(&self, stored: &'a str) -> &'a [u8] {
        if self.hashed { stored.as_bytes() } else { &[] }
    }
}

/// The first 8 bytes of SHA-256, big-endian: the stable, well-mixed number
/// that server selection starts from.
pub(super) fn hash64(bytes: &[u8]) -> u64 {
    let digest = Sha256::digest(bytes);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// splitmix64's finaliser: spreads `hash(key) ^ hash(server)` so that every
/// server's weight for a key looks independent (rendezvous hashing).
pub(super) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The TTL to send for a lease: whole seconds, rounded up, plus one, since
/// memcached's clock ticks once a second and an item set just before a tick
/// with `T1` is gone at the tick. The exact lease end is in the record;
/// the TTL only has to outlive it. Past 30 days memcached would read the
/// number as a timestamp, so such an item gets no TTL (`0`) and goes when
/// a locker takes it over after its recorded end, or when evicted.
pub(super) fn ttl_for(lease_micros: u64) -> u64 {
    let secs = lease_micros.div_ceil(1_000_000).saturating_add(1);
    if secs > MAX_RELATIVE_TTL { 0 } else { secs }
}

/// What a lock item holds: its owner, when it was taken and until when it
/// runs (µs on the lockers' wall clocks), its fencing token (0 while the
/// acquisition is still being confirmed) and, for a hashed item key, the
/// full stored key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Record<'a> {
    pub(super) owner: Token,
    pub(super) acquired: u64,
    pub(super) end: u64,
    pub(super) fence: u64,
    pub(super) key: &'a [u8],
}

const RECORD_TAG: &str = "lock1";

impl Record<'_> {
    pub(super) fn encode(&self) -> Vec<u8> {
        let head = format!(
            "{RECORD_TAG} {} {} {} {}\n",
            self.owner.encode().as_str(),
            self.acquired,
            self.end,
            self.fence
        );
        let mut out = Vec::with_capacity(head.len() + self.key.len());
        out.extend_from_slice(head.as_bytes());
        out.extend_from_slice(self.key);
        out
    }

    /// `None` for anything this store did not write.
    pub(super) fn decode(bytes: &[u8]) -> Option<Record<'_>> {
        let nl = bytes.iter().position(|&b| b == b'\n')?;
        let head = std::str::from_utf8(&bytes[..nl]).ok()?;
        let mut fields = head.split(' ');
        if fields.next()? != RECORD_TAG {
            return None;
        }
        let owner = Token::decode(fields.next()?)?;
        let mut number = || fields.next()?.parse::<u64>().ok();
        let (acquired, end, fence) = (number()?, number()?, number()?);
        if fields.next().is_some() {
            return None;
        }
        Some(Record {
            owner,
            acquired,
            end,
            fence,
            key: &bytes[nl + 1..],
        })
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding, the form memcached's `b` flag decodes.
pub(super) fn base64(out: &mut Vec<u8>, bytes: &[u8]) {
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let sextet = |shift: u32| B64[((n >> shift) & 63) as usize];
        out.push(sextet(18));
        out.push(sextet(12));
        out.push(if chunk.len() > 1 { sextet(6) } else { b'=' });
        out.push(if chunk.len() > 2 { sextet(0) } else { b'=' });
    }
}

/// How a set stores: only if absent, or only over the item of this CAS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SetMode {
    Add,
    Cas(u64),
}

/// Commands sent together, in one write (pipelined), and how many replies
/// they get.
#[derive(Debug, Default)]
pub(super) struct Batch {
    pub(super) bytes: Vec<u8>,
    pub(super) replies: usize,
}

impl Batch {
    fn command(&mut self, verb: &str, key: &[u8]) {
        self.bytes.extend_from_slice(verb.as_bytes());
        self.bytes.push(b' ');
        base64(&mut self.bytes, key);
        self.replies += 1;
    }

    /// `mg <key> b v c`: the value and its CAS, or `EN`.
    pub(super) fn get(&mut self, key: &[u8]) -> &mut Self {
        self.command("mg", key);
        self.bytes.extend_from_slice(b" b v c\r\n");
        self
    }

    /// `ms <key> <len> b T<ttl> (ME | C<cas>) c`: `HD c<cas>` when stored.
    pub(super) fn set(&mut self, key: &[u8], value: &[u8], ttl: u64, mode: SetMode) -> &mut Self {
        self.command("ms", key);
        let mode = match mode {
            SetMode::Add => "ME".to_owned(),
            SetMode::Cas(cas) => format!("C{cas}"),
        };
        let line = format!(" {} b T{ttl} {mode} c\r\n", value.len());
        self.bytes.extend_from_slice(line.as_bytes());
        self.bytes.extend_from_slice(value);
        self.bytes.extend_from_slice(b"\r\n");
        self
    }

    /// `md <key> b C<cas>`: `HD` when deleted.
    pub(super) fn delete(&mut self, key: &[u8], cas: u64) -> &mut Self {
        self.command("md", key);
        self.bytes
            .extend_from_slice(format!(" b C{cas}\r\n").as_bytes());
        self
    }

    /// `ma <key> b N0 J<initial> v`: counts the item up by one and answers
    /// its new value; a missing item is created, never to expire, holding
    /// `initial` (and `initial` is the answer).
    pub(super) fn count(&mut self, key: &[u8], initial: u64) -> &mut Self {
        self.command("ma", key);
        self.bytes
            .extend_from_slice(format!(" b N0 J{initial} v\r\n").as_bytes());
        self
    }
}

/// One reply of the meta protocol, as far as the store reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Reply {
    /// `HD`: done; `c<cas>` when asked for.
    Done { cas: Option<u64> },
    /// `VA <len>`: a value, and its CAS when asked for.
    Value { data: Vec<u8>, cas: Option<u64> },
    /// `EN`: no such item.
    Miss,
    /// `NS`: not stored (an add found the item there).
    NotStored,
    /// `EX`: the CAS did not match.
    Exists,
    /// `NF`: not found (a CAS command on a missing item).
    NotFound,
    /// `MN`.
    Noop,
}

/// The server answered something the store cannot use (`SERVER_ERROR`, a
/// malformed line): the connection is no longer trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct BadReply(pub(super) String);

/// Reply lines are short (a code and a few flags).
const MAX_LINE: usize = 1024;
/// Memcached's default item size limit: no value the store reads is longer.
const MAX_VALUE: usize = 1024 * 1024;

/// Parses one reply from the front of `buf`: `Ok(None)` if more bytes are
/// needed, else the reply and how many bytes it took.
pub(super) fn parse(buf: &[u8]) -> Result<Option<(Reply, usize)>, BadReply> {
    let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() > MAX_LINE {
            Err(BadReply(format!(
                "a reply line longer than {MAX_LINE} bytes: {}",
                shown(&buf[..64])
            )))
        } else {
            Ok(None)
        };
    };
    let line = &buf[..eol];
    let after = eol + 2;
    let text = std::str::from_utf8(line).map_err(|_| BadReply(shown(line)))?;
    let mut words = text.split(' ');
    let code = words.next().unwrap_or("");
    let flags: Vec<&str> = words.collect();
    let cas = |flags: &[&str]| -> Result<Option<u64>, BadReply> {
        for f in flags {
            if let Some(n) = f.strip_prefix('c') {
                return n
                    .parse()
                    .map(Some)
                    .map_err(|_| BadReply(format!("a bad CAS in `{text}`")));
            }
        }
        Ok(None)
    };
    let simple = |reply: Reply| Ok(Some((reply, after)));
    match code {
        "HD" => simple(Reply::Done { cas: cas(&flags)? }),
        "EN" => simple(Reply::Miss),
        "NS" => simple(Reply::NotStored),
        "EX" => simple(Reply::Exists),
        "NF" => simple(Reply::NotFound),
        "MN" => simple(Reply::Noop),
        "VA" => {
            let len: usize = flags
                .first()
                .and_then(|n| n.parse().ok())
                .filter(|&n| n <= MAX_VALUE)
                .ok_or_else(|| BadReply(format!("a bad length in `{text}`")))?;
            let end = after
                .checked_add(len)
                .and_then(|e| e.checked_add(2))
                .ok_or_else(|| BadReply(format!("a bad length in `{text}`")))?;
            if buf.len() < end {
                return Ok(None);
            }
            if &buf[end - 2..end] != b"\r\n" {
                return Err(BadReply(format!(
                    "a value of the wrong length after `{text}`"
                )));
            }
            let cas = cas(&flags[1..])?;
            Ok(Some((
                Reply::Value {
                    data: buf[after..end - 2].to_vec(),
                    cas,
                },
                end,
            )))
        }
        _ => Err(BadReply(shown(line))),
    }
}

/// A reply line as text for a message, control bytes escaped.
fn shown(bytes: &[u8]) -> String {
    let text: String = String::from_utf8_lossy(bytes).escape_debug().collect();
    format!("`{text}`")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(bytes: &[u8]) -> String {
        let mut out = Vec::new();
        base64(&mut out, bytes);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn base64_is_the_standard_padded_form() {
        assert_eq!(b64(b""), "");
        assert_eq!(b64(b"f"), "Zg==");
        assert_eq!(b64(b"fo"), "Zm8=");
        assert_eq!(b64(b"foo"), "Zm9v");
        assert_eq!(b64(b"k\0 hello\n"), "awAgaGVsbG8K");
        assert_eq!(b64(&[0xfb, 0xff]), "+/8=");
        let longest = vec![b'x'; MAX_BINARY_KEY];
        assert_eq!(b64(&longest).len(), 248, "within memcached's 250");
    }

    #[test]
    fn item_keys_are_direct_when_short_and_hashed_when_long() {
        let short = ItemKey::of("lock:a b\n\0");
        assert_eq!(short.binary, b"\0llock:a b\n\0");
        assert!(!short.hashed);
        assert_eq!(short.record_key("lock:a b\n\0"), b"");

        let at_limit = "x".repeat(MAX_BINARY_KEY - 2);
        assert!(!ItemKey::of(&at_limit).hashed);
        let over = "x".repeat(MAX_BINARY_KEY - 1);
        let long = ItemKey::of(&over);
        assert!(long.hashed);
        assert_eq!(long.binary.len(), 34);
        assert_eq!(long.record_key(&over), over.as_bytes());
        assert_ne!(ItemKey::of(&"y".repeat(65536)), long);
        // No lock item is the fencing counter, whatever the key.
        assert_ne!(ItemKey::of("ence").binary, FENCE_KEY);
    }

    #[test]
    fn ttls_outlive_the_lease_and_never_read_as_timestamps() {
        assert_eq!(ttl_for(1), 2);
        assert_eq!(ttl_for(300_000), 2);
        assert_eq!(ttl_for(1_000_000), 2);
        assert_eq!(ttl_for(1_000_001), 3);
        assert_eq!(ttl_for(30_000_000), 31);
        assert_eq!(
            ttl_for((MAX_RELATIVE_TTL - 1) * 1_000_000),
            MAX_RELATIVE_TTL
        );
        assert_eq!(
            ttl_for(MAX_RELATIVE_TTL * 1_000_000),
            0,
            "no TTL past 30 days"
        );
        assert_eq!(ttl_for(u64::MAX), 0);
    }

    #[test]
    fn records_read_back_and_refuse_anything_else() {
        let owner = Token::new();
        let rec = Record {
            owner,
            acquired: 1,
            end: 2,
            fence: 3,
            key: b"lock:\n\0 key",
        };
        let bytes = rec.encode();
        assert_eq!(Record::decode(&bytes), Some(rec));
        for bad in [
            &b""[..],
            b"lock1",
            b"lock1 x 1 2 3\n",
            b"lock2 AAAAAAAAAAAAAAAAAAAAAA 1 2 3\n",
            b"lock1 AAAAAAAAAAAAAAAAAAAAAA 1 2\n",
            b"lock1 AAAAAAAAAAAAAAAAAAAAAA 1 2 3 4\n",
            b"lock1 AAAAAAAAAAAAAAAAAAAAAA 1 -2 3\n",
        ] {
            assert_eq!(
                Record::decode(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn requests_are_the_meta_commands() {
        let mut req = Batch::default();
        req.set(b"\0lk", b"v", 2, SetMode::Add)
            .count(FENCE_KEY, 7)
            .get(b"\0lk")
            .set(b"\0lk", b"w", 3, SetMode::Cas(9))
            .delete(b"\0lk", 9);
        assert_eq!(req.replies, 5);
        assert_eq!(
            String::from_utf8(req.bytes).unwrap(),
            "ms AGxr 1 b T2 ME c\r\nv\r\n\
             ma AGZlbmNl b N0 J7 v\r\n\
             mg AGxr b v c\r\n\
             ms AGxr 1 b T3 C9 c\r\nw\r\n\
             md AGxr b C9\r\n"
        );
    }

    #[test]
    fn replies_parse_whole_or_wait_for_more() {
        let all =
            b"HD c12\r\nNS c0\r\nVA 3 c5\r\nabc\r\nVA 2\r\n42\r\nEN\r\nEX\r\nNF\r\nMN\r\nHD\r\n";
        let mut at = 0;
        let mut got = Vec::new();
        while at < all.len() {
            // Fed one byte more at a time, as a slow socket would.
            let mut end = at + 1;
            loop {
                match parse(&all[at..end]).unwrap() {
                    Some((reply, used)) => {
                        got.push(reply);
                        at += used;
                        break;
                    }
                    None => end += 1,
                }
            }
        }
        assert_eq!(
            got,
            [
                Reply::Done { cas: Some(12) },
                Reply::NotStored,
                Reply::Value {
                    data: b"abc".to_vec(),
                    cas: Some(5)
                },
                Reply::Value {
                    data: b"42".to_vec(),
                    cas: None
                },
                Reply::Miss,
                Reply::Exists,
                Reply::NotFound,
                Reply::Noop,
                Reply::Done { cas: None },
            ]
        );
    }

    #[test]
    fn errors_and_garbage_are_bad_replies() {
        for bad in [
            &b"SERVER_ERROR out of memory storing object\r\n"[..],
            b"CLIENT_ERROR bad command line format\r\n",
            b"ERROR\r\n",
            b"VA x\r\n",
            b"VA 1\r\nab\r\n",
            b"HD cx\r\n",
            b"\xff\xfe\r\n",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        assert!(parse(&[b'a'; MAX_LINE + 1]).is_err());
        assert!(parse(b"VA 18446744073709551615\r\n").is_err());
        assert!(
            parse(b"VA 1000000000\r\n").is_err(),
            "no lock record is that long"
        );
    }

    #[test]
    fn rendezvous_weights_are_stable() {
        // Pinned: a change here moves every key to another server.
        assert_eq!(hash64(b""), 0xe3b0_c442_98fc_1c14);
        assert_eq!(mix(0), 0);
        assert_eq!(mix(1), 0x5692_161d_100b_05e5);
    }
}
