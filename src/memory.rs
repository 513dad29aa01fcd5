//! Giving freed heap back to the operating system.
//!
//! glibc's allocator keeps what a burst freed: a 2,000 requests/s soak where a short
//! stall let thousands of requests pile up went from 354 MB to 690 MB resident and
//! stayed there, although the memory was free (`malloc_trim(0)` by hand brought it
//! to 390 MB at once). So every [`INTERVAL`] the process trims its heap on a blocking
//! thread and counts what came back in `scaigrid_memory_released_bytes_total`.
//!
//! A trim holds each arena's lock while it walks it: in that soak the minute in which
//! about 170 MB came back also had 571 answers slower than 50 ms (up to 270 ms), most
//! likely the trim; trims with little to return did not show in the slow-answer list.
#![cfg_attr(
    all(target_os = "linux", target_env = "gnu"),
    expect(
        unsafe_code,
        reason = "FFI to glibc's `malloc_trim`; the one call is in `trim` below"
    )
)]

use std::time::Duration;

pub const INTERVAL: Duration = Duration::from_secs(30);
pub const RELEASED: &str = "scaigrid_memory_released_bytes_total";

/// Resident bytes of this process (`VmRSS` in `/proc/self/status`), where Linux tells.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kilobytes: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kilobytes * 1024)
}

/// Returns the heap's free pages to the OS; the resident bytes that came back.
pub fn trim() -> u64 {
    let before = resident_bytes();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        unsafe extern "C" {
            fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        // SAFETY: `malloc_trim` takes no pointers and is thread-safe (it locks each
        // arena while it walks it).
        unsafe {
            malloc_trim(0);
        }
    }
    match (before, resident_bytes()) {
        (Some(before), Some(after)) => before.saturating_sub(after),
        _ => 0,
    }
}

/// Trims every [`INTERVAL`] for the life of the process.
pub fn spawn_trimmer() {
    tokio::spawn(async {
        let mut every = tokio::time::interval(INTERVAL);
        every.tick().await;
        loop {
            every.tick().await;
            if let Ok(released) = tokio::task::spawn_blocking(trim).await {
                metrics::counter!(RELEASED).increment(released);
                if released >= 16 << 20 {
                    tracing::info!(
                        released_mb = released >> 20,
                        "freed heap returned to the OS"
                    );
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Memory freed in the middle of a thread's heap (a live block above it keeps the
    /// allocator from shrinking the heap by itself) stays resident until a trim.
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn freed_memory_comes_back_on_a_trim() {
        let (retained, released) = std::thread::spawn(|| {
            let blocks: Vec<Vec<u8>> = (0..1024).map(|_| vec![1u8; 64 << 10]).collect();
            let guard = vec![1u8; 1024];
            let full = resident_bytes().unwrap();
            drop(blocks);
            let after_free = resident_bytes().unwrap();
            let released = trim();
            drop(guard);
            (full.saturating_sub(after_free), released)
        })
        .join()
        .unwrap();
        assert!(
            retained < 16 << 20,
            "free() alone gave back {retained} bytes"
        );
        assert!(
            released >= 48 << 20,
            "a trim gave back only {released} bytes"
        );
    }
}
