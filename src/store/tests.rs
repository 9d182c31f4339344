// Timeouts and the latency benchmark below read the wall clock.
#![allow(clippy::disallowed_methods)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::*;
use crate::core::{
    Context, Dot, DotRange, Hlc, Key, KeyState, Member, MemberStatus, MemoryStore, Namespace, NodeInfo,
    Payload, PersistedMeta, Version,
};

/// The env var that turns this test binary into a child helper (see
/// [`child_helper`]): `writer:<dir>` or `open:<dir>`.
const CHILD_ENV: &str = "STARLING_STORE_TEST_CHILD";

fn kv(ns: &str, key: &str) -> StateKey {
    StateKey::Kv {
        namespace: Namespace::new(ns).expect("valid test namespace"),
        key: Key::new(key).expect("valid test key"),
    }
}

fn version(origin: u64, seq: u64, payload: Payload) -> Version {
    let dot = Dot {
        node: NodeId::from_index(origin),
        seq,
    };
    let mut ctx = Context::default();
    ctx.add(dot);
    Version {
        dot,
        ctx,
        hlc: Hlc {
            wall_ms: 1_700_000_000_000 + seq,
            logical: 0,
        },
        checksum: payload.checksum(),
        payload,
        signature: None,
    }
}

fn state(origin: u64, seq: u64, value: &[u8]) -> KeyState {
    KeyState {
        live: vec![version(origin, seq, Payload::Value(value.to_vec()))],
        history: vec![version(origin, seq.saturating_sub(1), Payload::Tombstone)],
        grave: None,
    }
}

fn member(index: u64, incarnation: u64, status: MemberStatus) -> Member {
    Member {
        node: NodeId::from_index(index),
        info: NodeInfo {
            name: format!("node-{index}"),
            addrs: vec![format!("/ip4/127.0.0.1/tcp/{}", 4000 + index)],
            tags: BTreeMap::from([("role".to_string(), "edge".to_string())]),
        }
        .into(),
        incarnation,
        status,
        proof: crate::core::crypto::Signature([index as u8; 64]),
    }
}

fn meta(id: u64) -> PersistedMeta {
    PersistedMeta {
        incarnation: id / 10,
        revision: id,
        hlc: Hlc {
            wall_ms: 1_700_000_000_000 + id,
            logical: (id % 7) as u32,
        },
        left: false,
    }
}

/// A batch putting `key-{id}` (plus a varied mix of everything else).
fn put_batch(id: u64) -> PersistBatch {
    let mut range = DotRange::default();
    for seq in 1..=id % 5 + 1 {
        range.insert(seq);
    }
    range.insert(id + 10);
    PersistBatch {
        id,
        keys: vec![(
            kv("app", &format!("key-{id}")),
            Some(state(id % 3, id + 1, &id.to_le_bytes())),
        )],
        knowledge: vec![(NodeId::from_index(id % 3), range)],
        members: vec![member(id % 4, id, MemberStatus::Alive)],
        removed_members: Vec::new(),
        meta: meta(id),
    }
}

/// A varied sequence: puts, overwrites, removals, multi-key batches.
fn batches() -> Vec<PersistBatch> {
    let mut out: Vec<PersistBatch> = (0..20).map(put_batch).collect();
    // Overwrite and remove within one batch, several namespaces.
    out.push(PersistBatch {
        id: 20,
        keys: vec![
            (kv("app", "key-3"), Some(state(1, 99, b"overwritten"))),
            (kv("app", "key-4"), None),
            (kv("other", "key-4"), Some(state(2, 5, b"other namespace"))),
            (kv("app", "never-written"), None),
        ],
        knowledge: vec![],
        members: vec![
            member(1, 50, MemberStatus::Suspect),
            member(9, 1, MemberStatus::Left),
        ],
        removed_members: Vec::new(),
        meta: meta(20),
    });
    // Put then remove the same key in one batch: the last one wins.
    out.push(PersistBatch {
        id: 21,
        keys: vec![
            (kv("app", "key-5"), Some(state(0, 7, b"x"))),
            (kv("app", "key-5"), None),
        ],
        knowledge: vec![],
        members: vec![],
        // The departed member of the batch before is reaped.
        removed_members: vec![member(9, 1, MemberStatus::Left).node],
        meta: PersistedMeta {
            left: true,
            ..meta(21)
        },
    });
    out
}

