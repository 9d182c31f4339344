//! The node identity file: `starling run` makes `DATA_DIR/identity/node.key`
//! owner-only, keeps the id across restarts, moves an older data
//! directory's identity out of the store, and refuses (exit 2) a key file
//! or directory open to other users. Loopback only, mDNS, HTTP and DNS off.
#![cfg(all(feature = "node", unix))]
#![allow(clippy::disallowed_methods)] // a test's timeout reads the wall clock

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_starling");
const T: Duration = Duration::from_secs(30);

/// `starling run` on `data`, loopback only, with mDNS, HTTP and DNS off.
fn spawn(data: &Path, stdout: Stdio, stderr: Stdio) -> Child {
    Command::new(BIN)
        .args([
            "run",
            "--no-mdns",
            "--no-http",
            "--no-dns",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--data-dir",
        ])
        .arg(data)
        .env_remove("STARLING_CONFIG")
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .expect("spawn starling")
}

/// Start `starling run` on `data` until its ready line, stop it, and
/// return the node id it reported.
fn start_and_stop(data: &Path) -> String {
    let mut child = spawn(data, Stdio::piped(), Stdio::null());
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let line = BufReader::new(stdout).lines().next();
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(T);
    let _ = child.kill();
    let _ = child.wait();
    let line = line
        .expect("a ready line in time")
        .expect("stdout")
        .expect("readable");
    assert!(line.starts_with("starling ready "), "{line}");
    line.split_whitespace()
        .find_map(|f| f.strip_prefix("node_id="))
        .unwrap_or_else(|| panic!("no node_id in {line}"))
        .to_string()
}

/// Run `starling run` on `data`, expecting it to exit by itself.
fn run_to_exit(data: &Path) -> Output {
    let mut child = spawn(data, Stdio::null(), Stdio::piped());
    let deadline = std::time::Instant::now() + T;
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("starling kept running");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn first_start_writes_an_owner_only_key_and_restarts_keep_the_id() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let first = start_and_stop(&data);
    let key = data.join("identity/node.key");
    assert_eq!(mode(&key), 0o600);
    assert_eq!(mode(&data.join("identity")), 0o700);
    assert_eq!(start_and_stop(&data), first, "same identity after a restart");
}

#[test]
fn an_identity_still_in_the_store_moves_to_the_file_and_keeps_the_id() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let id = start_and_stop(&data);
    // Make it a data directory of an older build: the secret in the `meta`
    // table's `identity` row, no identity directory.
    let key = data.join("identity/node.key");
    let text = std::fs::read_to_string(&key).unwrap();
    let hex = text.lines().nth(2).expect("hex line");
    let secret: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    std::fs::remove_dir_all(data.join("identity")).unwrap();
    let meta: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("meta");
    {
        let db = redb::Database::create(data.join("starling.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(meta)
            .unwrap()
            .insert("identity", secret.as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
    assert_eq!(start_and_stop(&data), id, "the node keeps its identity");
    assert_eq!(
        std::fs::read_to_string(&key).unwrap(),
        text,
        "same key, same file"
    );
    assert_eq!(mode(&key), 0o600);
    let db = redb::Database::create(data.join("starling.redb")).unwrap();
    let txn = redb::ReadableDatabase::begin_read(&db).unwrap();
    let table = txn.open_table(meta).unwrap();
    assert!(table.get("identity").unwrap().is_none(), "the row was deleted");
}

#[test]
fn a_key_or_directory_open_to_others_is_refused_with_exit_2_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    start_and_stop(&data);
    let key = data.join("identity/node.key");
    chmod(&key, 0o644);
    let out = run_to_exit(&data);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("chmod 600 {}", key.display())), "{err}");
    chmod(&key, 0o600);
    let id_dir = data.join("identity");
    chmod(&id_dir, 0o755);
    let out = run_to_exit(&data);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("chmod 700 {}", id_dir.display())), "{err}");
}

#[test]
fn a_data_directory_with_state_but_no_identity_is_refused_not_renamed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    start_and_stop(&data);
    let key = data.join("identity/node.key");
    std::fs::remove_file(&key).unwrap();
    let out = run_to_exit(&data);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&key.display().to_string()) && err.contains("backup"),
        "{err}"
    );
    assert!(!key.exists(), "no new identity was made");
}
