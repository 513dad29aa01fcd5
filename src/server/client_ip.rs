//! Which address a request comes from, for limits that count per client (logins).
//!
//! The connection's peer is the client unless it is a configured reverse proxy
//! (`[http] trusted_proxies`); then `X-Forwarded-For` is read from the right, skipping
//! the trusted hops, and the first address not trusted is the client. Anything a client
//! wrote further left is never believed: a client behind a trusted proxy can prepend
//! whatever it likes to the header, but not what the proxy appended.

use std::net::IpAddr;

use axum::http::HeaderMap;

pub use crate::net::{Cidr, canonical};

/// The client of a request that arrived from `peer`.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[Cidr]) -> IpAddr {
    let peer = canonical(peer);
    let is_trusted = |address: IpAddr| trusted.iter().any(|range| range.contains(address));
    if !is_trusted(peer) {
        return peer;
    }
    let mut client = peer;
    let hops = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .collect::<Vec<_>>();
    for hop in hops.into_iter().rev() {
        let Ok(address) = hop.trim().parse::<IpAddr>() else {
            // Garbage from the left of the header: stop at the last address believed.
            break;
        };
        client = canonical(address);
        if !is_trusted(client) {
            break;
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(forwarded: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in forwarded {
            map.append("x-forwarded-for", value.parse().unwrap());
        }
        map
    }

    #[test]
    fn ranges_parse_and_match() {
        let range: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(range.contains("10.200.1.1".parse().unwrap()));
        assert!(!range.contains("11.0.0.1".parse().unwrap()));
        assert!(range.contains("::ffff:10.1.2.3".parse().unwrap()));
        let one: Cidr = "192.0.2.7".parse().unwrap();
        assert!(one.contains("192.0.2.7".parse().unwrap()));
        assert!(!one.contains("192.0.2.8".parse().unwrap()));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(!v6.contains("fe80::1".parse().unwrap()));
        let everything: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(everything.contains("203.0.113.9".parse().unwrap()));
        for bad in ["10.0.0.0/33", "fd00::/129", "nonsense", "10.0.0.0/x", ""] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted: Vec<Cidr> = vec!["10.0.0.0/8".parse().unwrap()];
        let proxy: IpAddr = "10.0.0.2".parse().unwrap();
        let outsider: IpAddr = "203.0.113.5".parse().unwrap();
        // No proxy trusted, or an untrusted peer: the header is ignored.
        assert_eq!(
            client_ip(outsider, &headers(&["198.51.100.1"]), &trusted),
            outsider
        );
        assert_eq!(client_ip(proxy, &headers(&["198.51.100.1"]), &[]), proxy);
        // Through the proxy: the rightmost untrusted address; a spoofed left part is not.
        assert_eq!(
            client_ip(proxy, &headers(&["1.2.3.4, 198.51.100.1"]), &trusted),
            "198.51.100.1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_ip(proxy, &headers(&["198.51.100.1", "10.0.0.9"]), &trusted),
            "198.51.100.1".parse::<IpAddr>().unwrap()
        );
        // Garbage stops the walk at the last believable address; no header: the proxy.
        assert_eq!(
            client_ip(proxy, &headers(&["not-an-ip, 10.0.0.9"]), &trusted),
            "10.0.0.9".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_ip(proxy, &headers(&[]), &trusted), proxy);
    }
}
