//! The node's durable store: the engine's [`PersistBatch`]es applied to a
//! redb database in the data directory.
//!
//! # Guarantees
//! * [`Store::apply`] commits one redb write transaction with
//!   [`Durability::Immediate`] before it returns: a batch is either entirely
//!   on disk (and survives `kill -9` or a power cut) or not at all. The
//!   driver acknowledges a write only after `apply` returned `Ok`.
//! * The one exception is a batch of **other nodes' member records** alone
//!   (no key, no knowledge, this node's incarnation and `left` unchanged):
//!   it is committed without an fsync ([`Durability::None`]) and made
//!   durable by the next [`Store::sync`] (the driver calls it within
//!   [`LAZY_SYNC_AFTER`] and before it stops) or the next durable batch.
//!   A `kill -9` may lose the last second of such records: they are what
//!   peers told this node about third parties, and the next sync with any
//!   peer brings them back. What it loses with them is watch revisions
//!   (every member change takes one), so after a run that did not end in
//!   [`Store::close`] the node starts its revisions [`LAZY_REVISIONS`] past
//!   the stored one ([`Store::resume_revision`]): a revision is never
//!   issued twice, and a watcher resuming across that restart is told to
//!   re-read (410). (Each fsync holds the driver's only task: a node
//!   learning a cluster of 20 made about six, of 2.5–11 ms each with 20
//!   processes on 2 cores, and the heartbeats it was to forward waited.)
//! * [`Store::load`] returns exactly what [`MemoryStore::snapshot`] would
//!   after the same batches (same contents, same order).
//! * One `Store` per data directory: [`Store::open`] takes an advisory lock on
//!   `DIR/LOCK` (and redb locks its file), so a second node on the same
//!   directory fails at start with [`StoreError::Locked`] naming it.
//! * A full disk, a corrupt file or a database written by a newer build is a
//!   [`StoreError`], never a panic and never silent loss.
//!
//! # Layout
//! `DIR/starling.redb`, mode 0600 on Unix (it holds the cluster's state),
//! with four tables; every value is bincode 2 (serde, standard config):
//!
//! | table       | key                     | value                       |
//! |-------------|-------------------------|-----------------------------|
//! | `keys`      | encoded [`StateKey`]    | encoded [`KeyState`]        |
//! | `knowledge` | [`NodeId`] bytes        | encoded [`DotRange`]        |
//! | `members`   | [`NodeId`] bytes        | encoded [`Member`]          |
//! | `meta`      | row name                | row value                   |
//!
//! `meta` rows: `schema_version` (u32 little-endian), `meta` (encoded
//! [`PersistedMeta`]), `closed` (empty; there while the last run ended with
//! [`Store::close`] and nothing was committed since; older builds ignore
//! it). Builds before the identity had its own file
//! (`DIR/identity/node.key`, see [`Store::identity_secret`]) kept the 32-byte ed25519 secret
//! key in an `identity` row; it is moved to the file and the row deleted
//! at start, which changes no table layout, so the schema version stays. The
//! `meta` table's type and its `schema_version` row never change, so any
//! build can tell whether it understands a file. No savepoints and no table
//! renames: the store needs neither, and plain tables and transactions are
//! the part of redb's file format a later build is likeliest to read.
//!
//! [`MemoryStore::snapshot`]: crate::core::MemoryStore::snapshot
//! [`StateKey`]: crate::core::StateKey
//! [`KeyState`]: crate::core::KeyState
//! [`NodeId`]: crate::core::NodeId
//! [`DotRange`]: crate::core::DotRange
//! [`Member`]: crate::core::Member
//! [`PersistedMeta`]: crate::core::PersistedMeta

mod error;
mod identity;

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::core::{NodeId, PersistBatch, PersistedMeta, Snapshot, StateKey};

pub use error::StoreError;
use error::{io_error, redb_error};
pub use identity::IdentityError;