fn memory_after(batches: &[PersistBatch]) -> Snapshot {
    let mut memory = MemoryStore::new();
    for b in batches {
        memory.apply(b);
    }
    memory.snapshot()
}

/// The key names held in namespace `app`.
fn key_names(snapshot: &Snapshot) -> BTreeSet<String> {
    snapshot
        .keys
        .iter()
        .filter_map(|(k, _)| match k {
            StateKey::Kv { namespace, key } if namespace.as_str() == "app" => Some(key.as_str().to_string()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_new_store_loads_an_empty_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("data")).unwrap();
    assert_eq!(store.load().unwrap(), Snapshot::default());
    assert_eq!(store.load().unwrap(), MemoryStore::new().snapshot());
}

#[test]
fn applied_batches_reload_after_reopen_exactly_as_a_memory_store_holds_them() {
    let dir = tempfile::tempdir().unwrap();
    let batches = batches();
    {
        let mut store = Store::open(dir.path()).unwrap();
        for (i, b) in batches.iter().enumerate() {
            store.apply(b).unwrap();
            // The open store agrees with the reference after every batch.
            if i % 5 == 0 {
                assert_eq!(store.load().unwrap(), memory_after(&batches[..=i]));
            }
        }
    }
    let store = Store::open(dir.path()).unwrap();
    let loaded = store.load().unwrap();
    assert_eq!(loaded, memory_after(&batches));
    assert!(loaded.meta.left);
    // Members 0 to 3 and 1 again; member 9 came and was reaped.
    assert_eq!(loaded.members.len(), 4);
    let reaped = member(9, 1, MemberStatus::Left).node;
    assert!(loaded.members.iter().all(|m| m.node != reaped));
}

/// The failure: some 260 siblings of 1 MiB made a key's record
/// larger than the store decodes, and the node read its own store as
/// corrupt at the next start. Siblings merged from peers are now bounded
/// in count and bytes, and a key at the byte bound reads back.
#[test]
fn a_key_filled_to_its_bounds_by_peers_is_read_back_after_reopen() {
    let mut state = crate::core::ReplicatedState::new(16);
    state.set_max_siblings(1024);
    let key = kv("app", "big");
    for origin in 1..=160u64 {
        let mut v = version(origin, 1, Payload::Value(vec![origin as u8; 1 << 20]));
        v.hlc.wall_ms += origin;
        let _ = state.merge(key.clone(), v);
    }
    let ks = state.get(&key).expect("the key is held").clone();
    let size = crate::core::encoded_len(&ks);
    assert!(size <= crate::core::MAX_KEY_BYTES, "{size} bytes held");
    assert!(ks.live.len() > 100, "as many siblings as fit: {}", ks.live.len());
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = Store::open(dir.path()).unwrap();
        let batch = PersistBatch {
            id: 1,
            keys: vec![(key.clone(), Some(ks.clone()))],
            knowledge: Vec::new(),
            members: Vec::new(),
            removed_members: Vec::new(),
            meta: meta(1),
        };
        store.apply(&batch).unwrap();
    }
    let loaded = Store::open(dir.path())
        .unwrap()
        .load()
        .expect("the store reads back");
    assert_eq!(loaded.keys, vec![(key, ks)]);
}

#[test]
fn removed_keys_stay_removed_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let batches = batches();
    {
        let mut store = Store::open(dir.path()).unwrap();
        for b in &batches {
            store.apply(b).unwrap();
        }
    }
    let loaded = Store::open(dir.path()).unwrap().load().unwrap();
    let names = key_names(&loaded);
    assert!(!names.contains("key-4"), "removed in batch 20");
    assert!(!names.contains("key-5"), "put then removed in batch 21");
    assert!(!names.contains("never-written"));
    assert!(names.contains("key-3") && names.contains("key-6"));
    // `key-4` in another namespace is a different key and survives.
    assert!(loaded.keys.iter().any(|(k, _)| *k == kv("other", "key-4")));
}

