//! What the host can hold. Sizes that come from a file header or a flag are
//! checked against the memory available for new allocations before anything
//! is allocated or read, so that a lying header or a typo fails with a
//! message instead of an abort, an OOM kill or an endless read.
//!
//! The figure is Linux's `MemAvailable` (`/proc/meminfo`): the kernel's
//! estimate of what can be allocated without swapping. Container limits
//! (cgroups) are not consulted. Where the figure is unknown (other systems,
//! no `/proc`), no limit is applied: allocations are attempted as asked.

use crate::error::{Error, Result};

/// Bytes available for new allocations (`MemAvailable`), or `None` where the
/// system does not say.
pub fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_meminfo(&text)
}

/// The `MemAvailable` line of a `/proc/meminfo` text, in bytes.
fn parse_meminfo(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let mut fields = line.split_whitespace().skip(1);
    let value: u64 = fields.next()?.parse().ok()?;
    match fields.next() {
        Some("kB") => value.checked_mul(1024),
        None => Some(value),
        Some(_) => None,
    }
}

/// Refuse an allocation of `bytes` for `what` (a description such as
/// "memories.npy: shape [1000000, 1000000] as f32") when it exceeds the memory
/// available now. `None` bytes means the size overflowed u64.
///
/// # Errors
/// [`Error::HostMemory`] when `bytes` is `None` or more than
/// [`available_memory`] reports.
pub fn check_allocation(what: impl FnOnce() -> String, bytes: Option<u64>) -> Result<()> {
    let available = available_memory();
    match (bytes, available) {
        (Some(b), Some(a)) if b > a => Err(Error::HostMemory { what: what(), needed: Some(b), available }),
        (Some(_), _) => Ok(()),
        (None, _) => Err(Error::HostMemory { what: what(), needed: None, available }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_is_parsed_in_bytes() {
        let text = "MemTotal:       24683584 kB\nMemFree:         1118828 kB\nMemAvailable:   23723908 kB\n";
        assert_eq!(parse_meminfo(text), Some(23_723_908 * 1024));
        assert_eq!(parse_meminfo("MemTotal: 5 kB\n"), None);
        assert_eq!(parse_meminfo("MemAvailable: lots kB\n"), None);
    }

    #[test]
    fn an_impossible_allocation_is_refused() {
        // No machine has 2^63 bytes available; an overflowed size is refused anywhere.
        #[cfg(target_os = "linux")]
        {
            assert!(available_memory().is_some(), "Linux has /proc/meminfo");
            assert!(matches!(check_allocation(|| "x".into(), Some(1 << 63)), Err(Error::HostMemory { .. })));
        }
        assert!(matches!(check_allocation(|| "x".into(), None), Err(Error::HostMemory { needed: None, .. })));
        assert!(check_allocation(|| "x".into(), Some(16)).is_ok());
    }
}