/// The schema this build writes and understands.
// v2: KeyState gained `grave`; v3: node ids encode as byte strings;
// v4: graves keep the collected tombstone's context, member records are
// signed (migrated from v3); v5: graves keep the collected tombstone
// with its signature (migrated from v3 and v4 without one).
const SCHEMA_VERSION: u32 = 5;
/// The database file's name inside the data directory.
const DB_FILE: &str = "starling.redb";
/// The advisory lock file's name inside the data directory.
const LOCK_FILE: &str = "LOCK";
/// redb's page cache and write buffer. The engine holds every key in
/// memory and reads the store only at start, so the cache serves little
/// but the B-tree pages a write walks; redb moves every page it writes into
/// it, so a larger cache only held written pages (2.5 MB of the 15 MB heap
/// of a node with 10,000 keys at 64 MiB).
const CACHE_BYTES: usize = 4 << 20;
/// How soon after a lazy (unsynced) commit of member records the driver
/// makes it durable with [`Store::sync`].
pub const LAZY_SYNC_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// The most watch revisions that lazy commits may take past the last
/// durable one: the next batch after that is durable, and a restarted
/// node issues revisions from this far past the stored one.
pub const LAZY_REVISIONS: u64 = 1 << 16;

/// Largest value the decoder accepts (a corrupt length prefix must not
/// make it allocate without bound).
const DECODE_LIMIT: usize = 256 << 20;
// The engine keeps every key's record under `MAX_KEY_BYTES`, so a node
// always reads back what it wrote (a key over the decode limit made the
// whole store read as corrupt, and the node could not restart).
const _: () = assert!(
    crate::core::MAX_KEY_BYTES < DECODE_LIMIT,
    "every key the engine may hold must decode from the store"
);

const KEYS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("keys");
const KNOWLEDGE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("knowledge");
const MEMBERS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("members");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

const ROW_SCHEMA: &str = "schema_version";
const ROW_META: &str = "meta";
const ROW_IDENTITY: &str = "identity";
const ROW_CLOSED: &str = "closed";

/// The durable store of one node (see the [module docs](self)).
///
/// Owned by the driver task; every method blocks on disk I/O.
pub struct Store {
    dir: PathBuf,
    db_path: PathBuf,
    /// `None` after an I/O failure: redb refuses further work on a handle
    /// that saw one, so the next call reopens the file.
    db: Option<Database>,
    /// The node meta of the last durable commit (`None` until known: the
    /// next batch is then durable).
    durable_meta: Option<PersistedMeta>,
    /// The node meta written by the latest lazy commit not yet synced.
    unsynced: Option<PersistedMeta>,
    /// How the previous run on this directory ended, read at open.
    previous: PreviousRun,
    /// Whether the `closed` row is in the file: the next commit is durable
    /// and removes it (a lazy commit lost in a crash must not leave the
    /// row saying the run ended cleanly).
    closed_row: bool,
    /// Held (with its `flock`) for the life of the store; declared after
    /// `db` so the database closes before the lock is released.
    _lock: File,
}

