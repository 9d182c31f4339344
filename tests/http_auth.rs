//! HTTP API access: tokens with roles per namespace, the Host, Origin and
//! Content-Type checks, token reload, the non-loopback refusal and HTTPS.
//! In-process nodes on loopback (mDNS off) with their HTTP API on
//! 127.0.0.1 and an OS-chosen port, plus the `starling` binary for the
//! reload path and the CLI.
#![allow(clippy::disallowed_methods)] // a test's timeouts read the wall clock

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use starling::http::{self, HttpAccess, HttpLimits, HttpRole, HttpServer, HttpToken};
use starling::node::{Node, NodeConfig, NodeHandle};

const BIN: &str = env!("CARGO_BIN_EXE_starling");

const READER: &str = "reader-secret-0123456789";
const WRITER: &str = "writer-secret-0123456789";
const OTHER_NS: &str = "other-ns-secret-0123456789";
const ADMIN: &str = "admin-secret-0123456789";

/// Tokens most tests use: a reader and a writer on `app`, a writer on
/// `other`, an admin on every namespace.
fn tokens() -> Vec<HttpToken> {
    vec![
        HttpToken::inline("reader", HttpRole::Read, &["app"], READER),
        HttpToken::inline("writer", HttpRole::Write, &["app"], WRITER),
        HttpToken::inline("other", HttpRole::Write, &["other"], OTHER_NS),
        HttpToken::inline("admin", HttpRole::Admin, &["*"], ADMIN),
    ]
}

/// A node and its HTTP API on their own runtime; stopped on drop.
struct TestNode {
    rt: tokio::runtime::Runtime,
    node: NodeHandle,
    server: Option<HttpServer>,
    base: String,
    agent: ureq::Agent,
    _dir: tempfile::TempDir,
}

/// An answer read whole.
struct Answer {
    status: u16,
    www_authenticate: Option<String>,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {} body is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Asserts the status and the JSON error code.
    fn expect(&self, status: u16, code: &str) {
        let v = self.json();
        assert_eq!(self.status, status, "{v}");
        assert_eq!(v["code"], code, "{v}");
    }
}

impl TestNode {
    fn start(tweak: impl FnOnce(&mut NodeConfig)) -> TestNode {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = NodeConfig::default();
        config.data_dir = dir.path().join("data");
        config.listen = vec!["/ip4/127.0.0.1/tcp/0".into()];
        config.mdns = false;
        config.name = Some("auth-test".into());
        config.http = Some("127.0.0.1:0".parse().expect("addr"));
        tweak(&mut config);
        config.validate().expect("valid config");
        let access = HttpAccess::from_config(&config).expect("access policy");
        let scheme = if access.is_tls() { "https" } else { "http" };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let (node, server) = rt.block_on(async {
            let node = Node::start(config.clone()).await.expect("node starts");
            let server = http::serve_with_access(
                node.clone(),
                config.http.expect("http addr"),
                HttpLimits::from_config(&config),
                access,
            )
            .await
            .expect("http serves");
            (node, server)
        });
        let base = format!("{scheme}://{}", server.local_addr());
        TestNode {
            rt,
            node,
            server: Some(server),
            base,
            agent: agent(None),
            _dir: dir,
        }
    }

    fn server(&self) -> &HttpServer {
        self.server.as_ref().expect("server runs")
    }

    /// `method path` with optional token and extra headers.
    fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Answer {
        let url = format!("{}{path}", self.base);
        let mut req = ureq::http::Request::builder().method(method).uri(url);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let r = match body {
            Some(b) => self.agent.run(req.body(b.to_vec()).expect("request")),
            None => self.agent.run(req.body(()).expect("request")),
        };
        let mut r = r.expect("request reaches the server");
        let www_authenticate = r
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = r.body_mut().read_to_vec().expect("body");
        Answer {
            status: r.status().as_u16(),
            www_authenticate,
            body,
        }
    }

    fn get(&self, path: &str, token: Option<&str>) -> Answer {
        self.call("GET", path, token, &[], None)
    }

    fn put(&self, path: &str, token: Option<&str>, body: &[u8]) -> Answer {
        self.call("PUT", path, token, &[], Some(body))
    }

