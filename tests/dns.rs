//! The DNS interface through real resolvers: nodes of a loopback cluster
//! (mDNS off) each serving DNS on an OS-chosen port, queried with
//! hickory's client over UDP and TCP; and one `starling run` process
//! queried with `dig` (Debian's `bind9-dnsutils`; `.ci/run` installs it).

#![cfg(feature = "node")]
#![allow(clippy::disallowed_methods)] // a test's timeouts read the wall clock

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hickory_net::client::{Client, ClientHandle};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::tcp::TcpClientStream;
use hickory_net::udp::UdpClientStream;
use hickory_proto::op::{DnsResponse, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};
use starling::core::{HealthStatus, InstanceId, ServiceName, ServiceSpec};
use starling::dns::{self, DnsOptions, DnsServer};
use starling::node::testing::{ns, Cluster};
use starling::node::NodeHandle;

const T: Duration = Duration::from_secs(30);
const BIN: &str = env!("CARGO_BIN_EXE_starling");

/// Serve DNS for `node` on an OS-chosen loopback port.
async fn serve(node: &NodeHandle) -> DnsServer {
    dns::serve(node.clone(), DnsOptions::new("127.0.0.1:0".parse().unwrap()))
        .await
        .expect("DNS on an ephemeral loopback port")
}

/// A UDP client of `addr`, with EDNS (buffer 1232) or without (512).
async fn udp(addr: SocketAddr, edns: bool) -> Client<TokioRuntimeProvider> {
    let stream = UdpClientStream::builder(addr, TokioRuntimeProvider::default()).build();
    let (mut client, bg) = Client::<TokioRuntimeProvider>::from_sender(stream);
    tokio::spawn(bg);
    if !edns {
        client.disable_edns();
    }
    client
}

/// A TCP client of `addr`.
async fn tcp(addr: SocketAddr) -> Client<TokioRuntimeProvider> {
    let (stream, sender) = TcpClientStream::new(
        addr,
        None,
        Some(Duration::from_secs(5)),
        TokioRuntimeProvider::default(),
    );
    let (client, bg) = Client::<TokioRuntimeProvider>::new(stream.await.expect("TCP connect"), sender);
    tokio::spawn(bg);
    client
}

async fn ask(client: &Client<TokioRuntimeProvider>, name: &str, rtype: RecordType) -> DnsResponse {
    client
        .clone()
        .query(Name::from_ascii(name).unwrap(), DNSClass::IN, rtype)
        .await
        .unwrap_or_else(|e| panic!("query {name} {rtype}: {e}"))
}

/// SRV answers as (target, port, weight).
fn srv(r: &DnsResponse) -> BTreeSet<(String, u16, u16)> {
    r.answers
        .iter()
        .filter_map(|rec| match &rec.data {
            RData::SRV(s) => Some((s.target.to_ascii(), s.port, s.weight)),
            _ => None,
        })
        .collect()
}