#[test]
fn a_second_open_of_the_same_dir_fails_with_locked_naming_the_dir() {
    let dir = tempfile::tempdir().unwrap();
    let _first = Store::open(dir.path()).unwrap();
    let err = Store::open(dir.path()).expect_err("the dir is held");
    match &err {
        StoreError::Locked { path, holder } => {
            assert_eq!(path, dir.path());
            assert_eq!(
                holder.as_deref(),
                Some(format!("pid {}", std::process::id()).as_str())
            );
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    let message = err.to_string();
    assert!(message.contains(&dir.path().display().to_string()), "{message}");
}

#[test]
fn the_lock_is_released_when_the_store_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());
    Store::open(dir.path()).expect("reopen after drop");
}

#[test]
fn a_second_process_on_the_same_dir_fails_with_locked() {
    let dir = tempfile::tempdir().unwrap();
    let _held = Store::open(dir.path()).unwrap();
    let output = child(&format!("open:{}", dir.path().display()))
        .output()
        .expect("spawn the test binary as a child");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("OPEN "))
        .unwrap_or_else(|| panic!("child printed no result: {stdout}"));
    assert!(line.starts_with("OPEN locked "), "{line}");
    assert!(line.contains(&dir.path().display().to_string()), "{line}");
    assert!(line.contains(&format!("pid {}", std::process::id())), "{line}");
}

#[test]
fn the_identity_is_created_once_and_stable_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let first = Store::open(dir.path()).unwrap().identity_secret().unwrap();
    let second = Store::open(dir.path()).unwrap().identity_secret().unwrap();
    assert_eq!(first, second);
    assert_ne!(first, [0u8; 32]);
    let other = tempfile::tempdir().unwrap();
    let elsewhere = Store::open(other.path()).unwrap().identity_secret().unwrap();
    assert_ne!(first, elsewhere, "each data dir is its own node");
    // It is a usable libp2p ed25519 key.
    libp2p::identity::ed25519::SecretKey::try_from_bytes(first).expect("valid ed25519 secret");
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[cfg(unix)]
fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn the_identity_lives_in_an_owner_only_file_and_not_in_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let secret = store.identity_secret().unwrap();
    let path = identity::key_path(dir.path());
    let text = fs::read_to_string(&path).unwrap();
    assert!(
        text.starts_with("/key/starling/node-identity/ed25519/1.0.0/\n/base16/\n"),
        "{text}"
    );
    assert_eq!(
        store.legacy_identity().unwrap(),
        None,
        "the secret is in one place"
    );
    #[cfg(unix)]
    {
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
    }
    drop(store);
    // The file alone is the identity: it survives the database being replaced.
    fs::remove_file(dir.path().join(DB_FILE)).unwrap();
    assert_eq!(
        Store::open(dir.path()).unwrap().identity_secret().unwrap(),
        secret
    );
}

#[test]
fn a_legacy_identity_row_moves_to_the_file_and_keeps_the_id() {
    let dir = tempfile::tempdir().unwrap();
    let legacy = [7u8; 32];
    let mut store = Store::open(dir.path()).unwrap();
    identity::write_legacy_row(&mut store, &legacy);
    store.apply(&put_batch(1)).unwrap(); // it holds a node's state
    assert_eq!(store.identity_secret().unwrap(), legacy);
    assert_eq!(store.legacy_identity().unwrap(), None, "the row is deleted");
    drop(store);
    let mut store = Store::open(dir.path()).unwrap();
    assert_eq!(
        store.identity_secret().unwrap(),
        legacy,
        "the file is used from now on"
    );
    // A crash between writing the file and deleting the row leaves both,
    // equal: the next start finishes the move.
    identity::write_legacy_row(&mut store, &legacy);
    assert_eq!(store.identity_secret().unwrap(), legacy);
    assert_eq!(store.legacy_identity().unwrap(), None);
    // A row that differs from the file is refused, and nothing changes.
    identity::write_legacy_row(&mut store, &[9u8; 32]);
    let err = store.identity_secret().unwrap_err();
    assert!(matches!(err, IdentityError::Conflict { .. }), "{err:?}");
    assert_eq!(store.legacy_identity().unwrap(), Some([9u8; 32]));
}