    /// The value of `app/<key>` read straight from the node (no HTTP).
    fn value(&self, ns: &str, key: &str) -> Option<Vec<u8>> {
        let ns = starling::core::Namespace::new(ns).expect("namespace");
        let key = starling::core::Key::new(key).expect("key");
        self.rt
            .block_on(self.node.get(&ns, &key))
            .expect("node answers")
            .map(|v| v.value)
    }

    /// One scrape's value of `starling_http_rejected_requests_total{reason}`.
    fn rejected(&self, reason: &str) -> u64 {
        let text = String::from_utf8(self.get("/metrics", Some(ADMIN)).body).expect("text");
        let series = format!("starling_http_rejected_requests_total{{reason=\"{reason}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(series.as_str()))
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
            .trim()
            .parse()
            .expect("a counter")
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        let server = self.server.take();
        let node = self.node.clone();
        self.rt.block_on(async move {
            let _ = node.shutdown().await;
            if let Some(s) = server {
                s.shutdown(Duration::from_secs(2)).await;
            }
        });
    }
}

/// A blocking client; with the `tls` feature it speaks HTTPS (rustls),
/// trusting `ca` (a PEM certificate) when given, else the web PKI roots.
fn agent(ca: Option<&[u8]>) -> ureq::Agent {
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)));
    #[cfg(feature = "tls")]
    let config = {
        use std::sync::Arc;
        use ureq::tls::{PemItem, RootCerts, TlsConfig, TlsProvider};
        let mut tls = TlsConfig::builder()
            .provider(TlsProvider::Rustls)
            .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
        if let Some(pem) = ca {
            let certs: Vec<_> = ureq::tls::parse_pem(pem)
                .filter_map(|i| match i {
                    Ok(PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            assert!(!certs.is_empty(), "a PEM certificate");
            tls = tls.root_certs(RootCerts::new_with_certs(&certs));
        }
        config.tls_config(tls.build())
    };
    #[cfg(not(feature = "tls"))]
    assert!(ca.is_none(), "HTTPS needs the tls feature");
    config.build().into()
}

/// Fails clearly when `CARGO_BIN_EXE_starling` is not this build (a
/// `CARGO_TARGET_DIR` shared between worktrees lets another checkout's
/// build replace `target/debug/starling` between build and run).
fn assert_binary_is_this_build() {
    let mut cmd = Command::new(BIN);
    cmd.args(["kv", "get", "--help"]);
    let out = output_within_unchecked(&mut cmd, Duration::from_secs(30));
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("--token-file") && help.contains("--ca-cert"),
        "{BIN} is not this build (no --token-file/--ca-cert in its help): another checkout \
         sharing CARGO_TARGET_DIR replaced it; rerun the test"
    );
}

/// Run this build's `starling` to its end, killing it (and failing) after
/// `limit`.
fn output_within(cmd: &mut Command, limit: Duration) -> std::process::Output {
    assert_binary_is_this_build();
    output_within_unchecked(cmd, limit)
}

/// Run a command to its end, killing it (and failing) after `limit`.
fn output_within_unchecked(cmd: &mut Command, limit: Duration) -> std::process::Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn starling");
    let deadline = Instant::now() + limit;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`{cmd:?}` still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

/// A raw HTTP/1.1 request (so that `Host` is exactly what the test says);
/// returns the status and the body.
fn raw(addr: std::net::SocketAddr, request: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(request.as_bytes()).expect("write");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_string();
    (status, body)
}

#[test]
fn without_a_token_every_endpoint_but_health_answers_401() {
    let n = TestNode::start(|c| c.http_tokens = tokens());
    assert_eq!(n.get("/v1/health", None).status, 200);
    for path in [
        "/v1/kv/app",
        "/v1/kv/app/k",
        "/v1/members",
        "/metrics",
        "/v1/services/app",
    ] {
        let a = n.get(path, None);
        a.expect(401, "unauthenticated");
        assert_eq!(
            a.www_authenticate.as_deref(),
            Some("Bearer realm=\"starling\""),
            "{path}"
        );
        assert!(
            a.json()["error"]
                .as_str()
                .unwrap()
                .contains("Authorization: Bearer"),
            "{}",
            a.json()
        );
    }
    n.put("/v1/kv/app/k", None, b"v").expect(401, "unauthenticated");
    n.put("/v1/kv/app/k", Some("not-a-configured-secret-at-all"), b"v")
        .expect(401, "unauthenticated");
    let basic = n.call(
        "PUT",
        "/v1/kv/app/k",
        None,
        &[("authorization", "Basic d3JpdGVy")],
        Some(b"v"),
    );
    basic.expect(401, "unauthenticated");
    assert_eq!(n.value("app", "k"), None);
    assert_eq!(n.rejected("unauthenticated"), 8);
}

#[test]
fn a_token_without_the_role_or_the_namespace_gets_403_and_the_right_one_writes() {
    let n = TestNode::start(|c| c.http_tokens = tokens());
    // The reader reads but cannot write.
    assert_eq!(n.get("/v1/kv/app", Some(READER)).status, 200);
    let a = n.put("/v1/kv/app/k", Some(READER), b"v");
    a.expect(403, "forbidden");
    assert!(
        a.json()["error"].as_str().unwrap().contains("`write`"),
        "{}",
        a.json()
    );
    // A writer of another namespace can neither write nor read `app`.
    n.put("/v1/kv/app/k", Some(OTHER_NS), b"v")
        .expect(403, "forbidden");
    n.get("/v1/kv/app/k", Some(OTHER_NS)).expect(403, "forbidden");
    n.call(
        "PUT",
        "/v1/services/app/api/i1",
        Some(READER),
        &[("content-type", "application/json")],
        Some(br#"{"address": "h", "port": 1}"#),
    )
    .expect(403, "forbidden");
    assert_eq!(n.value("app", "k"), None);
    // The writer of `app` writes, and the write lands.
    let w = n.put("/v1/kv/app/k", Some(WRITER), b"v1");
    assert_eq!(w.status, 200, "{}", w.json());
    assert_eq!(n.value("app", "k").as_deref(), Some(&b"v1"[..]));
    let r = n.get("/v1/kv/app/k", Some(READER));
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["value"], "v1");
    // ...in `app` only; the admin writes anywhere.
    n.put("/v1/kv/other/k", Some(WRITER), b"v")
        .expect(403, "forbidden");
    assert_eq!(n.put("/v1/kv/other/k", Some(OTHER_NS), b"o").status, 200);
    assert_eq!(n.put("/v1/kv/zzz/k", Some(ADMIN), b"z").status, 200);
    assert_eq!(n.value("zzz", "k").as_deref(), Some(&b"z"[..]));
    // Cluster-wide reads need only `read`, whatever the namespaces.
    assert_eq!(n.get("/v1/members", Some(READER)).status, 200);
    assert_eq!(n.get("/metrics", Some(OTHER_NS)).status, 200);
    assert_eq!(n.rejected("forbidden"), 5);
}

#[test]
fn a_text_plain_post_from_a_foreign_origin_changes_nothing() {
    // No token configured: the default loopback node a browser can reach.
    let n = TestNode::start(|_| {});
    let evil = [("origin", "http://evil.example"), ("content-type", "text/plain")];
    // A key the attack tries to create...
    let a = n.call(
        "POST",
        "/v1/kv/app/new/resolve",
        None,
        &evil,
        Some(br#"{"value": "pwned"}"#),
    );
    a.expect(403, "bad_origin");
    n.call("PUT", "/v1/kv/app/new", None, &[evil[0]], Some(b"pwned"))
        .expect(403, "bad_origin");
    assert_eq!(n.value("app", "new"), None);
    // ...and one it tries to roll back.
    let v1 = n.put("/v1/kv/app/k", None, b"v1").json()["version"]
        .as_str()
        .expect("version")
        .to_string();
    assert_eq!(n.put("/v1/kv/app/k", None, b"v2").status, 200);
    let body = format!(r#"{{"version": "{v1}"}}"#);
    n.call(
        "POST",
        "/v1/kv/app/k/rollback",
        None,
        &evil,
        Some(body.as_bytes()),
    )
    .expect(403, "bad_origin");
    // Without an Origin, text/plain is still not JSON.
    n.call(
        "POST",
        "/v1/kv/app/k/rollback",
        None,
        &[evil[1]],
        Some(body.as_bytes()),
    )
    .expect(415, "bad_content_type");
    n.call(
        "PUT",
        "/v1/services/app/api/i1",
        None,
        &[("content-type", "application/x-www-form-urlencoded")],
        Some(b"address=h&port=1"),
    )
    .expect(415, "bad_content_type");
    assert_eq!(n.value("app", "k").as_deref(), Some(&b"v2"[..]));
    // The node's own origin and JSON go through.
    let own = format!("http://{}", n.server().local_addr());
    let ok = n.call(
        "POST",
        "/v1/kv/app/k/rollback",
        None,
        &[("origin", own.as_str()), ("content-type", "application/json")],
        Some(body.as_bytes()),
    );
    assert_eq!(ok.status, 200, "{}", ok.json());
    assert_eq!(n.value("app", "k").as_deref(), Some(&b"v1"[..]));
    // A raw value may have any content type.
    let typed = n.call("PUT", "/v1/kv/app/t", None, &[evil[1]], Some(b"text"));
    assert_eq!(typed.status, 200);
    assert_eq!(n.rejected("bad_origin"), 3);
    assert_eq!(n.rejected("bad_content_type"), 2);
}

#[test]
fn a_foreign_host_is_refused_before_anything_else() {
    let n = TestNode::start(|c| {
        c.http_tokens = tokens();
        c.http_allowed_hosts = vec!["starling.internal".into()];
    });
    let addr = n.server().local_addr();
    let port = addr.port();
    let req = |host: &str, path: &str| {
        raw(
            addr,
            &format!(
                "GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {READER}\r\n\
                 Connection: close\r\n\r\n"
            ),
        )
    };
    // DNS rebinding: the page's own name reaches 127.0.0.1.
    let (status, body) = req(&format!("evil.example:{port}"), "/v1/kv/app");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("bad_host"), "{body}");
    let (status, _) = req(&format!("evil.example:{port}"), "/v1/health");
    assert_eq!(status, 403);
    for good in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("starling.internal:{port}"),
    ] {
        let (status, body) = req(&good, "/v1/kv/app");
        assert_eq!(status, 200, "{good}: {body}");
    }
    assert_eq!(n.rejected("bad_host"), 2);
}

#[test]
fn reloaded_tokens_apply_without_restart() {
    let n = TestNode::start(|c| c.http_tokens = tokens());
    assert_eq!(n.get("/v1/kv/app", Some(READER)).status, 200);
    let mut config = NodeConfig::default();
    config.http = Some("127.0.0.1:0".parse().expect("addr"));
    config.http_tokens = vec![HttpToken::inline(
        "new",
        HttpRole::Write,
        &["app"],
        "new-secret-0123456789",
    )];
    n.server()
        .set_access(HttpAccess::from_config(&config).expect("policy"));
    n.get("/v1/kv/app", Some(READER)).expect(401, "unauthenticated");
    let w = n.put("/v1/kv/app/k", Some("new-secret-0123456789"), b"v");
    assert_eq!(w.status, 200, "{}", w.json());
    // Back to no token at all: open again (loopback).
    n.server().set_access(HttpAccess::default());
    assert_eq!(n.get("/v1/kv/app/k", None).status, 200);
}

#[test]
fn a_non_loopback_bind_without_a_token_is_refused() {
    let mut c = NodeConfig::default();
    c.http = Some("0.0.0.0:0".parse().expect("addr"));
    let e = c.validate().expect_err("refused").to_string();
    assert!(e.contains("`http_tokens`") && e.contains("0.0.0.0:0"), "{e}");
    // The library entry refuses too.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let err = rt.block_on(async {
        let mut config = NodeConfig::default();
        config.data_dir = dir.path().to_path_buf();
        config.listen = vec!["/ip4/127.0.0.1/tcp/0".into()];
        config.mdns = false;
        let node = Node::start(config).await.expect("node starts");
        let r = http::serve(
            node.clone(),
            "0.0.0.0:0".parse().expect("addr"),
            HttpLimits::default(),
        )
        .await;
        let _ = node.shutdown().await;
        r.expect_err("refused")
    });
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("http_tokens"), "{err}");
    // And so does the binary, with a usage error naming the field.
    let mut cmd = Command::new(BIN);
    cmd.args([
        "run",
        "--no-mdns",
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--http",
        "0.0.0.0:0",
    ])
    .args(["--data-dir", dir.path().join("bin").to_str().expect("utf-8")])
    .env_remove("STARLING_CONFIG");
    let out = output_within(&mut cmd, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("`http_tokens`"), "{stderr}");
}

