//! The state database: every sandbox the daemon has started, in SQLite under the
//! home directory, written transactionally. On startup the engine reads it to
//! find sandboxes a previous daemon left behind (see `Engine::open`).

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};

/// Schema version stored in `PRAGMA user_version`.
const SCHEMA_VERSION: i32 = 1;

/// Errors of the state database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("state database error")]
    Sqlite(#[from] rusqlite::Error),
    /// The database was written by a newer zygote.
    #[error("state database schema {found} is newer than this zygote understands ({SCHEMA_VERSION}): upgrade zygote or use another --home")]
    Schema {
        /// Version found.
        found: i32,
    },
}

/// One row of the `sandboxes` table.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxRow {
    /// Sandbox id.
    pub id: String,
    /// Image name.
    pub image: String,
    /// State name (`booting`, `running`, `stopping`, `dead`).
    pub state: String,
    /// Why it died.
    pub reason: Option<String>,
    /// QEMU pid.
    pub pid: Option<u32>,
    /// Runtime directory.
    pub dir: String,
    /// Guest RAM.
    pub memory_mib: u64,
    /// vCPUs.
    pub vcpus: u32,
    /// Accelerator.
    pub accel: String,
    /// Creation time.
    pub created_at_unix: u64,
}

/// The SQLite state database.
pub struct Store {
    conn: Mutex<Connection>,
}

impl Store {
    /// Open (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let conn = Connection::open(path)?;
        Self::init(conn)
    }

    /// An in-memory database (tests).
    pub fn in_memory() -> Result<Store, StoreError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<Store, StoreError> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let v: i32 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if v > SCHEMA_VERSION {
            return Err(StoreError::Schema { found: v });
        }
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS sandboxes (
                id TEXT PRIMARY KEY,
                image TEXT NOT NULL,
                state TEXT NOT NULL,
                reason TEXT,
                pid INTEGER,
                dir TEXT NOT NULL,
                memory_mib INTEGER NOT NULL,
                vcpus INTEGER NOT NULL,
                accel TEXT NOT NULL,
                created_at_unix INTEGER NOT NULL
            );",
        )?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        Ok(Store {
            conn: Mutex::new(conn),
        })
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        Ok(f(&conn)?)
    }

    /// Insert a new sandbox row.
    pub fn insert(&self, row: &SandboxRow) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO sandboxes (id, image, state, reason, pid, dir, memory_mib, vcpus, accel, created_at_unix)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    row.id,
                    row.image,
                    row.state,
                    row.reason,
                    row.pid,
                    row.dir,
                    row.memory_mib as i64,
                    row.vcpus,
                    row.accel,
                    row.created_at_unix as i64
                ],
            )
            .map(|_| ())
        })
    }

    /// Record a state change (and the pid once known).
    pub fn set_state(
        &self,
        id: &str,
        state: &str,
        reason: Option<&str>,
        pid: Option<u32>,
    ) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "UPDATE sandboxes SET state = ?2, reason = COALESCE(?3, reason), pid = COALESCE(?4, pid) WHERE id = ?1",
                params![id, state, reason, pid],
            )
            .map(|_| ())
        })
    }

    /// Forget a sandbox.
    pub fn delete(&self, id: &str) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute("DELETE FROM sandboxes WHERE id = ?1", params![id])
                .map(|_| ())
        })
    }

    /// One row.
    pub fn get(&self, id: &str) -> Result<Option<SandboxRow>, StoreError> {
        self.with(|c| {
            c.query_row(
                "SELECT id, image, state, reason, pid, dir, memory_mib, vcpus, accel, created_at_unix FROM sandboxes WHERE id = ?1",
                params![id],
                row_of,
            )
            .optional()
        })
    }

    /// Every row, oldest first.
    pub fn all(&self) -> Result<Vec<SandboxRow>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT id, image, state, reason, pid, dir, memory_mib, vcpus, accel, created_at_unix FROM sandboxes ORDER BY created_at_unix, id",
            )?;
            let rows = st.query_map([], row_of)?;
            rows.collect()
        })
    }
}

fn row_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<SandboxRow> {
    Ok(SandboxRow {
        id: r.get(0)?,
        image: r.get(1)?,
        state: r.get(2)?,
        reason: r.get(3)?,
        pid: r.get(4)?,
        dir: r.get(5)?,
        memory_mib: r.get::<_, i64>(6)? as u64,
        vcpus: r.get(7)?,
        accel: r.get(8)?,
        created_at_unix: r.get::<_, i64>(9)? as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str) -> SandboxRow {
        SandboxRow {
            id: id.into(),
            image: "python".into(),
            state: "booting".into(),
            reason: None,
            pid: None,
            dir: format!("/x/{id}"),
            memory_mib: 256,
            vcpus: 1,
            accel: "tcg".into(),
            created_at_unix: 1,
        }
    }

    #[test]
    fn insert_update_delete() {
        let s = Store::in_memory().unwrap();
        s.insert(&row("a")).unwrap();
        s.insert(&row("b")).unwrap();
        assert!(s.insert(&row("a")).is_err(), "duplicate id must fail");
        s.set_state("a", "running", None, Some(42)).unwrap();
        s.set_state("a", "dead", Some("qemu exited"), None).unwrap();
        let a = s.get("a").unwrap().unwrap();
        assert_eq!(a.state, "dead");
        assert_eq!(a.pid, Some(42));
        assert_eq!(a.reason.as_deref(), Some("qemu exited"));
        s.delete("a").unwrap();
        assert_eq!(s.all().unwrap().len(), 1);
        assert!(s.get("a").unwrap().is_none());
    }

    #[test]
    fn reopen_keeps_rows() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("z.db");
        Store::open(&p).unwrap().insert(&row("x")).unwrap();
        assert_eq!(Store::open(&p).unwrap().all().unwrap()[0].id, "x");
    }
}
