//! Service discovery through DNS: a small authoritative server for one
//! domain (default `starling.`), answered from the node's own view, so any
//! program can find instances without a client library.
//!
//! # Names
//! * `<service>.<namespace>.service.<domain>`: **A/AAAA** with the
//!   addresses of instances registered with an IP, **SRV** with every
//!   instance (weight field = the instance's weight, port = its port,
//!   target = its host name, or `<hex of the IP>.addr.<domain>` for an IP,
//!   whose address comes along in the additional section).
//!   Only passing instances are answered; warning ones when none passes;
//!   critical and weight-0 ones never — the rules of
//!   [`crate::core::candidates`]. Records come in weighted random order
//!   (each instance first with probability weight / total), so clients
//!   that take the first A record spread load by weight.
//! * `<tag>.<service>.<namespace>.service.<domain>`: only instances
//!   carrying the tag (a tag may contain dots); the RFC 2782 form
//!   `_<service>._tcp.<namespace>.service.<domain>` (`_<tag>` in place of
//!   `_tcp` filters) works too.
//! * `<node>.node.<domain>`: the addresses a live (alive or suspect)
//!   member advertises, found by its name (ignoring case) or peer id;
//!   loopback addresses only when it has no other.
//! * `<hex>.addr.<domain>`: the address spelled by 8 (IPv4) or 32 (IPv6)
//!   hex digits; the targets of SRV records for instances registered by IP.
//! * The domain itself answers its SOA.
//!
//! Namespaces and services are matched as written, then ignoring case
//! (DNS ignores case, Starling names do not); a namespace or service with
//! a `.` in its name cannot be reached through DNS.
//!
//! # Response codes
//! * NOERROR with no records (NODATA, with the SOA) for a name that exists
//!   without records of the type asked: a service whose instances are all
//!   critical, AAAA for IPv4-only instances, `service.<domain>`...
//! * **NXDOMAIN** (with the SOA, whose minimum is the TTL, so resolvers
//!   cache the miss briefly) for a name under the domain that names
//!   nothing: no instance registered under it at all, an unknown node.
//! * **REFUSED** for a name outside the domain (this is not a recursive
//!   resolver; answering REFUSED rather than SERVFAIL tells a stub resolver
//!   to ask its next server at once), a class other than IN, and zone
//!   transfers.
//! * **SERVFAIL** when the node cannot answer (it is stopping) or more
//!   than 256 queries are in flight.
//! * FORMERR for a message that is not one question, NOTIMP for anything
//!   but a standard query, BADVERS for EDNS above version 0.
//!
//! # Transport
//! UDP and TCP on the same port. A UDP answer fits 512 bytes for a query
//! without EDNS, else the client's EDNS buffer size capped at 1232 bytes;
//! a longer one is cut at a record boundary with the TC bit set, and the
//! client asks again over TCP, which gives the whole answer. Every record
//! has the same short TTL (`dns_ttl_secs`, default 5 s).
//!
//! Counters: `starling_dns_queries_total{result}` (answered, nxdomain,
//! refused, servfail, malformed) and
//! `starling_dns_truncated_responses_total` in `GET /metrics`.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::rr::Name;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tokio::net::{TcpListener, UdpSocket};

use crate::node::{NodeConfig, NodeConfigError, NodeHandle};

mod answer;
mod handler;
pub(crate) mod metrics;
mod names;

/// The default address: `127.0.0.1:8600`.
pub const DEFAULT_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8600);
/// The default domain: `starling.`.
pub const DEFAULT_DOMAIN: &str = "starling.";
/// The default TTL of answers, seconds.
pub const DEFAULT_TTL_SECS: u32 = 5;
/// Longest TTL accepted, seconds (a day).
pub const MAX_TTL_SECS: u32 = 86_400;

/// A TCP connection that sends no query for this long is closed.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Answers queued per TCP connection.
const TCP_RESPONSE_BUFFER: usize = 32;
/// Attempts at finding a port free for both UDP and TCP when asked for
/// port 0.
const PORT_ATTEMPTS: usize = 16;

/// What the DNS server serves and where.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DnsOptions {
    /// Where to listen, UDP and TCP (port 0: a port free for both).
    pub addr: SocketAddr,
    /// The domain answered for, fully qualified (`starling.`).
    pub domain: String,
    /// TTL of every answer, seconds.
    pub ttl_secs: u32,
}