/// `starling run --config <file>` as a child process; killed on drop.
struct Binary {
    child: std::process::Child,
    http: String,
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Binary {
    fn start(config: &std::path::Path) -> Binary {
        assert_binary_is_this_build();
        let mut child = Command::new(BIN)
            .args(["run", "--config", config.to_str().expect("utf-8")])
            .env_remove("STARLING_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn starling");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
        if !line.starts_with("starling ready ") {
            let _ = child.kill();
            let _ = child.wait();
            panic!("no ready line within 30 s: {line:?}");
        }
        let http = line
            .split_whitespace()
            .find_map(|f| f.strip_prefix("http="))
            .expect("http=")
            .to_string();
        Binary { child, http }
    }

    /// Run a client subcommand against this node.
    fn cli(&self, args: &[&str], env_token: Option<&str>) -> std::process::Output {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .args(["--http", &self.http])
            .env_remove("STARLING_TOKEN");
        if let Some(t) = env_token {
            cmd.env("STARLING_TOKEN", t);
        }
        output_within(&mut cmd, Duration::from_secs(30))
    }
}

fn node_toml(dir: &std::path::Path, tokens: &str, extra: &str) -> String {
    format!(
        "data_dir = {:?}\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\nhttp = \"127.0.0.1:0\"\nmdns = false\ndns = \"off\"\n{extra}\n{tokens}",
        dir.join("data").to_str().expect("utf-8")
    )
}

#[test]
fn the_cli_sends_its_token_and_the_binary_reloads_tokens_from_the_config_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("writer.token");
    std::fs::write(&token_file, format!("{WRITER}\n")).expect("token file");
    let first = format!(
        "[[http_tokens]]\nname = \"writer\"\nrole = \"write\"\nnamespaces = [\"app\"]\nsecret_file = {:?}\n",
        token_file.to_str().expect("utf-8")
    );
    let config = dir.path().join("node.toml");
    std::fs::write(&config, node_toml(dir.path(), &first, "")).expect("config");
    let node = Binary::start(&config);

