//! The records of an answer, built from what the node holds. Pure: the
//! views come in as values and the shuffle draws from an RNG passed in.

use std::collections::BTreeSet;
use std::net::IpAddr;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use rand::Rng;

use crate::core::{candidates, ServiceView};

use super::names::ip_hex;

/// SRV priority of every record: one health tier is answered at a time
/// (passing, or warning when nothing passes), so all share it.
const SRV_PRIORITY: u16 = 1;

/// What to send back: the response code and the sections.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Answer {
    /// NOERROR, NXDOMAIN...
    pub rcode: ResponseCode,
    /// Answer section.
    pub answers: Vec<Record>,
    /// Authority section: the zone's SOA on a negative answer (its minimum
    /// field bounds how long resolvers cache the negative answer).
    pub soa: Vec<Record>,
    /// Additional section: addresses of SRV targets.
    pub additionals: Vec<Record>,
}

/// The zone this server is authoritative for.
#[derive(Clone, Debug)]
pub(crate) struct Zone {
    /// The domain, fully qualified.
    pub domain: Name,
    /// TTL of every record, and the SOA minimum.
    pub ttl: u32,
}

impl Zone {
    /// The zone's SOA record.
    pub(crate) fn soa(&self) -> Record {
        let under = |label: &str| {
            Name::from_ascii(label)
                .and_then(|n| n.append_domain(&self.domain))
                .unwrap_or_else(|_| self.domain.clone())
        };
        let soa = SOA::new(under("ns"), under("hostmaster"), 1, 3600, 600, 86_400, self.ttl);
        Record::from_rdata(self.domain.clone(), self.ttl, RData::SOA(soa))
    }

    /// The name does not exist.
    pub(crate) fn nxdomain(&self) -> Answer {
        Answer {
            rcode: ResponseCode::NXDomain,
            answers: Vec::new(),
            soa: vec![self.soa()],
            additionals: Vec::new(),
        }
    }

    /// The name exists but holds no record of the type asked for.
    pub(crate) fn nodata(&self) -> Answer {
        Answer {
            rcode: ResponseCode::NoError,
            answers: Vec::new(),
            soa: vec![self.soa()],
            additionals: Vec::new(),
        }
    }

    /// `records`, or NODATA if there are none.
    fn records(&self, answers: Vec<Record>, additionals: Vec<Record>) -> Answer {
        if answers.is_empty() {
            return self.nodata();
        }
        Answer {
            rcode: ResponseCode::NoError,
            answers,
            soa: Vec::new(),
            additionals,
        }
    }

    /// The domain itself: its SOA.
    pub(crate) fn apex(&self, qtype: RecordType) -> Answer {
        match qtype {
            RecordType::SOA | RecordType::ANY => self.records(vec![self.soa()], Vec::new()),
            _ => self.nodata(),
        }
    }

    /// `<hex>.addr.<domain>`: the address it spells.
    pub(crate) fn addr(&self, qname: &Name, qtype: RecordType, ip: IpAddr) -> Answer {
        self.records(address_records(qname, qtype, [ip], self.ttl), Vec::new())
    }

    /// `<node>.node.<domain>`: the member's addresses.
    pub(crate) fn node(&self, qname: &Name, qtype: RecordType, ips: &[IpAddr]) -> Answer {
        self.records(
            address_records(qname, qtype, ips.iter().copied(), self.ttl),
            Vec::new(),
        )
    }

    /// A service name: `registered` are every instance under the name
    /// (any health; NXDOMAIN when empty). Answers the eligible ones —
    /// passing, or warning when none passes; never critical or weight 0 —
    /// in weighted random order: A/AAAA for instances registered with an
    /// IP address, SRV for all (target: the host name, or the
    /// `<hex>.addr.<domain>` name of the IP, whose address goes in the
    /// additional section).
    pub(crate) fn service<R: Rng + ?Sized>(
        &self,
        qname: &Name,
        qtype: RecordType,
        registered: &[ServiceView],
        rng: &mut R,
    ) -> Answer {
        if registered.is_empty() {
            return self.nxdomain();
        }
        let Some(eligible) = candidates(registered, &BTreeSet::new(), None) else {
            return self.nodata();
        };
        let ordered = weighted_order(eligible.instances, rng);
        let mut answers = Vec::new();
        let mut additionals = Vec::new();
        if matches!(qtype, RecordType::A | RecordType::AAAA | RecordType::ANY) {
            let ips: Vec<IpAddr> = ordered.iter().filter_map(|v| ip_of(&v.spec.address)).collect();
            answers.extend(address_records(qname, qtype, ips, self.ttl));
        }
        if matches!(qtype, RecordType::SRV | RecordType::ANY) {
            let mut glued = BTreeSet::new();
            for v in &ordered {
                let Some((target, ip)) = self.target(&v.spec.address) else {
                    tracing::debug!(address = %v.spec.address, instance = %v.instance, "not a DNS name: left out of SRV answers");
                    continue;
                };
                let srv = SRV::new(
                    SRV_PRIORITY,
                    u16::from(v.spec.weight),
                    v.spec.port,
                    target.clone(),
                );
                answers.push(Record::from_rdata(qname.clone(), self.ttl, RData::SRV(srv)));
                if let Some(ip) = ip {
                    if glued.insert(ip) {
                        additionals.extend(address_records(&target, RecordType::ANY, [ip], self.ttl));
                    }
                }
            }
        }
        self.records(answers, additionals)
    }

