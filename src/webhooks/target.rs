//! Where a webhook may point: not at the server itself, and (unless the configuration
//! allows private targets) not at loopback, private, link-local (cloud metadata at
//! 169.254.169.254) or otherwise internal addresses. Checked when a webhook is saved and
//! again before each delivery, since a name can resolve elsewhere later.

use std::net::{IpAddr, SocketAddr};

/// Whether an address is internal: loopback, private, link-local, unspecified,
/// carrier-grade NAT, unique-local or an IPv4-mapped form of one of those.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || (a == 100 && (64..128).contains(&b))
                || a == 0
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
        }
    }
}

/// Why a resolved target is refused, if it is.
pub fn refusal(
    addresses: &[SocketAddr],
    own: Option<SocketAddr>,
    allow_private: bool,
) -> Option<String> {
    if addresses.is_empty() {
        return Some("the host does not resolve".to_owned());
    }
    for address in addresses {
        let ip = address.ip();
        if let Some(own) = own
            && address.port() == own.port()
            && (ip == own.ip() || ip.is_loopback() || own.ip().is_unspecified())
        {
            return Some("the URL points at this server".to_owned());
        }
        if !allow_private && is_internal(ip) {
            return Some(format!(
                "{ip} is a loopback, private or link-local address (allow with \
                 webhooks.allow_private_targets)"
            ));
        }
    }
    None
}

/// Resolves a URL's host and checks it.
pub async fn check(
    url: &reqwest::Url,
    own: Option<SocketAddr>,
    allow_private: bool,
) -> Result<(), String> {
    let host = url.host_str().ok_or("the URL has no host")?;
    let port = url.port_or_known_default().ok_or("the URL has no port")?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    match refusal(&addresses, own, allow_private) {
        Some(reason) => Err(reason),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Vec<SocketAddr> {
        vec![text.parse().unwrap()]
    }

    #[test]
    fn internal_addresses_are_refused_unless_allowed() {
        for internal in [
            "127.0.0.1:80",
            "10.1.2.3:443",
            "192.168.0.10:80",
            "172.20.0.1:80",
            "169.254.169.254:80",
            "0.0.0.0:80",
            "100.64.0.1:80",
            "[::1]:80",
            "[fd00::1]:80",
            "[fe80::1]:80",
            "[::ffff:169.254.169.254]:80",
        ] {
            assert!(refusal(&at(internal), None, false).is_some(), "{internal}");
        }
        assert!(refusal(&at("93.184.216.34:443"), None, false).is_none());
        assert!(refusal(&at("127.0.0.1:9000"), None, true).is_none());
    }

    #[test]
    fn the_server_itself_is_refused_even_when_private_targets_are_allowed() {
        let own: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert!(refusal(&at("127.0.0.1:8080"), Some(own), true).is_some());
        assert!(refusal(&at("127.0.0.1:9090"), Some(own), true).is_none());
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert!(refusal(&at("10.0.0.5:8080"), Some(any), true).is_some());
    }
}