impl Store {
    /// Open or create the store in `dir`, creating the directory if needed.
    /// The node identity is read (or made) by [`Store::identity_secret`].
    ///
    /// Fails with [`StoreError::Locked`] if another `Store` (in any process)
    /// has `dir` open, [`StoreError::Io`] if `dir` cannot be created or
    /// written, [`StoreError::Corrupt`] if the database is damaged,
    /// [`StoreError::Incompatible`] if it was written by a newer schema, and
    /// [`StoreError::DiskFull`] if a new database cannot be initialised.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
        let lock = lock_dir(dir)?;
        let db_path = dir.join(DB_FILE);
        // We hold the directory's lock, so redb's own lock on the file can
        // only be held by a child forked a moment ago (see `lock_dir`).
        let mut waited_ms = 0;
        let db = loop {
            match open_database(&db_path) {
                Err(StoreError::Locked { holder: None, .. }) if waited_ms < 500 => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    waited_ms += 10;
                }
                other => break other?,
            }
        };
        let mut store = Store {
            dir: dir.to_path_buf(),
            db_path,
            db: Some(db),
            durable_meta: None,
            unsynced: None,
            previous: PreviousRun::None,
            closed_row: false,
            _lock: lock,
        };
        store.initialise()?;
        let (meta, closed) = store.stored_meta()?;
        store.previous = match (&meta, closed) {
            (None, _) => PreviousRun::None,
            (Some(_), true) => PreviousRun::Closed,
            (Some(_), false) => PreviousRun::Unclosed,
        };
        store.closed_row = closed;
        store.durable_meta = Some(meta.unwrap_or_default());
        Ok(store)
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Everything to restart from: the equivalent of
    /// [`MemoryStore::snapshot`](crate::core::MemoryStore::snapshot) after
    /// the batches applied so far. Read-only; a [`StoreError::Corrupt`] means
    /// a stored value does not decode.
    pub fn load(&self) -> Result<Snapshot, StoreError> {
        let path: &Path = &self.db_path;
        let db = self.open_database()?;
        let txn = db.begin_read().map_err(re(path))?;
        let mut snapshot = Snapshot::default();

        let table = txn.open_table(KEYS).map_err(re(path))?;
        let mut keys = BTreeMap::new();
        for row in table.iter().map_err(re(path))? {
            let (k, v) = row.map_err(re(path))?;
            let key: StateKey = decode(path, "state key", k.value())?;
            keys.insert(key, decode(path, "key state", v.value())?);
        }
        snapshot.keys = keys.into_iter().collect();

        let table = txn.open_table(KNOWLEDGE).map_err(re(path))?;
        for row in table.iter().map_err(re(path))? {
            let (k, v) = row.map_err(re(path))?;
            let node = node_id(path, k.value())?;
            snapshot
                .knowledge
                .push((node, decode(path, "dot range", v.value())?));
        }

        let table = txn.open_table(MEMBERS).map_err(re(path))?;
        for row in table.iter().map_err(re(path))? {
            let (k, v) = row.map_err(re(path))?;
            let node = node_id(path, k.value())?;
            let member: crate::core::Member = decode(path, "member", v.value())?;
            if member.node != node {
                return Err(corrupt(path, "member stored under another node's id"));
            }
            snapshot.members.push(member);
        }

        let table = txn.open_table(META).map_err(re(path))?;
        if let Some(v) = table.get(ROW_META).map_err(re(path))? {
            snapshot.meta = decode(path, "node meta", v.value())?;
        }
        Ok(snapshot)
    }

    /// Apply one batch atomically and durably: one redb write transaction,
    /// committed with [`Durability::Immediate`] before this returns. Same
    /// semantics as [`MemoryStore::apply`](crate::core::MemoryStore::apply).
    ///
    /// On `Err` nothing of the batch is stored (see [`StoreError`]); the
    /// driver reports `Input::PersistFailed`. After an I/O error (including
    /// [`StoreError::DiskFull`]) the next call reopens the database first.
    ///
    /// A batch of other nodes' member records alone is committed lazily
    /// (see the [module docs](self)): [`Store::unsynced`] then says so, and
    /// [`Store::sync`] makes it durable.
    pub fn apply(&mut self, batch: &PersistBatch) -> Result<(), StoreError> {
        let lazy = self.may_be_lazy(batch);
        let durability = if lazy {
            Durability::None
        } else {
            Durability::Immediate
        };
        let result = self.try_apply(batch, durability);
        match &result {
            Ok(()) if lazy => self.unsynced = Some(batch.meta.clone()),
            Ok(()) => {
                self.durable_meta = Some(batch.meta.clone());
                self.unsynced = None;
            }
            Err(e) => self.after_error(e),
        }
        result
    }

    /// Whether lazy commits are waiting for [`Store::sync`].
    pub fn unsynced(&self) -> bool {
        self.unsynced.is_some()
    }

    /// Make every lazy commit durable (one empty durable transaction); a
    /// no-op when there is none. On `Err` they stay lazy and the next call
    /// (or the next durable batch) tries again; an I/O error may have lost
    /// them from this handle (it is reopened), which costs records a peer
    /// sends again, never a key.
    pub fn sync(&mut self) -> Result<(), StoreError> {
        if self.unsynced.is_none() {
            return Ok(());
        }
        self.commit_durably(false)
    }

    /// The watch revision a node restarting from `snapshot` (this store's
    /// [`Store::load`]) resumes after: the stored one after a first start
    /// or a run that ended in [`Store::close`]; otherwise [`LAZY_REVISIONS`]
    /// past it, since lazy commits a crash lost may have issued revisions
    /// beyond it.
    pub fn resume_revision(&self, snapshot: &Snapshot) -> u64 {
        match self.previous {
            PreviousRun::None | PreviousRun::Closed => snapshot.meta.revision,
            PreviousRun::Unclosed => snapshot.meta.revision.saturating_add(LAZY_REVISIONS),
        }
    }

    /// Make every commit durable and record that this run ended cleanly
    /// (the next start then keeps its revisions dense). The driver calls
    /// it as it stops; a later [`Store::apply`] undoes the record.
    pub fn close(&mut self) -> Result<(), StoreError> {
        self.commit_durably(true)
    }

    /// One durable transaction that makes the lazy commits before it
    /// durable and, if `closing`, records the clean end.
    fn commit_durably(&mut self, closing: bool) -> Result<(), StoreError> {
        let meta = self.unsynced.clone();
        let result = self.try_commit_durably(closing);
        match &result {
            Ok(()) => {
                if let Some(meta) = meta {
                    self.durable_meta = Some(meta);
                }
                self.unsynced = None;
                self.closed_row = closing;
            }
            Err(e) => self.after_error(e),
        }
        result
    }

    /// Whether `batch` may be committed without an fsync: other nodes'
    /// member records alone, with this node's incarnation and `left` as
    /// durably stored and its revisions within [`LAZY_REVISIONS`] of the
    /// durable ones.
    fn may_be_lazy(&self, batch: &PersistBatch) -> bool {
        let Some(durable) = &self.durable_meta else {
            return false;
        };
        !self.closed_row
            && batch.keys.is_empty()
            && batch.knowledge.is_empty()
            && batch.meta.incarnation == durable.incarnation
            && batch.meta.left == durable.left
            && batch.meta.revision.saturating_sub(durable.revision) < LAZY_REVISIONS
    }

    fn after_error(&mut self, e: &StoreError) {
        if e.needs_reopen() {
            // redb latches an I/O failure and refuses all later work on
            // that handle: close it and start again from the committed
            // file (if that fails too, the next call retries). Lazy
            // commits are gone with the handle: the durable meta is the
            // file's again.
            self.db = None;
            self.db = open_database(&self.db_path).ok();
            self.unsynced = None;
            self.durable_meta = None;
            // Unknown until a durable commit: assume the row is there.
            self.closed_row = true;
        }
    }

    /// The node meta row as committed (`None` on a new store), and
    /// whether the `closed` row is there.
    fn stored_meta(&self) -> Result<(Option<PersistedMeta>, bool), StoreError> {
        let path: &Path = &self.db_path;
        let txn = self.open_database()?.begin_read().map_err(re(path))?;
        let table = txn.open_table(META).map_err(re(path))?;
        let meta = match table.get(ROW_META).map_err(re(path))? {
            Some(v) => Some(decode(path, "node meta", v.value())?),
            None => None,
        };
        let closed = table.get(ROW_CLOSED).map_err(re(path))?.is_some();
        Ok((meta, closed))
    }

    fn try_commit_durably(&mut self, closing: bool) -> Result<(), StoreError> {
        let closed_row = self.closed_row;
        let path = self.db_path.clone();
        let path = path.as_path();
        let db = self.database()?;
        let mut txn = db.begin_write().map_err(re(path))?;
        txn.set_durability(Durability::Immediate).map_err(re(path))?;
        {
            let mut table = txn.open_table(META).map_err(re(path))?;
            if closing {
                table.insert(ROW_CLOSED, [].as_slice()).map_err(re(path))?;
            } else if closed_row {
                table.remove(ROW_CLOSED).map_err(re(path))?;
            }
        }
        txn.commit().map_err(re(path))
    }

    /// The identity row of a data directory written before the identity
    /// had its own file (see [`identity`]), if it is still there.
    fn legacy_identity(&mut self) -> Result<Option<[u8; 32]>, StoreError> {
        let path = self.db_path.clone();
        let path = path.as_path();
        let db = self.database()?;
        let txn = db.begin_read().map_err(re(path))?;
        let table = txn.open_table(META).map_err(re(path))?;
        let Some(row) = table.get(ROW_IDENTITY).map_err(re(path))? else {
            return Ok(None);
        };
        <[u8; 32]>::try_from(row.value())
            .map(Some)
            .map_err(|_| corrupt(path, "the node identity row is not 32 bytes"))
    }

    /// Delete the legacy identity row, durably.
    fn remove_legacy_identity(&mut self) -> Result<(), StoreError> {
        let path = self.db_path.clone();
        let path = path.as_path();
        let db = self.database()?;
        let mut txn = db.begin_write().map_err(re(path))?;
        txn.set_durability(Durability::Immediate).map_err(re(path))?;
        txn.open_table(META)
            .map_err(re(path))?
            .remove(ROW_IDENTITY)
            .map_err(re(path))?;
        txn.commit().map_err(re(path))
    }

    /// Whether the database holds anything a node wrote (node meta, keys,
    /// knowledge or members), i.e. is not a brand-new store.
    fn holds_data(&mut self) -> Result<bool, StoreError> {
        let path = self.db_path.clone();
        let path = path.as_path();
        let db = self.database()?;
        let txn = db.begin_read().map_err(re(path))?;
        if txn
            .open_table(META)
            .map_err(re(path))?
            .get(ROW_META)
            .map_err(re(path))?
            .is_some()
        {
            return Ok(true);
        }
        for def in [KEYS, KNOWLEDGE, MEMBERS] {
            let table = txn.open_table(def).map_err(re(path))?;
            if table.first().map_err(re(path))?.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn try_apply(&mut self, batch: &PersistBatch, durability: Durability) -> Result<(), StoreError> {
        // Encode first: an encoding failure must leave nothing half-written.
        let mut keys = Vec::with_capacity(batch.keys.len());
        for (key, state) in &batch.keys {
            let value = state.as_ref().map(encode).transpose()?;
            keys.push((encode(key)?, value));
        }
        let mut knowledge = Vec::with_capacity(batch.knowledge.len());
        for (node, range) in &batch.knowledge {
            knowledge.push((node.0, encode(range)?));
        }
        let mut members = Vec::with_capacity(batch.members.len());
        for member in &batch.members {
            members.push((member.node.0, encode(member)?));
        }
        let meta = encode(&batch.meta)?;
        let closed_row = self.closed_row;

        let path = self.db_path.clone();
        let path = path.as_path();
        let db = self.database()?;
        let mut txn = db.begin_write().map_err(re(path))?;
        txn.set_durability(durability).map_err(re(path))?;
        {
            let mut table = txn.open_table(KEYS).map_err(re(path))?;
            for (key, value) in &keys {
                match value {
                    Some(value) => table.insert(key.as_slice(), value.as_slice()),
                    None => table.remove(key.as_slice()),
                }
                .map_err(re(path))?;
            }
            let mut table = txn.open_table(KNOWLEDGE).map_err(re(path))?;
            for (node, value) in &knowledge {
                table
                    .insert(node.as_slice(), value.as_slice())
                    .map_err(re(path))?;
            }
            let mut table = txn.open_table(MEMBERS).map_err(re(path))?;
            for (node, value) in &members {
                table
                    .insert(node.as_slice(), value.as_slice())
                    .map_err(re(path))?;
            }
            for node in &batch.removed_members {
                table.remove(node.0.as_slice()).map_err(re(path))?;
            }
            let mut table = txn.open_table(META).map_err(re(path))?;
            table.insert(ROW_META, meta.as_slice()).map_err(re(path))?;
            if closed_row {
                table.remove(ROW_CLOSED).map_err(re(path))?;
            }
        }
        txn.commit().map_err(re(path))?;
        self.closed_row = false;
        Ok(())
    }

    /// The open database, or why there is none.
    fn open_database(&self) -> Result<&Database, StoreError> {
        self.db.as_ref().ok_or_else(|| StoreError::Io {
            path: self.db_path.clone(),
            source: std::io::Error::other(
                "the database was closed after a failed write and could not be \
                 reopened yet; the next apply retries",
            ),
        })
    }

    /// The open database, reopening it after an earlier I/O failure.
    fn database(&mut self) -> Result<&Database, StoreError> {
        if self.db.is_none() {
            self.db = Some(open_database(&self.db_path)?);
        }
        Ok(self.db.as_ref().expect("set just above"))
    }

    /// Check the schema version; on a new database write it. Commits only
    /// if it wrote something.
    fn initialise(&mut self) -> Result<(), StoreError> {
        let path = self.db_path.clone();
        let path = path.as_path();
        let db = self.database()?;
        let mut txn = db.begin_write().map_err(re(path))?;
        txn.set_durability(Durability::Immediate).map_err(re(path))?;
        let mut changed = false;
        {
            // The meta table first: its type never changes, so a newer
            // schema is detected before any other table is touched.
            let mut meta = txn.open_table(META).map_err(re(path))?;
            let found = match meta.get(ROW_SCHEMA).map_err(re(path))? {
                None => None,
                Some(v) => Some(u32::from_le_bytes(
                    v.value()
                        .try_into()
                        .map_err(|_| corrupt(path, "schema_version is not 4 bytes"))?,
                )),
            };
            match found {
                Some(SCHEMA_VERSION) => {}
                Some(v) if v > SCHEMA_VERSION => {
                    return Err(StoreError::Incompatible {
                        path: path.to_path_buf(),
                        reason: format!(
                            "schema v{v} was written by a newer Starling; this build \
                             supports up to v{SCHEMA_VERSION}: upgrade Starling"
                        ),
                    });
                }
                Some(old @ (3 | 4)) => {
                    migrate_graves(path, &txn, old)?;
                    meta.insert(ROW_SCHEMA, SCHEMA_VERSION.to_le_bytes().as_slice())
                        .map_err(re(path))?;
                    changed = true;
                }
                Some(v) => {
                    return Err(StoreError::Incompatible {
                        path: path.to_path_buf(),
                        reason: format!("schema v{v} has no migration to v{SCHEMA_VERSION}"),
                    });
                }
                None => {
                    if meta.get(ROW_META).map_err(re(path))?.is_some() {
                        return Err(corrupt(path, "schema_version is missing"));
                    }
                    meta.insert(ROW_SCHEMA, SCHEMA_VERSION.to_le_bytes().as_slice())
                        .map_err(re(path))?;
                    changed = true;
                }
            }
            // Create the other tables so reads never meet a missing one.
            for def in [KEYS, KNOWLEDGE, MEMBERS] {
                txn.open_table(def).map_err(re(path))?;
            }
        }
        if changed {
            txn.commit().map_err(re(path))
        } else {
            txn.abort().map_err(re(path))
        }
    }
}

/// How the previous run on a data directory ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PreviousRun {
    /// There was none (a new store).
    None,
    /// With [`Store::close`]: every commit durable.
    Closed,
    /// Otherwise (a crash, `kill -9`, a power cut): lazy commits may be lost.
    Unclosed,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.dir)
            .field("open", &self.db.is_some())
            .finish()
    }
}

