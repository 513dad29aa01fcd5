//! The client address behind trusted proxies: trusted ranges as configured text, and
//! `X-Forwarded-For` headers as sent. Never panics; the answer is the peer or an address
//! that appears in a header.

#![no_main]

use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use scaigrid::server::client_ip::{Cidr, client_ip};

fuzz_target!(|data: &[u8]| {
    // Lines up to the first empty one are trusted ranges; the rest are header values.
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let trusted: Vec<Cidr> = lines
        .by_ref()
        .take_while(|line| !line.is_empty())
        .filter_map(|line| Cidr::from_str(line).ok())
        .collect();
    let mut headers = HeaderMap::new();
    let mut sent = String::new();
    for line in lines {
        if let Ok(value) = HeaderValue::from_str(line) {
            headers.append("x-forwarded-for", value);
            sent.push_str(line);
            sent.push(',');
        }
    }
    let peer = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    let client = client_ip(peer, &headers, &trusted);
    if client != peer {
        assert!(
            sent.split(',')
                .any(|part| part.trim().parse::<IpAddr>().is_ok()),
            "{client} came from nowhere"
        );
    }
});