    // No token: 401, and the message says what to do.
    let out = node.cli(&["kv", "put", "app", "k", "v"], None);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("401") && stderr.contains("--token"), "{stderr}");
    // --token-file, then STARLING_TOKEN.
    let token_file_arg = token_file.to_str().expect("utf-8");
    let out = node.cli(
        &["kv", "put", "app", "k", "v1", "--token-file", token_file_arg],
        None,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = node.cli(&["kv", "get", "app", "k", "--raw"], Some(WRITER));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, b"v1");
    // A namespace the token lacks: 403 with a hint.
    let out = node.cli(&["kv", "put", "other", "k", "v", "--token", WRITER], None);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("403 forbidden") && stderr.contains("namespaces"),
        "{stderr}"
    );

    // Swap the token in the config file: the node polls it and reloads.
    let second = "[[http_tokens]]\nname = \"reader\"\nrole = \"read\"\nnamespaces = [\"*\"]\nsecret = \"rotated-secret-0123456789\"\n";
    std::fs::write(&config, node_toml(dir.path(), second, "")).expect("config");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = node.cli(
            &["kv", "get", "app", "k", "--raw"],
            Some("rotated-secret-0123456789"),
        );
        if out.status.success() {
            assert_eq!(out.stdout, b"v1");
            break;
        }
        assert!(Instant::now() < deadline, "the new token never worked");
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = node.cli(&["kv", "get", "app", "k"], Some(WRITER));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
}