/// Take the advisory lock on `dir/LOCK` and record our pid in it.
///
/// A lock this process held a moment ago can still be held for a few
/// milliseconds after its `Store` is dropped: a child forked by another
/// thread in that window (a test binary's child processes, a health-check
/// command) shares the lock file's descriptor until it execs. So when the
/// lock names this very process, wait briefly before reporting `Locked`.
fn lock_dir(dir: &Path) -> Result<File, StoreError> {
    let own = format!("pid {}", std::process::id());
    let mut waited_ms = 0;
    loop {
        match try_lock_dir(dir) {
            Err(StoreError::Locked { holder, .. })
                if holder.as_deref() == Some(own.as_str()) && waited_ms < 500 =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
                waited_ms += 10;
            }
            other => return other,
        }
    }
}

fn try_lock_dir(dir: &Path) -> Result<File, StoreError> {
    let path = dir.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| io_error(&path, e))?;
    // `File::try_lock` is `flock(LOCK_EX | LOCK_NB)` on Unix (std 1.89;
    // redb 4.5 already needs 1.90). It is per open file, so a second `Store`
    // in the same process is refused too, and the kernel drops it when the
    // process dies, so a `kill -9` never leaves a stale lock.
    #[allow(clippy::incompatible_msrv)]
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            let mut text = String::new();
            let holder = file
                .read_to_string(&mut text)
                .ok()
                .map(|_| text.trim().to_string())
                .filter(|t| !t.is_empty());
            return Err(StoreError::Locked {
                path: dir.to_path_buf(),
                holder,
            });
        }
        Err(fs::TryLockError::Error(e)) => return Err(io_error(&path, e)),
    }
    // Best effort: the pid only improves the `Locked` message.
    let _ = file
        .set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| write!(file, "pid {}", std::process::id()))
        .and_then(|()| file.flush());
    Ok(file)
}

