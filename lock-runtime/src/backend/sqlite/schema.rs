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
    pub(super) clean_up: String,
}

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
                "INSERT OR REPLACE INTO \"{t}\" (key, owner, epoch, acquired_at, lease_end, fencing) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
            ),
            release: format!("DELETE FROM \"{t}\" WHERE key = ?1 AND owner = ?2 RETURNING {live}"),
            extend: format!(
                "UPDATE \"{t}\" SET lease_end = ?5 WHERE key = ?1 AND owner = ?2 AND {live}"
            ),
            holds: format!("SELECT 1 FROM \"{t}\" WHERE key = ?1 AND owner = ?2 AND {live}"),
            // ?1 epoch, ?2 cutoff (now - grace): rows of this boot whose
            // lease ended by the cutoff, and rows of another boot, which
            // ended before this boot began, `now` ago (so when the cutoff
            // is not before this boot's start).
            clean_up: format!(
                "DELETE FROM \"{t}\" WHERE (epoch = ?1 AND lease_end <= ?2) \
                 OR (epoch <> ?1 AND ?2 >= 0)"
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
             fencing     INTEGER NOT NULL\n\
         ) WITHOUT ROWID;\n\
         CREATE TABLE IF NOT EXISTS \"{t}_fence\" (\n    \
             name     TEXT    NOT NULL PRIMARY KEY,\n    \
             value    INTEGER NOT NULL,\n    \
             reserved INTEGER NOT NULL,\n    \
             epoch    TEXT    NOT NULL\n\
         ) WITHOUT ROWID;\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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
        ] {
            db.prepare(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        }
    }
}