    /// The SRV target of an instance address: `<hex>.addr.<domain>` and
    /// the IP for an IP address, the name itself for a host name; `None`
    /// if it is neither.
    fn target(&self, address: &str) -> Option<(Name, Option<IpAddr>)> {
        if let Some(ip) = ip_of(address) {
            let name = Name::from_ascii(format!("{}.addr", ip_hex(ip)))
                .and_then(|n| n.append_domain(&self.domain))
                .ok()?;
            return Some((name, Some(ip)));
        }
        let mut name = Name::from_ascii(address).ok()?;
        if name.is_root() {
            return None;
        }
        name.set_fqdn(true);
        Some((name, None))
    }
}

/// An instance address as an IP (`10.0.0.7`, `::1`, `[::1]`), if it is one.
fn ip_of(address: &str) -> Option<IpAddr> {
    let bare = address
        .strip_prefix('[')
        .and_then(|a| a.strip_suffix(']'))
        .unwrap_or(address);
    bare.parse().ok()
}

/// A and AAAA records for `ips` (by `qtype`: A, AAAA, or both for ANY),
/// each address once, in the order given.
fn address_records(
    qname: &Name,
    qtype: RecordType,
    ips: impl IntoIterator<Item = IpAddr>,
    ttl: u32,
) -> Vec<Record> {
    let mut seen = BTreeSet::new();
    ips.into_iter()
        .filter(|ip| seen.insert(*ip))
        .filter_map(|ip| match (ip, qtype) {
            (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => Some(RData::A(A(v4))),
            (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => Some(RData::AAAA(AAAA(v6))),
            _ => None,
        })
        .map(|rdata| Record::from_rdata(qname.clone(), ttl, rdata))
        .collect()
}

/// A weighted random order (Efraimidis–Spirakis): each instance draws
/// `-ln(u) / weight` with `u` uniform in (0, 1] and the smallest comes
/// first, so an instance is first with probability `weight / total`, and
/// likewise for every later place among those left. Weights are > 0
/// (`candidates` leaves weight-0 instances out; a 0 would sort last).
pub(crate) fn weighted_order<'a, R: Rng + ?Sized>(
    instances: Vec<&'a ServiceView>,
    rng: &mut R,
) -> Vec<&'a ServiceView> {
    let mut keyed: Vec<(f64, &'a ServiceView)> = instances
        .into_iter()
        .map(|v| {
            let u = 1.0 - rng.gen::<f64>();
            let key = -u.ln() / f64::from(v.spec.weight.max(1));
            (if v.spec.weight == 0 { f64::INFINITY } else { key }, v)
        })
        .collect();
    keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
    keyed.into_iter().map(|(_, v)| v).collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::core::HealthStatus;

    fn zone() -> Zone {
        Zone {
            domain: Name::from_ascii("starling.").unwrap(),
            ttl: 5,
        }
    }

    fn qname() -> Name {
        Name::from_ascii("api.prod.service.starling.").unwrap()
    }

    fn view(id: &str, address: &str, weight: u8, health: HealthStatus) -> ServiceView {
        use crate::core::{
            Hlc, InstanceId, Namespace, NodeId, ServiceName, ServiceSpec, VersionId, VersionInfo,
        };
        ServiceView {
            namespace: Namespace::new("prod").unwrap(),
            service: ServiceName::new("api").unwrap(),
            instance: InstanceId::new(id).unwrap(),
            spec: ServiceSpec {
                address: address.into(),
                port: 8080,
                tags: BTreeSet::new(),
                metadata: BTreeMap::new(),
                weight,
                ttl_ms: None,
            },
            owner: NodeId::from_index(1),
            reported_health: health,
            health,
            version: VersionInfo {
                id: VersionId(0),
                hlc: Hlc {
                    wall_ms: 0,
                    logical: 0,
                },
                origin: NodeId::from_index(1),
                seq: 1,
                checksum: 0,
                size: 0,
                deleted: false,
            },
        }
    }

    #[test]
    fn passing_instances_only_unless_none_passes() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let views = vec![
            view("a", "10.0.0.1", 10, HealthStatus::Passing),
            view("b", "10.0.0.2", 10, HealthStatus::Warning),
            view("c", "10.0.0.3", 10, HealthStatus::Critical),
        ];
        let a = zone().service(&qname(), RecordType::A, &views, &mut rng);
        assert_eq!(a.rcode, ResponseCode::NoError);
        assert_eq!(a.answers.len(), 1);
        assert_eq!(a.answers[0].data, RData::A(A("10.0.0.1".parse().unwrap())));
        let warning_only = &views[1..];
        let a = zone().service(&qname(), RecordType::A, warning_only, &mut rng);
        assert_eq!(a.answers.len(), 1);
        assert_eq!(a.answers[0].data, RData::A(A("10.0.0.2".parse().unwrap())));
        let critical_only = &views[2..];
        let a = zone().service(&qname(), RecordType::SRV, critical_only, &mut rng);
        assert_eq!(
            (a.rcode, a.answers.len(), a.soa.len()),
            (ResponseCode::NoError, 0, 1)
        );
        let a = zone().service(&qname(), RecordType::SRV, &[], &mut rng);
        assert_eq!((a.rcode, a.soa.len()), (ResponseCode::NXDomain, 1));
    }

    #[test]
    fn srv_targets_are_addr_names_with_glue_or_the_host_name() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let views = vec![
            view("a", "10.0.0.1", 30, HealthStatus::Passing),
            view("b", "10.0.0.1", 30, HealthStatus::Passing),
            view("c", "db-1.internal", 70, HealthStatus::Passing),
            view("d", "not a name!", 70, HealthStatus::Passing),
        ];
        let a = zone().service(&qname(), RecordType::SRV, &views, &mut rng);
        let mut targets: Vec<(String, u16)> = a
            .answers
            .iter()
            .map(|r| match &r.data {
                RData::SRV(srv) => (srv.target.to_ascii(), srv.weight),
                other => panic!("not SRV: {other:?}"),
            })
            .collect();
        targets.sort();
        assert_eq!(
            targets,
            [
                ("0a000001.addr.starling.".to_string(), 30),
                ("0a000001.addr.starling.".to_string(), 30),
                ("db-1.internal.".to_string(), 70),
            ]
        );
        // One glue record per address; none for the host name.
        assert_eq!(a.additionals.len(), 1);
        assert_eq!(a.additionals[0].name.to_ascii(), "0a000001.addr.starling.");
        // A answers only for IP addresses, each once.
        let a = zone().service(&qname(), RecordType::A, &views, &mut rng);
        assert_eq!(a.answers.len(), 1);
        let aaaa = zone().service(&qname(), RecordType::AAAA, &views, &mut rng);
        assert_eq!((aaaa.answers.len(), aaaa.soa.len()), (0, 1), "NODATA");
    }

    #[test]
    fn weighted_order_puts_each_instance_first_in_proportion_to_its_weight() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let views = [
            view("a", "10.0.0.1", 60, HealthStatus::Passing),
            view("b", "10.0.0.2", 30, HealthStatus::Passing),
            view("c", "10.0.0.3", 10, HealthStatus::Passing),
        ];
        let rounds = 20_000;
        let mut first: BTreeMap<String, u32> = BTreeMap::new();
        for _ in 0..rounds {
            let order = weighted_order(views.iter().collect(), &mut rng);
            assert_eq!(order.len(), 3);
            *first.entry(order[0].instance.to_string()).or_default() += 1;
        }
        for (id, weight) in [("a", 0.6), ("b", 0.3), ("c", 0.1)] {
            let share = f64::from(first[id]) / f64::from(rounds);
            assert!((share - weight).abs() < 0.02, "{id}: {share} vs {weight}");
        }
    }

    #[test]
    fn node_and_addr_answers_follow_the_family_asked_for() {
        let ips: Vec<IpAddr> = vec!["10.0.0.1".parse().unwrap(), "fd00::1".parse().unwrap()];
        let name = Name::from_ascii("s1.node.starling.").unwrap();
        assert_eq!(zone().node(&name, RecordType::A, &ips).answers.len(), 1);
        assert_eq!(zone().node(&name, RecordType::AAAA, &ips).answers.len(), 1);
        assert_eq!(zone().node(&name, RecordType::ANY, &ips).answers.len(), 2);
        assert_eq!(zone().node(&name, RecordType::TXT, &ips).answers.len(), 0);
        let soa = zone().apex(RecordType::SOA);
        assert!(matches!(soa.answers[0].data, RData::SOA(_)));
    }
}
