//! The embedded default's node processes: the server starts `[engines]
//! node_processes` of them (`scaigrid node --supervised` on a Unix socket in the data
//! folder), restarts one that dies with a growing backoff, and ends them when it exits.
//!
//! Each child's stdin is a pipe whose write end only this process holds: a child whose
//! server died (also by SIGKILL, which runs no cleanup) reads EOF and exits. On a
//! normal exit the children are killed as their handles drop.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Address;
use super::pool::Member;
use crate::config::EnginesConfig;

const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A node that ran this long before dying restarts without waiting.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// The nodes this server will start: `(node id, socket)`. One node keeps the configured
/// node id; more are `<node_id>-<n>`. Sockets are named after this process
/// (`node-<pid>-<n>.sock`), so two servers sharing a data folder do not take each
/// other's; those left by servers that are gone are removed.
pub fn plan(config: &EnginesConfig, data_dir: &Path) -> Vec<(String, Address)> {
    let count = config.node_processes;
    let dir = socket_dir(data_dir);
    remove_stale_sockets(&dir);
    let pid = std::process::id();
    (0..count)
        .map(|index| {
            let id = match count {
                1 => config.node_id.clone(),
                _ => format!("{}-{index}", config.node_id),
            };
            let socket = dir.join(socket_name(pid, index));
            (id, Address::Unix(socket))
        })
        .collect()
}

fn socket_name(pid: u32, index: usize) -> String {
    format!("node-{pid}-{index}.sock")
}

/// The server process a socket name belongs to (`None`: not one of ours).
fn socket_owner(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("node-")?.strip_suffix(".sock")?;
    let (pid, index) = rest.split_once('-')?;
    index.parse::<usize>().ok()?;
    pid.parse().ok()
}

/// Removes the sockets in `dir` whose server process no longer runs.
fn remove_stale_sockets(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(owner) = socket_owner(&name.to_string_lossy()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{owner}")).exists() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Where the sockets live: the data folder's `run/` when its path is short enough for
/// a socket name (108 bytes), else a folder under the system's temporary one.
fn socket_dir(data_dir: &Path) -> PathBuf {
    let dir = data_dir.join("run");
    match dir.as_os_str().len() < 80 {
        true => dir,
        false => std::env::temp_dir().join(format!("scaigrid-{}", std::process::id())),
    }
}

/// How to start a node: this executable (or `SCAIGRID_NODE_PROGRAM`, for a process
/// that is not the `scaigrid` binary) with the engine settings made explicit, so the
/// child loads exactly what the server's configuration says.
fn command(
    (config, max_message_bytes): (&EnginesConfig, usize),
    id: &str,
    address: &Address,
) -> anyhow::Result<tokio::process::Command> {
    let program = match std::env::var_os("SCAIGRID_NODE_PROGRAM") {
        Some(program) => program.into(),
        None => std::env::current_exe()?,
    };
    let mut command = tokio::process::Command::new(program);
    command
        .arg("node")
        .arg("--listen")
        .arg(address.to_string())
        .arg("--node-id")
        .arg(id)
        .arg("--supervised")
        .arg("--models")
        .arg(config.boot_models().join(","))
        .arg("--memory-limit-mb")
        .arg(config.memory_limit_mb.to_string())
        .args(["--region", &config.labels.region])
        .args(["--capacity-tier", &config.labels.capacity_tier])
        .args([
            "--price-per-hour",
            &config.labels.price_per_hour.to_string(),
        ])
        .arg("--models-dir")
        .arg(&config.models_dir)
        .arg("--device")
        .arg(match config.device {
            engines::Device::Cpu => "cpu".to_owned(),
            engines::Device::Cuda { device_id } => format!("cuda:{device_id}"),
        })
        .arg("--intra-threads")
        .arg(config.intra_threads.to_string())
        .arg("--stt-queue")
        .arg(config.stt_queue.to_string())
        .arg("--max-message-bytes")
        .arg(max_message_bytes.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    Ok(command)
}

/// Starts and watches every member's process, for as long as the server runs.
/// `max_message_bytes`: the largest request a node takes.
pub fn spawn(config: &EnginesConfig, max_message_bytes: usize, members: &[Arc<Member>]) {
    for member in members {
        let (member, config) = (member.clone(), config.clone());
        tokio::spawn(async move { watch((&config, max_message_bytes), &member).await });
    }
}

async fn watch(config: (&EnginesConfig, usize), member: &Member) {
    let mut backoff = FIRST_BACKOFF;
    let mut started_once = false;
    loop {
        if started_once {
            member.restarted();
        }
        started_once = true;
        let started = Instant::now();
        let spawned = command(config, &member.id, &member.address).and_then(|mut c| Ok(c.spawn()?));
        let exit = match spawned {
            Ok(mut child) => {
                member.set_pid(child.id());
                tracing::info!(node = %member.id, pid = ?child.id(), "node process started");
                // Held (not written) for the child's life: its closing tells the child
                // this server is gone.
                let _parent = child.stdin.take();
                let status = child.wait().await;
                match status {
                    Ok(status) => format!("node process exited ({status})"),
                    Err(error) => format!("node process lost: {error}"),
                }
            }
            Err(error) => format!("starting the node process: {error}"),
        };
        tracing::error!(node = %member.id, reason = %exit, "inference node down; restarting");
        member.set_pid(None);
        member.lost(&exit);
        if started.elapsed() >= HEALTHY_RUN {
            backoff = FIRST_BACKOFF;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_are_named_after_their_server_and_only_dead_ones_are_removed() {
        assert_eq!(socket_owner(&socket_name(42, 3)), Some(42));
        for other in ["node-0.sock", "node-x-1.sock", "node-1-2.txt", "db.sqlite"] {
            assert_eq!(socket_owner(other), None, "{other}");
        }
        let dir = tempfile::tempdir().unwrap();
        let mine = dir.path().join(socket_name(std::process::id(), 0));
        // A pid above the kernel's maximum never runs.
        let dead = dir.path().join(socket_name(u32::MAX - 1, 0));
        let unrelated = dir.path().join("notes.txt");
        for path in [&mine, &dead, &unrelated] {
            std::fs::write(path, b"").unwrap();
        }
        remove_stale_sockets(dir.path());
        assert!(mine.exists() && unrelated.exists());
        assert!(!dead.exists());
    }
}
