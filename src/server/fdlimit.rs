//! The open-file limit against `[http] max_connections`.
//!
//! Every connection is a file. Many systems start services with a soft limit of 1024 and
//! a far higher hard one; a server that stays at 1024 fails its 1000th connection with
//! `EMFILE` and then cannot open its database or model files either. At start the soft
//! limit is raised to the hard one (as Go's runtime does), and the connection cap is
//! lowered, with a warning, to leave [`RESERVED`] files for everything else.
#![expect(
    unsafe_code,
    reason = "FFI to getrlimit/setrlimit; the two calls are in `raise` below"
)]

/// Files kept for the database, models, object store, Redis, logs and WebRTC sockets.
const RESERVED: u64 = 256;

/// `max_connections`, lowered to what the (raised) open-file limit allows.
pub fn fit_connections(max_connections: usize) -> usize {
    let Some(limit) = raise() else {
        return max_connections;
    };
    let allowed = limit.saturating_sub(RESERVED).max(16) as usize;
    if max_connections > allowed {
        tracing::warn!(
            max_connections,
            open_file_limit = limit,
            allowed,
            "[http] max_connections lowered to fit the open-file limit (raise `ulimit -n` or LimitNOFILE)"
        );
        return allowed;
    }
    max_connections
}

/// Raises the soft open-file limit to the hard one; the soft limit now in force.
#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
fn raise() -> Option<u64> {
    #[repr(C)]
    struct Rlimit {
        current: u64,
        max: u64,
    }
    unsafe extern "C" {
        fn getrlimit(resource: std::ffi::c_int, limit: *mut Rlimit) -> std::ffi::c_int;
        fn setrlimit(resource: std::ffi::c_int, limit: *const Rlimit) -> std::ffi::c_int;
    }
    const RLIMIT_NOFILE: std::ffi::c_int = 7;
    let mut limit = Rlimit { current: 0, max: 0 };
    // SAFETY: `limit` is a valid, writable `struct rlimit` (two `rlim_t`, which is u64 on
    // 64-bit Linux) for the duration of the call.
    if unsafe { getrlimit(RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    // An unlimited hard limit still cannot exceed the kernel's `nr_open` (2^20 by default).
    let target = limit.max.min(1 << 20);
    if limit.current < target {
        let raised = Rlimit {
            current: target,
            max: limit.max,
        };
        // SAFETY: `raised` is a valid `struct rlimit` that outlives the call.
        if unsafe { setrlimit(RLIMIT_NOFILE, &raised) } == 0 {
            return Some(target);
        }
    }
    Some(limit.current)
}

#[cfg(not(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
)))]
fn raise() -> Option<u64> {
    None
}