#[test]
fn a_store_with_data_and_no_identity_is_refused_not_given_a_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    store.identity_secret().unwrap();
    store.apply(&put_batch(1)).unwrap();
    drop(store);
    let path = identity::key_path(dir.path());
    fs::remove_file(&path).unwrap();
    let err = Store::open(dir.path()).unwrap().identity_secret().unwrap_err();
    assert!(matches!(err, IdentityError::Lost { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()) && msg.contains("backup"),
        "{msg}"
    );
    assert!(!path.exists(), "no identity was minted");
}

#[test]
fn a_damaged_identity_file_is_refused_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    store.identity_secret().unwrap();
    let path = identity::key_path(dir.path());
    fs::write(&path, "/key/swarm/psk/1.0.0/\n/base16/\n00\n").unwrap();
    let err = store.identity_secret().unwrap_err();
    assert!(matches!(err, IdentityError::Format { .. }), "{err:?}");
    assert!(err.to_string().contains(&path.display().to_string()), "{err}");
}

#[cfg(unix)]
#[test]
fn an_identity_file_or_directory_open_to_others_is_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let secret = store.identity_secret().unwrap();
    let path = identity::key_path(dir.path());
    for wide in [0o640, 0o604, 0o620] {
        chmod(&path, wide);
        let err = store.identity_secret().unwrap_err();
        assert!(err.is_permissions(), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains(&format!("chmod 600 {}", path.display())), "{msg}");
    }
    chmod(&path, 0o400);
    assert_eq!(
        store.identity_secret().unwrap(),
        secret,
        "owner read-only is fine"
    );
    let id_dir = path.parent().unwrap();
    for wide in [0o750, 0o705] {
        chmod(id_dir, wide);
        let err = store.identity_secret().unwrap_err();
        assert!(matches!(err, IdentityError::DirPermissions { .. }), "{err:?}");
        assert!(
            err.to_string()
                .contains(&format!("chmod 700 {}", id_dir.display())),
            "{err}"
        );
    }
    chmod(id_dir, 0o700);
    assert_eq!(store.identity_secret().unwrap(), secret);
}

#[cfg(unix)]
#[test]
fn the_database_file_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());
    let mode = fs::metadata(dir.path().join(DB_FILE))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn a_garbage_database_file_is_reported_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = Store::open(dir.path()).unwrap();
        store.apply(&put_batch(1)).unwrap();
    }
    let db = dir.path().join(DB_FILE);
    let len = fs::metadata(&db).unwrap().len() as usize;
    let garbage: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
    fs::write(&db, garbage).unwrap();
    match Store::open(dir.path()) {
        Err(StoreError::Corrupt { path, reason }) => {
            assert_eq!(path, db);
            assert!(!reason.is_empty());
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn damaged_pages_behind_a_valid_header_are_reported_corrupt_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = Store::open(dir.path()).unwrap();
        for b in batches() {
            store.apply(&b).unwrap();
        }
    }
    let db = dir.path().join(DB_FILE);
    let mut bytes = fs::read(&db).unwrap();
    // Keep redb's header page (the first 4 KiB page holds the magic number
    // and both commit slots); scribble over everything after it.
    for (i, b) in bytes.iter_mut().enumerate().skip(4096) {
        *b = (i * 131 % 253) as u8;
    }
    fs::write(&db, &bytes).unwrap();
    let result = std::panic::catch_unwind(|| Store::open(dir.path()).and_then(|s| s.load()));
    match result {
        Ok(Err(StoreError::Corrupt { path, .. })) => assert_eq!(path, db),
        Ok(other) => panic!("expected Corrupt, got {other:?}"),
        Err(_) => panic!("opening a damaged database panicked"),
    }
}

#[test]
fn a_database_from_a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());
    let db_path = dir.path().join(DB_FILE);
    {
        let db = Database::create(&db_path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut meta = txn.open_table(META).unwrap();
            meta.insert(ROW_SCHEMA, (SCHEMA_VERSION + 1).to_le_bytes().as_slice())
                .unwrap();
        }
        txn.commit().unwrap();
    }
    let err = Store::open(dir.path()).expect_err("newer schema");
    match &err {
        StoreError::Incompatible { path, reason } => {
            assert_eq!(path, &db_path);
            assert!(reason.contains(&format!("v{}", SCHEMA_VERSION + 1)), "{reason}");
        }
        other => panic!("expected Incompatible, got {other:?}"),
    }
    assert!(err.to_string().contains("newer Starling"), "{err}");
}

