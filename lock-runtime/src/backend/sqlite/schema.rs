//! The two tables and every statement the store runs on them, written once
//! for a table name that was checked to be a plain SQL identifier (so it can
//! be put into SQL text, quoted, without escaping).

/// The lock table of a store that names none.
pub(super) const DEFAULT_TABLE: &str = "lock_leases";

/// Why `name` cannot name the lock table, if it cannot.
pub(super) fn check_table(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let starts_well = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !starts_well || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!(
            "`table={name}`: expected an SQL identifier (a letter or `_`, then letters, digits or `_`)"
        ));
    }
    // The counter table's name adds 6 characters; SQLite has no length
    // limit, but a name this long is a mistake.
    if name.len() > 57 {
        return Err(format!(
            "`table={name}`: at most 57 characters, for the `_fence` table beside it"
        ));
    }
    if name.to_ascii_lowercase().starts_with("sqlite_") {
        return Err(format!(
            "`table={name}`: names starting with `sqlite_` are SQLite's own"
        ));
    }
    Ok(())
}

/// The SQL of one store's table: built once when the store is opened.
#[derive(Debug)]
pub(super) struct Sql {
    pub(super) select: String,
    pub(super) read_fence: String,
    pub(super) write_fence: String,
    pub(super) upsert: String,
    pub(super) release: String,
    pub(super) extend: String,
    pub(super) holds: String,
    pub(super) list: String,
    pub(super) clean_up: String,
    pub(super) write_proc: String,
    pub(super) page: String,
    pub(super) show: String,
    pub(super) delete: String,
    pub(super) audit: String,
    pub(super) trim_audit: String,
    pub(super) audit_log: String,
    pub(super) clean_procs: String,
}

/// What the admin API reads of a row, joined with its process: key,
/// acquired at, lease end, fencing, label, function, host, pid.
const HELD: &str =
    "t.key, t.acquired_at, t.lease_end, t.fencing, t.label, t.function, p.host, p.pid";

