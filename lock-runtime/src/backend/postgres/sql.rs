//! The store's SQL: names derived from the `table` setting, the schema, and
//! the five statements, each one atomic on the server and timed by the
//! database's own clock (`clock_timestamp()`), never the client's.

/// The longest `table` accepted: the fencing sequence `<table>_fence` must
/// stay within Postgres's 63-byte identifiers.
const MAX_TABLE: usize = 57;

/// The names one alias uses, checked, and its SQL built from them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Names {
    pub(super) table: String,
    pub(super) sequence: String,
    /// The LISTEN/NOTIFY channel of the alias: one per table and prefix.
    pub(super) channel: String,
}

impl Names {
    /// The names for `table` (a plain identifier) and an alias's `prefix`.
    pub(super) fn new(table: &str, prefix: &str) -> Result<Self, String> {
        check_identifier(table)?;
        // The hash keeps channels of long table names apart after the cut.
        let hash = fnv1a(format!("{table}\0{prefix}").as_bytes());
        let head = &table[..table.len().min(63 - 17)];
        Ok(Self {
            table: table.to_owned(),
            sequence: format!("{table}_fence"),
            channel: format!("{head}_{hash:016x}"),
        })
    }

    pub(super) fn schema(&self) -> [String; 5] {
        let (t, s) = (&self.table, &self.sequence);
        [
            format!("CREATE SEQUENCE IF NOT EXISTS \"{s}\""),
            format!(
                "CREATE TABLE IF NOT EXISTS \"{t}\" (\n    \
                 key         bytea PRIMARY KEY,\n    \
                 owner       text NOT NULL,\n    \
                 fence       bigint NOT NULL,\n    \
                 acquired_at timestamptz NOT NULL,\n    \
                 lease_end   timestamptz NOT NULL,\n    \
                 label       text,\n    \
                 function    text\n)"
            ),
            // A table made before holders were recorded.
            format!(
                "ALTER TABLE \"{t}\" ADD COLUMN IF NOT EXISTS label text, \
                 ADD COLUMN IF NOT EXISTS function text"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS \"{t}_procs\" (\n    \
                 tag     text PRIMARY KEY,\n    \
                 host    text,\n    \
                 pid     bigint,\n    \
                 written timestamptz NOT NULL\n)"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS \"{t}_audit\" (\n    \
                 id         bigserial PRIMARY KEY,\n    \
                 key        bytea NOT NULL,\n    \
                 at         timestamptz NOT NULL,\n    \
                 by_host    text,\n    \
                 by_pid     bigint,\n    \
                 by_user    text,\n    \
                 reason     text NOT NULL,\n    \
                 removed    boolean NOT NULL,\n    \
                 r_host     text,\n    \
                 r_pid      bigint,\n    \
                 r_label    text,\n    \
                 r_function text,\n    \
                 r_fencing  bigint,\n    \
                 r_held_ms  bigint\n)"
            ),
        ]
    }

    /// Whether everything [`schema`](Self::schema) makes exists: the table
    /// (with its `label` column), the sequence, the process and audit
    /// tables, each as text or NULL.
    pub(super) fn exists(&self) -> String {
        let t = &self.table;
        format!(
            "SELECT to_regclass('\"{t}\"')::text, to_regclass('\"{}\"')::text, \
                    to_regclass('\"{t}_procs\"')::text, to_regclass('\"{t}_audit\"')::text, \
                    (SELECT attname::text FROM pg_attribute \
                      WHERE attrelid = to_regclass('\"{t}\"') AND attname = 'function' AND NOT attisdropped)",
            self.sequence
        )
    }

    /// `$1` the process's tag, `$2` host, `$3` pid: its record, written
    /// once per process (and again daily while it locks).
    pub(super) fn write_proc(&self) -> String {
        format!(
            "INSERT INTO \"{}_procs\" (tag, host, pid, written) \
             VALUES ($1::text, $2::text, $3::bigint, clock_timestamp()) \
             ON CONFLICT (tag) DO UPDATE \
               SET host = excluded.host, pid = excluded.pid, written = excluded.written",
            self.table
        )
    }

