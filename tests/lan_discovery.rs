//! LAN discovery with mDNS, inside network namespaces this test creates:
//! three `starling run` processes on a private bridge (no route out), mDNS
//! on, no bootstrap peers. They must find each other and replicate.
//!
//! Needs root and `ip netns`. Without them it prints `SKIPPED: <why>` on
//! stderr and returns; under CI (`CI=true`) it fails instead
//! (`starling::core::testing::skip_or_fail`).

#![cfg(feature = "node")]
#![allow(clippy::disallowed_methods)] // a test driver: waits on real time

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use starling::core::testing::skip_or_fail;

const BIN: &str = env!("CARGO_BIN_EXE_starling");

fn sh(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Namespaces, links and processes, all removed on drop.
struct Lan {
    tag: String,
    nodes: Vec<String>,
    children: Vec<Child>,
    dirs: Vec<tempfile::TempDir>,
}

impl Lan {
    fn bridge_ns(&self) -> String {
        format!("stlbr{}", self.tag)
    }

    fn create(n: usize) -> Result<Lan, String> {
        let tag = format!("{}", std::process::id() % 100_000);
        let mut lan = Lan {
            tag: tag.clone(),
            nodes: Vec::new(),
            children: Vec::new(),
            dirs: Vec::new(),
        };
        let br = lan.bridge_ns();
        sh(&["ip", "netns", "add", &br])?;
        sh(&[
            "ip", "netns", "exec", &br, "ip", "link", "add", "br0", "type", "bridge",
        ])?;
        sh(&["ip", "netns", "exec", &br, "ip", "link", "set", "br0", "up"])?;
        for i in 0..n {
            let ns = format!("stln{i}x{tag}");
            sh(&["ip", "netns", "add", &ns])?;
            lan.nodes.push(ns.clone());
            let (a, b) = (format!("stv{i}a{tag}"), format!("stv{i}b{tag}"));
            sh(&["ip", "link", "add", &a, "type", "veth", "peer", "name", &b])?;
            sh(&["ip", "link", "set", &a, "netns", &ns])?;
            sh(&["ip", "link", "set", &b, "netns", &br])?;
            sh(&[
                "ip", "netns", "exec", &br, "ip", "link", "set", &b, "master", "br0",
            ])?;
            sh(&["ip", "netns", "exec", &br, "ip", "link", "set", &b, "up"])?;
            let ip = format!("10.213.0.{}/24", i + 1);
            sh(&["ip", "netns", "exec", &ns, "ip", "addr", "add", &ip, "dev", &a])?;
            sh(&["ip", "netns", "exec", &ns, "ip", "link", "set", &a, "up"])?;
            sh(&["ip", "netns", "exec", &ns, "ip", "link", "set", "lo", "up"])?;
            // Multicast (mDNS) goes out on the veth; there is no default route.
            sh(&[
                "ip",
                "netns",
                "exec",
                &ns,
                "ip",
                "route",
                "add",
                "224.0.0.0/4",
                "dev",
                &a,
            ])?;
        }
        Ok(lan)
    }

    fn start_nodes(&mut self) -> Result<(), String> {
        for ns in self.nodes.clone() {
            let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
            let child = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &ns,
                    BIN,
                    "run",
                    "--cluster",
                    "lan-test",
                    "--http",
                    "127.0.0.1:7070",
                ])
                .args(["--listen", "/ip4/0.0.0.0/tcp/4001", "--name", &ns, "--data-dir"])
                .arg(dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| e.to_string())?;
            self.children.push(child);
            self.dirs.push(dir);
        }
        Ok(())
    }

    /// Run the starling CLI inside node `i`'s namespace against its node.
    fn cli(&self, i: usize, args: &[&str]) -> Option<String> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.nodes[i], BIN])
            .args(args)
            .args(["--http", "127.0.0.1:7070"])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in &self.nodes {
            let _ = sh(&["ip", "netns", "delete", ns]);
        }
        let _ = sh(&["ip", "netns", "delete", &self.bridge_ns()]);
    }
}

fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    false
}

#[test]
fn three_nodes_in_private_namespaces_find_each_other_by_mdns_and_replicate() {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    if !root {
        skip_or_fail("needs root to create network namespaces");
        return;
    }
    if sh(&["ip", "netns", "list"]).is_err() {
        skip_or_fail("`ip netns` is not available (install iproute2)");
        return;
    }
    let mut lan = Lan::create(3).expect("create namespaces");
    lan.start_nodes().expect("start nodes");
    let found = wait_for(Duration::from_secs(60), || {
        (0..3).all(|i| {
            lan.cli(i, &["members", "--json"])
                .and_then(|s| serde_json::from_str::<Vec<serde_json::Value>>(&s).ok())
                .is_some_and(|m| m.iter().filter(|m| m["status"] == "alive").count() == 3)
        })
    });
    assert!(
        found,
        "the three nodes did not discover each other by mDNS within 60 s"
    );
    lan.cli(0, &["kv", "put", "lan", "greeting", "hello from n0"])
        .expect("put on node 0");
    let replicated = wait_for(Duration::from_secs(30), || {
        (1..3).all(|i| {
            lan.cli(i, &["kv", "get", "lan", "greeting"])
                .is_some_and(|s| s.contains("hello from n0"))
        })
    });
    assert!(replicated, "the write on node 0 did not reach nodes 1 and 2");
}
