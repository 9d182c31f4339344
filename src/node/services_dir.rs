//! Services from files: a directory (`services_dir`) of TOML files, one
//! service instance each, that this node registers as its own.
//!
//! ```toml
//! # /etc/starling/services/web-1.toml  (instance id: web-1, from the file name)
//! name = "web"
//! namespace = "prod"
//! address = "10.0.0.7"
//! port = 8080
//! tags = ["v2"]
//! weight = 100
//! [metadata]
//! version = "1.4.2"
//! [[checks]]
//! http = "http://10.0.0.7:8080/health"
//! interval_ms = 5000
//! ```
//!
//! The directory is read every second ([`POLL`]) and each `*.toml` file
//! compared by content with what was last read (files whose name starts
//! with `.` are skipped, as are editors' temporaries). A new file registers
//! its instance, a changed one updates it, a removed one deregisters it. A
//! file that cannot be read or parsed, or that declares an instance
//! another file already declares (the file that registered it first keeps
//! it), gets one error in the log and a count in
//! `starling_service_file_errors_total`, and changes nothing: the
//! registration made from its last valid content stays.
//!
//! Polling rather than inotify (the `notify` crate): the node's config
//! file is watched the same way; it sees editors that save by renaming a
//! new file over the old one, Kubernetes ConfigMap symlink swaps and
//! network file systems alike, needs no new dependency, and costs one
//! directory listing and a read of a few small files per second.
//!
//! Which instances came from files is remembered in the data directory
//! (with their checks), so a file removed while the node was down
//! deregisters its instance at the next start.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::core::{InstanceId, Namespace, ServiceName, ServiceSpec};

use super::checks::{CheckSpec, InstanceKey};
use super::handle::NodeHandle;

/// How often the directory is read.
pub const POLL: Duration = Duration::from_secs(1);
/// Most service files read from the directory (the first, by name).
pub const MAX_SERVICE_FILES: usize = 1024;
/// Largest service file read, bytes.
pub const MAX_SERVICE_FILE_BYTES: u64 = 64 * 1024;

/// One service file, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceFile {
    name: String,
    namespace: String,
    #[serde(default)]
    id: Option<String>,
    address: String,
    port: u16,
    #[serde(default)]
    tags: BTreeSet<String>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    #[serde(default = "default_weight")]
    weight: u8,
    #[serde(default)]
    ttl_ms: Option<u64>,
    #[serde(default)]
    checks: Vec<CheckSpec>,
}

fn default_weight() -> u8 {
    100
}

/// A valid service file: the instance it declares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Declared {
    /// Namespace, service, instance id.
    pub key: InstanceKey,
    /// What to register.
    pub spec: ServiceSpec,
    /// Its checks.
    pub checks: Vec<CheckSpec>,
}

/// Parse the file `file_name` (its instance id, without `id`, is the name
/// without `.toml`). The error names the file and the field.
pub(crate) fn parse(file_name: &str, text: &str) -> Result<Declared, String> {
    let f: ServiceFile = toml::from_str(text).map_err(|e| e.to_string().trim().replace('\n', " "))?;
    let namespace = Namespace::new(f.namespace).map_err(|e| format!("namespace: {e}"))?;
    let service = ServiceName::new(f.name).map_err(|e| format!("name: {e}"))?;
    let id = match f.id {
        Some(id) => InstanceId::new(id).map_err(|e| format!("id: {e}"))?,
        None => {
            let stem = file_name.strip_suffix(".toml").unwrap_or(file_name);
            InstanceId::new(stem).map_err(|e| {
                format!(
                    "the file name {stem:?} is not a valid instance id ({e}): rename the file or set `id`"
                )
            })?
        }
    };
    let spec = ServiceSpec {
        address: f.address,
        port: f.port,
        tags: f.tags,
        metadata: f.metadata,
        weight: f.weight,
        ttl_ms: f.ttl_ms,
    };
    spec.validate()?;
    super::checks::validate_checks(&spec, &f.checks)?;
    Ok(Declared {
        key: (namespace, service, id),
        spec,
        checks: f.checks,
    })
}

/// Watch `dir` on a task of its own until the node stops. Instances that
/// files declared before a restart are known from the data directory.
pub(crate) fn spawn(h: NodeHandle, dir: PathBuf) {
    tokio::spawn(async move {
        tracing::info!(dir = %dir.display(), "reading service files");
        let mut w = DirWatch::new(&h, dir).await;
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if h.tx.is_closed() {
                return;
            }
            w.scan(&h).await;
        }
    });
}

/// What one file held when last read.
#[derive(Debug)]
struct Seen {
    /// Its content (or the read error), to notice a change.
    content: Result<Vec<u8>, String>,
    /// What its last valid content declared.
    declared: Option<Declared>,
}

