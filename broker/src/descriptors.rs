//! Room in the process's file-descriptor table for every connection, made once at bind.
//!
//! Linux grows a process's descriptor table by doubling it when a new descriptor does not
//! fit, and in a multi-threaded process each growth waits for an RCU grace period
//! (`expand_fdtable` calls `synchronize_rcu`): 12–14 ms on the 2-core machine, during which
//! the thread that accepted stops in the kernel and every connection behind it waits in the
//! accept queue. Accepting the first 5,000 connections grew the table six times, and those
//! waits were most of the handshakes' p99 (`perf sched`: the accepting worker in state D,
//! woken by `rcu_preempt`; docs/benchmarks.md). A single-threaded broker such as Mosquitto
//! never waits there. Growing the table to its final size once, while binding, moves the
//! one wait out of the connections' way; the table costs 8 bytes of kernel memory per slot.

use std::os::fd::AsFd;

use rustix::process::{Resource, getrlimit};

/// Descriptors beyond the connections: listeners, the store, the HTTP side, logs.
const OTHER_DESCRIPTORS: usize = 1024;

/// Grows the descriptor table to hold `connections` more descriptors (and some for the
/// rest of the process), within the open-files limit. Returns the highest descriptor the
/// table now has room for, `None` if it could not grow it (nothing is lost then: the kernel
/// grows it as descriptors come).
pub(crate) fn reserve(any: impl AsFd, connections: usize) -> Option<usize> {
    let limit = open_files_limit();
    let highest = connections
        .saturating_add(OTHER_DESCRIPTORS)
        .min(limit.saturating_sub(1));
    let raw = i32::try_from(highest).ok()?;
    // The lowest free descriptor at or above `highest`: the table grows to hold it. Closed
    // again at once; the table never shrinks.
    match rustix::io::fcntl_dupfd_cloexec(any, raw) {
        Ok(reserved) => {
            drop(reserved);
            Some(highest)
        }
        Err(e) => {
            tracing::debug!(error = %e, highest, "could not grow the descriptor table up front");
            None
        }
    }
}

/// The process's open-files limit (soft); `usize::MAX` when unlimited.
fn open_files_limit() -> usize {
    getrlimit(Resource::Nofile)
        .current
        .and_then(|soft| usize::try_from(soft).ok())
        .unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of this process's descriptor table (`FDSize` in `/proc/self/status`).
    fn table_size() -> usize {
        let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("FDSize:"))
            .and_then(|size| size.trim().parse().ok())
            .expect("FDSize in /proc/self/status")
    }

    #[test]
    fn the_table_grows_to_hold_the_connections_and_no_descriptor_stays_open() {
        let file = std::fs::File::open("/dev/null").expect("/dev/null");
        let highest = reserve(&file, 3000).expect("room for the connections");
        assert_eq!(
            highest,
            (3000 + OTHER_DESCRIPTORS).min(open_files_limit() - 1)
        );
        assert!(
            table_size() > highest,
            "FDSize {} has no room for descriptor {highest}",
            table_size()
        );
        // The descriptor that grew the table was closed again.
        assert!(
            !std::path::Path::new(&format!("/proc/self/fd/{highest}")).exists(),
            "descriptor {highest} left open"
        );
    }

    #[test]
    fn never_beyond_the_open_files_limit() {
        let file = std::fs::File::open("/dev/null").expect("/dev/null");
        let limit = open_files_limit();
        if limit > 1 << 20 {
            return; // no finite limit to stay under here
        }
        assert_eq!(reserve(&file, usize::MAX), Some(limit - 1));
    }
}
