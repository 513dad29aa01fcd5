//! Where a webhook may point: not at the server itself, never at multicast, broadcast or
//! reserved (240/4) addresses, and (unless the configuration allows private targets) not
//! at loopback, private, link-local (cloud metadata at 169.254.169.254), benchmarking
//! (198.18/15) or otherwise internal addresses, nor at NAT64 (`64:ff9b::/96`) and 6to4
//! (`2002::/16`) forms, which reach IPv4 addresses through a gateway. Checked when a
//! webhook is saved, and at delivery by the resolver the delivery client connects
//! through ([`PinnedResolver`]): the addresses checked are the addresses connected to,
//! so a name that resolves to a public address for the check and to an internal one a
//! moment later (DNS rebinding) gets nowhere.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

/// Whether an address is internal: loopback, private, link-local, unspecified,
/// carrier-grade NAT, benchmarking, unique-local, NAT64, 6to4, or an IPv4-mapped form
/// of one of those.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (b & 0xfe) == 18)
                || a == 0
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal(IpAddr::V4(v4));
            }
            let segments = v6.segments();
            let first = segments[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0]
                || first == 0x2002
        }
    }
}

/// Addresses no delivery may go to, private targets allowed or not: multicast,
/// broadcast and the reserved 240/4.
pub fn is_never_a_target(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_multicast() || v4.is_broadcast() || v4.octets()[0] >= 240,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_never_a_target(IpAddr::V4(v4)),
            None => v6.is_multicast(),
        },
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
        if is_never_a_target(ip) {
            return Some(format!(
                "{ip} is a multicast, broadcast or reserved address"
            ));
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

/// How names are looked up (the system resolver; tests put their own in).
pub type Lookup = Arc<
    dyn Fn(String, u16) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<SocketAddr>>> + Send>>
        + Send
        + Sync,
>;

/// The system resolver.
pub fn system_lookup() -> Lookup {
    Arc::new(|host, port| {
        Box::pin(async move {
            Ok(tokio::net::lookup_host((host.as_str(), port))
                .await?
                .collect())
        })
    })
}

/// Resolves a host and checks every address it names.
pub async fn resolve_checked(
    lookup: &Lookup,
    host: &str,
    port: u16,
    own: Option<SocketAddr>,
    allow_private: bool,
) -> Result<Vec<SocketAddr>, String> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addresses = lookup(host.to_owned(), port)
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?;
    match refusal(&addresses, own, allow_private) {
        Some(reason) => Err(reason),
        None => Ok(addresses),
    }
}

/// Resolves a URL's host and checks it (when a webhook is saved, and before a delivery
/// for what the resolver does not see: an address written in the URL, this server).
pub async fn check(
    lookup: &Lookup,
    url: &reqwest::Url,
    own: Option<SocketAddr>,
    allow_private: bool,
) -> Result<(), String> {
    let host = url.host_str().ok_or("the URL has no host")?;
    let port = url.port_or_known_default().ok_or("the URL has no port")?;
    resolve_checked(lookup, host, port, own, allow_private)
        .await
        .map(drop)
}

/// The delivery client's resolver: a name resolves to its checked addresses or not at
/// all, in the one lookup the connection uses.
pub struct PinnedResolver {
    pub lookup: Lookup,
    pub allow_private: bool,
}

/// A refused or failed resolution, as the delivery's error.
#[derive(Debug, thiserror::Error)]
#[error("target refused: {0}")]
pub struct Refused(pub String);

impl reqwest::dns::Resolve for PinnedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let (lookup, allow_private) = (self.lookup.clone(), self.allow_private);
        let host = name.as_str().to_owned();
        Box::pin(async move {
            // The port is the connector's to choose; 0 here, replaced by it.
            let addresses = resolve_checked(&lookup, &host, 0, None, allow_private)
                .await
                .map_err(|reason| Box::new(Refused(reason)) as Box<_>)?;
            Ok(Box::new(addresses.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

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
            "198.18.0.1:80",
            "198.19.255.254:80",
            "[64:ff9b::a00:1]:80",
            "[2002:a00:1::1]:80",
        ] {
            assert!(refusal(&at(internal), None, false).is_some(), "{internal}");
        }
        for never in [
            "240.0.0.1:80",
            "255.255.255.255:80",
            "224.0.0.1:80",
            "239.255.255.250:1900",
            "[ff02::1]:80",
            "[::ffff:224.0.0.1]:80",
        ] {
            assert!(refusal(&at(never), None, true).is_some(), "{never}");
        }
        assert!(refusal(&at("198.20.0.1:443"), None, false).is_none());
        assert!(refusal(&at("93.184.216.34:443"), None, false).is_none());
        assert!(refusal(&at("127.0.0.1:9000"), None, true).is_none());
    }

    /// DNS rebinding: the name the webhook was saved with resolves to a public address
    /// for the check and to loopback a moment later. The delivery client resolves once,
    /// checks what it got and connects only there: the local receiver hears nothing.
    #[tokio::test]
    async fn a_name_that_rebinds_to_loopback_is_refused_at_connect() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let receiver = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = receiver.local_addr().unwrap().port();
        let calls = Arc::new(AtomicUsize::new(0));
        let lookup: Lookup = {
            let calls = calls.clone();
            Arc::new(move |host, port| {
                let call = calls.fetch_add(1, Ordering::SeqCst);
                Box::pin(async move {
                    assert_eq!(host, "rebind.example");
                    let ip = match call {
                        0 => "93.184.216.34",
                        _ => "127.0.0.1",
                    };
                    Ok(vec![SocketAddr::new(ip.parse().unwrap(), port)])
                })
            })
        };
        let url: reqwest::Url = format!("http://rebind.example:{port}/hook")
            .parse()
            .unwrap();
        check(&lookup, &url, None, false)
            .await
            .expect("the first answer is public");
        let client = crate::webhooks::delivery_client(lookup, false).unwrap();
        let error = client.post(url).body("{}").send().await.unwrap_err();
        // hyper's connect error keeps the resolver's error behind its own types.
        let text = format!("{error:?}");
        assert!(
            text.contains("127.0.0.1 is a loopback, private or link-local"),
            "{text}"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        let heard = tokio::time::timeout(Duration::from_millis(300), receiver.accept()).await;
        assert!(heard.is_err(), "the loopback receiver was connected to");

        // Where private targets are allowed, the same name reaches the receiver: the
        // resolver's addresses take the URL's port.
        let allowed: Lookup = Arc::new(|_, port| {
            Box::pin(async move { Ok(vec![SocketAddr::from(([127, 0, 0, 1], port))]) })
        });
        let client = crate::webhooks::delivery_client(allowed, true).unwrap();
        let url = format!("http://rebind.example:{port}/hook");
        let sent = tokio::spawn(async move { client.post(url).body("{}").send().await });
        let heard = tokio::time::timeout(Duration::from_secs(10), receiver.accept()).await;
        assert!(heard.is_ok(), "an allowed name did not reach its receiver");
        sent.abort();
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