/// The directory's state between two scans.
struct DirWatch {
    dir: PathBuf,
    files: BTreeMap<String, Seen>,
    /// What this node registered from files: file name and declaration
    /// (`None`: registered before a restart, content unknown).
    registered: BTreeMap<InstanceKey, (String, Option<Declared>)>,
    /// Declarations the node refused, not retried until they change.
    refused: BTreeMap<InstanceKey, Declared>,
    /// Duplicates already reported (file, key).
    duplicates: BTreeSet<(String, InstanceKey)>,
    /// The last error reading the directory.
    dir_error: Option<String>,
    too_many_logged: bool,
}

impl DirWatch {
    async fn new(h: &NodeHandle, dir: PathBuf) -> DirWatch {
        let mut registered = BTreeMap::new();
        for (key, entry) in h.checks.remembered() {
            let Some(file) = entry.file else { continue };
            let declared = match super::checks::owned_instance_spec(h, &key).await {
                Ok(Some(spec)) => Some(Declared {
                    key: key.clone(),
                    spec,
                    checks: entry.checks,
                }),
                _ => None,
            };
            registered.insert(key, (file, declared));
        }
        DirWatch {
            dir,
            files: BTreeMap::new(),
            registered,
            refused: BTreeMap::new(),
            duplicates: BTreeSet::new(),
            dir_error: None,
            too_many_logged: false,
        }
    }

    /// Read the directory and apply what changed.
    async fn scan(&mut self, h: &NodeHandle) {
        let dir = self.dir.clone();
        let read = tokio::task::spawn_blocking(move || read_dir(&dir)).await;
        let (contents, too_many) = match read {
            Ok(Ok(r)) => {
                self.dir_error = None;
                r
            }
            Ok(Err(e)) => {
                if self.dir_error.as_ref() != Some(&e) {
                    tracing::error!(dir = %self.dir.display(), error = %e, "cannot read the service directory: registrations stay as they are");
                    h.checks.metrics.file_error("read");
                    self.dir_error = Some(e);
                }
                return;
            }
            Err(_) => return, // the runtime is shutting down
        };
        if too_many && !self.too_many_logged {
            tracing::error!(dir = %self.dir.display(), max = MAX_SERVICE_FILES, "too many service files: only the first ones by name are read");
            h.checks.metrics.file_error("read");
        }
        self.too_many_logged = too_many;
        self.files.retain(|name, _| contents.contains_key(name));
        for (name, content) in contents {
            let previous = self.files.get(&name);
            if previous.is_some_and(|p| p.content == content) {
                continue;
            }
            let mut declared = previous.and_then(|p| p.declared.clone());
            match &content {
                Err(e) => {
                    tracing::error!(file = %name, error = %e, "cannot read service file: its registration stays as it was");
                    h.checks.metrics.file_error("read");
                }
                Ok(bytes) => match std::str::from_utf8(bytes)
                    .map_err(|e| format!("not UTF-8: {e}"))
                    .and_then(|text| parse(&name, text))
                {
                    Ok(d) => declared = Some(d),
                    Err(e) => {
                        tracing::error!(file = %name, error = %e, "invalid service file: its registration stays as it was");
                        h.checks.metrics.file_error("parse");
                    }
                },
            }
            self.files.insert(name, Seen { content, declared });
        }
        self.apply(h).await;
    }

    /// Register, update and deregister so that the registrations match the
    /// files' declarations.
    async fn apply(&mut self, h: &NodeHandle) {
        let mut desired: BTreeMap<InstanceKey, (String, Declared)> = BTreeMap::new();
        let mut duplicates = BTreeSet::new();
        // The file that registered an instance keeps it; then files by name.
        let holds = |name: &String, d: &Declared| self.registered.get(&d.key).is_some_and(|(f, _)| f == name);
        let ordered = self
            .files
            .iter()
            .filter_map(|(name, seen)| seen.declared.as_ref().map(|d| (name, d)))
            .filter(|(name, d)| holds(name, d))
            .chain(
                self.files
                    .iter()
                    .filter_map(|(name, seen)| seen.declared.as_ref().map(|d| (name, d)))
                    .filter(|(name, d)| !holds(name, d)),
            );
        for (name, d) in ordered {
            if let Some((first, _)) = desired.get(&d.key) {
                let dup = (name.clone(), d.key.clone());
                if !self.duplicates.contains(&dup) {
                    tracing::error!(file = %name, other = %first, instance = %d.key.2, "service file declares an instance another file already declares: ignored");
                    h.checks.metrics.file_error("duplicate");
                }
                duplicates.insert(dup);
                continue;
            }
            desired.insert(d.key.clone(), (name.clone(), d.clone()));
        }
        self.duplicates = duplicates;
        let gone: Vec<InstanceKey> = self
            .registered
            .keys()
            .filter(|k| !desired.contains_key(*k))
            .cloned()
            .collect();
        for key in gone {
            let (file, _) = self.registered.remove(&key).expect("listed above");
            self.refused.remove(&key);
            match h.checks.deregister(h, key.clone()).await {
                Ok(_) | Err(crate::node::NodeError::Command(crate::core::CommandError::NotFound)) => {
                    tracing::info!(file = %file, service = %key.1, instance = %key.2, "service file removed: instance deregistered");
                    h.checks.metrics.file_change("deregister");
                }
                Err(e) => {
                    tracing::error!(file = %file, instance = %key.2, error = %e, "cannot deregister the instance of a removed service file; retrying");
                    self.registered.insert(key, (file, None));
                }
            }
        }
        for (key, (file, d)) in desired {
            let same = self
                .registered
                .get(&key)
                .is_some_and(|(f, r)| *f == file && r.as_ref() == Some(&d));
            if same || self.refused.get(&key) == Some(&d) {
                continue;
            }
            let written = h
                .checks
                .register(
                    h,
                    key.clone(),
                    d.spec.clone(),
                    d.checks.clone(),
                    Some(file.clone()),
                )
                .await;
            match written {
                Ok(_) => {
                    tracing::info!(file = %file, service = %key.1, instance = %key.2, "service file applied: instance registered");
                    h.checks.metrics.file_change("register");
                    self.refused.remove(&key);
                    self.registered.insert(key, (file, Some(d)));
                }
                Err(e) => {
                    tracing::error!(file = %file, instance = %key.2, error = %e, "the node refused the service file's instance");
                    h.checks.metrics.file_error("register");
                    self.refused.insert(key, d);
                }
            }
        }
    }
}

