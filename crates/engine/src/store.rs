//! The state database: every sandbox the daemon runs, in SQLite under the home
//! directory, written transactionally. On startup the engine reads it to find
//! sandboxes a previous daemon left behind (see `Engine::open`).
//!
//! States and accelerators are stored by name and read back as the enums; the
//! VM's whole [`Machine`] and the facts a restarted daemon needs to re-adopt a
//! running sandbox ([`RuntimeFacts`]) are stored as JSON beside the columns
//! older schemas had.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use rusqlite::{params, Connection, OptionalExtension};
use zygote_qemu::Accel;

use crate::machine::{Cpu, Machine, PageSize};
use crate::model::{MemoryKind, SandboxState};

/// What a restarted daemon needs to take a running sandbox back: its
/// environment and lifetime, its disk chain, and which memfd in QEMU is its
/// guest RAM. Written when the sandbox is registered and after every branch.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeFacts {
    /// Environment for every exec.
    pub env: std::collections::BTreeMap<String, String>,
    /// Labels.
    #[serde(default)]
    pub metadata: std::collections::BTreeMap<String, String>,
    /// Lifetime end, ms since the Unix epoch.
    #[serde(default)]
    pub expires_at_ms: Option<u64>,
    /// What happens then.
    #[serde(default)]
    pub on_expiry: crate::model::Expiry,
    /// Start to agent ready, ms.
    pub boot_ms: Option<u64>,
    /// The overlay QEMU writes now.
    pub disk_top: PathBuf,
    /// Frozen generations below it.
    pub disk_chain: Vec<PathBuf>,
    /// Virtual disk size.
    pub disk_bytes: u64,
    /// Disk generation (names the next overlay).
    pub disk_generation: u32,
    /// Where the guest RAM lives.
    pub memory: MemoryKindCol,
    /// The memfd's name (`/memfd:<name>` in QEMU's descriptors).
    pub memfd: String,
    /// A paused sandbox: the snapshot of itself it owns.
    #[serde(default)]
    pub paused_snapshot: Option<String>,
    /// Its volumes.
    #[serde(default)]
    pub volumes: Vec<crate::volumes::Attachment>,
    /// Its network namespace and policy.
    #[serde(default)]
    pub network: Option<NetFacts>,
}

/// A running sandbox's network, as a restarted daemon needs it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetFacts {
    /// The namespace (`ip netns`).
    pub netns: String,
    /// The egress policy in force.
    pub policy: zygote_net::Policy,
}

/// [`MemoryKind`] as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryKindCol {
    /// Its own share=on memfd.
    Own,
    /// Copy-on-write over a snapshot's memfd.
    Cow,
}

impl From<MemoryKind> for MemoryKindCol {
    fn from(k: MemoryKind) -> Self {
        match k {
            MemoryKind::Own => MemoryKindCol::Own,
            MemoryKind::Cow => MemoryKindCol::Cow,
        }
    }
}

/// Schema version stored in `PRAGMA user_version`.
const SCHEMA_VERSION: i32 = 3;

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
    /// Lifecycle state.
    pub state: SandboxState,
    /// Why it died.
    pub reason: Option<String>,
    /// QEMU pid.
    pub pid: Option<u32>,
    /// Runtime directory.
    pub dir: PathBuf,
    /// The VM.
    pub machine: Machine,
    /// Creation time.
    pub created_at_unix: u64,
    /// The snapshot it was spawned from.
    pub snapshot_tag: Option<String>,
    /// What re-adoption needs (absent in rows of older schemas).
    pub runtime: Option<RuntimeFacts>,
}

/// SQLite text of a state.
struct StateCol(SandboxState);

impl ToSql for StateCol {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.0.as_str()))
    }
}

impl FromSql for StateCol {
    fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
        let s = v.as_str()?;
        SandboxState::parse(s)
            .map(StateCol)
            .ok_or_else(|| FromSqlError::Other(format!("unknown sandbox state `{s}`").into()))
    }
}

/// SQLite text of an accelerator.
struct AccelCol(Accel);

impl ToSql for AccelCol {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.0.to_string()))
    }
}

impl FromSql for AccelCol {
    fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
        let s = v.as_str()?;
        s.parse()
            .map(AccelCol)
            .map_err(|e: zygote_qemu::QemuError| FromSqlError::Other(e.to_string().into()))
    }
}

/// The SQLite state database.
pub struct Store {
    conn: Mutex<Connection>,
}

const COLUMNS: &str = "id, image, state, reason, pid, dir, memory_mib, vcpus, accel, created_at_unix, machine, snapshot_tag, runtime";

