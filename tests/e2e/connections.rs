//! Connections that hold the server without finishing a request (slow heads, stalled
//! bodies, idle keep-alives, floods over the connection cap): each is closed on its
//! deadline, and a normal client is served meanwhile.

use std::time::Duration;

use crate::adversarial::{TRANSCRIBE, assert_growth_below, rss_mib, still_serving};
use crate::support::{ADMIN_KEY, Options, Server};

/// The `host:port` the server listens on.
fn address(server: &Server) -> String {
    server.base.trim_start_matches("http://").to_owned()
}

/// Reads until the server closes the connection (or `wait` passes); what it sent.
async fn read_until_closed(stream: &mut tokio::net::TcpStream, wait: Duration) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    let read = tokio::time::timeout(wait, async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    read.ok()
        .map(|()| String::from_utf8_lossy(&seen).into_owned())
}

/// `[http]` bounds small enough for a test to outwait.
fn slow_config(header_timeout: u64, max_connections: usize) -> String {
    format!(
        "[engines]\nenabled = false\n[http]\nheader_timeout_seconds = {header_timeout}\n\
         body_idle_timeout_seconds = 2\nmax_connections = {max_connections}\n"
    )
}

#[tokio::test]
async fn five_thousand_slow_connections_do_not_starve_a_normal_client() {
    use tokio::io::AsyncWriteExt;
    let server = Server::start_with(Options {
        config_toml: Some(slow_config(10, 6000)),
        ..Options::default()
    })
    .await;
    let target = address(&server);
    let before = rss_mib(&server);
    // Slowloris: each opens a request head and sends another header line now and then,
    // never the blank line that ends it. A fifth send nothing at all.
    let mut slow = Vec::new();
    for index in 0..5000 {
        let mut stream = tokio::net::TcpStream::connect(&target).await.unwrap();
        if index % 5 != 0 {
            stream
                .write_all(b"GET /v1/me HTTP/1.1\r\nHost: x\r\n")
                .await
                .unwrap();
        }
        slow.push(stream);
    }
    for stream in slow.iter_mut().step_by(7) {
        let _ = stream.write_all(b"X-Slow: 1\r\n").await;
    }
    // A normal client is served while all of them are open.
    still_serving(&server).await;
    let (status, _) = server.get("/health/live", None).await;
    assert_eq!(status, 200);
    assert_growth_below(&server, before, 256);

    // Past the header timeout the server has closed every one of them.
    for stream in &mut slow {
        let answer = read_until_closed(stream, Duration::from_secs(60)).await;
        assert!(answer.is_some(), "a slow connection was left open");
    }
    still_serving(&server).await;
}

#[tokio::test]
async fn stalled_bodies_idle_keepalives_and_connections_over_the_cap_are_closed() {
    use tokio::io::AsyncWriteExt;
    let server = Server::start_with(Options {
        config_toml: Some(slow_config(2, 64)),
        ..Options::default()
    })
    .await;
    let target = address(&server);

    // A body that stops arriving: 408 `REQUEST_TIMEOUT`, on the JSON and the upload paths.
    for (path, content_type) in [
        ("/v1/auth/token", "application/json"),
        (TRANSCRIBE, "audio/wav"),
    ] {
        let mut stream = tokio::net::TcpStream::connect(&target).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_KEY}\r\n\
             Content-Type: {content_type}\r\nContent-Length: 100000\r\n\r\n{{\"email\""
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let answer = read_until_closed(&mut stream, Duration::from_secs(60))
            .await
            .expect("the server answers a stalled body");
        assert!(answer.starts_with("HTTP/1.1 408"), "{path}: {answer}");
        assert!(answer.contains("REQUEST_TIMEOUT"), "{path}: {answer}");
    }

    // A keep-alive connection idle past the header timeout is closed after its answer.
    let mut stream = tokio::net::TcpStream::connect(&target).await.unwrap();
    stream
        .write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = read_until_closed(&mut stream, Duration::from_secs(60))
        .await
        .expect("an idle keep-alive connection is closed");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // With 64 idle connections open, the 65th is closed at once, without an answer.
    let mut idle = Vec::new();
    for _ in 0..64 {
        idle.push(tokio::net::TcpStream::connect(&target).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut over = tokio::net::TcpStream::connect(&target).await.unwrap();
    let _ = over
        .write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let answer = read_until_closed(&mut over, Duration::from_secs(1))
        .await
        .expect("a connection over the cap is closed at once");
    assert_eq!(answer, "", "a connection over the cap was served");
    // Once the idle ones time out, connections are served again.
    for stream in &mut idle {
        assert!(
            read_until_closed(stream, Duration::from_secs(60))
                .await
                .is_some()
        );
    }
    still_serving(&server).await;
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("scaigrid_http_connections_refused_total 1"),
        "{metrics}"
    );
}