    /// What the admin API reads of a held row `l` joined with its process
    /// `p`: key, fence, held ms, lease left ms, label, function, host, pid.
    fn held_columns() -> &'static str {
        "l.key, l.fence, \
         GREATEST(floor(extract(epoch FROM clock_timestamp() - l.acquired_at) * 1000), 0)::bigint, \
         GREATEST(ceil(extract(epoch FROM l.lease_end - clock_timestamp()) * 1000), 0)::bigint, \
         l.label, l.function, p.host, p.pid"
    }

    /// `$1` a stored-key prefix, `$2` its length, `$3` the cursor (the last
    /// key given, or NULL), `$4` limit: a range of the primary key.
    pub(super) fn page(&self) -> String {
        let t = &self.table;
        format!(
            "SELECT {} FROM \"{t}\" l LEFT JOIN \"{t}_procs\" p ON p.tag = substr(l.owner, 1, 11) \
             WHERE l.key >= $1::bytea AND substring(l.key FROM 1 FOR $2::int) = $1::bytea \
               AND ($3::bytea IS NULL OR l.key > $3::bytea) \
               AND l.owner <> '' AND l.lease_end > clock_timestamp() \
             ORDER BY l.key LIMIT $4::bigint",
            Self::held_columns()
        )
    }

    /// `$1` key: the row if held.
    pub(super) fn show(&self) -> String {
        let t = &self.table;
        format!(
            "SELECT {} FROM \"{t}\" l LEFT JOIN \"{t}_procs\" p ON p.tag = substr(l.owner, 1, 11) \
             WHERE l.key = $1::bytea AND l.owner <> '' AND l.lease_end > clock_timestamp()",
            Self::held_columns()
        )
    }

    /// `$1` key, `$2` unix ms, `$3` by host, `$4` by pid, `$5` by user, `$6`
    /// reason, `$7` channel, `$8` audit rows kept. Frees the row whoever
    /// holds it, as a release does (ownerless and ended, the fence's
    /// sequence untouched, waiters notified), and appends the audit row,
    /// trimming the table; answers the audit row's `removed` and what it
    /// says of the holder removed (host, pid, label, function, fence, held
    /// ms).
    pub(super) fn force(&self) -> String {
        let t = &self.table;
        format!(
            "WITH old AS ( \
               SELECT key, owner, fence, acquired_at, label, function FROM \"{t}\" \
               WHERE key = $1::bytea AND owner <> '' AND lease_end > clock_timestamp() FOR UPDATE), \
             gone AS ( \
               UPDATE \"{t}\" AS l SET owner = '', lease_end = LEAST(l.lease_end, clock_timestamp()) \
               FROM old WHERE l.key = old.key RETURNING l.key), \
             entry AS ( \
               INSERT INTO \"{t}_audit\" (key, at, by_host, by_pid, by_user, reason, removed, \
                                            r_host, r_pid, r_label, r_function, r_fencing, r_held_ms) \
               SELECT $1::bytea, to_timestamp($2::bigint / 1000.0), $3::text, $4::bigint, $5::text, \
                      $6::text, old.key IS NOT NULL, p.host, p.pid, old.label, old.function, old.fence, \
                      GREATEST(floor(extract(epoch FROM clock_timestamp() - old.acquired_at) * 1000), 0)::bigint \
               FROM (SELECT 1) one LEFT JOIN old ON true \
                    LEFT JOIN \"{t}_procs\" p ON p.tag = substr(old.owner, 1, 11) \
               RETURNING id, removed, r_host, r_pid, r_label, r_function, r_fencing, r_held_ms), \
             trimmed AS ( \
               DELETE FROM \"{t}_audit\" WHERE id <= (SELECT id FROM entry) - $8::bigint) \
             SELECT removed, r_host, r_pid, r_label, r_function, r_fencing, r_held_ms, \
                    CASE WHEN (SELECT count(*) FROM gone) > 0 THEN \
                      pg_notify($7::text, CASE WHEN octet_length($1::bytea) < {MAX_NAMED_KEY} \
                                          THEN encode($1::bytea, 'hex') ELSE '' END)::text END \
             FROM entry"
        )
    }

    /// `$1` a stored-key prefix, `$2` its length, `$3` limit: the newest
    /// audit rows under it.
    pub(super) fn audit_log(&self) -> String {
        format!(
            "SELECT key, (extract(epoch FROM at) * 1000)::bigint, by_host, by_pid, by_user, reason, \
                    removed, r_host, r_pid, r_label, r_function, r_fencing, r_held_ms \
             FROM \"{}_audit\" WHERE substring(key FROM 1 FOR $2::int) = $1::bytea \
             ORDER BY id DESC LIMIT $3::bigint",
            self.table
        )
    }

    /// Process records that no row names and that were not written for two
    /// days (a live process writes its own daily).
    pub(super) fn clean_procs(&self) -> String {
        let t = &self.table;
        format!(
            "DELETE FROM \"{t}_procs\" WHERE written < clock_timestamp() - interval '2 days' \
             AND tag NOT IN (SELECT substr(owner, 1, 11) FROM \"{t}\" WHERE owner <> '')"
        )
    }

    /// `$1` key, `$2` owner, `$3` lease ms, `$4` steal ms or NULL, `$5`
    /// label, `$6` function (NULL for none). Answers
    /// the fence when it won; else how long until the holder's lease ends
    /// (or its steal age comes), as the statement's snapshot shows it: NULL
    /// when the holder committed after the snapshot began.
    ///
    /// A key's row outlives its releases (see [`Names::release`]), so every
    /// grant but a key's first takes over the row, and draws its fence in
    /// the `DO UPDATE`, under the row's lock: grants of one key so take
    /// their fences in the order they hold it. (A fence drawn for the
    /// `INSERT` is drawn before the row exists; two first grants racing for
    /// a key cannot both insert, and the loser's number goes unused.)
    pub(super) fn acquire(&self) -> String {
        let (t, s) = (&self.table, &self.sequence);
        format!(
            "WITH now AS MATERIALIZED (SELECT clock_timestamp() AS t), \
             won AS ( \
               INSERT INTO \"{t}\" AS l (key, owner, fence, acquired_at, lease_end, label, function) \
               SELECT $1::bytea, $2::text, nextval('\"{s}\"'), now.t, \
                      now.t + $3::bigint * interval '1 millisecond', $5::text, $6::text FROM now \
               ON CONFLICT (key) DO UPDATE \
                 SET owner = excluded.owner, fence = nextval('\"{s}\"'), \
                     acquired_at = excluded.acquired_at, lease_end = excluded.lease_end, \
                     label = excluded.label, function = excluded.function \
                 WHERE l.lease_end <= excluded.acquired_at \
                    OR l.acquired_at + $4::bigint * interval '1 millisecond' <= excluded.acquired_at \
               RETURNING l.fence) \
             SELECT (SELECT fence FROM won), \
                    (SELECT GREATEST(ceil(extract(epoch FROM LEAST(h.lease_end, \
                              h.acquired_at + $4::bigint * interval '1 millisecond') - now.t) * 1000), 0)::bigint \
                       FROM \"{t}\" h, now WHERE h.key = $1::bytea)"
        )
    }

    /// `$1` key, `$2` owner, `$3` channel. Frees the row if the owner has
    /// it (even with its lease ended: nobody else can have it then) and
    /// wakes the key's waiters in the same statement; answers a row, `held`
    /// (whether its lease still ran), only if it freed one.
    ///
    /// The row stays, ownerless and ended, rather than being deleted, so
    /// that the next grant draws its fence under the row's lock (see
    /// [`Names::acquire`]); clean-up deletes it. The payload is the key in
    /// hex (a payload is text without NUL, and keys may hold any
    /// character); a key too long for a payload wakes every waiter of the
    /// channel (empty payload).
    pub(super) fn release(&self) -> String {
        let t = &self.table;
        format!(
            "WITH gone AS ( \
               UPDATE \"{t}\" AS l SET owner = '', lease_end = LEAST(o.lease_end, clock_timestamp()) \
               FROM (SELECT key, lease_end FROM \"{t}\" WHERE key = $1::bytea AND owner = $2::text FOR UPDATE) o \
               WHERE l.key = o.key \
               RETURNING o.lease_end > clock_timestamp() AS held) \
             SELECT held, pg_notify($3::text, CASE WHEN octet_length($1::bytea) < {MAX_NAMED_KEY} \
                                              THEN encode($1::bytea, 'hex') ELSE '' END)::text \
             FROM gone"
        )
    }

    /// `$1` key, `$2` owner, `$3` lease ms; one row changed if still held.
    pub(super) fn extend(&self) -> String {
        format!(
            "UPDATE \"{}\" SET lease_end = clock_timestamp() + $3::bigint * interval '1 millisecond' \
             WHERE key = $1::bytea AND owner = $2::text AND lease_end > clock_timestamp()",
            self.table
        )
    }

    /// `$1` key, `$2` owner; a row if still held.
    pub(super) fn holds(&self) -> String {
        format!(
            "SELECT 1 FROM \"{}\" \
             WHERE key = $1::bytea AND owner = $2::text AND lease_end > clock_timestamp()",
            self.table
        )
    }

    /// `$1` a stored-key prefix (bytes), `$2` its length: the locks held
    /// now under it, as (key, fence, held for ms, lease left ms).
    pub(super) fn holders(&self) -> String {
        format!(
            "SELECT key, fence, \
                    GREATEST(floor(extract(epoch FROM clock_timestamp() - acquired_at) * 1000), 0)::bigint, \
                    GREATEST(ceil(extract(epoch FROM lease_end - clock_timestamp()) * 1000), 0)::bigint \
             FROM \"{}\" \
             WHERE lease_end > clock_timestamp() AND substring(key FROM 1 FOR $2::int) = $1::bytea",
            self.table
        )
    }

    /// `$1` grace ms. A row renewed or taken over meanwhile is re-checked
    /// by the DELETE (read committed) and kept.
    pub(super) fn clean_up(&self) -> String {
        format!(
            "DELETE FROM \"{}\" \
             WHERE lease_end + $1::bigint * interval '1 millisecond' < clock_timestamp()",
            self.table
        )
    }
}