#[test]
fn a_v3_database_is_migrated_and_its_graves_keep_their_dot_as_context() {
    let (dot, hlc) = grave_stamp();
    let g = migrated_grave(3, {
        #[derive(serde::Serialize)]
        struct GraveV3 {
            dot: Dot,
            hlc: Hlc,
        }
        encode(&GraveV3 { dot, hlc }).unwrap()
    });
    assert_eq!((g.dot, g.hlc), (dot, hlc));
    assert_eq!(g.ctx.dots(), &[dot]);
    assert!(g.tombstone.is_none(), "a v3 grave kept no signed tombstone");
}

#[test]
fn a_v4_database_is_migrated_and_its_graves_keep_their_context() {
    let (dot, hlc) = grave_stamp();
    let other = Dot {
        node: NodeId::from_index(4),
        seq: 2,
    };
    let mut ctx = crate::core::Context::default();
    ctx.add(dot);
    ctx.add(other);
    let g = migrated_grave(4, {
        #[derive(serde::Serialize)]
        struct GraveV4 {
            dot: Dot,
            hlc: Hlc,
            ctx: crate::core::Context,
        }
        encode(&GraveV4 {
            dot,
            hlc,
            ctx: ctx.clone(),
        })
        .unwrap()
    });
    assert_eq!((g.dot, g.hlc), (dot, hlc));
    assert_eq!(g.ctx, ctx);
    assert!(g.tombstone.is_none(), "a v4 grave kept no signed tombstone");
}

fn grave_stamp() -> (Dot, Hlc) {
    let dot = Dot {
        node: NodeId::from_index(3),
        seq: 7,
    };
    let hlc = Hlc {
        wall_ms: 1_700_000_000_000,
        logical: 2,
    };
    (dot, hlc)
}

/// Write a database of schema `schema` holding a live key and a key
/// reduced to a grave (`grave`, encoded as that schema did), open it, and
/// return the grave as migrated; checks the live key survives and the
/// schema is written back as current.
fn migrated_grave(schema: u32, grave: Vec<u8>) -> crate::core::Grave {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());
    let db_path = dir.path().join(DB_FILE);
    let held = kv("app", "live");
    let buried = kv("app", "gone");
    {
        let db = Database::create(&db_path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut meta = txn.open_table(META).unwrap();
            meta.insert(ROW_SCHEMA, schema.to_le_bytes().as_slice()).unwrap();
            let mut keys = txn.open_table(KEYS).unwrap();
            // An old key state: live and history as today, then an
            // optional grave in the old encoding.
            let mut live = encode(&vec![version(1, 4, Payload::Value(b"v".to_vec()))]).unwrap();
            live.extend(encode(&Vec::<Version>::new()).unwrap());
            live.extend(encode(&Option::<()>::None).unwrap());
            let mut gone = encode(&Vec::<Version>::new()).unwrap();
            gone.extend(encode(&Vec::<Version>::new()).unwrap());
            gone.push(1); // Some
            gone.extend(grave);
            for (k, v) in [(&held, live), (&buried, gone)] {
                keys.insert(encode(k).unwrap().as_slice(), v.as_slice()).unwrap();
            }
        }
        txn.commit().unwrap();
    }
    let store = Store::open(dir.path()).unwrap_or_else(|e| panic!("a v{schema} store opens: {e}"));
    let snapshot = store.load().expect("and loads");
    let keys: BTreeMap<StateKey, KeyState> = snapshot.keys.into_iter().collect();
    assert_eq!(keys[&held].live[0].payload, Payload::Value(b"v".to_vec()));
    let g = keys[&buried].grave.clone().expect("the grave survives");
    drop(store);
    // Written back as current: a second open needs no migration.
    let db = Database::open(&db_path).unwrap();
    let txn = db.begin_read().unwrap();
    let meta = txn.open_table(META).unwrap();
    let v = meta.get(ROW_SCHEMA).unwrap().unwrap();
    assert_eq!(v.value(), SCHEMA_VERSION.to_le_bytes().as_slice());
    *g
}

