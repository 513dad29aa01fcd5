//! README's "Getting started" runs as written: the shell block between its markers,
//! against a real server and the mock chat upstream, with only the two `export` lines of
//! placeholders (server, admin key, provider) replaced by this server's values.

use crate::support::{ADMIN_KEY, Server};

/// The block between `<!-- getting-started -->` and `<!-- /getting-started -->`,
/// without its fences.
fn getting_started() -> String {
    let readme = std::fs::read_to_string("README.md").unwrap();
    let start = readme
        .find("<!-- getting-started -->")
        .expect("the start marker");
    let end = readme
        .find("<!-- /getting-started -->")
        .expect("the end marker");
    let block = &readme[start..end];
    let body = block.split_once("```sh\n").expect("a sh fence").1;
    body.rsplit_once("```")
        .expect("the closing fence")
        .0
        .to_owned()
}

#[tokio::test]
async fn the_getting_started_commands_run_as_written() {
    let server = Server::start().await;
    let upstream = crate::upstream::start("provider", "sk-upstream-readme-key").await;
    let script = getting_started();
    // The placeholders a reader fills in; everything else runs unchanged.
    let placeholders: Vec<&str> = script
        .lines()
        .filter(|line| {
            line.starts_with("export SCAIGRID_URL=") || line.starts_with("export UPSTREAM_URL=")
        })
        .collect();
    assert_eq!(placeholders.len(), 2, "{script}");
    let runnable: String = script
        .lines()
        .filter(|line| !placeholders.contains(line))
        .map(|line| format!("{line}\n"))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    // Async: the mock upstream runs on this test's runtime and must answer meanwhile.
    let output = tokio::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", &runnable])
        .current_dir(dir.path())
        .env("SCAIGRID_URL", &server.base)
        .env("ADMIN_KEY", ADMIN_KEY)
        .env("UPSTREAM_URL", &upstream.base)
        .env("UPSTREAM_KEY", "sk-upstream-readme-key")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let report = format!(
        "status {:?}\n--- stdout\n{stdout}\n--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{report}");
    let lines: Vec<&str> = stdout.lines().collect();
    // What it printed: the transcript of the synthesized greeting, then the chat answer.
    assert_eq!(lines.len(), 2, "{report}");
    let heard = lines[0].to_lowercase();
    assert!(heard.contains("hello from"), "{report}");
    assert_eq!(lines[1], "Hello from provider", "{report}");
    let mp3 = std::fs::read(dir.path().join("hello.mp3")).unwrap();
    assert!(mp3[0] == 0xFF && mp3[1] & 0xE0 == 0xE0, "{report}");
}