#[cfg(feature = "tls")]
#[test]
fn https_with_a_self_signed_certificate_serves_the_api_and_the_cli() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .expect("certificate");
    let cert_pem = cert.cert.pem();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, &cert_pem).expect("cert file");
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).expect("key file");

    let mut n = TestNode::start(|c| {
        c.http_tokens = tokens();
        c.http_tls_cert = Some(cert_path.clone());
        c.http_tls_key = Some(key_path.clone());
    });
    assert!(n.base.starts_with("https://127.0.0.1:"), "{}", n.base);
    assert_eq!(n.server().scheme(), "https");
    n.agent = agent(Some(cert_pem.as_bytes()));
    let w = n.put("/v1/kv/app/k", Some(WRITER), b"over-tls");
    assert_eq!(w.status, 200, "{}", w.json());
    assert_eq!(n.value("app", "k").as_deref(), Some(&b"over-tls"[..]));
    n.get("/v1/kv/app/k", None).expect(401, "unauthenticated");
    // The same-origin check knows the scheme.
    let own = format!("https://{}", n.server().local_addr());
    let ok = n.call(
        "GET",
        "/v1/kv/app/k",
        Some(READER),
        &[("origin", own.as_str())],
        None,
    );
    assert_eq!(ok.status, 200);
    let plain = own.replacen("https", "http", 1);
    n.call(
        "GET",
        "/v1/kv/app/k",
        Some(READER),
        &[("origin", plain.as_str())],
        None,
    )
    .expect(403, "bad_origin");
    // A client that does not trust the certificate cannot talk to it.
    assert!(agent(None).get(format!("{}/v1/health", n.base)).call().is_err());

    // The CLI with --ca-cert.
    let mut cmd = Command::new(BIN);
    cmd.args(["kv", "get", "app", "k", "--raw", "--http", &n.base])
        .args(["--ca-cert", cert_path.to_str().expect("utf-8"), "--token", READER])
        .env_remove("STARLING_TOKEN");
    let out = output_within(&mut cmd, Duration::from_secs(30));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, b"over-tls");

    // A renewed certificate at the same paths is taken on reload.
    let renewed = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).expect("certificate");
    let renewed_pem = renewed.cert.pem();
    std::fs::write(&cert_path, &renewed_pem).expect("cert file");
    std::fs::write(&key_path, renewed.key_pair.serialize_pem()).expect("key file");
    assert!(n.rt.block_on(n.server().reload_tls()).expect("reloads"));
    let url = format!("{}/v1/health", n.base);
    let status = agent(Some(renewed_pem.as_bytes()))
        .get(&url)
        .call()
        .expect("renewed certificate trusted");
    assert_eq!(status.status().as_u16(), 200);
    assert!(agent(Some(cert_pem.as_bytes())).get(&url).call().is_err());
    // A broken file keeps the certificate in force.
    std::fs::write(&key_path, "not a key").expect("key file");
    assert!(n.rt.block_on(n.server().reload_tls()).is_err());
    assert!(agent(Some(renewed_pem.as_bytes())).get(&url).call().is_ok());
}

