//! r1kit's own rayon pool: sized by `R1KIT_NUM_THREADS`, safe across `fork`.
//!
//! Rayon's global pool cannot survive `fork()`: the child inherits the pool's bookkeeping but not
//! its worker threads, so the first parallel call in a DataLoader worker or a Ray process forked
//! from a parent that already used the pool waits forever. r1kit therefore keeps its own pool,
//! tagged with the process id that built it. A process that finds a pool built by another pid is a
//! forked child: it builds a fresh single-threaded pool (many forked workers each spinning up
//! all-cores pools would oversubscribe the machine), unless it calls [`set_num_threads`] itself.
//!
//! The pool is published through an atomic pointer rather than a mutex, so a fork that happens while
//! another thread is inside r1kit cannot leave the child holding a lock. Replaced pools are leaked
//! on purpose: another thread may still be running on one, and freeing it would be unsound. Pools
//! are replaced only by explicit [`set_num_threads`] calls and after forks, so the leak is bounded.

use std::sync::atomic::{AtomicPtr, Ordering};

use crate::error::{Error, Result};

struct PoolEntry {
    pid: u32,
    pool: rayon::ThreadPool,
}

static POOL: AtomicPtr<PoolEntry> = AtomicPtr::new(std::ptr::null_mut());

/// Environment variable that sets the pool size (a positive integer).
pub const NUM_THREADS_ENV: &str = "R1KIT_NUM_THREADS";

fn default_threads() -> usize {
    let env = std::env::var(NUM_THREADS_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0);
    env.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

fn build_entry(threads: usize) -> Result<&'static PoolEntry> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("r1kit-{i}"))
        .build()
        .map_err(|e| Error::value("num_threads", "a thread pool the OS can start", e))?;
    Ok(Box::leak(Box::new(PoolEntry {
        pid: std::process::id(),
        pool,
    })))
}

fn publish(entry: &'static PoolEntry, previous: *mut PoolEntry) -> &'static PoolEntry {
    let new = entry as *const PoolEntry as *mut PoolEntry;
    match POOL.compare_exchange(previous, new, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => entry,
        // Another thread published first; use its pool (ours stays unused, leaked like any other).
        // SAFETY: every pointer stored in POOL comes from Box::leak and is never freed.
        Err(current) => unsafe { &*current },
    }
}

fn pool() -> Result<&'static PoolEntry> {
    let current = POOL.load(Ordering::Acquire);
    // SAFETY: every pointer stored in POOL comes from Box::leak and is never freed.
    if let Some(entry) = unsafe { current.as_ref() } {
        if entry.pid == std::process::id() {
            return Ok(entry);
        }
        // Built by our parent before a fork: its threads do not exist here.
        return Ok(publish(build_entry(1)?, current));
    }
    Ok(publish(build_entry(default_threads())?, current))
}

/// Runs `f` inside r1kit's pool, so that rayon parallel iterators in `f` use it.
pub fn install<R: Send>(f: impl FnOnce() -> R + Send) -> Result<R> {
    Ok(pool()?.pool.install(f))
}

/// Number of threads of the pool the current process uses.
pub fn num_threads() -> Result<usize> {
    Ok(pool()?.pool.current_num_threads())
}

/// Replaces the pool with one of `n` threads (for this process; a forked child starts at one).
///
/// Results of r1kit never depend on `n`; only the speed does.
pub fn set_num_threads(n: usize) -> Result<()> {
    if n == 0 {
        return Err(Error::value("n", "a positive number of threads", 0));
    }
    let current = POOL.load(Ordering::Acquire);
    // SAFETY: every pointer stored in POOL comes from Box::leak and is never freed.
    if let Some(entry) = unsafe { current.as_ref() } {
        if entry.pid == std::process::id() && entry.pool.current_num_threads() == n {
            return Ok(());
        }
    }
    let entry = build_entry(n)?;
    // A lost race just means another thread set the size at the same moment; last writer wins.
    POOL.store(
        entry as *const PoolEntry as *mut PoolEntry,
        Ordering::Release,
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_and_read_thread_count() {
        set_num_threads(2).unwrap();
        assert_eq!(num_threads().unwrap(), 2);
        assert_eq!(install(rayon::current_num_threads).unwrap(), 2);
        set_num_threads(1).unwrap();
        assert_eq!(install(rayon::current_num_threads).unwrap(), 1);
        assert!(set_num_threads(0).is_err());
    }
}