fn open_database(path: &Path) -> Result<Database, StoreError> {
    let db = Database::builder()
        .set_cache_size(CACHE_BYTES)
        // Verify page checksums at open: a file damaged outside redb is then
        // reported as corrupt instead of being trusted (a plain open may
        // panic on it). Costs one read of the file per start.
        .set_check_integrity_on_open(true)
        .create(path)
        .map_err(|e| redb_error(path, e))?;
    restrict_permissions(path)?;
    Ok(db)
}

/// The database holds the cluster's state (and, before migration, the
/// node's secret key): owner-only on Unix.
#[cfg(unix)]
fn restrict_permissions(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = fs::metadata(path).map_err(|e| io_error(path, e))?;
    if meta.permissions().mode() & 0o077 != 0 {
        fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(|e| io_error(path, e))?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn restrict_permissions(_path: &Path) -> Result<(), StoreError> {
    Ok(())
}

/// Schema v3 or v4 → v5. A v3 grave knew only its dot (its context
/// becomes that dot alone, exactly what a v3 node could say about it); a
/// v4 grave gained the collected tombstone's context; a v5 grave also
/// keeps the signed tombstone, which neither older schema kept, so a
/// migrated grave still buries here but is never sent to a peer (none
/// would take it without a signature). Member records gained their
/// subject's signature in v4: v3 records are dropped.
fn migrate_graves(path: &Path, txn: &redb::WriteTransaction, from: u32) -> Result<(), StoreError> {
    use crate::core::{Context, Dot, Grave, Hlc, KeyState, Version};

    #[derive(serde::Deserialize)]
    struct GraveV3 {
        dot: Dot,
        hlc: Hlc,
    }
    #[derive(serde::Deserialize)]
    struct GraveV4 {
        dot: Dot,
        hlc: Hlc,
        ctx: Context,
    }
    #[derive(serde::Deserialize)]
    struct KeyStateOld<G> {
        live: Vec<Version>,
        history: Vec<Version>,
        grave: Option<G>,
    }

    let upgrade = |bytes: &[u8]| -> Result<KeyState, StoreError> {
        let (live, history, grave) = if from == 3 {
            let old: KeyStateOld<GraveV3> = decode(path, "v3 key state", bytes)?;
            let grave = old.grave.map(|g| {
                let mut ctx = Context::default();
                ctx.add(g.dot);
                GraveV4 {
                    dot: g.dot,
                    hlc: g.hlc,
                    ctx,
                }
            });
            (old.live, old.history, grave)
        } else {
            let old: KeyStateOld<GraveV4> = decode(path, "v4 key state", bytes)?;
            (old.live, old.history, old.grave)
        };
        Ok(KeyState {
            live,
            history,
            grave: grave.map(|g| {
                Box::new(Grave {
                    dot: g.dot,
                    hlc: g.hlc,
                    ctx: g.ctx,
                    tombstone: None,
                })
            }),
        })
    };

    let mut table = txn.open_table(KEYS).map_err(re(path))?;
    let mut rewritten = Vec::new();
    for row in table.iter().map_err(re(path))? {
        let (k, v) = row.map_err(re(path))?;
        rewritten.push((k.value().to_vec(), encode(&upgrade(v.value())?)?));
    }
    for (k, v) in rewritten {
        table.insert(k.as_slice(), v.as_slice()).map_err(re(path))?;
    }
    if from == 3 {
        // Member records gained their subject's signature; a v3 record has
        // none and would be rejected by every peer. They are the cluster's
        // to tell again (the node learns them back at its first sync), so
        // they go.
        let mut members = txn.open_table(MEMBERS).map_err(re(path))?;
        members.retain(|_, _| false).map_err(re(path))?;
    }
    Ok(())
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    bincode::serde::encode_to_vec(value, bincode::config::standard()).map_err(|e| StoreError::Encoding {
        reason: e.to_string(),
    })
}

fn decode<T: DeserializeOwned>(path: &Path, what: &str, bytes: &[u8]) -> Result<T, StoreError> {
    let config = bincode::config::standard().with_limit::<DECODE_LIMIT>();
    match bincode::serde::decode_from_slice(bytes, config) {
        Ok((value, used)) if used == bytes.len() => Ok(value),
        Ok(_) => Err(corrupt(path, &format!("trailing bytes after a stored {what}"))),
        Err(e) => Err(corrupt(path, &format!("a stored {what} does not decode: {e}"))),
    }
}

fn node_id(path: &Path, bytes: &[u8]) -> Result<NodeId, StoreError> {
    <[u8; 32]>::try_from(bytes)
        .map(NodeId)
        .map_err(|_| corrupt(path, "a node id key is not 32 bytes"))
}

/// `map_err` adapter: any redb error on the database at `path`.
fn re<E: Into<redb::Error>>(path: &Path) -> impl Fn(E) -> StoreError + '_ {
    move |e| redb_error(path, e)
}

fn corrupt(path: &Path, reason: &str) -> StoreError {
    StoreError::Corrupt {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests;