impl Store {
    /// Open (creating or upgrading if needed) the database at `path`.
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
        if v < 2 {
            // Schema 2: the whole machine (JSON) and the snapshot a child came from.
            let has = |col: &str| -> rusqlite::Result<bool> {
                let n: i64 = conn.query_row(
                    "SELECT COUNT(*) FROM pragma_table_info('sandboxes') WHERE name = ?1",
                    params![col],
                    |r| r.get(0),
                )?;
                Ok(n > 0)
            };
            if !has("machine")? {
                conn.execute_batch("ALTER TABLE sandboxes ADD COLUMN machine TEXT;")?;
            }
            if !has("snapshot_tag")? {
                conn.execute_batch("ALTER TABLE sandboxes ADD COLUMN snapshot_tag TEXT;")?;
            }
        }
        if v < 3 {
            // Schema 3: what re-adopting a running sandbox needs.
            let n: i64 = conn.query_row(
                "SELECT COUNT(*) FROM pragma_table_info('sandboxes') WHERE name = 'runtime'",
                [],
                |r| r.get(0),
            )?;
            if n == 0 {
                conn.execute_batch("ALTER TABLE sandboxes ADD COLUMN runtime TEXT;")?;
            }
        }
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        Ok(Store {
            conn: Mutex::new(conn),
        })
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        Ok(f(&conn)?)
    }

    /// Insert a sandbox row, or replace the row of that id (a re-adopted
    /// sandbox keeps its id).
    pub fn insert(&self, row: &SandboxRow) -> Result<(), StoreError> {
        let machine = serde_json::to_string(&row.machine)
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        let runtime = row
            .runtime
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        self.with(|c| {
            c.execute(
                &format!("INSERT OR REPLACE INTO sandboxes ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"),
                params![
                    row.id,
                    row.image,
                    StateCol(row.state),
                    row.reason,
                    row.pid,
                    row.dir.to_string_lossy(),
                    row.machine.memory_mib as i64,
                    row.machine.vcpus,
                    AccelCol(row.machine.accel),
                    row.created_at_unix as i64,
                    machine,
                    row.snapshot_tag,
                    runtime,
                ],
            )
            .map(|_| ())
        })
    }

    /// Record a state change (and why).
    pub fn set_state(
        &self,
        id: &str,
        state: SandboxState,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "UPDATE sandboxes SET state = ?2, reason = COALESCE(?3, reason) WHERE id = ?1",
                params![id, StateCol(state), reason],
            )
            .map(|_| ())
        })
    }

    /// Record what re-adoption needs now (after a branch moved the disk).
    pub fn set_runtime(&self, id: &str, facts: &RuntimeFacts) -> Result<(), StoreError> {
        let json = serde_json::to_string(facts)
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        self.with(|c| {
            c.execute(
                "UPDATE sandboxes SET runtime = ?2 WHERE id = ?1",
                params![id, json],
            )
            .map(|_| ())
        })
    }

    /// Record a paused sandbox: no pid, and what resuming it needs.
    pub fn set_paused(&self, id: &str, facts: &RuntimeFacts) -> Result<(), StoreError> {
        let json = serde_json::to_string(facts)
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        self.with(|c| {
            c.execute(
                "UPDATE sandboxes SET state = ?2, pid = NULL, runtime = ?3 WHERE id = ?1",
                params![id, StateCol(SandboxState::Paused), json],
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
                &format!("SELECT {COLUMNS} FROM sandboxes WHERE id = ?1"),
                params![id],
                row_of,
            )
            .optional()
        })
    }

    /// Every readable row, oldest first; a row that cannot be read (an unknown
    /// state, a damaged machine) is logged and skipped.
    pub fn all(&self) -> Result<Vec<SandboxRow>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {COLUMNS} FROM sandboxes ORDER BY created_at_unix, id"
            ))?;
            let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, row_of(r))))?;
            let mut out = Vec::new();
            for row in rows {
                match row? {
                    (_, Ok(r)) => out.push(r),
                    (id, Err(e)) => {
                        tracing::warn!(%id, error = %e, "skipping an unreadable sandbox row")
                    }
                }
            }
            Ok(out)
        })
    }
}

