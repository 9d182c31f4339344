//! The node identity: its ed25519 secret key, in a file of its own.
//!
//! # Layout
//! `DATA_DIR/identity/node.key`, in a directory of its own:
//!
//! | path                  | mode (Unix) | refused at start when          |
//! |-----------------------|-------------|--------------------------------|
//! | `DATA_DIR/identity/`  | 0700        | any group or other bit is set  |
//! | `…/identity/node.key` | 0600        | any group or other bit is set  |
//!
//! The file is text, in the cluster key's three-line format with its own
//! first line:
//!
//! ```text
//! /key/starling/node-identity/ed25519/1.0.0/
//! /base16/
//! <64 hex digits: the 32-byte ed25519 secret key>
//! ```
//!
//! # At start ([`Store::identity_secret`])
//! * The file exists: it is checked (modes, format) and used.
//! * No file, and the store still holds the identity in its `meta` table
//!   (a data directory from before this layout): the file is written with
//!   that key (the node keeps its id), then the row is deleted, so the
//!   secret lives in one place. A crash between the two leaves both, equal;
//!   the next start deletes the row. A row that differs from the file is
//!   refused ([`IdentityError::Conflict`]).
//! * No file, no row, and a store holding no data: a brand-new node; a key
//!   is made and written.
//! * No file, no row, and a store holding data: the identity was lost (a
//!   backup restored without `identity/`?). Refused
//!   ([`IdentityError::Lost`]) rather than minting a new id for state
//!   written under the old one.
//!
//! A file kept while `starling.redb` is moved aside keeps the id with an
//! empty store: the node is then like one restored from an old backup, and
//! takes its own newer writes back from peers (the engine moves its counter
//! past them, so no dot is reused).
//!
//! Every write is atomic (a temp file, synced, renamed, the directory
//! synced). The store's lock on the data directory is held throughout, so
//! two processes never race to make a key.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::{Store, StoreError};
use crate::key_file::{self, KeyFileError};

/// The identity directory's name inside the data directory.
const IDENTITY_DIR: &str = "identity";
/// The key file's name inside the identity directory.
const IDENTITY_FILE: &str = "node.key";
/// The key file's first line.
const TYPE_LINE: &str = "/key/starling/node-identity/ed25519/1.0.0/";
/// Permission bits neither the directory nor the file may have: any access
/// by the group or by other users.
const FORBIDDEN_MODE_BITS: u32 = 0o077;

/// Why the node identity could not be read, migrated or made. No node
/// runs; each variant says what changed and what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The key file is accessible to the group or other users. Nothing was
    /// read or changed. Run the `chmod 600` the message gives.
    #[error(
        "node identity key {} is accessible to other users (mode {mode:03o}); \
         run `chmod 600 {}`",
        path.display(), path.display()
    )]
    FilePermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The identity directory is accessible to the group or other users.
    /// Nothing was read or changed. Run the `chmod 700` the message gives.
    #[error(
        "node identity directory {} is accessible to other users (mode {mode:03o}); \
         run `chmod 700 {}`",
        path.display(), path.display()
    )]
    DirPermissions {
        /// The directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key file or its directory could not be read. Nothing changed;
    /// fix the path's ownership or permissions.
    #[error("cannot read node identity {}: {source}", path.display())]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The key file (or the identity directory) is not what it should be.
    /// Nothing changed. Restore the file from a backup; only if it is
    /// truly lost, move the data directory aside to start as a new node.
    #[error("invalid node identity {}: {reason}", path.display())]
    Format {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The key file could not be written (first start or migration). The
    /// store was not changed; a partial temp file may be left and is
    /// replaced on the next start. Fix the cause (permissions, space).
    #[error("cannot write node identity {}: {source}", path.display())]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The data directory holds a node's state but neither the key file
    /// nor the legacy identity row: the identity is lost. Nothing changed.
    /// Restore `identity/node.key` from a backup; or, to start as a new
    /// node that resyncs from its peers, move the data directory aside.
    #[error(
        "node identity {} is missing but data directory {} holds a node's state; \
         restore the key file from a backup, or move the data directory aside to \
         start as a new node",
        path.display(), data_dir.display()
    )]
    Lost {
        /// The missing key file.
        path: PathBuf,
        /// The data directory.
        data_dir: PathBuf,
    },
    /// The key file and the store's legacy identity row hold different
    /// keys. Nothing changed. One of them was replaced by hand: keep the
    /// right one (the file is used once the row is gone).
    #[error(
        "node identity {} differs from the identity still stored in the database; \
         the data directory was altered: restore it from a backup",
        path.display()
    )]
    Conflict {
        /// The key file.
        path: PathBuf,
    },
    /// The store failed while the identity row was read or deleted (see
    /// [`StoreError`]).
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl IdentityError {
    /// Whether this is a permission refusal: an operator's fix to a file
    /// mode, which the CLI reports as a configuration error (exit 2).
    pub fn is_permissions(&self) -> bool {
        matches!(
            self,
            IdentityError::FilePermissions { .. } | IdentityError::DirPermissions { .. }
        )
    }
}