/// A and AAAA answers (of any section given).
fn ips<'a>(records: impl IntoIterator<Item = &'a hickory_proto::rr::Record>) -> BTreeSet<IpAddr> {
    records
        .into_iter()
        .filter_map(|rec| match &rec.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}

fn spec(address: &str, port: u16, weight: u8, tags: &[&str]) -> ServiceSpec {
    ServiceSpec {
        address: address.into(),
        port,
        tags: tags.iter().map(|t| t.to_string()).collect(),
        metadata: Default::default(),
        weight,
        ttl_ms: None,
    }
}

fn target(ip: &str) -> String {
    let ip: std::net::Ipv4Addr = ip.parse().unwrap();
    format!("{:08x}.addr.starling.", u32::from(ip))
}

/// Poll `name` on `client` until `done` holds for the answer (panics
/// after [`T`] with the last answer).
async fn until(
    client: &Client<TokioRuntimeProvider>,
    name: &str,
    rtype: RecordType,
    what: &str,
    done: impl Fn(&DnsResponse) -> bool,
) -> DnsResponse {
    let deadline = Instant::now() + T;
    loop {
        let r = ask(client, name, rtype).await;
        if done(&r) {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; last answer: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_and_a_answers_hold_the_passing_instances_on_every_node_and_tags_filter() {
    let mut c = Cluster::start(3, "dns-answers").await;
    let (n, api) = (ns("prod"), ServiceName::new("api").unwrap());
    let id = |s: &str| InstanceId::new(s).unwrap();
    c.node(0)
        .register_service(&n, &api, &id("api-1"), spec("10.0.0.1", 8081, 10, &["v1"]))
        .await
        .unwrap();
    c.node(1)
        .register_service(&n, &api, &id("api-2"), spec("10.0.0.2", 8082, 20, &["v2"]))
        .await
        .unwrap();
    c.node(1)
        .register_service(&n, &api, &id("api-db"), spec("db-1.internal", 8083, 40, &["v2"]))
        .await
        .unwrap();
    c.node(2)
        .register_service(&n, &api, &id("api-3"), spec("10.0.0.3", 8084, 30, &["v2"]))
        .await
        .unwrap();
    c.node(2)
        .heartbeat_service(&n, &api, &id("api-3"), Some(HealthStatus::Critical))
        .await
        .unwrap();
    let all = BTreeSet::from([
        (target("10.0.0.1"), 8081, 10),
        (target("10.0.0.2"), 8082, 20),
        ("db-1.internal.".to_string(), 8083, 40),
    ]);
    let v2 = BTreeSet::from([
        (target("10.0.0.2"), 8082, 20),
        ("db-1.internal.".to_string(), 8083, 40),
    ]);
    let servers: Vec<DnsServer> = futures::future::join_all(c.running().map(serve)).await;
    for server in &servers {
        let client = udp(server.local_addr(), true).await;
        let r = until(
            &client,
            "api.prod.service.starling.",
            RecordType::SRV,
            "the three passing instances (not the critical one)",
            |r| srv(r) == all,
        )
        .await;
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert!(r.metadata.authoritative && !r.metadata.truncation);
        assert!(r.answers.iter().all(|rec| rec.ttl == dns::DEFAULT_TTL_SECS));
        // The IP targets' addresses come along; the host name has none.
        let glue: BTreeSet<IpAddr> = ["10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap()].into();
        assert_eq!(ips(&r.additionals), glue);
        // A: the instances registered by IP only.
        let r = ask(&client, "api.prod.service.starling.", RecordType::A).await;
        assert_eq!(ips(&r.answers), glue);
        // The SRV target resolves.
        let r = ask(&client, &target("10.0.0.2"), RecordType::A).await;
        assert_eq!(ips(&r.answers), ["10.0.0.2".parse().unwrap()].into());
        // Tags filter, in both name forms.
        let r = ask(&client, "v2.api.prod.service.starling.", RecordType::SRV).await;
        assert_eq!(srv(&r), v2);
        let r = ask(&client, "_api._v2.prod.service.starling.", RecordType::SRV).await;
        assert_eq!(srv(&r), v2);
        let r = ask(&client, "_api._tcp.prod.service.starling.", RecordType::SRV).await;
        assert_eq!(srv(&r), all);
        let r = ask(&client, "v1.api.prod.service.starling.", RecordType::A).await;
        assert_eq!(ips(&r.answers), ["10.0.0.1".parse().unwrap()].into());
        // Case does not matter to DNS.
        let r = ask(&client, "API.Prod.Service.STARLING.", RecordType::SRV).await;
        assert_eq!(srv(&r), all);
        // A tag nobody carries, an unknown service or namespace: NXDOMAIN with the SOA.
        for name in [
            "v9.api.prod.service.starling.",
            "web.prod.service.starling.",
            "api.staging.service.starling.",
            "nothing.starling.",
        ] {
            let r = ask(&client, name, RecordType::SRV).await;
            assert_eq!(r.metadata.response_code, ResponseCode::NXDomain, "{name}");
            assert!(matches!(r.authorities[0].data, RData::SOA(_)), "{name}: {r:?}");
        }
        // A name that exists without records of the type: NODATA.
        let r = ask(&client, "api.prod.service.starling.", RecordType::AAAA).await;
        assert_eq!(
            (r.metadata.response_code, r.answers.len()),
            (ResponseCode::NoError, 0)
        );
        // Outside the domain: refused.
        let r = ask(&client, "example.com.", RecordType::A).await;
        assert_eq!(r.metadata.response_code, ResponseCode::Refused);
        // Nodes by name, ignoring case.
        for name in ["n0", "N1", "n2"] {
            let r = ask(&client, &format!("{name}.node.starling."), RecordType::A).await;
            assert_eq!(ips(&r.answers), ["127.0.0.1".parse().unwrap()].into(), "{name}");
        }
        let r = ask(&client, "n9.node.starling.", RecordType::A).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    }
    // Passing again: back in the answers everywhere.
    c.node(2)
        .heartbeat_service(&n, &api, &id("api-3"), Some(HealthStatus::Passing))
        .await
        .unwrap();
    for server in &servers {
        let client = tcp(server.local_addr()).await;
        until(
            &client,
            "api.prod.service.starling.",
            RecordType::SRV,
            "api-3 back once passing",
            |r| srv(r).contains(&(target("10.0.0.3"), 8084, 30)),
        )
        .await;
    }
    for s in servers {
        s.shutdown().await;
    }
    c.shutdown_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_or_departed_owners_instances_and_name_leave_every_nodes_answers() {
    let mut c = Cluster::start(4, "dns-owners").await;
    let (n, web) = (ns("prod"), ServiceName::new("web").unwrap());
    for i in 0..4u8 {
        let ip = format!("10.0.1.{}", i + 1);
        c.node(usize::from(i))
            .register_service(
                &n,
                &web,
                &InstanceId::new(format!("web-{i}")).unwrap(),
                spec(&ip, 80, 50, &[]),
            )
            .await
            .unwrap();
    }
    let servers = [serve(c.node(0)).await, serve(c.node(1)).await];
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    for s in &servers {
        let client = udp(s.local_addr(), true).await;
        until(
            &client,
            "web.prod.service.starling.",
            RecordType::A,
            "all four",
            |r| ips(&r.answers).len() == 4,
        )
        .await;
    }
    // n2 dies (no leave), n3 leaves.
    c.node(2).stop_without_leave().await.unwrap();
    c.node(3).shutdown().await.unwrap();
    let left = BTreeSet::from([ip("10.0.1.1"), ip("10.0.1.2")]);
    for s in &servers {
        let client = udp(s.local_addr(), true).await;
        until(
            &client,
            "web.prod.service.starling.",
            RecordType::A,
            "the dead and departed owners' instances gone",
            |r| ips(&r.answers) == left,
        )
        .await;
        for gone in ["n2", "n3"] {
            until(
                &client,
                &format!("{gone}.node.starling."),
                RecordType::A,
                &format!("{gone} no longer a live member"),
                |r| r.metadata.response_code == ResponseCode::NXDomain,
            )
            .await;
        }
    }
    for s in servers {
        s.shutdown().await;
    }
    c.shutdown_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_answers_truncate_over_udp_and_come_whole_over_tcp() {
    let mut c = Cluster::start(1, "dns-large").await;
    let (n, big) = (ns("prod"), ServiceName::new("big").unwrap());
    for i in 1..=40u16 {
        let ip = format!("10.0.2.{i}");
        c.node(0)
            .register_service(
                &n,
                &big,
                &InstanceId::new(format!("big-{i}")).unwrap(),
                spec(&ip, 9000 + i, 10, &[]),
            )
            .await
            .unwrap();
    }
    let server = serve(c.node(0)).await;
    let addr = server.local_addr();
    let name = "big.prod.service.starling.";
    // 40 A records (~640 bytes): over 512 without EDNS, within 1232 with it.
    let r = ask(&udp(addr, false).await, name, RecordType::A).await;
    assert!(r.metadata.truncation, "no EDNS: cut at 512 bytes");
    assert!(
        r.answers.len() < 40 && !r.answers.is_empty(),
        "{}",
        r.answers.len()
    );
    let r = ask(&udp(addr, true).await, name, RecordType::A).await;
    assert!(!r.metadata.truncation);
    assert_eq!(ips(&r.answers).len(), 40);
    // 40 SRV records and 40 addresses: over 1232 even with EDNS.
    for edns in [false, true] {
        let r = ask(&udp(addr, edns).await, name, RecordType::SRV).await;
        assert!(r.metadata.truncation, "SRV over UDP (EDNS {edns}) is cut short");
        assert!(srv(&r).len() < 40);
    }
    let r = ask(&tcp(addr).await, name, RecordType::SRV).await;
    assert!(!r.metadata.truncation);
    assert_eq!(srv(&r).len(), 40, "TCP gives the whole answer");
    assert_eq!(ips(&r.additionals).len(), 40);
    // A node that cannot answer gives SERVFAIL.
    c.node(0).stop_without_leave().await.unwrap();
    let r = ask(&tcp(addr).await, name, RecordType::SRV).await;
    assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
    server.shutdown().await;
    c.shutdown_all().await;
}

/// A `starling run` child process, killed on drop.
struct Running {
    child: std::process::Child,
    ready: String,
    _dir: tempfile::TempDir,
}

impl Running {
    fn field(&self, name: &str) -> String {
        self.ready
            .split_whitespace()
            .find_map(|f| f.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {}", self.ready))
            .to_string()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Fails clearly when the shared target dir's binary is another checkout's.
fn assert_binary_is_this_build() {
    let out = Command::new(BIN)
        .args(["run", "--help"])
        .output()
        .expect("run starling");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("--no-dns"),
        "{BIN} is not this build (no --no-dns in its help): another checkout sharing \
         CARGO_TARGET_DIR replaced it; rerun the test"
    );
}

fn run_node(extra: &[&str]) -> Running {
    assert_binary_is_this_build();
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args([
            "run",
            "--no-mdns",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--http",
            "127.0.0.1:0",
        ])
        .args(["--name", "dig-test", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(extra)
        .env_remove("STARLING_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn starling");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let ready = rx.recv_timeout(T).expect("a ready line");
    assert!(ready.starts_with("starling ready "), "{ready}");
    Running {
        child,
        ready,
        _dir: dir,
    }
}

/// `dig` with `args`, its stdout.
fn dig(args: &[&str]) -> String {
    let out = Command::new("dig").args(args).output().expect("run dig");
    assert!(
        out.status.success(),
        "dig {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn have_dig() -> bool {
    Command::new("dig")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

#[test]
fn dig_finds_a_service_registered_with_the_cli_on_a_running_node() {
    if !have_dig() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "dig is missing under CI=true: install bind9-dnsutils (.ci/run does)"
        );
        eprintln!("SKIPPED: dig not installed (apt-get install bind9-dnsutils)");
        return;
    }
    let node = run_node(&["--dns", "127.0.0.1:0"]);
    let http = node.field("http=http://");
    let dns: SocketAddr = node.field("dns=").parse().expect("dns=ADDR in the ready line");
    let port = dns.port().to_string();
    let out = Command::new(BIN)
        .args([
            "services",
            "register",
            "prod",
            "api",
            "api-7",
            "--address",
            "10.0.0.7",
        ])
        .args(["--port", "8080", "--weight", "50", "--tag", "v2", "--http", &http])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ask = |rest: &[&str]| dig(&[&["@127.0.0.1", "-p", &port], rest].concat());
    let srv = ask(&["api.prod.service.starling", "SRV", "+short"]);
    assert_eq!(srv.trim(), "1 50 8080 0a000007.addr.starling.", "{srv}");
    let tcp = ask(&["v2.api.prod.service.starling", "A", "+short", "+tcp"]);
    assert_eq!(tcp.trim(), "10.0.0.7");
    let node_a = ask(&["dig-test.node.starling", "A", "+short"]);
    assert_eq!(node_a.trim(), "127.0.0.1");
    let nx = ask(&["web.prod.service.starling", "SRV"]);
    assert!(
        nx.contains("status: NXDOMAIN") && nx.contains("flags: qr aa"),
        "{nx}"
    );
    // Counted in /metrics.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into();
    let text = agent
        .get(format!("http://{http}/metrics"))
        .header("Accept", "text/plain")
        .call()
        .expect("scrape")
        .body_mut()
        .read_to_string()
        .unwrap();
    let value = |series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series).map(|v| v.trim().parse().unwrap()))
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    };
    assert!(
        value("starling_dns_queries_total{result=\"answered\"}") >= 3.0,
        "{text}"
    );
    assert_eq!(value("starling_dns_queries_total{result=\"nxdomain\"}"), 1.0);
}

#[test]
fn a_dns_address_in_use_stops_the_node_naming_the_address_and_the_flags() {
    assert_binary_is_this_build();
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args([
            "run",
            "--no-mdns",
            "--no-http",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--dns",
            &addr,
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env_remove("STARLING_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + T;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("starling still running with its DNS address taken");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&addr) && stderr.contains("--dns") && stderr.contains("--no-dns"),
        "{stderr}"
    );
}