fn row_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<SandboxRow> {
    let accel = r.get::<_, AccelCol>(8)?.0;
    let memory_mib = r.get::<_, i64>(6)? as u64;
    let vcpus: u32 = r.get(7)?;
    let machine = match r.get::<_, Option<String>>(10)? {
        Some(json) => serde_json::from_str(&json).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(10, rusqlite::types::Type::Text, Box::new(e))
        })?,
        // A row of schema 1 (its VM was stopped by the upgrade's restart):
        // only what the columns held is known.
        None => Machine {
            accel,
            cpu: Cpu::for_accel(accel),
            memory_mib,
            vcpus,
            pages: PageSize::Small,
            kernel: PathBuf::new(),
            initrd: PathBuf::new(),
            append: String::new(),
            volume_slots: 0,
            nic: false,
        },
    };
    Ok(SandboxRow {
        id: r.get(0)?,
        image: r.get(1)?,
        state: r.get::<_, StateCol>(2)?.0,
        reason: r.get(3)?,
        pid: r.get(4)?,
        dir: PathBuf::from(r.get::<_, String>(5)?),
        machine,
        created_at_unix: r.get::<_, i64>(9)? as u64,
        snapshot_tag: r.get(11)?,
        runtime: r
            .get::<_, Option<String>>(12)?
            .map(|j| serde_json::from_str(&j))
            .transpose()
            .map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(
                    12,
                    rusqlite::types::Type::Text,
                    Box::new(e),
                )
            })?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str) -> SandboxRow {
        SandboxRow {
            id: id.into(),
            image: "python".into(),
            state: SandboxState::Running,
            reason: None,
            pid: Some(42),
            dir: format!("/x/{id}").into(),
            machine: Machine {
                accel: Accel::Tcg,
                cpu: Cpu::for_accel(Accel::Tcg),
                memory_mib: 256,
                vcpus: 1,
                pages: PageSize::Small,
                kernel: "/k".into(),
                initrd: "/i".into(),
                append: "quiet".into(),
                volume_slots: 4,
                nic: false,
            },
            created_at_unix: 1,
            snapshot_tag: Some("t".into()),
            runtime: Some(RuntimeFacts {
                env: [("A".to_string(), "1".to_string())].into(),
                metadata: [("team".to_string(), "x".to_string())].into(),
                expires_at_ms: Some(9000),
                on_expiry: crate::model::Expiry::Pause,
                boot_ms: Some(2000),
                disk_top: "/x/disk-g2.qcow2".into(),
                disk_chain: vec!["/h/disks/t-1.qcow2".into()],
                disk_bytes: 1 << 30,
                disk_generation: 2,
                memory: MemoryKindCol::Cow,
                memfd: "zygote-snap-t".into(),
                paused_snapshot: None,
                volumes: vec![crate::volumes::Attachment {
                    slot: 1,
                    source: crate::model::VolumeSource::Named("data".into()),
                    path: "/data".into(),
                    read_only: false,
                    image: "/h/volumes/data.img".into(),
                    qcow2: false,
                }],
                network: None,
            }),
        }
    }

    #[test]
    fn insert_update_delete() {
        let s = Store::in_memory().unwrap();
        s.insert(&row("a")).unwrap();
        s.insert(&row("b")).unwrap();
        let mut again = row("a");
        again.pid = Some(43);
        s.insert(&again).unwrap();
        assert_eq!(s.all().unwrap().len(), 2, "the same id replaces its row");
        s.insert(&row("a")).unwrap();
        s.set_state("a", SandboxState::Dead, Some("qemu exited"))
            .unwrap();
        let a = s.get("a").unwrap().unwrap();
        assert_eq!(a.state, SandboxState::Dead);
        assert_eq!(a.pid, Some(42));
        assert_eq!(a.reason.as_deref(), Some("qemu exited"));
        assert_eq!(a.machine, row("a").machine);
        assert_eq!(a.snapshot_tag.as_deref(), Some("t"));
        assert_eq!(a.runtime, row("a").runtime);
        let mut f = a.runtime.clone().unwrap();
        f.disk_generation = 3;
        s.set_runtime("a", &f).unwrap();
        assert_eq!(s.get("a").unwrap().unwrap().runtime, Some(f));
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

    #[test]
    fn schema_1_is_upgraded_and_its_rows_read() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("z.db");
        {
            let c = Connection::open(&p).unwrap();
            c.execute_batch(
                "CREATE TABLE sandboxes (id TEXT PRIMARY KEY, image TEXT NOT NULL, state TEXT NOT NULL,
                 reason TEXT, pid INTEGER, dir TEXT NOT NULL, memory_mib INTEGER NOT NULL,
                 vcpus INTEGER NOT NULL, accel TEXT NOT NULL, created_at_unix INTEGER NOT NULL);
                 INSERT INTO sandboxes VALUES ('old', 'python', 'running', NULL, 7, '/x/old', 512, 2, 'tcg', 3);
                 PRAGMA user_version = 1;",
            )
            .unwrap();
        }
        let s = Store::open(&p).unwrap();
        let r = s.get("old").unwrap().unwrap();
        assert_eq!(r.state, SandboxState::Running);
        assert_eq!((r.machine.memory_mib, r.machine.vcpus), (512, 2));
        assert_eq!(r.machine.accel, Accel::Tcg);
        assert_eq!(r.snapshot_tag, None);
        s.insert(&row("new")).unwrap();
    }

    #[test]
    fn unknown_state_is_skipped_not_guessed() {
        let s = Store::in_memory().unwrap();
        s.insert(&row("a")).unwrap();
        s.insert(&row("b")).unwrap();
        s.with(|c| c.execute("UPDATE sandboxes SET state = 'zombie' WHERE id = 'a'", []))
            .unwrap();
        let all = s.all().unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].id, "b");
        assert!(s.get("a").is_err());
    }
}
