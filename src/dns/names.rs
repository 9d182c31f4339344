//! What a query name asks for: the names under the domain, parsed once
//! into a [`Question`]. Pure: no node, no I/O.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::rr::Name;

/// The label that introduces service names: `<service>.<namespace>.service.<domain>`.
const SERVICE: &str = "service";
/// The label that introduces node names: `<node>.node.<domain>`.
const NODE: &str = "node";
/// The label of the address names SRV targets point at:
/// `<hex of the IP>.addr.<domain>`.
const ADDR: &str = "addr";

/// A name under the domain, by what it names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Question {
    /// The domain itself.
    Apex,
    /// `service.<domain>`, `node.<domain>` or `addr.<domain>`: names that
    /// exist (they have names below them) but hold no records.
    Interior,
    /// `<namespace>.service.<domain>`: exists if the namespace has services.
    Namespace(String),
    /// `[<tag>.]<service>.<namespace>.service.<domain>`, or the RFC 2782
    /// form `_<service>._<tag or tcp>.<namespace>.service.<domain>`.
    Service {
        /// Namespace, as written in the query.
        namespace: String,
        /// Service, as written in the query.
        service: String,
        /// Only instances carrying this tag (it may contain dots).
        tag: Option<String>,
    },
    /// `<node>.node.<domain>`: a member by name (or peer id).
    Node(String),
    /// `<hex>.addr.<domain>`: 8 hex digits for IPv4, 32 for IPv6.
    Addr(IpAddr),
    /// Nothing by this name under the domain (NXDOMAIN).
    Unknown,
}

/// Parse `name`, which must be under `domain` (checked by the caller with
/// [`Name::zone_of`]); comparisons of the fixed labels ignore case.
pub(crate) fn parse(domain: &Name, name: &Name) -> Question {
    let relative = usize::from(name.num_labels().saturating_sub(domain.num_labels()));
    let labels: Option<Vec<String>> = name
        .iter()
        .take(relative)
        .map(|l| std::str::from_utf8(l).ok().map(str::to_string))
        .collect();
    // A label that is not UTF-8 cannot name anything Starling holds.
    let Some(labels) = labels else {
        return Question::Unknown;
    };
    let Some((kind, rest)) = labels.split_last() else {
        return Question::Apex;
    };
    match kind.to_ascii_lowercase().as_str() {
        SERVICE => service(rest),
        NODE => match rest {
            [] => Question::Interior,
            [node] => Question::Node(node.clone()),
            _ => Question::Unknown,
        },
        ADDR => match rest {
            [] => Question::Interior,
            [hex] => hex_ip(hex).map_or(Question::Unknown, Question::Addr),
            _ => Question::Unknown,
        },
        _ => Question::Unknown,
    }
}

/// The labels left of `service`, left to right.
fn service(rest: &[String]) -> Question {
    let Some((namespace, rest)) = rest.split_last() else {
        return Question::Interior;
    };
    let Some((service, tags)) = rest.split_last() else {
        return Question::Namespace(namespace.clone());
    };
    // RFC 2782: `_service._proto`, where `_tcp` means any instance and
    // anything else is a tag.
    // Labels read right to left: `service` here is the `_proto` label.
    if let ([first], Some(proto)) = (tags, service.strip_prefix('_')) {
        if let Some(svc) = first.strip_prefix('_') {
            return Question::Service {
                namespace: namespace.clone(),
                service: svc.to_string(),
                tag: (!proto.eq_ignore_ascii_case("tcp")).then(|| proto.to_string()),
            };
        }
    }
    Question::Service {
        namespace: namespace.clone(),
        service: service.clone(),
        tag: (!tags.is_empty()).then(|| tags.join(".")),
    }
}

/// The address of an `addr` label: 8 hex digits (IPv4) or 32 (IPv6).
pub(crate) fn hex_ip(hex: &str) -> Option<IpAddr> {
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    match hex.len() {
        8 => u32::from_str_radix(hex, 16)
            .ok()
            .map(|v| IpAddr::V4(Ipv4Addr::from(v))),
        32 => u128::from_str_radix(hex, 16)
            .ok()
            .map(|v| IpAddr::V6(Ipv6Addr::from(v))),
        _ => None,
    }
}

/// The `addr` label of an address (lower-case hex).
pub(crate) fn ip_hex(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{:08x}", u32::from(v4)),
        IpAddr::V6(v6) => format!("{:032x}", u128::from(v6)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(name: &str) -> Question {
        let domain = Name::from_ascii("starling.").unwrap();
        let name = Name::from_ascii(name).unwrap();
        assert!(domain.zone_of(&name));
        parse(&domain, &name)
    }

    fn svc(ns: &str, s: &str, tag: Option<&str>) -> Question {
        Question::Service {
            namespace: ns.into(),
            service: s.into(),
            tag: tag.map(str::to_string),
        }
    }

    #[test]
    fn service_names_read_right_to_left_and_keep_their_case() {
        assert_eq!(q("api.prod.service.starling."), svc("prod", "api", None));
        assert_eq!(q("API.Prod.SERVICE.Starling."), svc("Prod", "API", None));
        assert_eq!(q("v2.api.prod.service.starling."), svc("prod", "api", Some("v2")));
        assert_eq!(
            q("v2.1.api.prod.service.starling."),
            svc("prod", "api", Some("v2.1"))
        );
        // Any byte may appear in a label on the wire (dig: `zone\=eu`).
        let domain = Name::from_ascii("starling.").unwrap();
        let labels: [&[u8]; 6] = [b"zone=eu", b"api", b"prod", b"service", b"starling", b""];
        let name = Name::from_labels(labels.iter().copied().filter(|l| !l.is_empty())).unwrap();
        assert_eq!(parse(&domain, &name), svc("prod", "api", Some("zone=eu")));
    }

    #[test]
    fn rfc2782_names_use_tcp_for_any_instance_and_otherwise_a_tag() {
        assert_eq!(q("_api._tcp.prod.service.starling."), svc("prod", "api", None));
        assert_eq!(
            q("_api._v2.prod.service.starling."),
            svc("prod", "api", Some("v2"))
        );
    }

    #[test]
    fn interior_names_exist_and_others_do_not() {
        assert_eq!(q("starling."), Question::Apex);
        assert_eq!(q("service.starling."), Question::Interior);
        assert_eq!(q("node.starling."), Question::Interior);
        assert_eq!(q("addr.starling."), Question::Interior);
        assert_eq!(q("prod.service.starling."), Question::Namespace("prod".into()));
        assert_eq!(q("web.starling."), Question::Unknown);
        assert_eq!(q("a.b.node.starling."), Question::Unknown);
        assert_eq!(q("zz.addr.starling."), Question::Unknown);
        assert_eq!(q("s1.node.starling."), Question::Node("s1".into()));
    }

    #[test]
    fn addr_labels_round_trip_both_families() {
        for ip in ["127.0.0.1", "10.1.2.3", "::1", "fd00::7:8"] {
            let ip: IpAddr = ip.parse().unwrap();
            let label = ip_hex(ip);
            assert_eq!(q(&format!("{label}.addr.starling.")), Question::Addr(ip));
        }
        assert_eq!(ip_hex("127.0.0.1".parse().unwrap()), "7f000001");
        assert_eq!(hex_ip("7f00000"), None);
        assert_eq!(hex_ip("7f00000g"), None);
    }
}
