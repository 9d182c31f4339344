//! What a node must remember about its own registrations that the
//! replicated record does not carry: the instance's check definitions and
//! whether a service file declared it. One small JSON file in the data
//! directory (`local-services.json`), rewritten whole (temporary file,
//! fsync, rename) on every change; read at start to re-arm checks and to
//! deregister instances whose service file went away while the node was
//! down.
//!
//! Why a file and not the replicated record: check definitions are the
//! owner's business (only the owner runs them), and putting them in
//! [`ServiceInstance`](crate::core::ServiceInstance) would change the wire
//! format, the store schema and what every version's signature covers.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::core::{InstanceId, Namespace, ServiceName};

use super::spec::CheckSpec;

/// The file's name in the data directory.
pub(crate) const LOCAL_FILE: &str = "local-services.json";
/// The file's format version.
const FORMAT: u32 = 1;

/// An instance: namespace, service, instance id.
pub(crate) type InstanceKey = (Namespace, ServiceName, InstanceId);

/// What is remembered about one owned instance.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LocalEntry {
    /// Its checks (empty: none).
    #[serde(default)]
    pub checks: Vec<CheckSpec>,
    /// The service file that declared it, if one did (its file name).
    #[serde(default)]
    pub file: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct OnDisk {
    format: u32,
    instances: Vec<OnDiskEntry>,
}

#[derive(Serialize, Deserialize)]
struct OnDiskEntry {
    namespace: Namespace,
    service: ServiceName,
    instance: InstanceId,
    #[serde(flatten)]
    entry: LocalEntry,
}

/// The in-memory copy and its file.
#[derive(Debug)]
pub(crate) struct LocalStore {
    path: PathBuf,
    entries: BTreeMap<InstanceKey, LocalEntry>,
}

impl LocalStore {
    /// Read the file in `data_dir` (none yet: empty). A file that cannot
    /// be read or parsed is moved aside (`.bad`) with an error logged: the
    /// node still starts, without re-arming those checks.
    pub(crate) fn open(data_dir: &Path) -> LocalStore {
        let path = data_dir.join(LOCAL_FILE);
        let entries = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<OnDisk>(&bytes) {
                Ok(d) if d.format == FORMAT => d
                    .instances
                    .into_iter()
                    .map(|e| ((e.namespace, e.service, e.instance), e.entry))
                    .collect(),
                Ok(d) => {
                    set_aside(&path, &format!("unknown format {}", d.format));
                    BTreeMap::new()
                }
                Err(e) => {
                    set_aside(&path, &e.to_string());
                    BTreeMap::new()
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "cannot read the local service registrations: checks are not re-armed");
                BTreeMap::new()
            }
        };
        LocalStore { path, entries }
    }

    /// Every entry.
    pub(crate) fn entries(&self) -> &BTreeMap<InstanceKey, LocalEntry> {
        &self.entries
    }

    /// The entry of `key`.
    pub(crate) fn get(&self, key: &InstanceKey) -> Option<&LocalEntry> {
        self.entries.get(key)
    }

    /// Set (or, for an empty entry, remove) `key`'s entry; returns the
    /// previous one. Call [`LocalStore::save`] to make it durable.
    pub(crate) fn set(&mut self, key: InstanceKey, entry: LocalEntry) -> Option<LocalEntry> {
        if entry == LocalEntry::default() {
            self.entries.remove(&key)
        } else {
            self.entries.insert(key, entry)
        }
    }

    /// The file's new content.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let d = OnDisk {
            format: FORMAT,
            instances: self
                .entries
                .iter()
                .map(|((n, s, i), e)| OnDiskEntry {
                    namespace: n.clone(),
                    service: s.clone(),
                    instance: i.clone(),
                    entry: e.clone(),
                })
                .collect(),
        };
        serde_json::to_vec_pretty(&d).expect("local registrations always serialize")
    }

    /// The file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// Write `bytes` to `path` durably: a temporary file, fsync, rename over,
/// fsync of the directory.
pub(crate) fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn set_aside(path: &Path, why: &str) {
    let aside = path.with_extension("json.bad");
    let moved = std::fs::rename(path, &aside);
    tracing::error!(
        file = %path.display(),
        moved_to = %aside.display(),
        moved = moved.is_ok(),
        error = why,
        "the local service registrations file is invalid: checks are not re-armed and \
         service files are read afresh"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: &str) -> InstanceKey {
        (
            Namespace::new("prod").unwrap(),
            ServiceName::new("web").unwrap(),
            InstanceId::new(i).unwrap(),
        )
    }

    #[test]
    fn entries_survive_a_write_and_read_and_empty_ones_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = LocalStore::open(dir.path());
        assert!(s.entries().is_empty());
        s.set(
            key("a"),
            LocalEntry {
                checks: vec![CheckSpec::tcp("127.0.0.1:1")],
                file: Some("a.toml".into()),
            },
        );
        s.set(key("b"), LocalEntry::default());
        write_durably(s.path(), &s.encode()).unwrap();
        let again = LocalStore::open(dir.path());
        assert_eq!(again.entries().len(), 1);
        assert_eq!(again.get(&key("a")).unwrap().file.as_deref(), Some("a.toml"));
    }

    #[test]
    fn a_corrupt_file_is_set_aside_and_the_store_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(LOCAL_FILE), b"{not json").unwrap();
        let s = LocalStore::open(dir.path());
        assert!(s.entries().is_empty());
        assert!(dir.path().join("local-services.json.bad").exists());
    }
}
