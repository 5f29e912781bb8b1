//! Giving memory back after large one-off work.

/// Keys from which a read or a build counts as large.
const LARGE: usize = 10_000;

/// After a large read or a first build over `keys` keys, hands the memory
/// just freed (response buffers, intermediate vectors) back to the operating
/// system. glibc keeps freed memory for reuse; after reading 100,000 keys
/// that is several MiB a service would otherwise carry for its lifetime.
pub(crate) fn release_freed(keys: usize) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if keys >= LARGE {
        // SAFETY: malloc_trim only returns free heap pages; it touches no live allocation.
        unsafe {
            libc::malloc_trim(0);
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = (keys, LARGE);
}
