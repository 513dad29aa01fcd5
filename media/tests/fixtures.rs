//! Shared by the media integration tests: the generated fixture folder.
#![allow(
    clippy::unwrap_used,
    reason = "a test or bench fails loudly on a broken fixture or server"
)]

use std::path::PathBuf;
use std::sync::OnceLock;

/// Runs `fixtures/make.sh` once (it is idempotent and locked) and returns the folder.
pub fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // The runtime value first: a test binary built in another clone sharing the
        // target folder carries that clone's compile-time path.
        let crate_dir = std::env::var_os("CARGO_MANIFEST_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
        let root = crate_dir.join("fixtures");
        let status = std::process::Command::new(root.join("make.sh"))
            .stdout(std::process::Stdio::null())
            .status()
            .expect("run fixtures/make.sh (needs espeak-ng, sox, ffmpeg: scripts/setup)");
        assert!(status.success(), "fixtures/make.sh failed");
        root.join("generated")
    })
}

pub fn read(name: &str) -> Vec<u8> {
    std::fs::read(dir().join(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}