impl Sql {
    /// The statements for the (checked) table `t`.
    pub(super) fn new(t: &str) -> Self {
        // A row is live when it was written in this boot (`epoch`) and its
        // lease has not ended; every statement below says so the same way.
        let live = "epoch = ?3 AND lease_end > ?4";
        Self {
            select: format!("SELECT epoch, acquired_at, lease_end FROM \"{t}\" WHERE key = ?1"),
            read_fence: format!(
                "SELECT value, reserved, epoch FROM \"{t}_fence\" WHERE name = 'fence'"
            ),
            write_fence: format!(
                "INSERT OR REPLACE INTO \"{t}_fence\" (name, value, reserved, epoch) \
                 VALUES ('fence', ?1, ?2, ?3)"
            ),
            upsert: format!(
                "INSERT OR REPLACE INTO \"{t}\" \
                 (key, owner, epoch, acquired_at, lease_end, fencing, label, function) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
            ),
            release: format!("DELETE FROM \"{t}\" WHERE key = ?1 AND owner = ?2 RETURNING {live}"),
            extend: format!(
                "UPDATE \"{t}\" SET lease_end = ?5 WHERE key = ?1 AND owner = ?2 AND {live}"
            ),
            holds: format!("SELECT 1 FROM \"{t}\" WHERE key = ?1 AND owner = ?2 AND {live}"),
            // ?1 the namespace's head (`substr` rather than `LIKE`, whose
            // `%` and `_` a prefix may hold), ?3 epoch, ?4 now.
            list: format!(
                "SELECT key, acquired_at, lease_end, fencing FROM \"{t}\" \
                 WHERE substr(key, 1, length(?1)) = ?1 AND {live}"
            ),
            // ?1 epoch, ?2 cutoff (now - grace): rows of this boot whose
            // lease ended by the cutoff, and rows of another boot, which
            // ended before this boot began, `now` ago (so when the cutoff
            // is not before this boot's start).
            clean_up: format!(
                "DELETE FROM \"{t}\" WHERE (epoch = ?1 AND lease_end <= ?2) \
                 OR (epoch <> ?1 AND ?2 >= 0)"
            ),
            // ?1 the process's tag (its tokens' first 11 characters).
            write_proc: format!(
                "INSERT OR REPLACE INTO \"{t}_procs\" (tag, host, pid, written) VALUES (?1, ?2, ?3, ?4)"
            ),
            // ?1 the stored prefix, ?2 the cursor (the last key given, or
            // NULL), ?3 epoch, ?4 now, ?5 limit.
            page: format!(
                "SELECT {HELD} FROM \"{t}\" t LEFT JOIN \"{t}_procs\" p ON p.tag = substr(t.owner, 1, 11) \
                 WHERE substr(t.key, 1, length(?1)) = ?1 AND (?2 IS NULL OR t.key > ?2) \
                 AND t.epoch = ?3 AND t.lease_end > ?4 ORDER BY t.key LIMIT ?5"
            ),
            show: format!(
                "SELECT {HELD} FROM \"{t}\" t LEFT JOIN \"{t}_procs\" p ON p.tag = substr(t.owner, 1, 11) \
                 WHERE t.key = ?1 AND t.epoch = ?3 AND t.lease_end > ?4"
            ),
            delete: format!("DELETE FROM \"{t}\" WHERE key = ?1"),
            audit: format!(
                "INSERT INTO \"{t}_audit\" (key, at_ms, by_host, by_pid, by_user, reason, \
                 removed, r_host, r_pid, r_label, r_function, r_fencing, r_held_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
            ),
            // ?1 how many to keep.
            trim_audit: format!(
                "DELETE FROM \"{t}_audit\" WHERE id <= (SELECT max(id) FROM \"{t}_audit\") - ?1"
            ),
            // ?1 the namespace's head, ?2 limit.
            audit_log: format!(
                "SELECT key, at_ms, by_host, by_pid, by_user, reason, removed, r_host, r_pid, \
                 r_label, r_function, r_fencing, r_held_ms FROM \"{t}_audit\" \
                 WHERE substr(key, 1, length(?1)) = ?1 ORDER BY id DESC LIMIT ?2"
            ),
            // ?1 a unix time in s: records written before it that no row names.
            clean_procs: format!(
                "DELETE FROM \"{t}_procs\" WHERE written < ?1 \
                 AND tag NOT IN (SELECT substr(owner, 1, 11) FROM \"{t}\")"
            ),
        }
    }
}

/// The SQL that creates the tables of `t` when missing (what the module
/// docs show for creating them by hand).
pub(super) fn create(t: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS \"{t}\" (\n    \
             key         TEXT    NOT NULL PRIMARY KEY,\n    \
             owner       TEXT    NOT NULL,\n    \
             epoch       TEXT    NOT NULL,\n    \
             acquired_at INTEGER NOT NULL,\n    \
             lease_end   INTEGER NOT NULL,\n    \
             fencing     INTEGER NOT NULL,\n    \
             label       TEXT,\n    \
             function    TEXT\n\
         ) WITHOUT ROWID;\n\
         CREATE TABLE IF NOT EXISTS \"{t}_fence\" (\n    \
             name     TEXT    NOT NULL PRIMARY KEY,\n    \
             value    INTEGER NOT NULL,\n    \
             reserved INTEGER NOT NULL,\n    \
             epoch    TEXT    NOT NULL\n\
         ) WITHOUT ROWID;\n\
         CREATE TABLE IF NOT EXISTS \"{t}_procs\" (\n    \
             tag     TEXT    NOT NULL PRIMARY KEY,\n    \
             host    TEXT,\n    \
             pid     INTEGER,\n    \
             written INTEGER NOT NULL\n\
         ) WITHOUT ROWID;\n\
         CREATE TABLE IF NOT EXISTS \"{t}_audit\" (\n    \
             id         INTEGER PRIMARY KEY AUTOINCREMENT,\n    \
             key        TEXT    NOT NULL,\n    \
             at_ms      INTEGER NOT NULL,\n    \
             by_host    TEXT,\n    \
             by_pid     INTEGER,\n    \
             by_user    TEXT,\n    \
             reason     TEXT    NOT NULL,\n    \
             removed    INTEGER NOT NULL,\n    \
             r_host     TEXT,\n    \
             r_pid      INTEGER,\n    \
             r_label    TEXT,\n    \
             r_function TEXT,\n    \
             r_fencing  INTEGER,\n    \
             r_held_ms  INTEGER\n\
         );\n"
    )
}

