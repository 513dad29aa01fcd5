//! What unit tests share: the real servers of `scripts/services/` on loopback.

/// The URL a `scripts/services/<name>` script prints after starting its loopback server
/// (or `env_var` when set); `None`, said loudly, only when it truly cannot start here.
pub(crate) fn service(name: &str, env_var: &str) -> Option<String> {
    if let Ok(url) = std::env::var(env_var) {
        return Some(url);
    }
    let script = format!("{}/scripts/services/{name}", env!("CARGO_MANIFEST_DIR"));
    match std::process::Command::new(script).output() {
        Ok(output) if output.status.success() => {
            Some(String::from_utf8_lossy(&output.stdout).trim().to_owned())
        }
        other => {
            eprintln!(
                "\n!!!!!!!! SKIPPED: {name} could not start on this machine: {other:?} !!!!!!!!\n"
            );
            None
        }
    }
}
