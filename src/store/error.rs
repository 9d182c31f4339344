//! The storage layer's one error type, and the mapping from redb's errors.

use std::io;
use std::path::{Path, PathBuf};

/// Why a [`Store`](super::Store) operation failed.
///
/// Every variant says whether durable state changed and what the caller
/// should do. For [`Store::apply`](super::Store::apply) the rule is the same
/// for all of them: the batch was **not** applied (its transaction was
/// aborted or never committed), so the driver feeds `Input::PersistFailed`
/// back to the engine and skips the batch's actions.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A filesystem operation failed (permissions, missing directory, I/O
    /// error). At open: nothing changed; fix the path or its permissions.
    /// On apply: report the write as failed; the store reopens the database
    /// for the next call. One caveat, inherent to `fsync`: if the error came
    /// from the commit's final flush, the batch may or may not be on disk
    /// after a restart (never half of it). Acknowledged writes are never
    /// affected; the engine must not rely on an un-acknowledged batch being
    /// absent (e.g. it must not reuse its dots).
    #[error("storage I/O error on {}: {source}", path.display())]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The data directory is held by another `Store`, in this process or in
    /// another one (typically a second `starling run` on the same
    /// `--data-dir`). Nothing was opened or changed. Stop the other node or
    /// choose another data directory.
    #[error("data directory {} is in use by another Starling node{}: stop it or choose another data directory", path.display(), holder.as_deref().map(|h| format!(" ({h})")).unwrap_or_default())]
    Locked {
        /// The data directory.
        path: PathBuf,
        /// What the lock file says about its holder (e.g. `pid 1234`), if
        /// readable.
        holder: Option<String>,
    },
    /// The database file is damaged or is not a Starling database. Nothing
    /// was changed. Restore the file from a backup, or move it aside and
    /// restart: the node then resyncs the cluster's state from its peers
    /// (but writes only this node held are lost; it keeps its identity, which
    /// is in `identity/node.key`, not in the database).
    #[error("database {} is corrupt: {reason}; restore it from a backup, or move it aside to resync from peers", path.display())]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// The filesystem holding the database is full (or over quota). The
    /// failing write was not applied; everything committed before it is
    /// intact. Free space; the next call reopens the database and retries.
    #[error("disk full writing {}: free some space; writes fail until then", path.display())]
    DiskFull {
        /// The database file.
        path: PathBuf,
    },
    /// The database was written by an incompatible version (a newer Starling
    /// schema, or a redb file format this build cannot read). Nothing was
    /// changed. Run the newer Starling, or use another data directory.
    #[error("database {} is incompatible with this build: {reason}", path.display())]
    Incompatible {
        /// The database file.
        path: PathBuf,
        /// Which versions were found and supported.
        reason: String,
    },
    /// A value could not be encoded for storage. Nothing was changed. This is
    /// a bug (every persisted type encodes infallibly into memory); report it.
    #[error("could not encode a value for storage: {reason}")]
    Encoding {
        /// The encoder's message.
        reason: String,
    },
    /// Any other failure of the storage engine (for example a value over
    /// redb's 3 GiB limit). Nothing was changed by the failing call; report
    /// it as a failed write.
    #[error("storage engine error on {}: {reason}", path.display())]
    Database {
        /// The database file.
        path: PathBuf,
        /// redb's message.
        reason: String,
    },
}

impl StoreError {
    /// Whether the database handle may be unusable after this error (redb
    /// latches an I/O failure and refuses further work until reopened).
    pub(super) fn needs_reopen(&self) -> bool {
        matches!(
            self,
            StoreError::Io { .. } | StoreError::DiskFull { .. } | StoreError::Database { .. }
        )
    }
}

/// Whether an I/O error means "no space left" (ENOSPC) or "over quota".
pub(super) fn is_disk_full(err: &io::Error) -> bool {
    // ENOSPC is 28 on Linux and the BSDs; std already maps it to
    // `StorageFull`, the raw check covers errors built from a raw code.
    const ENOSPC: i32 = 28;
    matches!(
        err.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    ) || (cfg!(unix) && err.raw_os_error() == Some(ENOSPC))
}

/// An I/O error on `path`, with a full disk reported as such.
pub(super) fn io_error(path: &Path, source: io::Error) -> StoreError {
    if is_disk_full(&source) {
        StoreError::DiskFull {
            path: path.to_path_buf(),
        }
    } else {
        StoreError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Map any redb error on the database file `path` to a [`StoreError`].
pub(super) fn redb_error(path: &Path, err: impl Into<redb::Error>) -> StoreError {
    let err: redb::Error = err.into();
    match err {
        redb::Error::DatabaseAlreadyOpen => StoreError::Locked {
            path: path.parent().unwrap_or(path).to_path_buf(),
            holder: None,
        },
        redb::Error::Corrupted(reason) => StoreError::Corrupt {
            path: path.to_path_buf(),
            reason,
        },
        redb::Error::UpgradeRequired(version) => StoreError::Incompatible {
            path: path.to_path_buf(),
            reason: format!("redb file format v{version} needs an upgrade this build does not do"),
        },
        // redb reports a file that is not a database (bad magic number) as
        // invalid data.
        redb::Error::Io(source) if source.kind() == io::ErrorKind::InvalidData => StoreError::Corrupt {
            path: path.to_path_buf(),
            reason: source.to_string(),
        },
        redb::Error::Io(source) => io_error(path, source),
        other => StoreError::Database {
            path: path.to_path_buf(),
            reason: other.to_string(),
        },
    }
}
