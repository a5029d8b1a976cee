//! Hands memory that glibc's allocator keeps free back to the kernel, once a second.
//!
//! A live server allocates and frees media continuously (frames held until their part is
//! cut, parts until written or sent). glibc returns only the free memory at the top of
//! each thread's arena; what frees in the middle stays resident until `malloc_trim`
//! releases it. At 100 publishers that is 3-6 MiB of 38 (bench/ingest-lean.sh), for a
//! walk of the arenas that costs well under a millisecond.

use std::time::Duration;

const TRIM_EVERY: Duration = Duration::from_secs(1);

/// Starts the trimming thread (glibc only; elsewhere nothing to do).
pub fn start_trimming() -> std::io::Result<()> {
    if cfg!(all(target_os = "linux", target_env = "gnu")) {
        std::thread::Builder::new()
            .name("malloc-trim".into())
            .spawn(|| loop {
                std::thread::sleep(TRIM_EVERY);
                trim();
            })?;
    }
    Ok(())
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim takes no pointers and is thread-safe (it locks each arena).
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}
