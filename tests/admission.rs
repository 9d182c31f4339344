//! Admission: the cluster key (libp2p private network over TCP) and the
//! hot-reloadable deny-list. Real nodes on loopback with bootstrap peers
//! and mDNS off; `starling keygen` and `starling run` as child processes.
#![cfg(feature = "node")]
#![allow(clippy::disallowed_methods)] // a test's timeouts read the wall clock

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use starling::core::MemberStatus;
use starling::net::ClusterKey;
use starling::node::testing::{
    admission_counts, eventually, fast_protocol, key, launch, loopback_config, ns, wait_formed, ScratchDir,
};
use starling::node::{Node, NodeConfig, NodeError, NodeHandle};

const BIN: &str = env!("CARGO_BIN_EXE_starling");
const T: Duration = Duration::from_secs(30);
/// How long nodes that must not connect are watched.
const APART: Duration = Duration::from_secs(3);

/// A fresh key written to `dir/name` (mode 0600).
fn key_file(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    ClusterKey::generate()
        .expect("random source")
        .write_new(&path)
        .expect("write key");
    path
}

/// A loopback node config in a fresh directory, with `key` and `bootstrap`.
fn config(
    dir: &ScratchDir,
    name: &str,
    cluster: &str,
    key: Option<&Path>,
    bootstrap: Vec<String>,
) -> NodeConfig {
    let mut c = loopback_config(&dir.path().join("data"), name, fast_protocol(cluster), bootstrap);
    c.cluster_key_file = key.map(Path::to_path_buf);
    c
}

async fn members_alive(node: &NodeHandle) -> usize {
    node.members()
        .await
        .expect("members")
        .iter()
        .filter(|m| m.status == MemberStatus::Alive)
        .count()
}

