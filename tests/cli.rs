//! The `starling` binary: `starling run` as a child process on loopback
//! (mDNS off, OS-chosen ports), and the client subcommands against it.
#![allow(clippy::disallowed_methods)] // a test's timeouts read the wall clock

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_starling");

/// A running `starling run`; killed on drop.
struct RunningNode {
    child: Child,
    /// `127.0.0.1:<port>` of its HTTP API.
    http: String,
    node_id: String,
    /// Its first libp2p listen address (with `/p2p/<id>`).
    listen: String,
    stderr_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl RunningNode {
    /// Start `starling <args...>` (`run` unless `args` say otherwise) on
    /// loopback and wait for its ready line and `/v1/health`.
    fn start(subcommand: Option<&str>, extra: &[&str]) -> RunningNode {
        let dir = tempfile::tempdir().expect("tempdir");
        let stderr_path = dir.path().join("stderr.log");
        let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
        let data_dir = dir.path().join("data");
        let mut cmd = Command::new(BIN);
        cmd.args(subcommand);
        cmd.args([
            "--no-mdns",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--http",
            "127.0.0.1:0",
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--name",
            "cli-test",
            // Several of these run at once: no fixed DNS port.
            "--no-dns",
        ])
        .args(extra)
        .env_remove("STARLING_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr);
        let mut child = cmd.spawn().expect("spawn starling");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut node = RunningNode {
            child,
            http: String::new(),
            node_id: String::new(),
            listen: String::new(),
            stderr_path,
            _dir: dir,
        };
        let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_else(|_| {
            panic!(
                "no ready line; stderr:\n{}",
                std::fs::read_to_string(&node.stderr_path).unwrap_or_default()
            )
        });
        assert!(line.starts_with("starling ready "), "{line}");
        for field in line.split_whitespace() {
            if let Some(v) = field.strip_prefix("http=http://") {
                node.http = v.to_string();
            } else if let Some(v) = field.strip_prefix("node_id=") {
                node.node_id = v.to_string();
            } else if let Some(v) = field.strip_prefix("listen=") {
                node.listen = v.split(',').next().unwrap_or("").to_string();
            }
        }
        assert!(!node.http.is_empty() && !node.node_id.is_empty(), "{line}");
        assert!(line.contains("/ip4/127.0.0.1/tcp/"), "{line}");
        node.wait_healthy();
        node
    }

    fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = self.cli(&["status", "--json"]);
            if out.status.success() {
                let v: Value = serde_json::from_slice(&out.stdout).expect("status JSON");
                assert_eq!(v["node_id"], self.node_id.as_str());
                return;
            }
            assert!(Instant::now() < deadline, "node never became healthy");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Run a client subcommand against this node (`--http` appended).
    fn cli(&self, args: &[&str]) -> Output {
        self.cli_with_stdin(args, None)
    }

    fn cli_with_stdin(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut child = Command::new(BIN)
            .args(args)
            .args(["--http", &self.http])
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn client");
        if let Some(bytes) = stdin {
            child.stdin.take().unwrap().write_all(bytes).unwrap();
        }
        let guard = ChildGuard(Some(child));
        guard.wait_output(Duration::from_secs(30))
    }

    /// Run a client subcommand that must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "{args:?} failed ({:?}): {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("UTF-8 output")
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill {sig} failed");
    }

    /// Wait for the process to exit; its exit code.
    fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code();
            }
            assert!(Instant::now() < deadline, "node did not exit in {timeout:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for RunningNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Kills a child process on drop.
struct ChildGuard(Option<Child>);

impl ChildGuard {
    fn wait_output(mut self, timeout: Duration) -> Output {
        let child = self.0.take().expect("child");
        let id = child.id();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        match rx.recv_timeout(timeout) {
            Ok(out) => out.expect("child output"),
            Err(_) => {
                let _ = Command::new("kill").args(["-KILL", &id.to_string()]).status();
                panic!("client command did not finish in {timeout:?}");
            }
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn kv_commands_put_get_list_history_and_rollback() {
    let node = RunningNode::start(Some("run"), &[]);
    let out = node.ok(&["kv", "put", "prod", "routes/v1", "upstream=a"]);
    assert!(out.starts_with("version "), "{out}");
    let v1 = out.trim().trim_start_matches("version ").to_string();
    assert_eq!(node.ok(&["kv", "get", "prod", "routes/v1"]), "upstream=a\n");

    // From stdin with `-`, and from a file.
    let w = node.cli_with_stdin(
        &["kv", "put", "prod", "routes/v1", "-", "--json"],
        Some(b"upstream=b"),
    );
    assert!(w.status.success(), "{}", String::from_utf8_lossy(&w.stderr));
    let v2 = json(&String::from_utf8_lossy(&w.stdout))["version"]
        .as_str()
        .unwrap()
        .to_string();
    let file = node._dir.path().join("blob.bin");
    let bytes = [0xffu8, 0, 0xfe, b'z'];
    std::fs::write(&file, bytes).unwrap();
    node.ok(&["kv", "put", "prod", "bin/blob", "--file", file.to_str().unwrap()]);
    let raw = node.cli(&["kv", "get", "prod", "bin/blob", "--raw"]);
    assert!(raw.status.success());
    assert_eq!(raw.stdout, bytes);

    let get = json(&node.ok(&["kv", "get", "prod", "routes/v1", "--json"]));
    assert_eq!(get["value"], "upstream=b");
    assert_eq!(get["version"]["id"], v2.as_str());

    let table = node.ok(&["kv", "list", "prod", "--prefix", "routes/"]);
    assert!(table.starts_with("KEY"), "{table}");
    assert!(
        table.contains("routes/v1") && !table.contains("bin/blob"),
        "{table}"
    );
    let list = json(&node.ok(&["kv", "list", "prod", "--json"]));
    assert_eq!(list["entries"].as_array().unwrap().len(), 2);

    let history = node.ok(&["kv", "history", "prod", "routes/v1"]);
    assert!(history.contains(&v1) && history.contains(&v2), "{history}");
    let h = json(&node.ok(&["kv", "history", "prod", "routes/v1", "--json"]));
    assert_eq!(h["versions"].as_array().unwrap().len(), 2);

    let rolled = node.ok(&["kv", "rollback", "prod", "routes/v1", &v1]);
    assert!(rolled.contains("new version"), "{rolled}");
    assert_eq!(node.ok(&["kv", "get", "prod", "routes/v1"]), "upstream=a\n");

    node.ok(&["kv", "delete", "prod", "bin/blob"]);
    let missing = node.cli(&["kv", "get", "prod", "bin/blob"]);
    assert_eq!(missing.status.code(), Some(1));
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(err.contains("404") && err.contains("not found"), "{err}");

    let conflict = node.cli(&["kv", "put", "prod", "routes/v1", "x", "--cas", &v1]);
    assert_eq!(conflict.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&conflict.stderr).contains("409 conflict"));
    let bad = node.cli(&["kv", "put", "bad ns", "k", "v"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("400"));
}

#[test]
fn members_status_and_services_commands() {
    let node = RunningNode::start(Some("run"), &["--tag", "role=gateway"]);
    let members = json(&node.ok(&["members", "--json"]));
    let me = members
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["node_id"] == node.node_id.as_str())
        .expect("self listed");
    assert_eq!(me["status"], "alive");
    assert_eq!(me["name"], "cli-test");
    assert_eq!(me["tags"]["role"], "gateway");
    let table = node.ok(&["members"]);
    assert!(table.starts_with("NAME") && table.contains("alive"), "{table}");

    let status = node.ok(&["status"]);
    assert!(
        status.contains(&node.node_id) && status.contains("cli-test"),
        "{status}"
    );

    node.ok(&[
        "services",
        "register",
        "prod",
        "api",
        "i1",
        "--address",
        "10.0.0.1",
        "--port",
        "8080",
        "--tag",
        "v1",
        "--meta",
        "zone=a",
    ]);
    node.ok(&[
        "services",
        "register",
        "prod",
        "api",
        "i2",
        "--address",
        "10.0.0.2",
        "--port",
        "8080",
    ]);
    let names = node.ok(&["services", "list", "prod"]);
    assert_eq!(names, "api\n");
    let table = node.ok(&["services", "list", "prod", "api"]);
    assert!(
        table.contains("10.0.0.1:8080") && table.contains("passing"),
        "{table}"
    );
    let v1 = json(&node.ok(&["services", "list", "prod", "api", "--tag", "v1", "--json"]));
    assert_eq!(v1["instances"].as_array().unwrap().len(), 1);
    assert_eq!(v1["instances"][0]["metadata"]["zone"], "a");
    node.ok(&[
        "services",
        "heartbeat",
        "prod",
        "api",
        "i2",
        "--health",
        "critical",
    ]);
    let healthy = json(&node.ok(&["services", "list", "prod", "api", "--healthy", "--json"]));
    assert_eq!(healthy["instances"].as_array().unwrap().len(), 1);
    node.ok(&["services", "deregister", "prod", "api", "i1"]);
    let gone = node.cli(&["services", "deregister", "prod", "api", "i1"]);
    assert_eq!(gone.status.code(), Some(1));
}

#[test]
fn kv_watch_streams_changes_until_killed() {
    let node = RunningNode::start(Some("run"), &[]);
    let since = json(&node.ok(&["status", "--json"]))["revision"]
        .as_u64()
        .unwrap();
    node.ok(&["kv", "put", "prod", "app/a", "1"]);
    let mut watcher = ChildGuard(Some(
        Command::new(BIN)
            .args(["kv", "watch", "prod", "--prefix", "app/", "--json", "--since"])
            .arg(since.to_string())
            .args(["--http", &node.http])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn watch"),
    ));
    let stdout = watcher.0.as_mut().unwrap().stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let first = json(&rx.recv_timeout(Duration::from_secs(20)).expect("replayed event"));
    assert_eq!(
        (first["key"].as_str(), first["value"].as_str()),
        (Some("app/a"), Some("1"))
    );
    node.ok(&["kv", "put", "prod", "other/x", "no"]);
    node.ok(&["kv", "put", "prod", "app/b", "2"]);
    let second = json(&rx.recv_timeout(Duration::from_secs(20)).expect("live event"));
    assert_eq!(second["key"], "app/b");
    drop(watcher);
}

#[test]
fn no_subcommand_runs_a_node_that_leaves_gracefully_on_sigterm_with_json_logs() {
    let mut node = RunningNode::start(None, &["--log-format", "json"]);
    node.ok(&["kv", "put", "prod", "k", "v"]);
    node.signal("-TERM");
    assert_eq!(node.wait_exit(Duration::from_secs(20)), Some(0));
    let logs = node.stderr();
    let lines: Vec<Value> = logs.lines().filter(|l| !l.trim().is_empty()).map(json).collect();
    assert!(lines.len() > 2, "{logs}");
    // From the moment the node id is known, every line carries it.
    let first_with_id = lines
        .iter()
        .position(|l| l["node_id"] == node.node_id.as_str())
        .expect("lines carry the node id");
    assert!(
        lines[first_with_id..]
            .iter()
            .all(|l| l["node_id"] == node.node_id.as_str()),
        "{logs}"
    );
    assert!(logs.contains("shutting down"), "{logs}");
}

#[test]
fn bad_config_and_bad_flags_exit_2_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "data_dir = \"x\"\nbootstrapp = []\n").unwrap();
    let out = run_quick(&["run", "--config", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bootstrapp"), "{err}");

    let out = run_quick(&[
        "run",
        "--listen",
        "tcp://nope",
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("listen"));

    let out = run_quick(&[
        "run",
        "--config",
        dir.path().join("missing.toml").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));

    let out = run_quick(&["run", "--tag", "novalue"]);
    assert_eq!(out.status.code(), Some(2));
    let out = run_quick(&["kv", "get", "prod"]);
    assert_eq!(out.status.code(), Some(2));
    let out = run_quick(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    let out = run_quick(&["--help"]);
    assert_eq!(out.status.code(), Some(0));

    // A client with no node to talk to fails with 1, not a usage error.
    let port = free_port();
    let out = run_quick(&["status", "--http", &format!("127.0.0.1:{port}")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach"));
}

fn run_quick(args: &[&str]) -> Output {
    let child = Command::new(BIN)
        .args(args)
        .env_remove("STARLING_CONFIG")
        .env_remove("STARLING_HTTP")
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn starling");
    ChildGuard(Some(child)).wait_output(Duration::from_secs(30))
}

/// A loopback port nothing listens on (bound, then released).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// `node_id`'s status in `observer`'s member list, if listed.
fn member_status(observer: &RunningNode, node_id: &str) -> Option<String> {
    let members = json(&observer.ok(&["members", "--json"]));
    members
        .as_array()?
        .iter()
        .find(|m| m["node_id"] == node_id)
        .and_then(|m| m["status"].as_str().map(str::to_string))
}

#[test]
fn a_peer_sees_a_node_that_got_sigterm_as_left() {
    let mut a = RunningNode::start(Some("run"), &[]);
    let a_addr = a.listen.clone();
    let b = RunningNode::start(Some("run"), &["--bootstrap", &a_addr]);
    let a_id = a.node_id.clone();
    let status_of_a = |b: &RunningNode| member_status(b, &a_id);
    let deadline = Instant::now() + Duration::from_secs(30);
    while status_of_a(&b).as_deref() != Some("alive") {
        assert!(Instant::now() < deadline, "b never saw a alive");
        std::thread::sleep(Duration::from_millis(100));
    }
    a.signal("-TERM");
    assert_eq!(a.wait_exit(Duration::from_secs(20)), Some(0));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = status_of_a(&b);
        if s.as_deref() == Some("left") {
            break;
        }
        assert!(Instant::now() < deadline, "a is {s:?} on b, not left");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A hung process keeps its connections open: its peer still notices
/// (from the probes it no longer answers or the heartbeats it no longer
/// sends, whichever comes first), and sees it alive again once it resumes
/// and refutes.
#[test]
fn a_hung_node_is_suspected_by_its_peer_and_alive_again_when_it_resumes() {
    let a = RunningNode::start(Some("run"), &[]);
    let b = RunningNode::start(Some("run"), &["--bootstrap", &a.listen]);
    let a_id = a.node_id.clone();
    let status_of_a = |b: &RunningNode| member_status(b, &a_id);
    eventually("b sees a alive", || status_of_a(&b).as_deref() == Some("alive"));
    a.signal("-STOP");
    // b probes its only peer every second and gives it 1 s to answer; the
    // bound here is generous for a loaded machine.
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let s = status_of_a(&b);
        if matches!(s.as_deref(), Some("suspect" | "dead")) {
            break;
        }
        if Instant::now() >= deadline {
            a.signal("-CONT");
            panic!("a hung for 40 s is {s:?} on b");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    a.signal("-CONT");
    eventually("b sees a alive again after it resumed", || {
        status_of_a(&b).as_deref() == Some("alive")
    });
}

/// Wait until `check` holds, polling; panics with `what` after 20 s.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn own_tags(node: &RunningNode) -> Value {
    let members = json(&node.ok(&["members", "--json"]));
    members
        .as_array()
        .and_then(|a| a.iter().find(|m| m["node_id"] == node.node_id.as_str()))
        .map(|m| m["tags"].clone())
        .unwrap_or(Value::Null)
}

#[test]
fn config_reload_applies_reloadable_settings_and_keeps_the_running_config_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("node.toml");
    let write = |text: &str| std::fs::write(&file, text).unwrap();
    write("tags = { role = \"gateway\" }\n[protocol]\ncluster = \"reload\"\n");
    let node = RunningNode::start(None, &["--config", file.to_str().unwrap()]);
    assert_eq!(own_tags(&node)["role"], "gateway");
    // A canary aimed at edge nodes: this node does not read it yet.
    node.ok(&["kv", "put", "app", "feature", "off"]);
    node.ok(&[
        "kv",
        "canary",
        "set",
        "app",
        "feature",
        "on",
        "--selector",
        "role=edge",
    ]);
    assert_eq!(node.ok(&["kv", "get", "app", "feature"]).trim(), "off");

    // Reloadable: tags, log level, heartbeat interval, rate limit.
    write(
        "tags = { role = \"edge\" }\nlog_level = \"debug\"\nhttp_rate_limit = 1000\n\
         [protocol]\ncluster = \"reload\"\nheartbeat_interval_ms = 500\n",
    );
    eventually("the new tags", || own_tags(&node)["role"] == "edge");
    eventually("the reload log line", || {
        node.stderr().contains("config reloaded")
    });
    let line = node
        .stderr()
        .lines()
        .find(|l| l.contains("config reloaded"))
        .unwrap()
        .to_string();
    for field in ["tags", "log_level", "http_rate_limit", "protocol"] {
        assert!(line.contains(field), "{field} missing from {line}");
    }
    // Retagged into the canary's target: the node now reads the canary.
    assert_eq!(node.ok(&["kv", "get", "app", "feature"]).trim(), "on");
    // The new log level is in force.
    eventually("debug lines", || node.stderr().contains("DEBUG"));

    // A setting that needs a restart: rejected, nothing applied.
    write("tags = { role = \"other\" }\n[protocol]\ncluster = \"elsewhere\"\n");
    eventually("the rejection", || {
        node.stderr()
            .lines()
            .any(|l| l.contains("reload rejected") && l.contains("protocol.cluster"))
    });
    assert_eq!(own_tags(&node)["role"], "edge");

    // A file that does not parse: rejected, node keeps running.
    write("tags = [ this is not toml\n");
    eventually("the parse error", || {
        node.stderr()
            .lines()
            .any(|l| l.contains("reload rejected") && l.contains("invalid config file"))
    });
    node.wait_healthy();
    assert_eq!(own_tags(&node)["role"], "edge");

    // SIGHUP reloads too, even with no change on disk.
    write("tags = { role = \"edge\" }\nlog_level = \"debug\"\nhttp_rate_limit = 1000\n[protocol]\ncluster = \"reload\"\nheartbeat_interval_ms = 500\n");
    eventually("the file to settle", || {
        node.stderr()
            .lines()
            .filter(|l| l.contains("config reloaded"))
            .count()
            >= 2
    });
    node.signal("-HUP");
    eventually("a SIGHUP reload", || {
        node.stderr()
            .lines()
            .any(|l| l.contains("config reloaded") && l.contains("SIGHUP"))
    });
    node.wait_healthy();
}

#[test]
fn kv_canary_set_show_promote_and_abort() {
    let node = RunningNode::start(None, &["--tag", "role=gateway"]);
    node.ok(&["kv", "put", "app", "limit", "100"]);
    let set = node.cli(&["kv", "canary", "set", "app", "limit", "200"]);
    assert_eq!(set.status.code(), Some(1), "a canary needs a target");
    node.ok(&[
        "kv",
        "canary",
        "set",
        "app",
        "limit",
        "200",
        "--selector",
        "role=gateway",
    ]);
    let get = node.cli(&["kv", "get", "app", "limit"]);
    assert_eq!(String::from_utf8_lossy(&get.stdout).trim(), "200");
    assert!(String::from_utf8_lossy(&get.stderr).contains("canary"));
    let table = node.ok(&["kv", "canary", "show", "app"]);
    assert!(
        table.contains("limit") && table.contains("role=gateway") && table.contains("yes"),
        "{table}"
    );
    let one = json(&node.ok(&["kv", "canary", "show", "app", "limit", "--json"]));
    assert_eq!(one["active_here"], true);
    assert_eq!(one["value"], "200");

    node.ok(&["kv", "canary", "promote", "app", "limit"]);
    assert_eq!(node.ok(&["kv", "get", "app", "limit"]).trim(), "200");
    let gone = node.cli(&["kv", "canary", "show", "app", "limit"]);
    assert_eq!(gone.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&gone.stderr).contains("404"));

    node.ok(&["kv", "canary", "set", "app", "limit", "300", "--percent", "100"]);
    assert_eq!(node.ok(&["kv", "get", "app", "limit"]).trim(), "300");
    node.ok(&["kv", "canary", "abort", "app", "limit"]);
    assert_eq!(node.ok(&["kv", "get", "app", "limit"]).trim(), "200");
}