#[test]
fn writer_rules_are_changed_with_an_admin_token_on_an_admin_node_and_enforced_on_writes() {
    let n = TestNode::start(|c| c.http_tokens = tokens());
    let body = br#"{"writers": []}"#;
    // A writer token may not change rules; an admin token may not either
    // while the node is no admin.
    assert_eq!(n.put("/v1/acl/app", Some(WRITER), body).status, 403);
    n.put("/v1/acl/app", Some(ADMIN), body)
        .expect(403, "not_permitted");

    // Name this node the admin (a reload of the protocol settings).
    let mut protocol = starling::core::Config::default();
    protocol.acl_admins = vec![n.node.peer_id()];
    n.rt.block_on(n.node.reconfigure(protocol)).expect("reconfigured");
    n.put("/v1/acl/app", Some(ADMIN), br#"{"writers": ["nobody"]}"#)
        .expect(400, "invalid_writer");
    let w = n.put("/v1/acl/app", Some(ADMIN), body);
    assert_eq!(w.status, 200, "{}", w.json());

    // No writer listed: nobody writes `app`, `other` stays open.
    n.put("/v1/kv/app/k", Some(WRITER), b"v")
        .expect(403, "not_permitted");
    assert_eq!(n.value("app", "k"), None);
    assert_eq!(n.put("/v1/kv/other/k", Some(OTHER_NS), b"v").status, 200);
    let rules = n.get("/v1/acl", Some(READER)).json();
    assert_eq!(rules["admins"][0], n.node.peer_id());
    assert_eq!(rules["rules"]["app"], serde_json::json!([]));
    assert_eq!(n.get("/v1/acl/other", Some(READER)).status, 404);

    // This node listed: it writes again; the rule removed: open again.
    let me = format!(r#"{{"writers": ["{}"]}}"#, n.node.peer_id());
    assert_eq!(n.put("/v1/acl/app", Some(ADMIN), me.as_bytes()).status, 200);
    assert_eq!(n.put("/v1/kv/app/k", Some(WRITER), b"v1").status, 200);
    let d = n.call("DELETE", "/v1/acl/app", Some(ADMIN), &[], None);
    assert_eq!(d.status, 200, "{}", d.json());
    assert_eq!(n.get("/v1/acl/app", Some(READER)).status, 404);
    assert_eq!(n.value("app", "k"), Some(b"v1".to_vec()));
}