/// A plain identifier: lower-case ASCII letters, digits and `_`, not
/// starting with a digit, so that it means the same quoted or not.
fn check_identifier(name: &str) -> Result<(), String> {
    let ok_start = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let ok_rest = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !ok_start || !ok_rest || name.len() > MAX_TABLE {
        return Err(format!(
            "`table={name}`: expected a plain identifier (a-z, 0-9, _, not starting \
             with a digit, at most {MAX_TABLE} bytes)"
        ));
    }
    Ok(())
}

/// The NOTIFY payload that names `key`: its bytes in hex, or empty (every
/// waiter) for a key too long for a payload.
pub(super) fn payload(key: &str) -> String {
    use std::fmt::Write;
    if key.len() >= MAX_NAMED_KEY {
        return String::new();
    }
    let mut hex = String::with_capacity(key.len() * 2);
    for b in key.bytes() {
        let _ = write!(hex, "{b:02x}");
    }
    hex
}

/// The longest key (in bytes, exclusive) a NOTIFY payload names: its hex
/// stays under Postgres's 8000-byte payload limit. The release statement
/// and the listener's [`payload`] both use it, so they agree on which keys
/// wake every waiter instead.
const MAX_NAMED_KEY: usize = 3900;

/// FNV-1a: a hash that is the same in every process and every build,
/// unlike std's, so that all processes derive the same channel.
pub(super) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_name_keys_in_hex() {
        assert_eq!(payload("a\0:"), "61003a");
        assert_eq!(payload(&"k".repeat(5000)), "");
    }

    #[test]
    fn tables_must_be_plain_identifiers() {
        assert!(Names::new("lock_leases", "lock:").is_ok());
        assert!(Names::new("_t9", "").is_ok());
        for bad in ["", "9t", "Leases", "a-b", "a\"b", "s.t", &"t".repeat(58)] {
            assert!(Names::new(bad, "").is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn channels_are_identifiers_per_table_and_prefix() {
        let a = Names::new("lock_leases", "lock:").unwrap();
        assert_eq!(a.sequence, "lock_leases_fence");
        assert_ne!(
            a.channel,
            Names::new("lock_leases", "app:").unwrap().channel
        );
        assert_ne!(a.channel, Names::new("other", "lock:").unwrap().channel);
        assert_eq!(
            a.channel,
            Names::new("lock_leases", "lock:").unwrap().channel
        );
        let long = Names::new(&"t".repeat(57), "p").unwrap();
        assert!(long.channel.len() <= 63);
        assert!(
            long.channel
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        );
    }
}
