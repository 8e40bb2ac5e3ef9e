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

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

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

/// Runs `task(0)`, ..., `task(n - 1)`, each exactly once, on the calling thread and on as many
/// pool threads as start in time; returns when all have run.
///
/// Unlike [`install`], the caller never waits for a worker to wake up: it starts on item 0 at
/// once, and a worker that the OS schedules late (a busy neighbour on a small machine, or the
/// cost of a cross-core wake-up in a VM) finds the items already taken and does nothing. So a
/// call takes at most about the time of one thread, and less when workers join.
///
/// The items are cut into one contiguous segment per thread. A thread runs its own segment from
/// the front, in order, then takes items from the back of the others' segments: each thread
/// streams through one run of memory (what the hardware prefetchers follow best; claiming
/// items from one shared counter interleaved the threads every item and halved the bandwidth of
/// reductions over tensors larger than the caches), and a thread that starts late still finds
/// its segment taken from the back by the others. Which thread runs which item varies, so
/// `task` must write only to its own item's outputs (the results are then the same whatever
/// the threads).
///
/// A panic inside `task` is re-raised on the caller after every started item has finished.
pub fn for_each_item(n: usize, task: &(dyn Fn(usize) + Sync)) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    let helpers = if n == 1 {
        0
    } else {
        (pool()?.pool.current_num_threads().saturating_sub(1)).min(n - 1)
    };
    if helpers == 0 || u32::try_from(n).is_err() {
        (0..n).for_each(task);
        return Ok(());
    }
    // The task's lifetime is erased so that the spawned jobs are 'static. Soundness: a job calls
    // the task only after claiming an index below `n`, always while registered in `active`, and
    // this function returns only once every index is claimed and `active` is back to 0. A job
    // that starts later claims nothing and never touches the task.
    let task_ptr: *const (dyn Fn(usize) + Sync + '_) = task;
    #[allow(clippy::missing_transmute_annotations)]
    let task_ptr: *const (dyn Fn(usize) + Sync + 'static) =
        unsafe { std::mem::transmute(task_ptr) };
    let segments = helpers + 1;
    let shared = Arc::new(Shared {
        segments: (0..segments)
            .map(|k| Segment::new(k * n / segments, (k + 1) * n / segments))
            .collect(),
        joined: AtomicUsize::new(1),
        active: AtomicUsize::new(0),
        task: TaskPtr(task_ptr),
        panicked: AtomicBool::new(false),
    });
    let entry = pool()?;
    for _ in 0..helpers {
        let s = Arc::clone(&shared);
        entry.pool.spawn(move || {
            let own = s.joined.fetch_add(1, Ordering::SeqCst) % segments;
            s.drain(own);
        });
    }
    shared.drain(0);
    let mut spins = 0u32;
    while shared.active.load(Ordering::SeqCst) != 0 {
        if spins < 1 << 12 {
            std::hint::spin_loop();
            spins += 1;
        } else {
            std::thread::yield_now();
        }
    }
    if shared.panicked.load(Ordering::SeqCst) {
        resume_unwind(Box::new("a parallel r1kit task panicked"));
    }
    Ok(())
}

/// `f(k, chunk)` for each `size`-element chunk of `data` (the last may be shorter), through
/// [`for_each_item`]: chunk `k` is `data[k * size..]`, and no two calls see the same elements.
pub fn for_each_chunk_mut<T: Send>(
    data: &mut [T],
    size: usize,
    f: &(dyn Fn(usize, &mut [T]) + Sync),
) -> Result<()> {
    let size = size.max(1);
    let len = data.len();
    let base = SendPtr(data.as_mut_ptr());
    for_each_item(len.div_ceil(size), &|k| {
        let start = k * size;
        let n = size.min(len - start);
        // SAFETY: `for_each_item` runs each k once, so the chunks handed out are disjoint parts
        // of `data`, which stays mutably borrowed until it returns.
        let chunk = unsafe { std::slice::from_raw_parts_mut(base.get().add(start), n) };
        f(k, chunk);
    })
}

/// `[f(0), ..., f(n - 1)]`, computed `per_item` indices at a time through [`for_each_item`].
pub fn map_indices<R: Send>(
    n: usize,
    per_item: usize,
    f: &(dyn Fn(usize) -> R + Sync),
) -> Result<Vec<R>> {
    let per_item = per_item.max(1);
    let mut out: Vec<Option<R>> = (0..n).map(|_| None).collect();
    for_each_chunk_mut(&mut out, per_item, &|k, chunk| {
        for (j, slot) in chunk.iter_mut().enumerate() {
            *slot = Some(f(k * per_item + j));
        }
    })?;
    let out: Vec<R> = out.into_iter().flatten().collect();
    if out.len() != n {
        return Err(Error::value("n", "every index computed", out.len()));
    }
    Ok(out)
}

/// A raw pointer that may cross threads (the users above guarantee disjoint access).
struct SendPtr<T>(*mut T);

impl<T> SendPtr<T> {
    fn get(&self) -> *mut T {
        self.0
    }
}

// SAFETY: only used to hand out disjoint chunks, see `for_each_chunk_mut`.
unsafe impl<T: Send> Send for SendPtr<T> {}
unsafe impl<T: Send> Sync for SendPtr<T> {}

struct TaskPtr(*const (dyn Fn(usize) + Sync + 'static));

// SAFETY: the pointee is `Sync`, and it is only dereferenced under the protocol of
// `for_each_item` (while the borrow it came from is alive).
unsafe impl Send for TaskPtr {}
unsafe impl Sync for TaskPtr {}

/// The unclaimed items `front..back` of one thread's segment, packed into one atomic word (front
/// in the low 32 bits) so that claims from both ends never hand out an item twice.
struct Segment(AtomicU64);

impl Segment {
    fn new(front: usize, back: usize) -> Self {
        // `for_each_item` checks that every index fits in 32 bits.
        Segment(AtomicU64::new(((back as u64) << 32) | front as u64))
    }

    /// Claims the first (`from_back` false) or last unclaimed item, if any.
    fn claim(&self, from_back: bool) -> Option<usize> {
        let mut cur = self.0.load(Ordering::SeqCst);
        loop {
            let (front, back) = (cur & 0xffff_ffff, cur >> 32);
            if front >= back {
                return None;
            }
            let (item, next) = if from_back {
                (back - 1, ((back - 1) << 32) | front)
            } else {
                (front, (back << 32) | (front + 1))
            };
            match self
                .0
                .compare_exchange_weak(cur, next, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return Some(item as usize),
                Err(seen) => cur = seen,
            }
        }
    }
}

struct Shared {
    segments: Vec<Segment>,
    /// Segments handed out to threads so far (the caller has segment 0).
    joined: AtomicUsize,
    active: AtomicUsize,
    task: TaskPtr,
    panicked: AtomicBool,
}

impl Shared {
    /// Runs segment `own` from its front, then the other segments' items from their backs,
    /// until no item is left anywhere.
    fn drain(&self, own: usize) {
        let count = self.segments.len();
        for k in 0..count {
            let segment = &self.segments[(own + k) % count];
            loop {
                // Registered before claiming: the caller cannot see `active == 0` between
                // this thread's claim of an item and the end of its run (all SeqCst).
                self.active.fetch_add(1, Ordering::SeqCst);
                let Some(i) = segment.claim(k != 0) else {
                    self.active.fetch_sub(1, Ordering::SeqCst);
                    break;
                };
                // SAFETY: `i` was claimed while registered, so the caller is still waiting.
                let task = unsafe { &*self.task.0 };
                if catch_unwind(AssertUnwindSafe(|| task(i))).is_err() {
                    self.panicked.store(true, Ordering::SeqCst);
                }
                self.active.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }
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

/// Serialises the tests that change the process-wide pool size (cargo runs tests in parallel
/// threads, and a test that sets 2 threads must not see another one's 1 before it runs).
#[cfg(test)]
pub(crate) fn pool_size_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_and_read_thread_count() {
        let _pool = pool_size_lock();
        set_num_threads(2).unwrap();
        assert_eq!(num_threads().unwrap(), 2);
        assert_eq!(install(rayon::current_num_threads).unwrap(), 2);
        set_num_threads(1).unwrap();
        assert_eq!(install(rayon::current_num_threads).unwrap(), 1);
        assert!(set_num_threads(0).is_err());
    }

    #[test]
    fn segments_hand_out_each_item_once_from_either_end() {
        let s = Segment::new(3, 7);
        assert_eq!(s.claim(false), Some(3));
        assert_eq!(s.claim(true), Some(6));
        assert_eq!(s.claim(true), Some(5));
        assert_eq!(s.claim(false), Some(4));
        assert_eq!(s.claim(false), None);
        assert_eq!(s.claim(true), None);
        // Two threads racing on one segment from opposite ends: every item exactly once.
        let s = Segment::new(0, 100_000);
        let (a, b) = std::thread::scope(|sc| {
            let front = sc.spawn(|| std::iter::from_fn(|| s.claim(false)).collect::<Vec<_>>());
            let back = sc.spawn(|| std::iter::from_fn(|| s.claim(true)).collect::<Vec<_>>());
            (front.join().unwrap(), back.join().unwrap())
        });
        let mut all: Vec<usize> = a.iter().chain(&b).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..100_000).collect::<Vec<_>>());
        assert!(a.windows(2).all(|w| w[0] < w[1]) && b.windows(2).all(|w| w[0] > w[1]));
    }

    #[test]
    fn for_each_item_runs_every_item_once() {
        let _pool = pool_size_lock();
        use std::sync::atomic::AtomicU32;
        for threads in [1, 2, 4] {
            set_num_threads(threads).unwrap();
            for n in [0usize, 1, 2, 3, 17, 1000] {
                let hits: Vec<AtomicU32> = (0..n).map(|_| AtomicU32::new(0)).collect();
                for_each_item(n, &|i| {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                })
                .unwrap();
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1), "n={n}");
            }
        }
    }

    #[test]
    fn chunks_and_maps_cover_every_element_once() {
        let _pool = pool_size_lock();
        for threads in [1, 2, 3] {
            set_num_threads(threads).unwrap();
            for (len, size) in [
                (0usize, 4usize),
                (1, 4),
                (10, 3),
                (1000, 7),
                (64, 64),
                (65, 64),
            ] {
                let mut v = vec![0usize; len];
                for_each_chunk_mut(&mut v, size, &|k, c| {
                    for (j, x) in c.iter_mut().enumerate() {
                        *x += k * size + j + 1;
                    }
                })
                .unwrap();
                assert_eq!(v, (1..=len).collect::<Vec<_>>());
                let m = map_indices(len, size, &|i| i * i).unwrap();
                assert_eq!(m, (0..len).map(|i| i * i).collect::<Vec<_>>());
            }
        }
    }

    #[test]
    fn for_each_item_reraises_a_panic_after_the_other_items() {
        let _pool = pool_size_lock();
        set_num_threads(2).unwrap();
        let done = AtomicUsize::new(0);
        let r = catch_unwind(AssertUnwindSafe(|| {
            for_each_item(64, &|i| {
                if i == 3 {
                    panic!("item 3");
                }
                done.fetch_add(1, Ordering::SeqCst);
            })
        }));
        assert!(r.is_err());
        assert_eq!(done.load(Ordering::SeqCst), 63);
    }
}