/// For `APART`, every node sees only itself and has no connection.
async fn assert_stay_apart(nodes: &[&NodeHandle]) {
    let until = Instant::now() + APART;
    while Instant::now() < until {
        for n in nodes {
            assert_eq!(n.members().await.unwrap().len(), 1, "{n:?} met another node");
            assert_eq!(n.status().await.unwrap().connected_peers, 0, "{n:?} connected");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_with_different_keys_never_meet_and_count_the_mismatch() {
    let (da, db) = (ScratchDir::new().unwrap(), ScratchDir::new().unwrap());
    let ka = key_file(da.path(), "a.key");
    let kb = key_file(db.path(), "b.key");
    let (a, addr_a) = launch(config(&da, "a", "keys-differ", Some(&ka), vec![]))
        .await
        .unwrap();
    let (b, _) = launch(config(&db, "b", "keys-differ", Some(&kb), vec![addr_a]))
        .await
        .unwrap();
    assert_stay_apart(&[&a, &b]).await;
    // b dialled a (its bootstrap peer, redialled every second): both ends
    // saw a block that did not decrypt under their key.
    assert!(
        admission_counts(&a).key_mismatches > 0,
        "{:?}",
        admission_counts(&a)
    );
    assert!(
        admission_counts(&b).key_mismatches > 0,
        "{:?}",
        admission_counts(&b)
    );
    a.stop_without_leave().await.unwrap();
    b.stop_without_leave().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_with_the_same_key_join_and_replicate() {
    let (da, db) = (ScratchDir::new().unwrap(), ScratchDir::new().unwrap());
    let k = key_file(da.path(), "cluster.key");
    let (a, addr_a) = launch(config(&da, "a", "keys-same", Some(&k), vec![]))
        .await
        .unwrap();
    let (b, _) = launch(config(&db, "b", "keys-same", Some(&k), vec![addr_a]))
        .await
        .unwrap();
    wait_formed(&[a.clone(), b.clone()], 2, T).await.unwrap();
    a.put(&ns("app"), &key("k"), b"v".to_vec()).await.unwrap();
    eventually(T, "b reads a's write", || {
        let b = b.clone();
        async move { b.get(&ns("app"), &key("k")).await.unwrap().map(|e| e.value) == Some(b"v".to_vec()) }
    })
    .await;
    assert_eq!(admission_counts(&a).key_mismatches, 0);
    assert_eq!(admission_counts(&b).key_mismatches, 0);
    a.stop_without_leave().await.unwrap();
    b.stop_without_leave().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_node_and_an_open_node_do_not_connect_either_way() {
    let (da, db, dc) = (
        ScratchDir::new().unwrap(),
        ScratchDir::new().unwrap(),
        ScratchDir::new().unwrap(),
    );
    let k = key_file(da.path(), "cluster.key");
    // a: keyed, dialled by b (open); c: keyed, dials b.
    let (a, addr_a) = launch(config(&da, "a", "keyed-open", Some(&k), vec![]))
        .await
        .unwrap();
    let (b, addr_b) = launch(config(&db, "b", "keyed-open", None, vec![addr_a]))
        .await
        .unwrap();
    let (c, _) = launch(config(&dc, "c", "keyed-open", Some(&k), vec![addr_b]))
        .await
        .unwrap();
    assert_stay_apart(&[&a, &b, &c]).await;
    // An outbound check against an open node fails only when the open
    // side gives up on the bytes it cannot parse (or the handshake times
    // out), which takes longer on a loaded machine: wait for it, bounded.
    let until = Instant::now() + Duration::from_secs(30);
    while (admission_counts(&a).key_mismatches == 0 || admission_counts(&c).key_mismatches == 0)
        && Instant::now() < until
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        admission_counts(&a).key_mismatches > 0,
        "inbound from the open node refused"
    );
    assert!(
        admission_counts(&c).key_mismatches > 0,
        "outbound to the open node refused"
    );
    for n in [&a, &b, &c] {
        assert_eq!(n.members().await.unwrap().len(), 1, "{n:?} met another node");
    }
    for n in [a, b, c] {
        n.stop_without_leave().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_denied_by_a_reload_is_dropped_within_a_second_and_allowed_again_when_removed() {
    let (da, db) = (ScratchDir::new().unwrap(), ScratchDir::new().unwrap());
    let k = key_file(da.path(), "cluster.key");
    let running = config(&da, "a", "deny", Some(&k), vec![]);
    let (a, addr_a) = launch(running.clone()).await.unwrap();
    let (b, _) = launch(config(&db, "b", "deny", Some(&k), vec![addr_a]))
        .await
        .unwrap();
    wait_formed(&[a.clone(), b.clone()], 2, T).await.unwrap();

    let mut denying = running.clone();
    denying.deny_peers = vec![b.peer_id()];
    assert_eq!(running.reload_changes(&denying).unwrap(), ["deny_peers"]);
    let reloaded = Instant::now();
    a.reload(&denying).await.unwrap();
    eventually(
        Duration::from_secs(1),
        "a drops b within 1 s of the reload",
        || {
            let a = a.clone();
            async move { a.status().await.unwrap().connected_peers == 0 }
        },
    )
    .await;
    assert!(reloaded.elapsed() <= Duration::from_millis(1_200));
    assert_eq!(admission_counts(&a).denied_closed, 1);
    // b redials a every second; a refuses every attempt.
    let until = Instant::now() + APART;
    while Instant::now() < until {
        assert_eq!(a.status().await.unwrap().connected_peers, 0, "b reconnected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        admission_counts(&a).denied_refused_inbound > 0,
        "{:?}",
        admission_counts(&a)
    );
    // b's heartbeats no longer reach a: a stops counting b as alive.
    eventually(T, "a no longer holds b alive", || {
        let a = a.clone();
        async move { members_alive(&a).await == 1 }
    })
    .await;

    assert_eq!(denying.reload_changes(&running).unwrap(), ["deny_peers"]);
    a.reload(&running).await.unwrap();
    wait_formed(&[a.clone(), b.clone()], 2, T).await.unwrap();
    a.stop_without_leave().await.unwrap();
    b.stop_without_leave().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_key_file_stops_the_start_with_an_error_naming_the_file() {
    let dir = ScratchDir::new().unwrap();
    let path = dir.path().join("bad.key");
    std::fs::write(&path, "/key/swarm/psk/1.0.0/\n/base16/\nnot-hex\n").unwrap();
    set_mode(&path, 0o600);
    let err = Node::start(config(&dir, "bad", "bad-key", Some(&path), vec![]))
        .await
        .unwrap_err();
    assert!(matches!(err, NodeError::ClusterKey(_)), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("bad.key") && text.contains("hex digits"), "{text}");
    assert!(
        !dir.path().join("data").exists(),
        "nothing was opened before the key was read"
    );
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[cfg(not(unix))]
fn set_mode(_: &Path, _: u32) {}

/// `starling <args>`, stdout lines on a channel, stderr to a file.
struct Process {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: PathBuf,
}

impl Process {
    fn spawn(args: &[&str], stderr: PathBuf) -> Process {
        let mut child = Command::new(BIN)
            .args(args)
            .env_remove("STARLING_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("spawn starling");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Process { child, lines, stderr }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The exit code, waiting at most 30 s.
    fn exit_code(&mut self) -> Option<i32> {
        let deadline = Instant::now() + T;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "still running; stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `starling run` on loopback with `extra` flags, until its ready line.
fn run_until_ready(dir: &Path, extra: &[&str]) -> Process {
    let data = dir.join("data");
    let mut args = vec![
        "run",
        "--no-mdns",
        "--no-http",
        "--no-dns",
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--data-dir",
        data.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let p = Process::spawn(&args, dir.join("run.stderr"));
    let line = p
        .lines
        .recv_timeout(T)
        .unwrap_or_else(|_| panic!("no ready line; stderr:\n{}", p.stderr()));
    assert!(line.starts_with("starling ready "), "{line}");
    p
}

#[test]
fn keygen_writes_an_owner_only_key_that_run_accepts_and_keeps_it_on_a_second_run() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cluster.key");
    let path_s = path.to_str().unwrap();
    let out = Command::new(BIN)
        .args(["keygen", "--out", path_s])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("one thing to copy to other nodes"), "{stdout}");
    let key = ClusterKey::load(&path).expect("keygen's file loads");
    assert!(stdout.contains(&key.fingerprint()), "{stdout}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    // A second keygen never replaces a key nodes may hold.
    let again = Command::new(BIN)
        .args(["keygen", "--out", path_s])
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    assert_eq!(ClusterKey::load(&path).unwrap(), key);

    let mut node = run_until_ready(dir.path(), &["--cluster-key", path_s]);
    let log = node.stderr();
    assert!(log.contains("cluster key loaded"), "{log}");
    assert!(log.contains(&key.fingerprint()), "{log}");
    assert!(!log.contains("no cluster key"), "{log}");
    let _ = node.child.kill();
    let _ = node.exit_code();
}

#[test]
fn an_open_node_warns_once_that_anyone_can_join() {
    let dir = tempfile::tempdir().unwrap();
    let node = run_until_ready(dir.path(), &[]);
    let log = node.stderr();
    assert_eq!(
        log.matches("no cluster key").count(),
        1,
        "one plain warning:\n{log}"
    );
    assert!(
        log.contains("open to anyone") && log.contains("starling keygen"),
        "{log}"
    );
}

#[cfg(unix)]
#[test]
fn run_refuses_a_key_file_other_users_can_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cluster.key");
    ClusterKey::generate().unwrap().write_new(&path).unwrap();
    set_mode(&path, 0o644);
    let data = dir.path().join("data");
    let mut p = Process::spawn(
        &[
            "run",
            "--no-mdns",
            "--no-http",
            "--no-dns",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--data-dir",
            data.to_str().unwrap(),
            "--cluster-key",
            path.to_str().unwrap(),
        ],
        dir.path().join("stderr"),
    );
    assert_eq!(p.exit_code(), Some(2), "a configuration error");
    let err = p.stderr();
    assert!(err.contains("chmod 600") && err.contains("cluster.key"), "{err}");
}

/// `starling status --json` of the node at `http`: its connected peers.
fn connected_peers_of(http: &str) -> u64 {
    let out = Command::new(BIN)
        .args(["status", "--json", "--http", http])
        .env_remove("STARLING_HTTP")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["connected_peers"].as_u64().expect("connected_peers")
}

/// Poll `check` every 50 ms for up to `timeout`.
fn wait_until(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?}: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_deny_peers_in_the_config_file_of_a_running_node_drops_and_readmits_the_peer() {
    let dir = tempfile::tempdir().unwrap();
    let k = key_file(dir.path(), "cluster.key");
    let file = dir.path().join("a.toml");
    let write_config = |deny: &str| {
        let text = format!(
            "data_dir = {data:?}\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\nhttp = \"127.0.0.1:0\"\n\
             mdns = false\ndns = \"off\"\ncluster_key_file = {k:?}\n{deny}\n\
             [protocol]\ncluster = \"cli-deny\"\nheartbeat_interval_ms = 200\n\
             suspect_timeout_ms = 1000\nsync_interval_ms = 1000\nsync_min_interval_ms = 200\n",
            data = dir.path().join("a-data"),
        );
        std::fs::write(&file, text).unwrap();
    };
    write_config("");
    let a = Process::spawn(
        &["run", "--config", file.to_str().unwrap()],
        dir.path().join("a.stderr"),
    );
    let ready = a
        .lines
        .recv_timeout(T)
        .unwrap_or_else(|_| panic!("no ready line; stderr:\n{}", a.stderr()));
    let field = |name: &str| {
        ready
            .split_whitespace()
            .find_map(|f| f.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {ready}"))
            .to_string()
    };
    let http = field("http=http://");
    let listen = field("listen=")
        .split(',')
        .find(|a| a.contains("/ip4/127.0.0.1/tcp/"))
        .expect("a loopback TCP address")
        .to_string();
    let db = ScratchDir::new().unwrap();
    let (b, _) = launch(config(&db, "b", "cli-deny", Some(&k), vec![listen]))
        .await
        .unwrap();
    let (h, b2) = (http.clone(), b.clone());
    eventually(T, "a and b connected and alive", move || {
        let (h, b) = (h.clone(), b2.clone());
        async move { members_alive(&b).await == 2 && connected_peers_of(&h) == 1 }
    })
    .await;

    write_config(&format!("deny_peers = [{:?}]", b.peer_id()));
    // The file is polled every second; the peer goes at once after that.
    let h = http.clone();
    tokio::task::spawn_blocking(move || {
        wait_until(Duration::from_millis(2_500), "a drops b", || {
            connected_peers_of(&h) == 0
        });
        let until = Instant::now() + APART;
        while Instant::now() < until {
            assert_eq!(connected_peers_of(&h), 0, "b reconnected to a");
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .await
    .unwrap();
    let log = a.stderr();
    assert!(
        log.contains("config reloaded") && log.contains("deny_peers"),
        "{log}"
    );
    assert!(log.contains("peer denied"), "{log}");

    write_config("");
    let h = http.clone();
    tokio::task::spawn_blocking(move || wait_until(T, "b is let back in", || connected_peers_of(&h) == 1))
        .await
        .unwrap();
    b.stop_without_leave().await.unwrap();
}