/// The `*.toml` files of `dir` (not hidden), by name: content or read
/// error. `true` if there were more than [`MAX_SERVICE_FILES`].
#[allow(clippy::type_complexity)]
fn read_dir(dir: &std::path::Path) -> Result<(BTreeMap<String, Result<Vec<u8>, String>>, bool), String> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| e.to_string())? {
        let entry = entry.map_err(|e| e.to_string())?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if name.starts_with('.') || !name.ends_with(".toml") {
            continue;
        }
        // Follows symlinks: a symlinked file counts, a directory does not.
        if std::fs::metadata(entry.path()).is_ok_and(|m| m.is_file()) {
            names.push(name);
        }
    }
    names.sort();
    let too_many = names.len() > MAX_SERVICE_FILES;
    names.truncate(MAX_SERVICE_FILES);
    let mut out = BTreeMap::new();
    for name in names {
        let path = dir.join(&name);
        let content = match std::fs::metadata(&path) {
            Ok(m) if m.len() > MAX_SERVICE_FILE_BYTES => Err(format!(
                "{} bytes, over the limit of {MAX_SERVICE_FILE_BYTES}",
                m.len()
            )),
            _ => std::fs::read(&path).map_err(|e| e.to_string()),
        };
        out.insert(name, content);
    }
    Ok((out, too_many))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_declares_an_instance_named_after_it() {
        let d = parse(
            "web-1.toml",
            r#"
            name = "web"
            namespace = "prod"
            address = "127.0.0.1"
            port = 8080
            tags = ["v2"]
            [metadata]
            version = "1"
            [[checks]]
            tcp = "127.0.0.1:8080"
            interval_ms = 500
            "#,
        )
        .unwrap();
        assert_eq!(
            (d.key.0.as_str(), d.key.1.as_str(), d.key.2.as_str()),
            ("prod", "web", "web-1")
        );
        assert_eq!(d.spec.weight, 100);
        assert_eq!(d.checks, [CheckSpec::tcp("127.0.0.1:8080").with_interval_ms(500)]);
    }

    #[test]
    fn an_explicit_id_wins_and_bad_files_are_named_by_field() {
        let base = "name = \"web\"\nnamespace = \"prod\"\naddress = \"h\"\nport = 1\n";
        let d = parse("x y.toml", &format!("{base}id = \"w7\"\n")).unwrap();
        assert_eq!(d.key.2.as_str(), "w7");
        let e = parse("x y.toml", base).unwrap_err();
        assert!(e.contains("rename the file or set `id`"), "{e}");
        let e = parse("a.toml", &format!("{base}colour = 1\n")).unwrap_err();
        assert!(e.contains("colour"), "{e}");
        let e = parse("a.toml", &format!("{base}weight = 101\n")).unwrap_err();
        assert!(e.contains("weight"), "{e}");
        let e = parse(
            "a.toml",
            &format!("{base}ttl_ms = 1000\n[[checks]]\ntcp = \"h:1\"\n"),
        )
        .unwrap_err();
        assert!(e.contains("not both"), "{e}");
        let e = parse("a.toml", &format!("{base}[[checks]]\nhttp = \"https://h/\"\n")).unwrap_err();
        assert!(e.contains("https"), "{e}");
        assert!(parse("a.toml", "name = ").is_err());
    }
}
