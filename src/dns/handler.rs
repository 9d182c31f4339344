//! The request handler hickory's server calls for every query: checks the
//! query, reads the node's view through its [`NodeHandle`] (a read on the
//! node's task, like an HTTP GET: it never blocks the driver), builds the
//! answer ([`super::answer`]) and counts the outcome.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use hickory_proto::op::{Edns, Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, Record, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use libp2p::multiaddr::Protocol;
use libp2p::Multiaddr;
use rand_chacha::ChaCha8Rng;
use tokio::sync::Semaphore;

use crate::core::{MemberStatus, Namespace, ServiceName, ServiceQuery, ServiceView};
use crate::node::metrics::NodeMetrics;
use crate::node::{MemberView, NodeError, NodeHandle};

use super::answer::{Answer, Zone};
use super::metrics::Outcome;
use super::names::{self, Question};

/// Largest UDP answer whatever the client's EDNS buffer size says (the
/// DNS flag day 2020 figure: no IP fragmentation on common paths, and a
/// bound on how much a spoofed query can make this server send).
pub(crate) const UDP_PAYLOAD_MAX: u16 = 1232;

/// Queries being answered at once; past it a query gets SERVFAIL at once
/// (counted), so a flood cannot fill the node's request queue.
pub(crate) const MAX_IN_FLIGHT: usize = 256;

/// Answers queries from a node's view.
pub(crate) struct Handler {
    node: NodeHandle,
    zone: Zone,
    metrics: Arc<NodeMetrics>,
    rng: Mutex<ChaCha8Rng>,
    in_flight: Semaphore,
}

impl Handler {
    pub(crate) fn new(node: NodeHandle, zone: Zone, rng: ChaCha8Rng) -> Self {
        let metrics = node.latency_metrics().clone();
        Handler {
            node,
            zone,
            metrics,
            rng: Mutex::new(rng),
            in_flight: Semaphore::new(MAX_IN_FLIGHT),
        }
    }

    /// The answer to `request` (any response code).
    async fn answer(&self, request: &Request) -> Answer {
        let refuse = |rcode| Answer {
            rcode,
            answers: Vec::new(),
            soa: Vec::new(),
            additionals: Vec::new(),
        };
        if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
            return refuse(ResponseCode::BADVERS);
        }
        if request.metadata.message_type != MessageType::Query || request.metadata.op_code != OpCode::Query {
            return refuse(ResponseCode::NotImp);
        }
        let [query] = request.queries.queries() else {
            return refuse(ResponseCode::FormErr);
        };
        let query = query.original();
        let name = query.name();
        let in_class = matches!(query.query_class(), DNSClass::IN | DNSClass::ANY);
        let transfer = matches!(query.query_type(), RecordType::AXFR | RecordType::IXFR);
        if !in_class || transfer || !self.zone.domain.zone_of(name) {
            return refuse(ResponseCode::Refused);
        }
        let Ok(_permit) = self.in_flight.try_acquire() else {
            tracing::debug!(%name, "DNS: {MAX_IN_FLIGHT} queries in flight; SERVFAIL");
            return refuse(ResponseCode::ServFail);
        };
        match self.lookup(name, query.query_type()).await {
            Ok(answer) => answer,
            Err(e) => {
                tracing::debug!(%name, error = %e, "DNS: the node cannot answer; SERVFAIL");
                refuse(ResponseCode::ServFail)
            }
        }
    }

    /// The answer for a name under the domain.
    async fn lookup(&self, name: &Name, qtype: RecordType) -> Result<Answer, NodeError> {
        let zone = &self.zone;
        Ok(match names::parse(&zone.domain, name) {
            Question::Apex => zone.apex(qtype),
            Question::Interior => zone.nodata(),
            Question::Unknown => zone.nxdomain(),
            Question::Addr(ip) => zone.addr(name, qtype, ip),
            Question::Namespace(ns) => {
                if self.namespace_has_services(&ns).await? {
                    zone.nodata()
                } else {
                    zone.nxdomain()
                }
            }
            Question::Service {
                namespace,
                service,
                tag,
            } => {
                let registered = self.instances(&namespace, &service, tag).await?;
                let mut rng = self.rng.lock().expect("no code panics holding the DNS rng");
                zone.service(name, qtype, &registered, &mut *rng)
            }
            Question::Node(node) => match self.node_ips(&node).await? {
                Some(ips) => zone.node(name, qtype, &ips),
                None => zone.nxdomain(),
            },
        })
    }

    /// The namespaces a label may name: as written, then in lower case
    /// (DNS names ignore case; Starling names do not).
    fn namespaces(label: &str) -> Vec<Namespace> {
        let mut out: Vec<Namespace> = Namespace::new(label).into_iter().collect();
        let lower = label.to_ascii_lowercase();
        if lower != label {
            out.extend(Namespace::new(lower));
        }
        out
    }

    async fn namespace_has_services(&self, label: &str) -> Result<bool, NodeError> {
        for ns in Self::namespaces(label) {
            if !self.node.service_names(&ns).await?.is_empty() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Every instance (any health) registered under the name: the
    /// namespace and service as written, else matched ignoring case.
    async fn instances(
        &self,
        namespace: &str,
        service: &str,
        tag: Option<String>,
    ) -> Result<Vec<ServiceView>, NodeError> {
        let query = ServiceQuery {
            tags: tag.into_iter().collect::<BTreeSet<String>>(),
            healthy_only: false,
        };
        for ns in Self::namespaces(namespace) {
            if let Ok(svc) = ServiceName::new(service) {
                let found = self.node.services(&ns, &svc, query.clone()).await?;
                if !found.is_empty() {
                    return Ok(found);
                }
            }
            let names = self.node.service_names(&ns).await?;
            if let Some(svc) = names
                .iter()
                .find(|n| n.as_str() != service && n.as_str().eq_ignore_ascii_case(service))
            {
                let found = self.node.services(&ns, svc, query.clone()).await?;
                if !found.is_empty() {
                    return Ok(found);
                }
            }
        }
        Ok(Vec::new())
    }

    /// The addresses of the live members named `label` (by name, ignoring
    /// case, or by peer id); `None` if there is none.
    async fn node_ips(&self, label: &str) -> Result<Option<Vec<IpAddr>>, NodeError> {
        let members = self.node.members().await?;
        let named: Vec<&MemberView> = members
            .iter()
            .filter(|m| matches!(m.status, MemberStatus::Alive | MemberStatus::Suspect))
            .filter(|m| m.name.eq_ignore_ascii_case(label) || m.node_id == label)
            .collect();
        if named.is_empty() {
            return Ok(None);
        }
        Ok(Some(member_ips(named.iter().flat_map(|m| m.addrs.iter()))))
    }
}

/// The IP addresses in a member's advertised multiaddrs, each once; the
/// loopback ones only if there is nothing else (a node on a LAN
/// advertises both, and 127.0.0.1 is nobody else's way to it).
fn member_ips<'a>(addrs: impl Iterator<Item = &'a String>) -> Vec<IpAddr> {
    let mut seen = BTreeSet::new();
    let ips: Vec<IpAddr> = addrs
        .filter_map(|a| a.parse::<Multiaddr>().ok())
        .filter_map(|a| {
            a.iter().find_map(|p| match p {
                Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
                Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
                _ => None,
            })
        })
        .filter(|ip| !ip.is_unspecified() && seen.insert(*ip))
        .collect();
    if ips.iter().all(IpAddr::is_loopback) {
        return ips;
    }
    ips.into_iter().filter(|ip| !ip.is_loopback()).collect()
}