#[test]
fn a_data_dir_that_cannot_be_created_is_an_io_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    fs::write(&file, b"not a directory").unwrap();
    let data = file.join("data");
    match Store::open(&data) {
        Err(StoreError::Io { path, .. }) => assert_eq!(path, data),
        other => panic!("expected Io, got {other:?}"),
    }
}

/// Mounts a small tmpfs at a fresh temp dir and unmounts it on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !status.status.success() {
            return Err(format!(
                "mount -t tmpfs failed (not root?): {}",
                String::from_utf8_lossy(&status.stderr).trim()
            ));
        }
        Ok(Tmpfs { dir })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn a_full_disk_fails_the_write_with_disk_full_and_keeps_every_earlier_batch() {
    let tmpfs = match Tmpfs::mount("4m") {
        Ok(t) => t,
        Err(reason) => {
            crate::core::testing::skip_or_fail(&format!("a full disk needs a tmpfs: {reason}"));
            return;
        }
    };
    let data = tmpfs.dir.path().join("data");
    let mut applied = Vec::new();
    let failure = {
        let mut store = Store::open(&data).unwrap();
        let mut failure = None;
        for id in 0..10_000u64 {
            let mut batch = put_batch(id);
            // ~64 KiB of incompressible-ish value per batch.
            let value: Vec<u8> = (0..64 * 1024u64).map(|i| (i * 7 + id) as u8).collect();
            batch.keys[0].1 = Some(state(id % 3, id + 1, &value));
            match store.apply(&batch) {
                Ok(()) => applied.push(batch),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        let failure = failure.expect("a 4 MiB tmpfs fills up");
        // The same handle keeps serving what was committed.
        assert_eq!(store.load().unwrap(), memory_after(&applied));
        // And a write that fits nowhere keeps failing cleanly.
        let mut big = put_batch(99_999);
        big.keys[0].1 = Some(state(0, 1, &vec![7u8; 1 << 20]));
        assert!(matches!(store.apply(&big), Err(StoreError::DiskFull { .. })));
        failure
    };
    match &failure {
        StoreError::DiskFull { path } => assert_eq!(path, &data.join(DB_FILE)),
        other => panic!("expected DiskFull, got {other:?}"),
    }
    assert!(!applied.is_empty(), "some batches fit before the disk filled");
    // A restart on the full disk still loads every acknowledged batch.
    let store = Store::open(&data).expect("reopen on a full disk");
    assert_eq!(store.load().unwrap(), memory_after(&applied));
    drop(store);
}

/// The test binary itself, re-run as a child running only [`child_helper`].
fn child(mode: &str) -> Command {
    let exe = std::env::current_exe().expect("path of the test binary");
    let mut cmd = Command::new(exe);
    cmd.args([
        "--exact",
        "store::tests::child_helper",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_ENV, mode)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    cmd
}

/// Not a test: the child side of the multi-process tests, selected by
/// [`CHILD_ENV`]. `writer:<dir>` applies batches forever, printing
/// `ACK <id>` after each returns; `open:<dir>` tries to open the store and
/// prints the outcome.
#[test]
#[ignore = "helper run as a child process by the multi-process store tests"]
fn child_helper() {
    let Ok(mode) = std::env::var(CHILD_ENV) else {
        return;
    };
    // libtest printed "test ... " without a newline: start a fresh line.
    println!();
    if let Some(dir) = mode.strip_prefix("writer:") {
        let mut store = Store::open(Path::new(dir)).expect("child opens the store");
        for id in 0.. {
            store.apply(&put_batch(id)).expect("child applies a batch");
            println!("ACK {id}");
        }
    } else if let Some(dir) = mode.strip_prefix("lazy:") {
        let mut store = Store::open(Path::new(dir)).expect("child opens the store");
        store.apply(&put_batch(0)).expect("durable batch");
        store.apply(&members_batch(1, 1)).expect("lazy batch");
        store.sync().expect("sync");
        store.apply(&members_batch(2, 2)).expect("lazy batch");
        assert!(store.unsynced());
        println!("READY");
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    } else if let Some(dir) = mode.strip_prefix("open:") {
        match Store::open(Path::new(dir)) {
            Ok(_) => println!("OPEN ok"),
            Err(e @ StoreError::Locked { .. }) => println!("OPEN locked {e}"),
            Err(e) => println!("OPEN error {e}"),
        }
    }
}

#[test]
fn kill_9_keeps_every_acknowledged_batch() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = child(&format!("writer:{}", dir.path().display()))
        .spawn()
        .expect("spawn the writer");
    let stdout = writer.stdout.take().expect("piped stdout");
    let mut last_ack = None;
    let started = Instant::now();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("read the writer's output");
        if let Some(id) = line.strip_prefix("ACK ") {
            last_ack = Some(id.parse::<u64>().expect("batch id"));
        }
        // Kill mid-stream, while batches are being written.
        if last_ack >= Some(150) || started.elapsed() > Duration::from_secs(60) {
            break;
        }
    }
    // SIGKILL: no destructors, no flush, no clean close.
    writer.kill().expect("SIGKILL the writer");
    writer.wait().expect("reap the writer");
    let last_ack = last_ack.expect("the writer acknowledged at least one batch");

    let store = Store::open(dir.path()).expect("reopen after kill -9");
    let loaded = store.load().unwrap();
    let names = key_names(&loaded);
    for id in 0..=last_ack {
        assert!(
            names.contains(&format!("key-{id}")),
            "acknowledged batch {id} lost (last ack {last_ack})"
        );
    }
    // Batches are atomic: what is there is a prefix of the sequence, possibly
    // one past the last acknowledgement (applied, killed before printing).
    let held = names.len() as u64;
    assert!(
        held == last_ack + 1 || held == last_ack + 2,
        "held {held}, last ack {last_ack}"
    );
    println!("kill -9 after ack {last_ack}: {held} batches held");
    let all: Vec<PersistBatch> = (0..held).map(put_batch).collect();
    assert_eq!(loaded, memory_after(&all));
}

/// Other nodes' member records alone, with the node meta of batch 0
/// (incarnation 0, not left) and revision `id`.
fn members_batch(id: u64, member_index: u64) -> PersistBatch {
    PersistBatch {
        id,
        keys: Vec::new(),
        knowledge: Vec::new(),
        members: vec![member(member_index, 1, MemberStatus::Alive)],
        removed_members: Vec::new(),
        meta: PersistedMeta {
            revision: id,
            ..meta(0)
        },
    }
}

#[test]
fn only_batches_of_other_members_alone_are_committed_lazily() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    // A new store's meta is the default one: batch 0's (incarnation 0).
    store.apply(&members_batch(1, 1)).unwrap();
    assert!(store.unsynced(), "member records alone: no fsync");
    store.sync().unwrap();
    assert!(!store.unsynced());
    store.sync().unwrap(); // nothing to do

    store.apply(&members_batch(2, 2)).unwrap();
    assert!(store.unsynced());
    // A key makes the batch durable, and the lazy one before it too.
    store.apply(&put_batch(3)).unwrap();
    assert!(!store.unsynced(), "a batch with a key is durable");

    // This node's incarnation changed (put_batch(3) stored 0; a
    // refutation or new info raises it): durable.
    let mut own = members_batch(4, 1);
    own.meta.incarnation = 1;
    store.apply(&own).unwrap();
    assert!(!store.unsynced(), "an incarnation change is durable");
    let mut left = members_batch(5, 1);
    left.meta.incarnation = 1;
    left.meta.left = true;
    store.apply(&left).unwrap();
    assert!(!store.unsynced(), "leaving is durable");

    // Knowledge alone is durable.
    let mut knows = members_batch(6, 1);
    knows.meta = left.meta.clone();
    knows.members.clear();
    knows.knowledge = put_batch(6).knowledge;
    store.apply(&knows).unwrap();
    assert!(!store.unsynced(), "knowledge is durable");

    // Revisions too far past the durable ones: durable again.
    let mut far = members_batch(7, 1);
    far.meta = PersistedMeta {
        revision: left.meta.revision + LAZY_REVISIONS,
        ..left.meta.clone()
    };
    store.apply(&far).unwrap();
    assert!(!store.unsynced(), "past LAZY_REVISIONS: durable");
    // Opened new: no earlier run lost anything, revisions as stored.
    let snapshot = store.load().unwrap();
    assert_eq!(store.resume_revision(&snapshot), far.meta.revision);
    drop(store);
    // Reopened after a run that did not close: past every lazy revision.
    let mut store = Store::open(dir.path()).unwrap();
    let snapshot = store.load().unwrap();
    assert_eq!(snapshot.meta.revision, far.meta.revision);
    assert_eq!(
        store.resume_revision(&snapshot),
        far.meta.revision + LAZY_REVISIONS
    );
    // A closed run: as stored, and the first commit after the reopen is
    // durable (it removes the record of the clean close).
    let like_far = |id, index| PersistBatch {
        meta: PersistedMeta {
            revision: id,
            ..far.meta.clone()
        },
        ..members_batch(id, index)
    };
    store.apply(&like_far(8, 3)).unwrap();
    assert!(store.unsynced());
    store.close().unwrap();
    assert!(!store.unsynced());
    drop(store);
    let mut store = Store::open(dir.path()).unwrap();
    let snapshot = store.load().unwrap();
    assert!(snapshot.members.iter().any(|m| m.node == NodeId::from_index(3)));
    assert_eq!(store.resume_revision(&snapshot), 8);
    store.apply(&like_far(9, 1)).unwrap();
    assert!(
        !store.unsynced(),
        "the first commit after a closed run is durable"
    );
    store.apply(&like_far(10, 1)).unwrap();
    assert!(store.unsynced());
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    let snapshot = store.load().unwrap();
    // (Dropping the database may or may not have flushed batch 10.)
    assert!([9, 10].contains(&snapshot.meta.revision));
    assert_eq!(
        store.resume_revision(&snapshot),
        snapshot.meta.revision + LAZY_REVISIONS,
        "an end without close after the close record was removed is not a clean end"
    );
}