/// The columns added to a lock table made before holders were recorded
/// (SQLite has no `ADD COLUMN IF NOT EXISTS`): what [`migrate`] runs for
/// each one missing.
pub(super) fn added_columns(t: &str) -> [(&'static str, String); 2] {
    [
        (
            "label",
            format!("ALTER TABLE \"{t}\" ADD COLUMN label TEXT"),
        ),
        (
            "function",
            format!("ALTER TABLE \"{t}\" ADD COLUMN function TEXT"),
        ),
    ]
}

/// Adds what [`added_columns`] lists to an older table, inside the set-up
/// transaction.
pub(super) fn migrate(conn: &rusqlite::Connection, t: &str) -> rusqlite::Result<()> {
    let mut have = Vec::new();
    {
        let mut stmt = conn.prepare(&format!("PRAGMA table_info(\"{t}\")"))?;
        let names = stmt.query_map([], |r| r.get::<_, String>(1))?;
        for n in names {
            have.push(n?);
        }
    }
    for (column, alter) in added_columns(t) {
        if !have.iter().any(|h| h == column) {
            conn.execute_batch(&alter)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_older_table_gains_the_holder_columns() {
        let db = rusqlite::Connection::open_in_memory().unwrap();
        // The table as it was before holders were recorded.
        db.execute_batch(
            "CREATE TABLE lock_leases (key TEXT NOT NULL PRIMARY KEY, owner TEXT NOT NULL, \
             epoch TEXT NOT NULL, acquired_at INTEGER NOT NULL, lease_end INTEGER NOT NULL, \
             fencing INTEGER NOT NULL) WITHOUT ROWID;
             INSERT INTO lock_leases VALUES ('k', 'o', 'e', 1, 2, 3);",
        )
        .unwrap();
        db.execute_batch(&create(DEFAULT_TABLE)).unwrap();
        migrate(&db, DEFAULT_TABLE).unwrap();
        migrate(&db, DEFAULT_TABLE).unwrap(); // once is enough; twice changes nothing
        let label: Option<String> = db
            .query_row("SELECT label FROM lock_leases WHERE key = 'k'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(label, None, "the old row kept, with no label");
        db.prepare(&Sql::new(DEFAULT_TABLE).page).unwrap();
    }

    #[test]
    fn only_plain_identifiers_name_a_table() {
        for ok in ["lock_leases", "_t", "Locks2", "a"] {
            assert!(check_table(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "2locks",
            "lock-leases",
            "a b",
            "t\"; DROP TABLE x; --",
            "é",
            "sqlite_master",
            "SQLITE_x",
            &"x".repeat(58),
        ] {
            assert!(check_table(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_schema_is_valid_sql() {
        let db = rusqlite::Connection::open_in_memory().unwrap();
        db.execute_batch(&create(DEFAULT_TABLE)).unwrap();
        // Twice: creating is idempotent.
        db.execute_batch(&create(DEFAULT_TABLE)).unwrap();
        let sql = Sql::new(DEFAULT_TABLE);
        for s in [
            &sql.select,
            &sql.read_fence,
            &sql.write_fence,
            &sql.upsert,
            &sql.release,
            &sql.extend,
            &sql.holds,
            &sql.clean_up,
            &sql.write_proc,
            &sql.page,
            &sql.show,
            &sql.delete,
            &sql.audit,
            &sql.trim_audit,
            &sql.audit_log,
            &sql.clean_procs,
        ] {
            db.prepare(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        }
    }
}