/// How a response code is counted.
fn outcome(rcode: ResponseCode) -> Outcome {
    match rcode {
        ResponseCode::NoError => Outcome::Answered,
        ResponseCode::NXDomain => Outcome::NxDomain,
        ResponseCode::Refused => Outcome::Refused,
        ResponseCode::ServFail => Outcome::ServFail,
        _ => Outcome::Malformed,
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let answer = self.answer(request).await;
        self.metrics.dns.counted(outcome(answer.rcode));
        // EDNS answered with EDNS; the buffer size bounded by ours.
        let edns = request.edns.as_ref().map(|req| {
            let mut e = Edns::new();
            e.set_max_payload(req.max_payload().clamp(512, UDP_PAYLOAD_MAX));
            e.set_version(0);
            e.set_rcode_high(answer.rcode.high());
            e
        });
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.response_code = answer.rcode;
        metadata.authoritative = matches!(answer.rcode, ResponseCode::NoError | ResponseCode::NXDomain);
        let response = MessageResponseBuilder::new(&request.queries, edns.as_ref()).build(
            metadata,
            answer.answers.iter(),
            std::iter::empty::<&Record>(),
            answer.soa.iter(),
            answer.additionals.iter(),
        );
        match response_handle.send_response(response).await {
            Ok(info) => {
                if info.truncation {
                    self.metrics.dns.truncated.inc();
                }
                info
            }
            Err(e) => {
                tracing::debug!(error = %e, "DNS: answer not sent");
                metadata.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header {
                    metadata,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_ips_prefer_routable_addresses_and_skip_unspecified_ones() {
        let addrs: Vec<String> = [
            "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN",
            "/ip4/10.0.0.5/tcp/4001",
            "/ip4/10.0.0.5/udp/4001/quic-v1",
            "/ip4/0.0.0.0/tcp/4001",
            "/ip6/fd00::5/tcp/4001",
        ]
        .map(String::from)
        .to_vec();
        let ips = member_ips(addrs.iter());
        assert_eq!(
            ips,
            ["10.0.0.5".parse::<IpAddr>().unwrap(), "fd00::5".parse().unwrap()]
        );
        let loopback_only = ["/ip4/127.0.0.1/tcp/1".to_string()];
        assert_eq!(
            member_ips(loopback_only.iter()),
            ["127.0.0.1".parse::<IpAddr>().unwrap()]
        );
    }
}
