//! The addresses a node advertises: its listeners, with a listener on
//! `0.0.0.0` expanded to loopback and every local IPv4 interface address.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};

/// The addresses to advertise for `listeners`, each ending in
/// `/p2p/<me>`, sorted and without duplicates.
pub fn advertised_addrs<'a>(listeners: impl Iterator<Item = &'a Multiaddr>, me: PeerId) -> Vec<String> {
    listeners
        .flat_map(expand_unspecified)
        .map(|a| a.with(Protocol::P2p(me)).to_string())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// A listener on 0.0.0.0 is reachable on every local interface address;
/// advertise loopback too so local clusters work out of the box.
fn expand_unspecified(addr: &Multiaddr) -> Vec<Multiaddr> {
    let mut out = Vec::new();
    let mut iter = addr.iter();
    match iter.next() {
        Some(Protocol::Ip4(ip)) if ip.is_unspecified() => {
            let rest: Vec<Protocol> = iter.collect();
            let mut ips = vec![Ipv4Addr::LOCALHOST];
            ips.extend(local_ipv4s());
            for ip in ips {
                let mut a = Multiaddr::empty().with(Protocol::Ip4(ip));
                for p in &rest {
                    a.push(p.clone());
                }
                out.push(a);
            }
        }
        _ => out.push(addr.clone()),
    }
    out
}

/// Non-loopback IPv4 addresses of this host, read from the routing table
/// (no extra dependency; best effort).
fn local_ipv4s() -> Vec<Ipv4Addr> {
    let Ok(text) = std::fs::read_to_string("/proc/net/fib_trie") else {
        return Vec::new();
    };
    let mut out = BTreeSet::new();
    let lines: Vec<&str> = text.lines().collect();
    for w in lines.windows(2) {
        if w[1].contains("/32 host LOCAL") {
            if let Some(ip) = w[0]
                .split_whitespace()
                .last()
                .and_then(|s| s.parse::<Ipv4Addr>().ok())
            {
                if !ip.is_loopback() {
                    out.insert(ip);
                }
            }
        }
    }
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_specific_listener_is_advertised_as_is_with_the_peer_id() {
        let me = libp2p::identity::Keypair::generate_ed25519()
            .public()
            .to_peer_id();
        let l: Multiaddr = "/ip4/127.0.0.1/tcp/4001".parse().unwrap();
        assert_eq!(
            advertised_addrs([&l, &l].into_iter(), me),
            vec![format!("/ip4/127.0.0.1/tcp/4001/p2p/{me}")]
        );
    }

    #[test]
    fn an_unspecified_listener_is_advertised_on_loopback_and_keeps_its_port() {
        let me = libp2p::identity::Keypair::generate_ed25519()
            .public()
            .to_peer_id();
        let l: Multiaddr = "/ip4/0.0.0.0/tcp/4001".parse().unwrap();
        let addrs = advertised_addrs(std::iter::once(&l), me);
        assert!(
            addrs.contains(&format!("/ip4/127.0.0.1/tcp/4001/p2p/{me}")),
            "{addrs:?}"
        );
        assert!(addrs.iter().all(|a| !a.starts_with("/ip4/0.0.0.0/")), "{addrs:?}");
        assert!(
            addrs.iter().all(|a| a.ends_with(&format!("/tcp/4001/p2p/{me}"))),
            "{addrs:?}"
        );
    }
}