#[test]
fn kill_9_loses_an_unsynced_member_batch_and_keeps_a_synced_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = child(&format!("lazy:{}", dir.path().display()))
        .spawn()
        .expect("spawn the child");
    let stdout = child.stdout.take().expect("piped stdout");
    let ready = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|line| line == "READY");
    child.kill().expect("SIGKILL the child");
    child.wait().expect("reap the child");
    assert!(ready, "the child never got ready");

    let store = Store::open(dir.path()).expect("reopen after kill -9");
    let loaded = store.load().unwrap();
    assert!(key_names(&loaded).contains("key-0"), "the durable batch is kept");
    let held = |index| loaded.members.iter().any(|m| m.node == NodeId::from_index(index));
    assert!(held(1), "the synced member batch is kept");
    assert!(!held(2), "the unsynced one was never on disk");
    assert_eq!(loaded.meta.revision, 1, "the meta of the last durable commit");
}

/// Not a test: `cargo test --release -p starling --lib store::tests::durable_apply_latency -- --ignored --nocapture`.
#[test]
#[ignore = "benchmark: prints the durable apply latency"]
fn durable_apply_latency() {
    let dir = tempfile::Builder::new()
        .prefix("starling-store-bench")
        .tempdir_in(std::env::var_os("STORE_BENCH_DIR").unwrap_or_else(|| ".".into()))
        .unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    for id in 0..20 {
        store.apply(&put_batch(id)).unwrap();
    }
    let mut micros = Vec::with_capacity(500);
    for id in 0..500 {
        let batch = put_batch(1000 + id);
        let t0 = Instant::now();
        store.apply(&batch).unwrap();
        micros.push(t0.elapsed().as_micros() as u64);
    }
    micros.sort_unstable();
    let pct = |p: usize| micros[(micros.len() - 1) * p / 100];
    println!(
        "durable apply of one small batch over {} batches in {}: p50 {} us, p90 {} us, p99 {} us, max {} us",
        micros.len(),
        dir.path().display(),
        pct(50),
        pct(90),
        pct(99),
        micros[micros.len() - 1]
    );
}
