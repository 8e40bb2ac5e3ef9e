//! Runtime CPU-feature dispatch for the hot loops.
//!
//! The crate is compiled for the x86-64 baseline (SSE2), which has no 64-bit integer compare:
//! loops over `i64` token ids and masks vectorise two lanes at a time with shuffles. The hot
//! loops are therefore written once as `#[inline(always)]` bodies and compiled a second time
//! inside an AVX2 wrapper, chosen at run time when the CPU has AVX2. Both copies do the same
//! integer work, so results are identical whichever runs.

/// True when the CPU supports AVX2 (std caches the detection in an atomic).
#[inline]
pub fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// True when the CPU supports AVX-512F (and the OS saves its registers; std checks both).
#[inline]
pub fn has_avx512f() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A vector extension a copy of a loop is compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Width {
    /// The x86-64 baseline (SSE2), or the only copy on other architectures.
    Baseline,
    Avx2,
    Avx512,
}

impl Width {
    /// The widest extension this CPU has.
    pub fn widest() -> Self {
        if has_avx512f() {
            Width::Avx512
        } else if has_avx2() {
            Width::Avx2
        } else {
            Width::Baseline
        }
    }

    /// Whether this CPU can run copies compiled for `self`.
    pub fn supported(self) -> bool {
        match self {
            Width::Baseline => true,
            Width::Avx2 => has_avx2(),
            Width::Avx512 => has_avx512f(),
        }
    }
}

/// Runs `f` compiled for `width` (the baseline where the CPU lacks it). `f` should only call
/// `#[inline(always)]` bodies, so that they are inlined into (and vectorised for) that copy.
/// Every copy computes the same IEEE operations in the same order (Rust contracts no
/// multiply-add on its own), so the same bits.
#[inline(always)]
pub fn at_width<R>(width: Width, f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        unsafe fn avx512<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        #[target_feature(enable = "avx2")]
        unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        if width.supported() {
            match width {
                // SAFETY: the CPU supports AVX-512F (`supported`, just above).
                Width::Avx512 => return unsafe { avx512(f) },
                // SAFETY: the CPU supports AVX2 (`supported`, just above).
                Width::Avx2 => return unsafe { avx2(f) },
                Width::Baseline => {}
            }
        }
    }
    let _ = width;
    f()
}

/// [`at_width`] for the widest extension the CPU has.
#[inline(always)]
pub fn widest<R>(f: impl FnOnce() -> R) -> R {
    at_width(Width::widest(), f)
}

/// Orders every earlier store of this thread, non-temporal ones included, before its later
/// stores (an `sfence`): non-temporal stores are weakly ordered, and the atomics that hand a
/// finished chunk back to another thread must not overtake them.
#[inline]
pub fn store_fence() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `sfence` has no preconditions (SSE is part of x86_64).
    #[allow(unused_unsafe)]
    unsafe {
        std::arch::x86_64::_mm_sfence();
    }
}

/// Asks the CPU to start loading the last `max_bytes` of `b` into the cache (a hint: no effect
/// on results, nothing on other architectures).
#[inline]
pub fn prefetch_tail(b: &[u8], max_bytes: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let start = b.len().saturating_sub(max_bytes);
        for at in (start..b.len()).step_by(64) {
            // SAFETY: prefetching is a hint that never faults, and `at` is inside `b`.
            #[allow(unused_unsafe)]
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(b.as_ptr().add(at).cast::<i8>());
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (b, max_bytes);
    }
}

/// Asks the CPU to start loading the cache line at `p` (a hint: never faults, whatever `p`).
/// Used by the bindings (reading a list's str objects ahead).
#[cfg(feature = "python")]
#[inline]
pub fn prefetch_line(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: prefetching is a hint that never faults, even on an invalid address.
        #[allow(unused_unsafe)]
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(p.cast::<i8>());
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = p;
    }
}

/// Defines a function that runs `$body` (an `#[inline(always)]` function with the same
/// arguments) compiled for AVX2 when the CPU has it, and compiled for the baseline otherwise.
///
/// ```ignore
/// avx2_dispatch! {
///     /// Docs of the public function.
///     pub fn sum(v: &[i64]) -> i64 => sum_body
/// }
/// ```
macro_rules! avx2_dispatch {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty => $body:ident) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                unsafe fn avx2($($arg: $ty),*) -> $ret {
                    $body($($arg),*)
                }
                if $crate::simd::has_avx2() {
                    // SAFETY: the CPU supports AVX2 (checked just above).
                    return unsafe { avx2($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}
pub(crate) use avx2_dispatch;