impl DnsOptions {
    /// Serve on `addr` with the default domain and TTL.
    pub fn new(addr: SocketAddr) -> Self {
        DnsOptions {
            addr,
            domain: DEFAULT_DOMAIN.into(),
            ttl_secs: DEFAULT_TTL_SECS,
        }
    }

    /// Another domain (a trailing dot is added if missing).
    pub fn with_domain(mut self, domain: &str) -> Result<Self, NodeConfigError> {
        self.domain = parse_domain(domain)?.to_ascii();
        Ok(self)
    }

    /// Another TTL (at most [`MAX_TTL_SECS`]).
    pub fn with_ttl_secs(mut self, ttl_secs: u32) -> Result<Self, NodeConfigError> {
        if ttl_secs > MAX_TTL_SECS {
            return Err(NodeConfigError::Field {
                field: "dns_ttl_secs".into(),
                reason: format!("{ttl_secs} is above the limit of {MAX_TTL_SECS} (a day)"),
            });
        }
        self.ttl_secs = ttl_secs;
        Ok(self)
    }

    /// The options of a node config (`dns`, `dns_domain`, `dns_ttl_secs`),
    /// checked; `None` if DNS is off.
    pub fn from_config(config: &NodeConfig) -> Result<Option<Self>, NodeConfigError> {
        // Checked even when off, so a typo surfaces before it is turned on.
        let options = DnsOptions::new(config.dns.unwrap_or(DEFAULT_ADDR))
            .with_domain(&config.dns_domain)?
            .with_ttl_secs(config.dns_ttl_secs)?;
        Ok(config.dns.map(|_| options))
    }
}

/// A DNS domain: ASCII, at least one label, made fully qualified.
fn parse_domain(domain: &str) -> Result<Name, NodeConfigError> {
    let field = |reason: String| NodeConfigError::Field {
        field: "dns_domain".into(),
        reason,
    };
    let mut name =
        Name::from_ascii(domain).map_err(|e| field(format!("{domain:?} is not a domain name: {e}")))?;
    if name.is_root() || domain.trim_matches('.').is_empty() {
        return Err(field(
            "the root domain cannot be served; use e.g. \"starling.\"".into(),
        ));
    }
    name.set_fqdn(true);
    Ok(name.to_lowercase())
}

/// A running DNS server. Dropping it stops it too, without waiting.
#[derive(Debug)]
pub struct DnsServer {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl DnsServer {
    /// The address it listens on, UDP and TCP (the real port when asked
    /// for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop listening and wait for queries being answered to finish.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        // The task stops when the sender goes (see `serve`).
        drop(self.stop.take());
    }
}

/// Bind `options.addr` (UDP and TCP) and answer DNS queries from `node`'s
/// view on a tokio task, until [`DnsServer::shutdown`] or drop.
///
/// ```no_run
/// # async fn demo(node: starling::node::NodeHandle) -> std::io::Result<()> {
/// use starling::dns::{serve, DnsOptions};
/// let dns = serve(node, DnsOptions::new("127.0.0.1:8600".parse().unwrap())).await?;
/// println!("dig @{} -p {} api.prod.service.starling SRV", dns.local_addr().ip(), dns.local_addr().port());
/// # Ok(()) }
/// ```
pub async fn serve(node: NodeHandle, options: DnsOptions) -> std::io::Result<DnsServer> {
    let domain = parse_domain(&options.domain)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    let (udp, tcp) = bind(options.addr).await?;
    let addr = udp.local_addr()?;
    let seed = getrandom::u64().unwrap_or_else(|_| xxhash_rust::xxh3::xxh3_64(node.node_id().as_bytes()));
    let zone = answer::Zone {
        domain,
        ttl: options.ttl_secs,
    };
    let handler = handler::Handler::new(node, zone, ChaCha8Rng::seed_from_u64(seed));
    let mut server = hickory_server::Server::new(handler);
    server.register_socket(udp);
    server.register_listener(tcp, TCP_IDLE_TIMEOUT, TCP_RESPONSE_BUFFER);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        tokio::select! {
            // A stop, or the DnsServer dropped.
            _ = stopped => {
                if let Err(e) = server.shutdown_gracefully().await {
                    tracing::debug!(error = %e, "DNS server stopped with an error");
                }
            }
            result = server.block_until_done() => {
                if let Err(e) = result {
                    tracing::error!(error = %e, "DNS server stopped");
                }
            }
        }
    });
    if !addr.ip().is_loopback() {
        tracing::warn!(%addr, "DNS answers anyone who can reach {addr}: every service instance and member address can be read through it");
    }
    tracing::info!(%addr, domain = %options.domain, "DNS server listening (UDP and TCP)");
    Ok(DnsServer {
        addr,
        stop: Some(stop),
        task,
    })
}