impl Store {
    /// The node's persistent identity: its 32-byte ed25519 secret key, read
    /// from `DIR/identity/node.key` (a text file, mode 0600, in a directory
    /// of mode 0700; either one open to the group or other users is refused).
    ///
    /// * The file exists: it is checked and used.
    /// * No file, but the store still holds the key in its `meta` table (a
    ///   data directory from an older build): the file is written with that
    ///   key (same id), then the row is deleted. A row that differs from an
    ///   existing file is [`IdentityError::Conflict`].
    /// * No file, no row, and a store with no data: a new key is made.
    /// * No file, no row, and a store holding data: [`IdentityError::Lost`];
    ///   no new identity is made for state written under the old one.
    ///
    /// Writes are atomic (temp file, fsync, rename, directory fsync).
    pub fn identity_secret(&mut self) -> Result<[u8; 32], IdentityError> {
        let dir = self.dir.join(IDENTITY_DIR);
        let path = dir.join(IDENTITY_FILE);
        let from_file = if check_dir(&dir)? { read_key(&path)? } else { None };
        let legacy = self.legacy_identity()?;
        let secret = match (from_file, legacy) {
            (Some(file), Some(row)) if file != row => return Err(IdentityError::Conflict { path }),
            (Some(file), _) => file,
            (None, Some(row)) => {
                write_key(&dir, &path, &row)?;
                tracing::info!(path = %path.display(), "node identity moved from the store to its own file");
                row
            }
            (None, None) => {
                if self.holds_data()? {
                    return Err(IdentityError::Lost {
                        path,
                        data_dir: self.dir.clone(),
                    });
                }
                let key = libp2p::identity::ed25519::SecretKey::generate();
                let bytes: [u8; 32] = key
                    .as_ref()
                    .try_into()
                    .expect("an ed25519 secret key is 32 bytes");
                write_key(&dir, &path, &bytes)?;
                tracing::info!(path = %path.display(), "new node identity written");
                bytes
            }
        };
        if legacy.is_some() {
            self.remove_legacy_identity()?;
        }
        Ok(secret)
    }
}

/// Whether the identity directory exists; if it does, it must be a
/// directory with no group or other permission bits.
fn check_dir(dir: &Path) -> Result<bool, IdentityError> {
    let meta = match fs::metadata(dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(source) => {
            return Err(IdentityError::Read {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    if !meta.is_dir() {
        return Err(IdentityError::Format {
            path: dir.to_path_buf(),
            reason: "not a directory".into(),
        });
    }
    key_file::check_mode(&meta, FORBIDDEN_MODE_BITS).map_err(|mode| IdentityError::DirPermissions {
        path: dir.to_path_buf(),
        mode,
    })?;
    Ok(true)
}

/// The key in `path`, or `None` if there is no such file.
fn read_key(path: &Path) -> Result<Option<[u8; 32]>, IdentityError> {
    let text = match key_file::read_checked(path, FORBIDDEN_MODE_BITS) {
        Ok(text) => text,
        Err(KeyFileError::Read(e)) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(KeyFileError::Read(source)) => {
            return Err(IdentityError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
        Err(KeyFileError::Permissions(mode)) => {
            return Err(IdentityError::FilePermissions {
                path: path.to_path_buf(),
                mode,
            })
        }
        Err(KeyFileError::Format(reason)) => {
            return Err(IdentityError::Format {
                path: path.to_path_buf(),
                reason,
            })
        }
    };
    key_file::parse(&text, TYPE_LINE, "restore it from a backup")
        .map(Some)
        .map_err(|reason| IdentityError::Format {
            path: path.to_path_buf(),
            reason,
        })
}

/// Write `key` to `path` atomically, creating `dir` owner-only first.
fn write_key(dir: &Path, path: &Path, key: &[u8; 32]) -> Result<(), IdentityError> {
    let write = |path: &Path| {
        let path = path.to_path_buf();
        move |source| IdentityError::Write { path, source }
    };
    let mut builder = fs::DirBuilder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        builder.mode(0o700);
        match builder.create(dir) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(write(dir)(e)),
            _ => {}
        }
        // The umask can only narrow 0700; set it anyway so the owner can
        // always write (a umask of 0277 would leave 0500).
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(write(dir))?;
    }
    #[cfg(not(unix))]
    match builder.create(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(write(dir)(e)),
        _ => {}
    }
    key_file::write_atomic(path, &key_file::to_text(TYPE_LINE, key)).map_err(write(path))
}

/// The legacy identity row, written as a build from before this layout
/// did: for the migration tests.
#[cfg(test)]
pub(super) fn write_legacy_row(store: &mut Store, key: &[u8; 32]) {
    use redb::Durability;
    let db = store.database().expect("test store is open");
    let mut txn = db.begin_write().expect("test write");
    txn.set_durability(Durability::Immediate).expect("durability");
    txn.open_table(super::META)
        .expect("meta table")
        .insert(super::ROW_IDENTITY, key.as_slice())
        .expect("insert");
    txn.commit().expect("commit");
}

/// The path of the key file in `data_dir`.
#[cfg(test)]
pub(super) fn key_path(data_dir: &Path) -> PathBuf {
    data_dir.join(IDENTITY_DIR).join(IDENTITY_FILE)
}