/// A UDP socket and a TCP listener on the same address; for port 0, a
/// port free for both.
async fn bind(addr: SocketAddr) -> std::io::Result<(UdpSocket, TcpListener)> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let udp = UdpSocket::bind(addr).await?;
        let port = udp.local_addr()?.port();
        match TcpListener::bind(SocketAddr::new(addr.ip(), port)).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if addr.port() == 0 && attempt < PORT_ATTEMPTS => {
                tracing::debug!(port, error = %e, "DNS: TCP port taken; trying another");
            }
            Err(e) => return Err(e),
        }
    }
}

/// Serde form of the `dns` config field: an address, or `"off"` / `false`
/// for none (`true` is the default address).
pub(crate) mod config_addr {
    use std::net::SocketAddr;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        On(bool),
        Text(String),
    }

    pub(crate) fn serialize<S: Serializer>(addr: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
        match addr {
            Some(a) => a.to_string().serialize(s),
            None => "off".serialize(s),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
        match Raw::deserialize(d)? {
            Raw::On(false) => Ok(None),
            Raw::On(true) => Ok(Some(super::DEFAULT_ADDR)),
            Raw::Text(t) if t == "off" => Ok(None),
            Raw::Text(t) => t.parse().map(Some).map_err(|e| {
                serde::de::Error::custom(format!(
                    "dns: {t:?} is not an address like 127.0.0.1:8600 (or \"off\"): {e}"
                ))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dns_field_takes_an_address_off_or_a_bool() {
        let c = NodeConfig::from_toml("").unwrap();
        assert_eq!(c.dns, Some(DEFAULT_ADDR));
        let c = NodeConfig::from_toml("dns = \"127.0.0.1:5353\"").unwrap();
        assert_eq!(c.dns, Some("127.0.0.1:5353".parse().unwrap()));
        assert_eq!(NodeConfig::from_toml("dns = \"off\"").unwrap().dns, None);
        assert_eq!(NodeConfig::from_toml("dns = false").unwrap().dns, None);
        assert_eq!(
            NodeConfig::from_toml("dns = true").unwrap().dns,
            Some(DEFAULT_ADDR)
        );
        let err = NodeConfig::from_toml("dns = \"localhost\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("dns"), "{err}");
        // Round trip through TOML, off included.
        let off = NodeConfig {
            dns: None,
            ..NodeConfig::default()
        };
        let text = toml::to_string(&off).unwrap();
        assert_eq!(NodeConfig::from_toml(&text).unwrap(), off);
    }

    #[test]
    fn the_domain_is_made_fully_qualified_and_the_root_is_refused() {
        let c = NodeConfig::from_toml("dns_domain = \"Consul.Local\"").unwrap();
        let options = DnsOptions::from_config(&c).unwrap().unwrap();
        assert_eq!(options.domain, "consul.local.");
        for bad in ["\".\"", "\"\"", "\"a..b\""] {
            let c = NodeConfig::from_toml(&format!("dns_domain = {bad}")).unwrap();
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains("dns_domain"), "{bad}: {err}");
        }
        let c = NodeConfig::from_toml("dns_ttl_secs = 100000").unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("dns_ttl_secs"));
        let mut off = c;
        off.dns = None;
        assert!(off.validate().is_err(), "checked even when off");
    }

    #[test]
    fn dns_settings_need_a_restart() {
        let running = NodeConfig::default();
        let mut new = running.clone();
        new.dns = None;
        let err = running.reload_changes(&new).unwrap_err();
        assert!(
            matches!(err, crate::node::ReloadError::RestartOnly { field: "dns" }),
            "{err:?}"
        );
        let mut new = running.clone();
        new.dns_ttl_secs = 30;
        let err = running.reload_changes(&new).unwrap_err();
        assert!(
            matches!(
                err,
                crate::node::ReloadError::RestartOnly {
                    field: "dns_ttl_secs"
                }
            ),
            "{err:?}"
        );
    }
}
